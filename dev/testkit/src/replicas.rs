//! Several `bridge run` processes of one deployment (replicas sharing one
//! PostgreSQL, issue 18), for the failover test and the bench's replicas
//! part: each started and waited for until it prints `bridge running`, its
//! inbox address read from what it prints, any one killed with SIGKILL or
//! suspended with SIGSTOP, and every one still running killed when the set
//! is dropped (a failed assertion included), so no process outlives its
//! test.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::Streams;

/// One running `bridge run`.
pub struct Replica {
    /// Its `[cluster] replica` name.
    pub name: String,
    /// Its inbox URL, when it printed `inbox listening on …`.
    pub inbox: Option<String>,
    child: Option<Child>,
    streams: Option<Streams>,
}

/// The replicas of a test or bench run.
#[derive(Default)]
pub struct Replicas {
    replicas: Vec<Replica>,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            if let Some(mut child) = r.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Replicas {
    pub fn new() -> Self {
        Self::default()
    }

    /// Start `command` (a `bridge … run --config …` command) as replica
    /// `name`, its stdout and stderr read on threads of their own. Call
    /// [`Replicas::wait_started`] before relying on it.
    pub fn spawn(&mut self, name: &str, mut command: Command) -> Result<(), String> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start replica {name}: {e}"))?;
        let streams = Streams::read(&mut child);
        self.replicas.push(Replica {
            name: name.to_string(),
            inbox: None,
            child: Some(child),
            streams: Some(streams),
        });
        Ok(())
    }

    /// Blocks until replica `name` prints `bridge running` (noting its
    /// inbox address on the way); an error naming it after `limit`, or when
    /// it exits first. From an async task, call it inside
    /// `tokio::task::block_in_place`.
    pub fn wait_started(&mut self, name: &str, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let r = self
            .replicas
            .iter_mut()
            .find(|r| r.name == name)
            .ok_or_else(|| format!("no replica named {name}"))?;
        let streams = r.streams.as_ref().expect("a running replica's streams");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match streams.lines.recv_timeout(left) {
                Ok(line) if line.starts_with("bridge running") => return Ok(()),
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("inbox listening on ") {
                        r.inbox = Some(url.trim().to_string());
                    }
                }
                Err(_) => return Err(format!("replica {name} did not start within {limit:?}")),
            }
        }
    }

    /// The replicas, in the order they were started.
    pub fn iter(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.iter()
    }

    /// The names of the replicas still running.
    pub fn running(&self) -> Vec<String> {
        self.replicas
            .iter()
            .filter(|r| r.child.is_some())
            .map(|r| r.name.clone())
            .collect()
    }

    /// SIGKILL replica `name` (`Child::kill` sends SIGKILL on Unix) and
    /// reap it; false when there is no such running replica.
    pub fn kill(&mut self, name: &str) -> bool {
        let Some(mut child) = self
            .replicas
            .iter_mut()
            .find(|r| r.name == name)
            .and_then(|r| r.child.take())
        else {
            return false;
        };
        let killed = child.kill().is_ok();
        let _ = child.wait();
        killed
    }

    /// Suspend replica `name` (SIGSTOP) as a VM pause or a stalled process
    /// would, or let it go on (SIGCONT); false when there is no such running
    /// replica.
    pub fn suspend(&self, name: &str, suspended: bool) -> bool {
        let Some(child) = self
            .replicas
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.child.as_ref())
        else {
            return false;
        };
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            return false;
        };
        let signal = if suspended {
            libc::SIGSTOP
        } else {
            libc::SIGCONT
        };
        // SAFETY: kill(2) on a child this set started and has not reaped.
        unsafe { libc::kill(pid, signal) == 0 }
    }

    /// Kill every replica still running, and return the last `lines` lines
    /// each one wrote to stderr, under its name: what a failure saw.
    pub fn stop_and_logs(&mut self, lines: usize) -> String {
        let mut logs = String::new();
        for r in &mut self.replicas {
            if let Some(mut child) = r.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Some(streams) = r.streams.take() {
                let (_, stderr) = streams.finish();
                let all: Vec<&str> = stderr.lines().collect();
                let tail = all[all.len().saturating_sub(lines)..].join("\n");
                logs.push_str(&format!(
                    "\n--- replica {} (last lines) ---\n{tail}\n",
                    r.name
                ));
            }
        }
        logs
    }
}
