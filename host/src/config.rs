//! `bridge.toml`: where the partners are, how to authenticate, which jobs and
//! mappings to serve. Credentials are never in the file itself: each is named
//! by an environment variable (`*_env`) or a file path (`*_file`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::connectors::ping::{PingConfig, DEFAULT_SCOPE};
use crate::connectors::primero::{PrimeroAuth, PrimeroConfig};
use crate::mappings::Deployment;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
    #[error("{file}: key `{key}`: {message}")]
    Key {
        file: PathBuf,
        key: String,
        message: String,
    },
}

/// A secret named in the config: the value comes from the environment or a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimeroSection {
    pub base_url: String,
    /// `basic` or `token`.
    #[serde(default = "default_auth")]
    pub auth: String,
    pub user_name: String,
    pub password: SecretRef,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_auth() -> String {
    "basic".into()
}

fn default_timeout() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingSection {
    pub base_url: String,
    pub token_url: String,
    pub username: String,
    pub password: SecretRef,
    pub client_id: String,
    #[serde(default)]
    pub scope: Option<String>,
    pub subscription_key: SecretRef,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    /// Folder of built job components (`<job>.wasm`).
    pub dir: PathBuf,
    /// The country mapping folder.
    pub mappings: PathBuf,
    /// Per-call time limit of a job.
    #[serde(default)]
    pub call_timeout_ms: Option<u64>,
    /// Per-instance memory cap of a job.
    #[serde(default)]
    pub memory_mib: Option<usize>,
}

/// Where durable state lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// SQLite database file (cursors, deliveries, inbox).
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Durable state; without it state is kept in memory for this process only.
    pub state: Option<StateSection>,
    pub primero: PrimeroSection,
    pub ping: Option<PingSection>,
    pub jobs: JobsSection,
    /// Where the file was read from; relative paths resolve against its folder.
    #[serde(skip)]
    pub file: PathBuf,
}

impl BridgeConfig {
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Invalid {
            file: file.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        let mut config: BridgeConfig = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            ConfigError::Invalid {
                file: file.to_path_buf(),
                message: match line {
                    Some(l) => format!("line {l}: {}", e.message().trim()),
                    None => e.message().trim().to_string(),
                },
            }
        })?;
        config.file = file.to_path_buf();
        Ok(config)
    }

    /// A path from the config, relative to the config file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.file
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join(path)
        }
    }

    fn secret(&self, key: &str, secret: &SecretRef) -> Result<String, ConfigError> {
        let err = |message: String| ConfigError::Key {
            file: self.file.clone(),
            key: key.to_string(),
            message,
        };
        match (&secret.env, &secret.file) {
            (Some(var), None) => std::env::var(var)
                .map_err(|_| err(format!("environment variable {var} is not set"))),
            (None, Some(path)) => std::fs::read_to_string(self.resolve(path))
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| err(format!("cannot read secret file {}: {e}", path.display()))),
            _ => Err(err("give exactly one of `env` or `file`".into())),
        }
    }

    pub fn primero_client_config(&self) -> Result<PrimeroConfig, ConfigError> {
        let s = &self.primero;
        let password = self.secret("primero.password", &s.password)?;
        let user_name = s.user_name.clone();
        let auth = match s.auth.as_str() {
            "basic" => PrimeroAuth::Basic {
                user_name,
                password,
            },
            "token" => PrimeroAuth::Token {
                user_name,
                password,
            },
            other => {
                return Err(ConfigError::Key {
                    file: self.file.clone(),
                    key: "primero.auth".into(),
                    message: format!("`{other}` is not an auth mode: use \"basic\" or \"token\""),
                })
            }
        };
        let mut config = PrimeroConfig::new(&s.base_url, auth);
        config.timeout = Duration::from_secs(s.timeout_secs);
        Ok(config)
    }

    /// PING client settings; partner and interop ids come from the deployment.
    pub fn ping_client_config(&self, deployment: &Deployment) -> Result<PingConfig, ConfigError> {
        let s = self.ping.as_ref().ok_or_else(|| ConfigError::Key {
            file: self.file.clone(),
            key: "ping".into(),
            message: "this flow needs a [ping] section".into(),
        })?;
        let missing = |key: &str| ConfigError::Key {
            file: self.file.clone(),
            key: format!("deployment.{key}"),
            message: format!(
                "the mapping folder's deployment.toml must set {key} for the PING design"
            ),
        };
        Ok(PingConfig {
            base_url: s.base_url.clone(),
            token_url: s.token_url.clone(),
            username: s.username.clone(),
            password: self.secret("ping.password", &s.password)?,
            client_id: s.client_id.clone(),
            scope: s.scope.clone().unwrap_or_else(|| DEFAULT_SCOPE.to_string()),
            subscription_key: self.secret("ping.subscription_key", &s.subscription_key)?,
            partner_id: deployment
                .partner_id
                .clone()
                .ok_or_else(|| missing("partner_id"))?,
            interop_id: deployment
                .interop_id
                .clone()
                .ok_or_else(|| missing("interop_id"))?,
            timeout: Duration::from_secs(s.timeout_secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_and_missing_secret_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bridge.toml");
        std::fs::write(
            &file,
            "[primero]\nbase_url = \"http://127.0.0.1:1\"\nuser_name = \"u\"\npassword = { env = \"BRIDGE_TEST_NO_SUCH_VAR\" }\npasword = 1\n[jobs]\ndir = \"d\"\nmappings = \"m\"\n",
        )
        .unwrap();
        let e = BridgeConfig::load(&file).unwrap_err().to_string();
        assert!(e.contains("line 5") && e.contains("pasword"), "{e}");

        std::fs::write(
            &file,
            "[primero]\nbase_url = \"http://127.0.0.1:1\"\nuser_name = \"u\"\npassword = { env = \"BRIDGE_TEST_NO_SUCH_VAR\" }\n[jobs]\ndir = \"d\"\nmappings = \"m\"\n",
        )
        .unwrap();
        let c = BridgeConfig::load(&file).unwrap();
        let e = c.primero_client_config().unwrap_err().to_string();
        assert!(
            e.contains("primero.password") && e.contains("BRIDGE_TEST_NO_SUCH_VAR"),
            "{e}"
        );
        assert_eq!(c.resolve(Path::new("d")), dir.path().join("d"));
    }
}
