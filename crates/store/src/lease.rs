//! The writer lease: only one process writes a state database at a time.

use std::fmt;

/// Who holds (or asks for) the writer lease: enough for an operator to find
/// the process. No personal data: a pid, a host name, the command line (which
/// carries paths and flags, never secrets) and a timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub command: String,
    /// RFC 3339 UTC.
    pub since: String,
}

/// Longest command line kept, in characters.
const MAX_COMMAND_CHARS: usize = 200;

impl Holder {
    /// This process, now.
    pub fn current() -> Self {
        let mut args = std::env::args();
        let program = args
            .next()
            .map(|a| {
                std::path::Path::new(&a)
                    .file_name()
                    .map_or(a.clone(), |n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "bridge".into());
        let command = std::iter::once(program)
            .chain(args)
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            pid: std::process::id(),
            host: host_name(),
            command: command.chars().take(MAX_COMMAND_CHARS).collect(),
            since: super::now(),
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} on host {}, `{}`, since {}",
            self.pid, self.host, self.command, self.since
        )
    }
}

/// The machine's host name (Linux: the kernel's; else `$HOSTNAME`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// Held while this process may write the database; dropping it (or the
/// process dying) releases it.
pub struct WriterLease {
    holder: Holder,
    /// What keeps the lease: for SQLite the locked sidecar file, whose lock
    /// the OS releases when the process ends however it ends.
    _guard: Option<Box<dyn Send + Sync>>,
}

impl WriterLease {
    pub(crate) fn new(holder: Holder, guard: Option<Box<dyn Send + Sync>>) -> Self {
        Self {
            holder,
            _guard: guard,
        }
    }

    pub fn holder(&self) -> &Holder {
        &self.holder
    }
}

impl fmt::Debug for WriterLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterLease")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}
