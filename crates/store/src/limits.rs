//! The process's own resource limits (`ulimit`), read where a bound is
//! derived from them: the inbox's connection cap (open files) and the state
//! database's "full" diagnosis (file size).

/// The soft limit `read` fills in, if there is one (not unlimited).
#[cfg(unix)]
fn soft(read: impl FnOnce(&mut libc::rlimit) -> libc::c_int) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    (read(&mut limit) == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// The soft open-file limit (`ulimit -n`), if known.
pub fn open_files() -> Option<u64> {
    // SAFETY: getrlimit only writes the struct it is given.
    #[cfg(unix)]
    return soft(|l| unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, l) });
    #[cfg(not(unix))]
    None
}

/// The soft file-size limit in bytes (`ulimit -f`), if known.
pub fn file_size() -> Option<u64> {
    // SAFETY: getrlimit only writes the struct it is given.
    #[cfg(unix)]
    return soft(|l| unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, l) });
    #[cfg(not(unix))]
    None
}
