//! Settings of one simulated Primero instance, and which version's login it plays.

use std::time::Duration;

use super::role::SimRole;

/// Which Primero's login the simulator plays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SimPrimeroVersion {
    /// Up to v2.10: `POST /api/v2/tokens` answers `{id, user_name, token}`
    /// and the JWT (`iat`/`exp`, `token_ttl`) in the `Authorization` header
    /// (devise-jwt); Bearer and Basic are accepted.
    V2_10,
    /// v2.11 and later: no tokens. The login answers `{id, user_name,
    /// group_permission}` with a session cookie (writes through it need the
    /// CSRF token); Bearer is refused, Basic accepted (and exempt from CSRF).
    #[default]
    V2_11,
}

/// Settings of one simulated Primero instance.
#[derive(Clone)]
pub struct PrimeroSimConfig {
    /// The API user: the only account that can log in.
    pub user_name: String,
    pub password: String,
    /// Lifetime of a bearer token from `POST /api/v2/tokens`.
    pub token_ttl: Duration,
    /// Cap on `per`; larger values are silently lowered, as Primero does.
    pub max_per: usize,
    /// The Primero version whose login and auth rules apply.
    pub version: SimPrimeroVersion,
    /// The API user's role: what it may read (filter on), write, and which
    /// referrals it sees. Changed at run time with [`PrimeroSim::set_role`](super::PrimeroSim::set_role).
    pub role: SimRole,
}

impl Default for PrimeroSimConfig {
    fn default() -> Self {
        Self {
            user_name: "bridge_api".to_string(),
            password: "sim-password".to_string(),
            token_ttl: Duration::from_secs(60 * 60),
            max_per: 1000,
            version: SimPrimeroVersion::default(),
            role: SimRole::default(),
        }
    }
}

// Hand-written so a logged config never shows the password.
impl std::fmt::Debug for PrimeroSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrimeroSimConfig")
            .field("user_name", &self.user_name)
            .field("password", &"***")
            .field("token_ttl", &self.token_ttl)
            .field("max_per", &self.max_per)
            .field("version", &self.version)
            .field("role", &self.role)
            .finish()
    }
}
