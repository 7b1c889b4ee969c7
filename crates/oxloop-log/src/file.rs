//! File output: time rotation through tracing-appender, size rotation of our own, both
//! written by a background thread.

use crate::LogError;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::{self, RollingFileAppender};

/// When a log file is closed and a new one started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// One file, `<prefix>.log`, never rotated.
    Never,
    /// A file per hour (UTC): `<prefix>.YYYY-MM-DD-HH.log`.
    Hourly,
    /// A file per day (UTC): `<prefix>.YYYY-MM-DD.log`.
    Daily,
    /// The current file is `<prefix>.log`; when the next line would take it past this
    /// many bytes it is renamed `<prefix>.<n>.log` (n = 1, 2, ... oldest first) and a new
    /// one is started. Lines are never split, so a file exceeds the limit only when a
    /// single line is longer than the limit.
    Size(u64),
}

/// Where and how to write the log file.
#[derive(Debug, Clone)]
pub struct FileOptions {
    dir: PathBuf,
    prefix: String,
    rotation: Rotation,
    max_files: Option<usize>,
    lossy: bool,
    buffered_lines: usize,
}

impl FileOptions {
    /// Options for `dir/<prefix>...log` with the given rotation.
    pub fn new(dir: impl Into<PathBuf>, prefix: impl Into<String>, rotation: Rotation) -> Self {
        FileOptions {
            dir: dir.into(),
            prefix: prefix.into(),
            rotation,
            max_files: None,
            lossy: false,
            buffered_lines: 128_000,
        }
    }

    /// A new file every day (UTC): `dir/<prefix>.YYYY-MM-DD.log`.
    pub fn daily(dir: impl Into<PathBuf>, prefix: impl Into<String>) -> Self {
        Self::new(dir, prefix, Rotation::Daily)
    }

    /// A new file whenever the current one would pass `max_bytes` (see
    /// [`Rotation::Size`]).
    pub fn size(dir: impl Into<PathBuf>, prefix: impl Into<String>, max_bytes: u64) -> Self {
        Self::new(dir, prefix, Rotation::Size(max_bytes))
    }

    /// Keeps at most `n` files (the current one included), deleting the oldest. Default:
    /// keep all.
    pub fn max_files(mut self, n: usize) -> Self {
        self.max_files = Some(n);
        self
    }

    /// When the background writer falls `lines` behind, the logging thread waits for it
    /// (default, nothing is lost) or, if `lossy`, drops the line and counts it (see
    /// [`LogGuard::dropped_lines`](crate::LogGuard::dropped_lines)).
    pub fn lossy(mut self, lossy: bool) -> Self {
        self.lossy = lossy;
        self
    }

    /// How many lines may wait for the background writer (default 128,000).
    pub fn buffered_lines(mut self, lines: usize) -> Self {
        self.buffered_lines = lines;
        self
    }

    pub(crate) fn describe(&self) -> String {
        format!("{}/{}.*log", self.dir.display(), self.prefix)
    }

    fn validate(&self) -> Result<(), LogError> {
        let bad = |why: &str| Err(LogError::FileOptions(why.to_string()));
        if self.prefix.is_empty() || self.prefix.contains('/') {
            return bad("the file prefix must be a non-empty file name");
        }
        if self.rotation == Rotation::Size(0) {
            return bad("the size limit must be above zero");
        }
        if self.max_files == Some(0) {
            return bad("max_files must be at least 1");
        }
        if self.buffered_lines == 0 {
            return bad("buffered_lines must be at least 1");
        }
        Ok(())
    }
}

/// Opens the file writer and its background thread.
pub(crate) fn open(options: &FileOptions) -> Result<(NonBlocking, WorkerGuard), LogError> {
    options.validate()?;
    fs::create_dir_all(&options.dir).map_err(|source| LogError::File {
        path: options.dir.clone(),
        source,
    })?;
    let builder = NonBlockingBuilder::default()
        .lossy(options.lossy)
        .buffered_lines_limit(options.buffered_lines)
        .thread_name("oxloop-log-file");
    let what = options.describe();
    Ok(match options.rotation {
        Rotation::Size(max) => {
            let w = SizeRotating::open(&options.dir, &options.prefix, max, options.max_files)?;
            builder.finish(Reporting::new(what, w))
        }
        time => {
            let rotation = match time {
                Rotation::Hourly => rolling::Rotation::HOURLY,
                Rotation::Daily => rolling::Rotation::DAILY,
                _ => rolling::Rotation::NEVER,
            };
            let mut b = RollingFileAppender::builder()
                .rotation(rotation)
                .filename_prefix(options.prefix.clone())
                .filename_suffix("log");
            if let Some(n) = options.max_files {
                b = b.max_log_files(n);
            }
            let w = b.build(&options.dir).map_err(|e| LogError::File {
                path: options.dir.clone(),
                source: io::Error::other(e.to_string()),
            })?;
            builder.finish(Reporting::new(what, w))
        }
    })
}

/// Reports write failures on stderr instead of losing lines silently: the background
/// worker of tracing-appender ignores errors.
struct Reporting<W> {
    what: String,
    inner: W,
    failed: u64,
}

impl<W: Write> Reporting<W> {
    fn new(what: String, inner: W) -> Self {
        Reporting {
            what,
            inner,
            failed: 0,
        }
    }
}

impl<W: Write> Write for Reporting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.inner.write_all(buf) {
            Ok(()) => {
                if self.failed > 0 {
                    eprintln!(
                        "oxloop-log: writing to {} works again; {} line(s) were lost",
                        self.what, self.failed
                    );
                    self.failed = 0;
                }
            }
            Err(e) => {
                if self.failed == 0 {
                    eprintln!("oxloop-log: cannot write to {}: {e}", self.what);
                }
                self.failed += 1;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Err(e) = self.inner.flush() {
            eprintln!(
                "oxloop-log: cannot write to {}: {e} (the lines buffered since the last \
                 successful write may be lost)",
                self.what
            );
        }
        Ok(())
    }
}

/// A file that is renamed aside when it would grow past a size limit.
pub(crate) struct SizeRotating {
    dir: PathBuf,
    prefix: String,
    max_bytes: u64,
    max_files: Option<usize>,
    file: BufWriter<File>,
    written: u64,
    /// Numbers of the rotated files on disk, oldest first.
    rotated: VecDeque<u64>,
}

impl SizeRotating {
    pub(crate) fn open(
        dir: &Path,
        prefix: &str,
        max_bytes: u64,
        max_files: Option<usize>,
    ) -> Result<SizeRotating, LogError> {
        let err = |path: PathBuf| move |source| LogError::File { path, source };
        let mut rotated = Vec::new();
        let wanted = format!("{prefix}.");
        for entry in fs::read_dir(dir).map_err(err(dir.to_path_buf()))? {
            let entry = entry.map_err(err(dir.to_path_buf()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(n) = name
                .strip_prefix(&wanted)
                .and_then(|rest| rest.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                rotated.push(n);
            }
        }
        rotated.sort_unstable();
        let current = dir.join(format!("{prefix}.log"));
        let (file, written) = open_append(&current).map_err(err(current.clone()))?;
        let mut w = SizeRotating {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            max_bytes,
            max_files,
            file,
            written,
            rotated: rotated.into(),
        };
        w.prune().map_err(err(dir.to_path_buf()))?;
        Ok(w)
    }

    fn current(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.prefix))
    }

    fn numbered(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{}.{n}.log", self.prefix))
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let n = self.rotated.back().map_or(1, |last| last + 1);
        fs::rename(self.current(), self.numbered(n))?;
        self.rotated.push_back(n);
        let (file, written) = open_append(&self.current())?;
        self.file = file;
        self.written = written;
        self.prune()
    }

    /// Deletes the oldest rotated files beyond `max_files` (the current file counts).
    fn prune(&mut self) -> io::Result<()> {
        if let Some(max) = self.max_files {
            while self.rotated.len() + 1 > max {
                let Some(n) = self.rotated.pop_front() else {
                    break;
                };
                match fs::remove_file(self.numbered(n)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<(BufWriter<File>, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let len = file.metadata()?.len();
    Ok((BufWriter::with_capacity(64 * 1024, file), len))
}

impl Write for SizeRotating {
    /// Writes all of `buf` (one formatted line) to the current file, rotating first if
    /// it would not fit.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_rotation_bounds_files_and_keeps_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SizeRotating::open(dir.path(), "app", 100, None).unwrap();
        for i in 0..50 {
            w.write_all(format!("line {i:04} ..........\n").as_bytes())
                .unwrap();
        }
        w.flush().unwrap();
        let mut all = String::new();
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort_by_key(|n| {
            n.trim_start_matches("app.")
                .trim_end_matches(".log")
                .parse::<u64>()
                .unwrap_or(u64::MAX)
        });
        for n in &names {
            let text = fs::read_to_string(dir.path().join(n)).unwrap();
            assert!(text.len() <= 100, "{n} has {} bytes", text.len());
            all.push_str(&text);
        }
        let expected: String = (0..50)
            .map(|i| format!("line {i:04} ..........\n"))
            .collect();
        assert_eq!(all, expected);
        assert!(names.len() >= 10);
    }

    #[test]
    fn max_files_deletes_the_oldest_and_numbering_continues_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut w = SizeRotating::open(dir.path(), "x", 10, Some(3)).unwrap();
            for i in 0..6 {
                w.write_all(format!("{i}23456789\n").as_bytes()).unwrap();
            }
            w.flush().unwrap();
        }
        let mut w = SizeRotating::open(dir.path(), "x", 10, Some(3)).unwrap();
        w.write_all(b"6234567890\n").unwrap();
        w.flush().unwrap();
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["x.5.log", "x.6.log", "x.log"]);
        assert_eq!(
            fs::read_to_string(dir.path().join("x.6.log")).unwrap(),
            "523456789\n"
        );
    }
}
