//! What the console needs from `bridge.toml`'s `[console]`, secrets read:
//! where it listens, who may log in and as what, and how long a session and
//! a run of failed logins last.

use std::net::SocketAddr;
use std::time::Duration;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees every page; changes nothing.
    Viewer,
    /// Also replays dead-lettered records and moves cursors.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// How an account proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// An argon2 PHC string (`bridge console hash-password` makes one).
    PasswordHash(String),
    /// A token (read from the environment or a file), given as the password
    /// at the login form or as `Authorization: Bearer <token>` by a script.
    Token(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // A hash is no secret to print, but no reader needs it either.
            Credential::PasswordHash(_) => f.write_str("PasswordHash(..)"),
            Credential::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// An operator account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The login name: what the log records for each action.
    pub name: String,
    pub role: Role,
    pub credential: Credential,
}

/// Failed logins allowed before the console stops checking for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimit {
    /// Failures per account name, and per client address, within `window`.
    pub failures: u32,
    pub window: Duration,
}

impl Default for LoginLimit {
    fn default() -> Self {
        Self {
            failures: 5,
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// The console's settings.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    pub listen: SocketAddr,
    pub accounts: Vec<Account>,
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// A session ends this long after its login, used or not.
    pub session_max: Duration,
    pub login_limit: LoginLimit,
}

/// A login name: letters, digits and `_.@-`, 1 to 64 characters (it is
/// logged with every action, so nothing a terminal interprets).
pub fn name_problem(name: &str) -> Option<String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b));
    (!ok).then(|| format!("`{name}` is not an account name: 1 to 64 letters, digits and _.@- only"))
}

/// Why `listen` is refused, if it is: the console speaks plain HTTP, so it
/// listens on loopback only; a remote operator reaches it through a TLS
/// reverse proxy or an SSH tunnel (docs/operator/console.md).
pub fn listen_problem(listen: &SocketAddr) -> Option<String> {
    (!listen.ip().is_loopback()).then(|| {
        format!(
            "{listen} is not a loopback address: the console speaks plain HTTP and listens on \
             loopback only; put a TLS reverse proxy or an SSH tunnel in front \
             (docs/operator/console.md)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_codes_and_listen_is_loopback() {
        assert!(name_problem("amina.k").is_none());
        assert!(name_problem("ops@unicef").is_none());
        assert!(name_problem("").is_some());
        assert!(name_problem("a b").is_some());
        assert!(name_problem("x\u{1b}[31m").is_some());
        assert!(listen_problem(&"127.0.0.1:9465".parse().unwrap()).is_none());
        assert!(listen_problem(&"[::1]:9465".parse().unwrap()).is_none());
        assert!(listen_problem(&"0.0.0.0:9465".parse().unwrap()).is_some());
    }

    #[test]
    fn a_token_never_prints() {
        let c = Credential::Token("s3cret-token".into());
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
