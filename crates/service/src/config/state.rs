//! `[state]`: where durable state lives: a SQLite file (`path`, the embedded
//! default) or a PostgreSQL database (`url`), exactly one of them.
//!
//! The URL's password is never written in the file: `url` is either a plain
//! `postgres://user@host/db` (the password then comes from `PGPASSWORD` or a
//! `~/.pgpass` file, as for `psql`), or a secret reference `{ env = "…" }` /
//! `{ file = "…" }` holding the whole URL.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::{BridgeConfig, ConfigError, SecretRef};

/// `state.url`: written in the file (no password), or read from a secret.
#[derive(Debug, Clone)]
pub enum StateUrl {
    Plain(String),
    Secret(SecretRef),
}

impl<'de> Deserialize<'de> for StateUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A string is the URL; a table is a secret reference (which refuses
        // anything but `env` or `file`).
        match toml::Value::deserialize(d)? {
            toml::Value::String(url) => Ok(StateUrl::Plain(url)),
            table @ toml::Value::Table(_) => SecretRef::deserialize(table)
                .map(StateUrl::Secret)
                .map_err(de::Error::custom),
            _ => Err(de::Error::custom(
                "give a postgres:// URL (without its password), or { env = \"VARIABLE\" } / \
                 { file = \"path\" } holding the whole URL",
            )),
        }
    }
}

/// Where the state lives, with its secret read.
#[derive(Clone, PartialEq, Eq)]
pub enum StateTarget {
    /// A SQLite file, resolved against the config's folder.
    Sqlite(PathBuf),
    /// A PostgreSQL URL; it may hold a password: never print it (its
    /// `Debug` and [`StateTarget::shown`] mask it).
    Postgres(String),
}

impl StateTarget {
    /// How messages name it: the file, or the URL with its password masked.
    pub fn shown(&self) -> String {
        match self {
            StateTarget::Sqlite(path) => path.display().to_string(),
            StateTarget::Postgres(url) => bridge_store::redact_url(url),
        }
    }
}

impl fmt::Debug for StateTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateTarget::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            StateTarget::Postgres(_) => f.debug_tuple("Postgres").field(&self.shown()).finish(),
        }
    }
}

/// What is wrong with a PostgreSQL URL, never quoting it.
fn url_problem(url: &str, in_file: bool) -> Option<String> {
    let parsed = match url::Url::parse(url.trim()) {
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => u,
        _ => {
            return Some(
                "not a PostgreSQL URL: give postgres://user@host:5432/database (see docs/operator/state.md)"
                    .into(),
            )
        }
    };
    let host_param = parsed
        .query_pairs()
        .any(|(k, v)| k == "host" && !v.is_empty());
    if parsed.host_str().is_none_or(str::is_empty) && !host_param {
        return Some(
            "the URL names no host: postgres://user@host:5432/database (or, for a local socket, \
             postgres:///database?host=/var/run/postgresql&user=bridge)"
                .into(),
        );
    }
    let has_password =
        parsed.password().is_some() || parsed.query_pairs().any(|(k, _)| k == "password");
    if in_file && has_password {
        return Some(
            "the URL holds a password, and a secret is never written in the file: give \
             url = { env = \"VARIABLE\" } (or { file = \"path\" }) holding the whole URL, or \
             leave the password out and set PGPASSWORD or a ~/.pgpass file"
                .into(),
        );
    }
    None
}

impl BridgeConfig {
    /// Where the state lives (secrets read), or `None` without a
    /// `[state]` section. Errors name the key and line, never the URL's
    /// password.
    pub fn state_target(&self) -> Result<Option<StateTarget>, ConfigError> {
        let Some(state) = &self.state else {
            return Ok(None);
        };
        match (&state.path, &state.url) {
            (Some(path), None) => Ok(Some(StateTarget::Sqlite(self.resolve(path)))),
            (None, Some(StateUrl::Plain(url))) => match url_problem(url, true) {
                Some(why) => Err(self.key_error_at("state.url", why)),
                None => Ok(Some(StateTarget::Postgres(url.trim().to_string()))),
            },
            (None, Some(StateUrl::Secret(secret))) => {
                let url = self.secret("state.url", secret)?;
                match url_problem(&url, false) {
                    Some(why) => {
                        Err(self.key_error_at("state.url", format!("the secret it names is {why}")))
                    }
                    None => Ok(Some(StateTarget::Postgres(url.trim().to_string()))),
                }
            }
            (Some(_), Some(_)) | (None, None) => Err(self.key_error_at(
                "state",
                "give exactly one of `path` (a SQLite file) or `url` (a PostgreSQL database)",
            )),
        }
    }

    /// Every problem of `[state]` for `bridge config check`: not exactly one
    /// of `path` or `url`; a path that is a folder or in a missing folder; a
    /// URL that is not PostgreSQL's or holds a password in the file; a URL
    /// secret that cannot be read.
    pub(crate) fn state_problems(&self) -> Vec<ConfigError> {
        let Some(state) = &self.state else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        if let (Some(path), None) = (&state.path, &state.url) {
            let path = self.resolve(path);
            if path.exists() && !path.is_file() {
                problems.push(self.key_error_at(
                    "state.path",
                    format!(
                        "{} is not a regular file (a folder or device); name the SQLite database file",
                        path.display()
                    ),
                ));
            } else if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    problems.push(self.key_error_at(
                        "state.path",
                        format!("folder {} does not exist", dir.display()),
                    ));
                }
            }
            return problems;
        }
        if let Some(StateUrl::Secret(secret)) = &state.url {
            if state.path.is_none() && self.check_secret("state.url", secret).is_err() {
                // Reported with every other unreadable secret.
                return problems;
            }
        }
        if let Err(e) = self.state_target() {
            problems.push(e);
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    const REST: &str = "[primero]\nbase_url = \"http://127.0.0.1:1\"\nuser_name = \"u\"\npassword = { env = \"X\" }\n[jobs]\ndir = \"d\"\nmappings = \"m\"\n";

    fn write(dir: &Path, state: &str) -> PathBuf {
        let file = dir.join("bridge.toml");
        std::fs::write(&file, format!("[state]\n{state}\n{REST}")).unwrap();
        file
    }

    fn problems(c: &BridgeConfig) -> Vec<String> {
        c.state_problems().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_plain_url_selects_postgresql_and_a_path_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let c = BridgeConfig::load(&write(
            dir.path(),
            "url = \"postgres://bridge@db.example:5432/bridge?sslmode=require\"",
        ))
        .unwrap();
        assert_eq!(
            c.state_target().unwrap(),
            Some(StateTarget::Postgres(
                "postgres://bridge@db.example:5432/bridge?sslmode=require".into()
            ))
        );
        assert!(problems(&c).is_empty());
        let c = BridgeConfig::load(&write(dir.path(), "path = \"state.db\"")).unwrap();
        assert_eq!(
            c.state_target().unwrap(),
            Some(StateTarget::Sqlite(dir.path().join("state.db")))
        );
    }

    #[test]
    fn a_password_in_the_file_is_refused_at_its_line_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        for url in [
            "postgres://bridge:CANARY-pw@db/bridge",
            "postgres://bridge@db/bridge?password=CANARY-pw",
        ] {
            let c = BridgeConfig::load(&write(dir.path(), &format!("url = \"{url}\""))).unwrap();
            let p = problems(&c);
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(p[0].contains(":2: key `state.url`"), "{p:?}");
            assert!(p[0].contains("PGPASSWORD"), "{p:?}");
            assert!(!p[0].contains("CANARY"), "{p:?}");
            assert!(!c.state_target().unwrap_err().to_string().contains("CANARY"));
        }
    }

    #[test]
    fn a_url_from_a_secret_may_hold_the_password_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("state-url");
        std::fs::write(&secret, "postgres://bridge:CANARY-pw@db:5432/bridge\n").unwrap();
        let c = BridgeConfig::load(&write(dir.path(), "url = { file = \"state-url\" }")).unwrap();
        let target = c.state_target().unwrap().unwrap();
        assert_eq!(
            target,
            StateTarget::Postgres("postgres://bridge:CANARY-pw@db:5432/bridge".into())
        );
        assert_eq!(target.shown(), "postgres://bridge:***@db:5432/bridge");
        assert!(!format!("{target:?}").contains("CANARY"));
        assert!(problems(&c).is_empty());
        assert!(c.secret_refs().iter().any(|(k, _)| *k == "state.url"));
        // A secret that is not a PostgreSQL URL: named, not quoted.
        std::fs::write(&secret, "mysql://root:CANARY-pw@db/x").unwrap();
        let p = problems(&c);
        assert!(p.len() == 1 && p[0].contains("key `state.url`"), "{p:?}");
        assert!(!p[0].contains("CANARY"), "{p:?}");
        // Unreadable: left to the check of every secret (reported once).
        std::fs::remove_file(&secret).unwrap();
        assert!(problems(&c).is_empty());
        assert!(c
            .check_secret(
                "state.url",
                match &c.state.as_ref().unwrap().url {
                    Some(StateUrl::Secret(s)) => s,
                    _ => unreachable!(),
                }
            )
            .is_err());
    }

    #[test]
    fn exactly_one_of_path_and_url() {
        let dir = tempfile::tempdir().unwrap();
        for state in [
            "path = \"state.db\"\nurl = \"postgres://bridge@db/bridge\"",
            "",
        ] {
            let c = BridgeConfig::load(&write(dir.path(), state)).unwrap();
            let p = problems(&c);
            assert!(
                p.len() == 1 && p[0].contains(":1: key `state`") && p[0].contains("exactly one"),
                "{p:?}"
            );
        }
        let c = BridgeConfig::load(&write(
            dir.path(),
            "url = \"postgres:///bridge?host=/var/run/postgresql&user=bridge\"",
        ))
        .unwrap();
        assert!(problems(&c).is_empty(), "a local socket is a host");
        for url in ["\"https://db/bridge\"", "\"postgres:///bridge\"", "42"] {
            let text = format!("url = {url}");
            let e = BridgeConfig::load(&write(dir.path(), &text))
                .map(|c| problems(&c).join("; "))
                .unwrap_or_else(|e| e.to_string());
            assert!(
                e.contains("state.url") || e.contains("line 2"),
                "{url}: {e}"
            );
            assert!(!e.is_empty(), "{url}");
        }
    }
}
