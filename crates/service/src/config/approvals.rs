//! `[jobs] require_approved` and `[jobs] approvals`: load only job
//! components an auditor approved (see bridge_runtime::approvals).

use bridge_runtime::{ApprovalGate, Approvals};

use super::{BridgeConfig, ConfigError};

impl BridgeConfig {
    /// Problems of the approval settings: required without a file, or a
    /// file that cannot be read or does not validate (its own file, line
    /// and key in the message).
    pub fn approval_problems(&self) -> Vec<ConfigError> {
        match (&self.jobs.approvals, self.jobs.require_approved) {
            (None, true) => vec![self.key_error_at(
                "jobs.require_approved",
                "needs the approvals file: set `approvals = \"approvals.toml\"` in [jobs] (written by `bridge job approve`)",
            )],
            (Some(path), _) => match Approvals::load(&self.resolve(path)) {
                Ok(_) => Vec::new(),
                Err(e) => vec![self.key_error_at("jobs.approvals", e.to_string())],
            },
            (None, false) => Vec::new(),
        }
    }

    /// The gate the job runtime loads through, when approvals are required.
    pub fn approval_gate(&self) -> Result<Option<ApprovalGate>, ConfigError> {
        if !self.jobs.require_approved {
            return Ok(None);
        }
        if let Some(e) = self.approval_problems().into_iter().next() {
            return Err(e);
        }
        let path = self.jobs.approvals.as_ref().map(|p| self.resolve(p));
        let path = path.expect("checked by approval_problems");
        ApprovalGate::open(&path)
            .map(Some)
            .map_err(|e| self.key_error_at("jobs.approvals", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = "[primero]\nbase_url = \"http://127.0.0.1:1\"\nuser_name = \"u\"\npassword = { env = \"X\" }\n[jobs]\ndir = \"d\"\nmappings = \"m\"\n";
    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn load(dir: &Path, jobs_extra: &str) -> BridgeConfig {
        let file = dir.join("bridge.toml");
        std::fs::write(
            &file,
            BASE.replace("[jobs]\n", &format!("[jobs]\n{jobs_extra}")),
        )
        .unwrap();
        BridgeConfig::load(&file).unwrap()
    }

    #[test]
    fn off_by_default_and_on_only_with_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(dir.path(), "");
        assert!(!c.jobs.require_approved && c.approval_problems().is_empty());
        assert!(c.approval_gate().unwrap().is_none());

        let c = load(dir.path(), "require_approved = true\n");
        let e = c.approval_gate().unwrap_err().to_string();
        assert!(
            e.contains("bridge.toml:6: key `jobs.require_approved`") && e.contains("approvals"),
            "{e}"
        );
        assert_eq!(
            c.service_problems().len(),
            1,
            "`bridge config check` reports it"
        );

        let c = load(
            dir.path(),
            "require_approved = true\napprovals = \"approvals.toml\"\n",
        );
        let e = c.approval_gate().unwrap_err().to_string();
        assert!(
            e.contains("key `jobs.approvals`") && e.contains("cannot read"),
            "{e}"
        );

        std::fs::write(
            dir.path().join("approvals.toml"),
            format!("[[approved]]\nsha256 = \"{HASH}\"\njob = \"j\"\n"),
        )
        .unwrap();
        let e = c.approval_gate().unwrap_err().to_string();
        assert!(
            e.contains("bridge.toml:7: key `jobs.approvals`: approvals file")
                || e.contains("approvals.toml"),
            "{e}"
        );
        assert!(e.contains("version"), "names the missing key: {e}");

        std::fs::write(dir.path().join("approvals.toml"), "# none yet\n").unwrap();
        let gate = c.approval_gate().unwrap().expect("required");
        assert!(gate.check(HASH).unwrap_err().contains(HASH));
        assert_eq!(gate.file(), dir.path().join("approvals.toml"));
    }
}
