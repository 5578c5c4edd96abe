//! Running the `bridge` binary from a test.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Runs `command` off the async runtime's threads: the simulators the
/// binary talks to live on those threads, so a blocking wait there would
/// starve them.
pub async fn output_off_runtime(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("the bridge binary starts"))
        .await
        .expect("the blocking task finishes")
}

/// Exit code, stdout and stderr of a finished command, for assertion
/// messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Stdout and stderr of a running child, each read on a thread of its own
/// so that neither pipe fills up and blocks the child.
pub struct Streams {
    /// Stdout, line by line, as the child prints it.
    pub lines: Receiver<String>,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

impl Streams {
    /// Takes the child's piped stdout and stderr.
    pub fn read(child: &mut Child) -> Self {
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut all);
            all
        });
        Self {
            lines,
            stdout,
            stderr,
        }
    }

    /// Blocks until stdout prints a line starting with `prefix` and returns
    /// the rest of it; `None` when the child closes stdout or `limit`
    /// passes first. From an async test, call it inside
    /// `tokio::task::block_in_place`.
    pub fn wait_for(&self, prefix: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Some(rest.trim().to_string());
            }
        }
    }

    /// Everything the child printed on (stdout, stderr), once it has exited.
    pub fn finish(self) -> (String, String) {
        (
            self.stdout.join().expect("stdout reader"),
            self.stderr.join().expect("stderr reader"),
        )
    }
}

/// Asks process `pid` to stop the way a service manager does.
pub fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {pid}");
}
