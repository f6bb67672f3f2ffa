//! journald's stream protocol, as far as the daemon needs it: whether an output is connected to the
//! journal, and the `<N>` syslog priority that starts a line so `journalctl -p` can filter on it
//! (the `sd-daemon(3)` convention; journald strips the prefix and stores `PRIORITY=N`).
//!
//! Only the daemon's own lines get a prefix, and only when the stream really is the journal:
//! `JOURNAL_STREAM` may be inherited by a child whose stderr was redirected to a file since, so
//! its `device:inode` is compared with the stream's own, as `systemd.exec(5)` asks.

use std::borrow::Cow;
use std::os::fd::{AsFd, AsRawFd as _};

use log::Level;

/// The syslog priority of a log level: `<3>` error, `<4>` warning, `<6>` info, `<7>` debug and
/// trace (syslog has nothing finer than debug). Notice (5) is not used: `log` has no such level.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// `msg` with every line prefixed by `level`'s priority. journald splits a stream at newlines and
/// gives each line the priority it starts with, so a multi-line message needs the prefix on every
/// line, or its continuation lines would be stored at the stream's default level (info).
pub fn prefixed(level: Level, msg: &str) -> String {
    let p = priority(level);
    let mut out = String::with_capacity(msg.len() + 4);
    for (i, line) in msg.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push('<');
        out.push(char::from(b'0' + p));
        out.push('>');
        out.push_str(line);
    }
    out
}

/// `msg` as it should be written to stderr: [`prefixed`] when stderr is the journal, untouched
/// otherwise (a terminal or a file has no use for `<3>`).
pub fn for_stderr(level: Level, msg: &str) -> Cow<'_, str> {
    if is_journal(&std::io::stderr()) {
        Cow::Owned(prefixed(level, msg))
    } else {
        Cow::Borrowed(msg)
    }
}

/// Whether `stream` is the journal's stream socket: `JOURNAL_STREAM` is set and names the
/// device and inode `fstat` reports for it. systemd sets the variable when stdout or stderr goes
/// to the journal; when both do, they share one stream, so both match.
pub fn is_journal(stream: &impl AsFd) -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(parse_stream) else {
        return false;
    };
    identity(stream) == Some((dev, ino))
}

/// `"device:inode"`, both decimal, as systemd formats `JOURNAL_STREAM`.
fn parse_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The device and inode of an open file, or `None` if `fstat` fails (a closed stderr, say).
fn identity(stream: &impl AsFd) -> Option<(u64, u64)> {
    // SAFETY: an all-zero `stat` is a valid value of the plain C struct; fstat overwrites it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open for the duration of the borrow, and `st` is writable.
    let rc = unsafe { libc::fstat(stream.as_fd().as_raw_fd(), &mut st) };
    (rc == 0).then_some((st.st_dev, st.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(Level::Error), 3);
        assert_eq!(priority(Level::Warn), 4);
        assert_eq!(priority(Level::Info), 6);
        assert_eq!(priority(Level::Debug), 7);
        assert_eq!(priority(Level::Trace), 7);
    }

    #[test]
    fn every_line_of_a_message_carries_the_prefix() {
        assert_eq!(prefixed(Level::Warn, "reload failed"), "<4>reload failed");
        assert_eq!(prefixed(Level::Error, "a\nb"), "<3>a\n<3>b");
        assert_eq!(prefixed(Level::Info, ""), "<6>");
    }

    #[test]
    fn journal_stream_values_parse() {
        assert_eq!(parse_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_stream("8:"), None);
        assert_eq!(parse_stream("8"), None);
        assert_eq!(parse_stream("x:1"), None);
    }

    #[test]
    fn a_stream_matches_only_its_own_device_and_inode() {
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let (dev, ino) = identity(&file).unwrap();
        // The variable names a stream by value; compare the way is_journal does, without
        // editing this (multi-threaded) test process's environment.
        assert_eq!(
            parse_stream(&format!("{dev}:{ino}")).map(|id| Some(id) == identity(&file)),
            Some(true)
        );
        let other = std::fs::File::open("/proc/self/cmdline").unwrap();
        assert_ne!(identity(&other), Some((dev, ino)));
    }
}
