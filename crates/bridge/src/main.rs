fn main() -> std::process::ExitCode {
    cap_malloc_arenas();
    return_freed_memory();
    bridge::cli::main()
}

/// glibc gives every thread that allocates an arena of its own (up to eight a
/// core) and seldom hands freed arena memory back, so the async workers'
/// heaps grow with the work done. Two arenas keep a long run's memory flat:
/// measured from 1,000 to 10,000 records, WF 1.1's peak private memory grew
/// 25% with the default and 10% with two.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn cap_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn cap_malloc_arenas() {}

/// How often freed heap memory goes back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Even with two arenas, glibc keeps the pages of freed chunks that are not
/// at an arena's top, so the second arena's resident memory still followed
/// the records worked on (about +4 MB from 1,000 to 10,000 records while the
/// live heap grew 1.6 MB). `malloc_trim` hands every free page back (about
/// 4 ms a call on a busy run: under 1% of one core twice a second), and the
/// process's memory then follows what it holds, not what it once held: with
/// it (and job instances replaced after 500 records), peak private memory
/// from 1,000 to 10,000 records moved -1.2% (WF 1.1) and +1.0% (WF 2.1),
/// against +9% and +15% before (bench section 4).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_freed_memory() {
    let spawned = std::thread::Builder::new()
        .name("bridge-trim".into())
        .spawn(|| loop {
            std::thread::sleep(TRIM_EVERY);
            // SAFETY: malloc_trim only releases free memory; glibc takes each
            // arena's lock, so it is safe beside allocating threads.
            unsafe {
                libc::malloc_trim(0);
            }
        });
    // Without it the process works the same, only holds more memory.
    drop(spawned);
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_freed_memory() {}
