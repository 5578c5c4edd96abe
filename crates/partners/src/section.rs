//! What every partner's config section shares: secrets named in the file,
//! the errors a section's validation and build give (a key and a message;
//! the config layer adds the file and line), and the call limits.
//!
//! Each partner validates its own section in one place (`validate`, pure: no
//! I/O, no secrets) that `bridge config check` and `bridge doctor` reuse, then
//! builds its client from it (`build`, which reads the secrets).

use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::PartnerLimits;

/// A problem with one key of a section: what is wrong, never a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SectionError {
    /// Dotted, from the file's root: `ping.rate_per_sec`.
    pub key: String,
    pub message: String,
}

impl SectionError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Reads what a section names: secrets, and files relative to the config.
/// The config layer implements it; a section never reads the environment
/// or the disk itself.
pub trait Resolve {
    /// The secret's value; the error names the key and where it was looked
    /// for, never the value.
    fn secret(&self, key: &str, secret: &SecretRef) -> Result<String, SectionError>;
    /// A file's bytes (certificates, keys).
    fn file(&self, key: &str, path: &Path) -> Result<Vec<u8>, SectionError>;
}

/// A secret named in the config: the value comes from the environment or a
/// file. Deserializing refuses a value written in the file without quoting it.
#[derive(Debug, Clone)]
pub struct SecretRef {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// What every refusal of a secret written in the file says: where to put it
/// instead. It names neither the value nor its type's rendering of it.
const INLINE_SECRET: &str =
    "a secret is never written in the file: give { env = \"VARIABLE\" } or { file = \"path\" }";

impl<'de> serde::Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretRefVisitor)
    }
}

struct SecretRefVisitor;

impl SecretRefVisitor {
    fn inline<E: de::Error>(self) -> Result<SecretRef, E> {
        Err(E::custom(INLINE_SECRET))
    }
}

/// Every value that is not a table is refused with [`INLINE_SECRET`]: serde's
/// own message ("invalid type: string \"…\"") would quote it.
impl<'de> Visitor<'de> for SecretRefVisitor {
    type Value = SecretRef;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("{ env = \"VARIABLE\" } or { file = \"path\" }")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
        self.inline()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretRef, E> {
        self.inline()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretRef, E> {
        self.inline()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretRef, E> {
        self.inline()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretRef, E> {
        self.inline()
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<SecretRef, A::Error> {
        self.inline()
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
        let mut secret = SecretRef {
            env: None,
            file: None,
        };
        while let Some(key) = map.next_key::<String>()? {
            // A value of the wrong type is refused without quoting it.
            let value = map
                .next_value::<toml::Value>()
                .map_err(|_| de::Error::custom(INLINE_SECRET))?;
            let text = match value {
                toml::Value::String(s) => s,
                _ => {
                    return Err(de::Error::custom(format!(
                        "`{key}` must be a string (a variable name or a path)"
                    )))
                }
            };
            match key.as_str() {
                "env" => secret.env = Some(text),
                "file" => secret.file = Some(text.into()),
                _ => return Err(de::Error::unknown_field(&key, &["env", "file"])),
            }
        }
        Ok(secret)
    }
}

/// Per-request timeout of a section that sets none.
pub fn default_timeout_secs() -> u64 {
    30
}

/// A section's `max_in_flight` / `rate_per_sec` over the clients' defaults.
pub fn limits(max_in_flight: Option<usize>, rate_per_sec: Option<f64>) -> PartnerLimits {
    let default = PartnerLimits::default();
    PartnerLimits {
        max_in_flight: max_in_flight.unwrap_or(default.max_in_flight).max(1),
        rate_per_sec: rate_per_sec.or(default.rate_per_sec),
    }
}

/// The problem of a URL key, if any: it must be an absolute http(s) URL
/// with a host. Caught when the config is checked rather than on the first
/// call of the first run.
pub fn url_problem(key: &str, value: &str) -> Option<SectionError> {
    let problem = |why: String| Some(SectionError::new(key, why));
    match url::Url::parse(value.trim()) {
        Err(e) => problem(format!("`{value}` is not a URL ({e})")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => problem(format!(
            "`{value}` must start with https:// (or http:// for a simulator)"
        )),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => {
            problem(format!("`{value}` names no host"))
        }
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            problem("credentials do not belong in a URL: give them in their own keys".to_string())
        }
        Ok(_) => None,
    }
}

/// The problems of a section's `max_in_flight` / `rate_per_sec`.
pub fn limit_problems(
    section: &str,
    max_in_flight: Option<usize>,
    rate_per_sec: Option<f64>,
) -> Vec<SectionError> {
    let mut problems = Vec::new();
    if max_in_flight == Some(0) {
        problems.push(SectionError::new(
            format!("{section}.max_in_flight"),
            "must be at least 1",
        ));
    }
    if rate_per_sec.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        problems.push(SectionError::new(
            format!("{section}.rate_per_sec"),
            "must be a number greater than 0",
        ));
    }
    problems
}

#[cfg(test)]
mod url_tests {
    use super::url_problem;

    #[test]
    fn urls_are_checked_before_the_first_call() {
        assert!(url_problem("primero.base_url", "https://primero.example.org").is_none());
        assert!(url_problem("primero.base_url", "http://127.0.0.1:8081/").is_none());
        for bad in [
            "primero.example.org",
            "ftp://x.org",
            "https://",
            "not a url",
            "https://u:p@x.org",
        ] {
            let e = url_problem("primero.base_url", bad).unwrap_or_else(|| panic!("{bad} passed"));
            assert_eq!(e.key, "primero.base_url");
            assert!(
                !e.message.contains(":p@"),
                "a password was echoed: {}",
                e.message
            );
        }
    }
}
