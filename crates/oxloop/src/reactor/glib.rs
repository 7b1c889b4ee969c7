//! The two GLib main-context calls the `glib` crate leaves without a safe wrapper:
//! `g_main_context_query` and `g_main_context_check` (feature `glib`).

use glib::ffi::GPollFD;
use glib::translate::ToGlibPtr;
use glib::MainContext;

/// An empty poll record for `query` to fill in.
pub(crate) const EMPTY_POLL_FD: GPollFD = GPollFD {
    fd: -1,
    events: 0,
    revents: 0,
};

/// Fills `fds` with the fds the context wants polled at `max_priority` and returns the
/// timeout it allows, in milliseconds (-1: none). The caller must have acquired `ctx`
/// and called `prepare` on it.
pub(crate) fn query(ctx: &MainContext, max_priority: i32, fds: &mut Vec<GPollFD>) -> i32 {
    loop {
        let capacity = fds.capacity().max(4);
        fds.clear();
        fds.resize(capacity, EMPTY_POLL_FD);
        let mut timeout = -1;
        let len = i32::try_from(fds.len()).unwrap_or(i32::MAX);
        // SAFETY: `ctx.to_glib_none()` is a valid GMainContext pointer for the duration of
        // the call (borrowed from `ctx`). `fds` points to `len` initialised GPollFD
        // records that GLib writes at most `len` of; `timeout` is a valid out pointer.
        let wanted = unsafe {
            glib::ffi::g_main_context_query(
                ctx.to_glib_none().0,
                max_priority,
                &mut timeout,
                fds.as_mut_ptr(),
                len,
            )
        };
        let wanted = usize::try_from(wanted).unwrap_or(0);
        if wanted <= fds.len() {
            fds.truncate(wanted);
            return timeout;
        }
        // Too small: GLib said how many it has; ask again with room for them all.
        fds.reserve(wanted);
    }
}

/// Hands the poll results to the context; true when sources are ready to dispatch.
/// The caller must have acquired `ctx`.
pub(crate) fn check(ctx: &MainContext, max_priority: i32, fds: &mut [GPollFD]) -> bool {
    let len = i32::try_from(fds.len()).unwrap_or(i32::MAX);
    // SAFETY: as in `query`: a valid context pointer and `len` initialised records,
    // which GLib only reads (and may update in place).
    let ready = unsafe {
        glib::ffi::g_main_context_check(ctx.to_glib_none().0, max_priority, fds.as_mut_ptr(), len)
    };
    ready != 0
}
