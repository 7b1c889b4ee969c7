//! A child process's exit, through a pidfd (Linux 5.3 and later).

#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

#[cfg(target_os = "linux")]
pub use linux::ChildExit;

#[cfg(target_os = "linux")]
mod linux {
    use crate::reactor::{Interest, Trigger};
    use crate::source::{Event, EventSource, PostAction, Registration};
    use rustix::process::{pidfd_open, Pid, PidfdFlags};
    use std::fmt;
    use std::io;
    use std::os::fd::OwnedFd;
    use std::process::{Child, ExitStatus};

    type ExitCallback = Box<dyn FnOnce(Child, io::Result<ExitStatus>)>;

    /// Runs a callback with a child's exit status once it exits, then removes itself.
    /// The child is reaped through [`Child::try_wait`], so no `SIGCHLD` handler is needed
    /// and other children are left alone.
    ///
    /// ```
    /// use oxloop::source::LoopSourceExt;
    /// use oxloop::{source::ChildExit, EventLoop};
    /// use std::process::Command;
    ///
    /// let ev = EventLoop::new()?;
    /// let child = Command::new("true").spawn()?;
    /// ev.insert_source(ChildExit::new(child, |_child, status| {
    ///     assert!(status.unwrap().success());
    /// })?)?;
    /// ev.run()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub struct ChildExit {
        /// Handed to the callback when the child exits.
        child: Option<Child>,
        pid: u32,
        pidfd: OwnedFd,
        callback: Option<ExitCallback>,
    }

    impl ChildExit {
        /// Watches `child`. The callback gets the child back with its status.
        pub fn new(
            child: Child,
            callback: impl FnOnce(Child, io::Result<ExitStatus>) + 'static,
        ) -> io::Result<ChildExit> {
            let pidfd = pidfd_open(Pid::from_child(&child), PidfdFlags::empty())?;
            Ok(ChildExit {
                pid: child.id(),
                child: Some(child),
                pidfd,
                callback: Some(Box::new(callback)),
            })
        }

        /// The child's process id.
        pub fn id(&self) -> u32 {
            self.pid
        }
    }

    impl fmt::Debug for ChildExit {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ChildExit")
                .field("pid", &self.pid)
                .finish_non_exhaustive()
        }
    }

    impl EventSource for ChildExit {
        fn register(&mut self, reg: &mut Registration) -> io::Result<()> {
            // A pidfd becomes readable when the process exits.
            reg.watch(&self.pidfd, Interest::READ, Trigger::Level);
            Ok(())
        }

        fn dispatch(&mut self, _event: Event) -> PostAction {
            let Some(child) = self.child.as_mut() else {
                return PostAction::Remove;
            };
            let status = match child.try_wait() {
                Ok(None) => return PostAction::Continue,
                Ok(Some(status)) => Ok(status),
                Err(e) => Err(e),
            };
            if let (Some(child), Some(callback)) = (self.child.take(), self.callback.take()) {
                callback(child, status);
            }
            PostAction::Remove
        }
    }
}
