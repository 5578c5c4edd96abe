//! Logs and metrics: what an operator sees of a running bridge.
//!
//! - [`logging`]: tracing output on stderr, human or JSON, through one layer
//!   that keeps only allow-listed fields ([`ALLOWED_FIELDS`]) — for event
//!   fields, span fields and the fields jobs log through the WIT `log` import.
//! - [`metrics`]: one process-wide Prometheus registry ([`metrics()`]).
//! - [`http`]: `/metrics`, `/healthz` and `/readyz` for `bridge run`.
//!
//! # The allow-list
//!
//! Logs carry system ids, codes, statuses and counts, never personal data
//! (names, dates of birth, phone numbers, addresses, free text from a case).
//! Rather than trusting every call site, the log layer drops every field
//! whose name is not in [`ALLOWED_FIELDS`]; the dropped field leaves no trace
//! on the line. The event message (the text of the macro call, written by our
//! own code) is always kept.
//!
//! Each entry says who may use it:
//! - [`FieldScope::Any`]: ids, codes, statuses and counts. Host code and jobs.
//! - [`FieldScope::Host`]: text our own host code composes (error chains whose
//!   partner text the connectors already scrubbed, file paths, hashes, socket
//!   addresses). A job cannot use these keys: a job's value would be free text
//!   we did not write.
//!
//! To log a new field, add it here with its scope; a test in
//! `host/tests/telemetry.rs` fails for a forbidden field that shows up.

pub mod http;
pub mod logging;
pub mod metrics;
pub mod reach;

pub use logging::{init, make_layer, LogFormat};
pub use metrics::{metrics, Metrics};

/// Who may log a field (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldScope {
    /// Ids, codes, statuses, counts: host code and jobs.
    Any,
    /// Text composed by host code only; dropped when a job sends it.
    Host,
}

/// One allow-listed log field name.
#[derive(Debug, Clone, Copy)]
pub struct AllowedField {
    pub name: &'static str,
    pub scope: FieldScope,
}

const fn any(name: &'static str) -> AllowedField {
    AllowedField {
        name,
        scope: FieldScope::Any,
    }
}

const fn host(name: &'static str) -> AllowedField {
    AllowedField {
        name,
        scope: FieldScope::Host,
    }
}

/// The single allow-list of log field names (events, spans and job logs).
///
/// The message of an event is not a field and is always kept.
pub const ALLOWED_FIELDS: &[AllowedField] = &[
    // Correlation: span fields that every line inside a run carries.
    any("flow"),
    any("run"),
    any("run_id"),
    any("record"),
    any("record_id"),
    any("case"),
    any("case_id"),
    any("receipt"),
    any("job"),
    any("trigger"),
    // Replicas: this process's id, a lease's name, its holder and token.
    host("replica"),
    host("lease"),
    host("owner"),
    host("lease_token"),
    // Partner-system ids (Primero, proGres, DTP).
    any("service"),
    any("service_id"),
    any("referral"),
    any("referral_id"),
    any("intervention_id"),
    any("transaction"),
    any("transaction_id"),
    any("target"),
    any("shipping_process"),
    // Codes and statuses.
    any("status"),
    any("code"),
    any("outcome"),
    any("kind"),
    any("notification"),
    any("notified"),
    any("acknowledged"),
    any("held"),
    // Which inbox API key authenticated a message: its configured id.
    host("key_id"),
    any("more"),
    any("replay"),
    any("endpoint"),
    any("method"),
    any("system"),
    any("design"),
    any("version"),
    any("from_cache"),
    any("table"),
    any("field"),
    any("cursor"),
    // Counts, indexes and durations.
    any("count"),
    any("index"),
    any("attempt"),
    any("page"),
    any("rows"),
    any("records"),
    any("pending"),
    any("messages"),
    any("listed"),
    any("decided"),
    any("synced"),
    any("cases"),
    any("users"),
    any("fetched"),
    any("created"),
    any("updated"),
    any("already_present"),
    any("already_sent"),
    any("sent"),
    any("skipped"),
    any("failed"),
    any("failures"),
    any("delivered"),
    any("dead_lettered"),
    any("dropped"),
    any("flows"),
    any("runs"),
    any("running"),
    any("stopped"),
    any("bytes"),
    any("expires_in"),
    any("delay_ms"),
    any("elapsed_ms"),
    any("load_ms"),
    any("duration_ms"),
    any("held_runs"),
    any("max_held_runs"),
    // Host-composed text.
    host("error"),
    host("reason"),
    host("fields"),
    host("path"),
    host("artifact"),
    host("addr"),
    host("from"),
    host("to"),
    // A job component's SHA-256, and whether the approvals file lists it.
    host("hash"),
    host("approved"),
    // What resolves a held record (a fixed text per reason code).
    host("resolve"),
    // The operator console: the account (a staff login name from
    // bridge.toml, never a child's data), what it did, and to which entry.
    host("account"),
    host("action"),
    any("role"),
    any("dead_letter"),
];

/// Whether host code may log a field of this name.
pub fn is_allowed(name: &str) -> bool {
    ALLOWED_FIELDS.iter().any(|f| f.name == name)
}

/// Whether a job may log a field of this name.
pub fn is_allowed_for_job(name: &str) -> bool {
    ALLOWED_FIELDS
        .iter()
        .any(|f| f.name == name && f.scope == FieldScope::Any)
}

/// Longest job log value kept, in characters.
pub const JOB_VALUE_MAX_CHARS: usize = 100;

/// Job log fields, scrubbed: the allow-listed pairs as `k=v k=v` (values cut
/// to [`JOB_VALUE_MAX_CHARS`]) and how many pairs were dropped.
pub fn scrub_job_fields(fields: &[(String, String)]) -> (String, usize) {
    let mut kept = Vec::new();
    let mut dropped = 0;
    for (k, v) in fields {
        if is_allowed_for_job(k) {
            let v: String = v.chars().take(JOB_VALUE_MAX_CHARS).collect();
            kept.push(format!("{k}={v}"));
        } else {
            dropped += 1;
        }
    }
    (kept.join(" "), dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_has_no_duplicates_and_no_personal_data_names() {
        let mut names: Vec<_> = ALLOWED_FIELDS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate allow-list entry");
        for forbidden in [
            "name",
            "given_name",
            "family_name",
            "date_of_birth",
            "dob",
            "phone",
            "address",
            "notes",
            "body",
            "payload",
        ] {
            assert!(!is_allowed(forbidden), "{forbidden} is allow-listed");
        }
    }

    #[test]
    fn job_fields_keep_ids_and_drop_the_rest() {
        let fields = vec![
            ("intervention_id".to_string(), "abc".to_string()),
            ("name".to_string(), "Someone".to_string()),
            ("error".to_string(), "free text".to_string()),
            ("status".to_string(), "x".repeat(150)),
        ];
        let (kept, dropped) = scrub_job_fields(&fields);
        assert_eq!(
            kept,
            format!("intervention_id=abc status={}", "x".repeat(100))
        );
        assert_eq!(dropped, 2);
        assert!(is_allowed("error") && !is_allowed_for_job("error"));
    }

    #[test]
    fn every_field_jobs_log_today_is_kept() {
        // Keys used by jobs/*/index.js (grep `log(`).
        for k in [
            "case_id",
            "service_id",
            "referral_id",
            "intervention_id",
            "status",
            // Kept from the earlier job allow-list.
            "record_id",
            "transaction_id",
            "code",
            "table",
            "field",
            "count",
        ] {
            assert!(is_allowed_for_job(k), "{k}");
        }
    }
}
