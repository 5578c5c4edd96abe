//! Connection settings for one Primero instance, and how the client authenticates.

use std::fmt;
use std::time::Duration;

use crate::limits::PartnerLimits;
use crate::retry::RetryPolicy;

/// Primero's documented token lifetime.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// How the client authenticates.
#[derive(Clone)]
pub enum PrimeroAuth {
    /// `Authorization: Basic` on every call (no session, no expiry, exempt
    /// from CSRF). Works on every Primero v2 version.
    Basic { user_name: String, password: String },
    /// Primero v2.10 and older: log in at `POST /api/v2/tokens`, take the JWT
    /// from the `Authorization` answer header and send it as `Bearer`.
    /// v2.11 and later have no tokens (the login opens a cookie session).
    V210Token { user_name: String, password: String },
}

impl PrimeroAuth {
    pub fn user_name(&self) -> &str {
        match self {
            PrimeroAuth::Basic { user_name, .. } | PrimeroAuth::V210Token { user_name, .. } => {
                user_name
            }
        }
    }
}

// Hand-written so a logged config never shows the password.
impl fmt::Debug for PrimeroAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, user_name) = match self {
            PrimeroAuth::Basic { user_name, .. } => ("Basic", user_name),
            PrimeroAuth::V210Token { user_name, .. } => ("V210Token", user_name),
        };
        f.debug_struct(name)
            .field("user_name", user_name)
            .field("password", &"***")
            .finish()
    }
}

/// Connection settings for one Primero instance.
#[derive(Debug, Clone)]
pub struct PrimeroConfig {
    /// Instance root, e.g. `https://cpims.example.org` (the client adds `/api/v2/…`).
    pub base_url: String,
    pub auth: PrimeroAuth,
    /// Per-request timeout.
    pub timeout: Duration,
    /// How long a token from `POST /api/v2/tokens` lives when its JWT does
    /// not say (`exp` − `iat`); v2.10 token mode only.
    pub token_lifetime: Duration,
    /// Retry of one call inside a run (default on).
    pub retry: RetryPolicy,
    /// Calls in flight and call rate towards this instance.
    pub limits: PartnerLimits,
}

impl PrimeroConfig {
    /// Defaults: 30 s timeout, 60 min token lifetime, default retry and limits.
    pub fn new(base_url: impl Into<String>, auth: PrimeroAuth) -> Self {
        Self {
            base_url: base_url.into(),
            auth,
            timeout: Duration::from_secs(30),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            retry: RetryPolicy::default(),
            limits: PartnerLimits::default(),
        }
    }
}

/// A configuration the client cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum PrimeroConfigError {
    #[error("Primero base_url is not a valid http(s) URL")]
    BaseUrl,
    #[error("Primero credentials cannot be sent as an HTTP header")]
    Credentials,
    #[error("HTTP client could not be built")]
    Http,
}

/// How long before expiry a token is replaced: 10 % of its lifetime or
/// 5 minutes, whichever is smaller.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(5 * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_password() {
        let auth = PrimeroAuth::V210Token {
            user_name: "api".into(),
            password: "s3cret-pw".into(),
        };
        let config = PrimeroConfig::new("http://127.0.0.1:1", auth);
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret-pw"), "{printed}");
        assert!(printed.contains("***"));
    }

    #[test]
    fn refresh_margin_is_smaller_of_ten_percent_and_five_minutes() {
        assert_eq!(
            refresh_margin(DEFAULT_TOKEN_LIFETIME),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(600)),
            Duration::from_secs(60)
        );
    }
}
