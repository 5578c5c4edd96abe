//! `[console]`: the operator console `bridge run` serves (its own listener,
//! loopback only), its accounts and session limits.

use std::time::Duration;

use serde::Deserialize;

use super::{BridgeConfig, ConfigError, SecretRef};
use bridge_console::{password, settings, Account, ConsoleSettings, Credential, LoginLimit, Role};

/// One account as written in bridge.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleAccount {
    pub name: String,
    pub role: Role,
    /// An argon2 PHC string (`bridge console hash-password`).
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Or a token, read from the environment or a file.
    #[serde(default)]
    pub token: Option<SecretRef>,
}

/// As written in bridge.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    #[serde(default = "default_listen")]
    pub listen: std::net::SocketAddr,
    #[serde(default)]
    pub accounts: Vec<ConsoleAccount>,
    /// A session unused this long ends.
    #[serde(default = "default_idle_minutes")]
    pub session_idle_minutes: u64,
    /// A session ends this long after its login.
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
    /// Failed logins per account name, and per address, within the window.
    #[serde(default = "default_login_failures")]
    pub login_failures: u32,
    #[serde(default = "default_login_window_minutes")]
    pub login_window_minutes: u64,
}

fn default_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9465))
}

fn default_idle_minutes() -> u64 {
    30
}

fn default_session_hours() -> u64 {
    12
}

fn default_login_failures() -> u32 {
    LoginLimit::default().failures
}

fn default_login_window_minutes() -> u64 {
    LoginLimit::default().window.as_secs() / 60
}

impl BridgeConfig {
    /// An error about the `index`-th account, at the line of its `name`
    /// when the file writes it as a `[[console.accounts]]` table.
    fn account_error(&self, index: usize, message: String) -> ConfigError {
        let mut tables = 0;
        let mut in_it = false;
        for (i, line) in self.text.lines().enumerate() {
            let t = line.trim();
            if t.starts_with('[') {
                let header = t.replace(' ', "") == "[[console.accounts]]";
                tables += usize::from(header);
                in_it = header && tables == index + 1;
                continue;
            }
            let is_name = t.split_once('=').is_some_and(|(k, _)| k.trim() == "name");
            if in_it && is_name {
                return ConfigError::KeyAt {
                    file: self.file.clone(),
                    line: i + 1,
                    key: "console.accounts".into(),
                    message,
                };
            }
        }
        self.key_error_at("console.accounts", message)
    }

    /// Problems of `[console]` that need no secret.
    pub fn console_problems(&self) -> Vec<ConfigError> {
        let Some(c) = &self.console else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        let mut problem = |key: &str, why: String| problems.push(self.key_error_at(key, why));
        if let Some(why) = settings::listen_problem(&c.listen) {
            problem("console.listen", why);
        }
        for (key, value) in [
            ("console.session_idle_minutes", c.session_idle_minutes),
            ("console.session_hours", c.session_hours),
            ("console.login_failures", u64::from(c.login_failures)),
            ("console.login_window_minutes", c.login_window_minutes),
        ] {
            if value == 0 {
                problem(key, "must be at least 1".into());
            }
        }
        if c.accounts.is_empty() {
            problem(
                "console.accounts",
                "the console needs at least one account: [[console.accounts]] with name, role and \
                 password_hash (or token)"
                    .into(),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (index, a) in c.accounts.iter().enumerate() {
            let why = if let Some(why) = settings::name_problem(&a.name) {
                Some(why)
            } else if !seen.insert(a.name.as_str()) {
                Some(format!("account `{}` is given twice", a.name))
            } else {
                match (&a.password_hash, &a.token) {
                    (Some(hash), None) => password::hash_problem(hash)
                        .map(|why| format!("account `{}`: password_hash {why}", a.name)),
                    (None, Some(_)) => None,
                    (Some(_), Some(_)) => Some(format!(
                        "account `{}`: give either password_hash or token, not both",
                        a.name
                    )),
                    (None, None) => Some(format!(
                        "account `{}` has no password_hash and no token (make a hash with \
                         `bridge console hash-password`)",
                        a.name
                    )),
                }
            };
            if let Some(why) = why {
                problems.push(self.account_error(index, why));
            }
        }
        problems
    }

    /// The console's settings with its tokens read; `None` without a
    /// `[console]` section.
    pub fn console_settings(&self) -> Result<Option<ConsoleSettings>, ConfigError> {
        let Some(c) = &self.console else {
            return Ok(None);
        };
        if let Some(e) = self.console_problems().into_iter().next() {
            return Err(e);
        }
        let mut accounts = Vec::new();
        for (index, a) in c.accounts.iter().enumerate() {
            let credential = match (&a.password_hash, &a.token) {
                (Some(hash), _) => Credential::PasswordHash(hash.clone()),
                (None, Some(token)) => {
                    let value = self.secret("console.accounts", token)?;
                    if value.trim().chars().count() < MIN_TOKEN_CHARS {
                        return Err(self.account_error(
                            index,
                            format!(
                                "account `{}`: the token must have at least {MIN_TOKEN_CHARS} characters",
                                a.name
                            ),
                        ));
                    }
                    Credential::Token(value.trim().to_string())
                }
                (None, None) => {
                    unreachable!("console_problems refuses an account without credential")
                }
            };
            accounts.push(Account {
                name: a.name.clone(),
                role: a.role,
                credential,
            });
        }
        Ok(Some(ConsoleSettings {
            listen: c.listen,
            accounts,
            session_idle: Duration::from_secs(c.session_idle_minutes * 60),
            session_max: Duration::from_secs(c.session_hours * 3600),
            login_limit: LoginLimit {
                failures: c.login_failures,
                window: Duration::from_secs(c.login_window_minutes * 60),
            },
        }))
    }
}

/// A token is a password nobody types: long enough not to be guessed
/// within the login limit's lifetime.
const MIN_TOKEN_CHARS: usize = 24;

#[cfg(test)]
mod tests {
    use super::*;

    fn config(console: &str) -> BridgeConfig {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bridge.toml");
        std::fs::write(
            &file,
            format!(
                "[primero]\nbase_url = \"http://127.0.0.1:1\"\nuser_name = \"u\"\npassword = {{ env = \"P\" }}\n\n[jobs]\ndir = \"jobs\"\nmappings = \"m\"\n\n{console}"
            ),
        )
        .unwrap();
        BridgeConfig::parse(&file).unwrap()
    }

    #[test]
    fn every_console_problem_is_named_with_its_line() {
        let good = password::hash_password("a long enough password").unwrap();
        let c = config(&format!(
            "[console]\nlisten = \"0.0.0.0:9465\"\nsession_hours = 0\n\n[[console.accounts]]\nname = \"amina\"\nrole = \"operator\"\npassword_hash = \"{good}\"\n\n[[console.accounts]]\nname = \"amina\"\nrole = \"viewer\"\npassword_hash = \"{good}\"\n\n[[console.accounts]]\nname = \"bob\"\nrole = \"viewer\"\npassword_hash = \"secret-in-clear\"\n\n[[console.accounts]]\nname = \"carol\"\nrole = \"viewer\"\n"
        ));
        let problems: Vec<String> = c.console_problems().iter().map(|e| e.to_string()).collect();
        let text = problems.join("\n");
        assert_eq!(problems.len(), 5, "{text}");
        assert!(
            text.contains(":20: key `console.accounts`: account `amina` is given twice"),
            "{text}"
        );
        assert!(
            text.contains(":25: key `console.accounts`: account `bob`: password_hash is not a PHC"),
            "{text}"
        );
        assert!(!text.contains("secret-in-clear"), "{text}");
        assert!(
            text.contains(":30: key `console.accounts`: account `carol` has no password_hash"),
            "{text}"
        );
        assert!(
            text.contains("key `console.listen`") && text.contains("loopback"),
            "{text}"
        );
        assert!(
            text.contains("key `console.session_hours`: must be at least 1"),
            "{text}"
        );
        assert!(c.console_settings().is_err());
    }

    #[test]
    fn settings_read_the_token_and_refuse_a_short_one() {
        let c = config(
            "[console]\n\n[[console.accounts]]\nname = \"monitoring\"\nrole = \"viewer\"\ntoken = { env = \"BRIDGE_TEST_CONSOLE_TOKEN_OK\" }\n",
        );
        std::env::set_var("BRIDGE_TEST_CONSOLE_TOKEN_OK", "abcdefghijklmnopqrstuvwxyz");
        let s = c.console_settings().unwrap().unwrap();
        assert_eq!(s.accounts[0].role, Role::Viewer);
        assert_eq!(
            s.accounts[0].credential,
            Credential::Token("abcdefghijklmnopqrstuvwxyz".into())
        );
        assert_eq!(s.listen.to_string(), "127.0.0.1:9465");
        let c = config(
            "[console]\n\n[[console.accounts]]\nname = \"monitoring\"\nrole = \"viewer\"\ntoken = { env = \"BRIDGE_TEST_CONSOLE_TOKEN_SHORT\" }\n",
        );
        std::env::set_var("BRIDGE_TEST_CONSOLE_TOKEN_SHORT", "short-token");
        let e = c.console_settings().unwrap_err().to_string();
        assert!(
            e.contains("at least 24 characters") && !e.contains("short-token"),
            "{e}"
        );
    }
}
