//! Logged-in sessions, kept in memory: a restart of `bridge run` logs every
//! operator out (nothing about a session is written to disk).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq as _;

use crate::settings::Role;

/// A session as a request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub account: String,
    pub role: Role,
    /// Every form that changes something carries it back.
    pub csrf: String,
}

impl Session {
    /// Whether a form's token is this session's (constant time).
    pub fn csrf_ok(&self, given: &str) -> bool {
        self.csrf.as_bytes().ct_eq(given.as_bytes()).into()
    }
}

struct Entry {
    session: Session,
    started: Instant,
    last_seen: Instant,
}

/// The open sessions, by their cookie value.
pub struct Sessions {
    idle: Duration,
    max: Duration,
    open: Mutex<HashMap<String, Entry>>,
}

/// 256 random bits, hex.
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    pub fn new(idle: Duration, max: Duration) -> Self {
        Self {
            idle,
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session (always a new id: a login never reuses one) and its id.
    pub fn start(&self, account: &str, role: Role) -> (String, Session) {
        let now = Instant::now();
        let session = Session {
            account: account.to_string(),
            role,
            csrf: random_token(),
        };
        let id = random_token();
        let mut open = self.open();
        open.retain(|_, e| self.alive(e, now));
        open.insert(
            id.clone(),
            Entry {
                session: session.clone(),
                started: now,
                last_seen: now,
            },
        );
        (id, session)
    }

    fn alive(&self, e: &Entry, now: Instant) -> bool {
        now.duration_since(e.last_seen) < self.idle && now.duration_since(e.started) < self.max
    }

    /// The session of this id, when it is open; using it keeps it alive.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut open = self.open();
        let alive = open.get(id).map(|e| self.alive(e, now))?;
        if !alive {
            open.remove(id);
            return None;
        }
        let entry = open.get_mut(id)?;
        entry.last_seen = now;
        Some(entry.session.clone())
    }

    /// Log out.
    pub fn end(&self, id: &str) {
        self.open().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_when_idle_or_too_old_or_logged_out() {
        let s = Sessions::new(Duration::from_millis(80), Duration::from_secs(60));
        let (id, session) = s.start("amina", Role::Operator);
        assert_eq!(s.get(&id).unwrap(), session);
        assert!(session.csrf_ok(&session.csrf.clone()));
        assert!(!session.csrf_ok("guess"));
        assert!(s.get("not-an-id").is_none());
        std::thread::sleep(Duration::from_millis(120));
        assert!(s.get(&id).is_none(), "idle session still open");

        let s = Sessions::new(Duration::from_secs(60), Duration::from_millis(80));
        let (id, _) = s.start("amina", Role::Viewer);
        std::thread::sleep(Duration::from_millis(50));
        assert!(s.get(&id).is_some());
        std::thread::sleep(Duration::from_millis(50));
        assert!(s.get(&id).is_none(), "session outlived its maximum");

        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let (a, _) = s.start("amina", Role::Viewer);
        let (b, _) = s.start("amina", Role::Viewer);
        assert_ne!(a, b);
        s.end(&a);
        assert!(s.get(&a).is_none());
        assert!(s.get(&b).is_some());
    }
}
