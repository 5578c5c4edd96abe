//! The flows' side of the audit trail (issue 16): one entry per record
//! shared (either direction), refused for lack of consent, or whose case
//! lost consent after a share, with who permitted it, on what consent, and
//! the job and mapping versions that made it. Ids and codes only. The chain
//! itself is the store's ([`bridge_store::audit`]).

use std::sync::Arc;

use bridge_runtime::JobInstance;

use crate::group_commit::GroupCommit;
use bridge_store::{AuditEntry, AuditEvent, ConsentBasis, Store};
use serde_json::Value;

use crate::report::RecordOutcome;

/// What an entry says of a record besides its outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Share {
    /// The Primero case record id.
    pub case_id: Option<String>,
    /// Who permitted the share: a Primero user name, or a proGres user id.
    pub permitted_by: Option<String>,
    pub consent: Option<ConsentBasis>,
}

impl Share {
    pub fn new(
        case_id: Option<String>,
        permitted_by: Option<String>,
        consent: ConsentBasis,
    ) -> Self {
        Self {
            case_id,
            permitted_by,
            consent: Some(consent),
        }
    }
}

/// The proGres user who permitted an inbound share, where the record names
/// one: the intervention's business owner (referrals) or its reviewer
/// (decisions), both system user ids.
/// Looked for in the record and in the objects it holds (a job's input
/// bundles the proGres rows).
pub fn progres_user(record: &Value) -> Option<String> {
    let own = |v: &Value| {
        ["progres_businessowner", "progres_reviewby"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str))
            .filter(|id| !id.is_empty())
            .map(str::to_string)
    };
    own(record).or_else(|| record.as_object()?.values().find_map(own))
}

/// The run's job and mapping versions, as every entry of the run names them.
#[derive(Debug, Clone)]
pub struct AuditContext {
    flow: String,
    run_id: String,
    job: String,
    job_version: String,
    job_hash: String,
    mappings_hash: String,
    /// Dry runs share nothing and record nothing.
    enabled: bool,
    /// The run's records finishing together share a commit.
    commits: Arc<GroupCommit<AuditEntry>>,
}

impl AuditContext {
    pub fn new(flow: &str, run_id: &str, instance: &JobInstance, dry_run: bool) -> Self {
        let job = instance.job();
        Self {
            flow: flow.to_string(),
            run_id: run_id.to_string(),
            job: job.name.clone(),
            job_version: job.info.version.clone(),
            job_hash: job.content_hash.clone(),
            mappings_hash: instance
                .mapping_set()
                .map(|m| m.content_hash.clone())
                .unwrap_or_default(),
            enabled: !dry_run,
            commits: Arc::default(),
        }
    }

    /// The entry `outcome` makes, if it is a share, a refusal on consent or
    /// a revocation. A record already shared by an earlier run makes none.
    pub fn entry(
        &self,
        source_id: &str,
        outcome: &RecordOutcome,
        share: &Share,
    ) -> Option<AuditEntry> {
        let event = match outcome {
            RecordOutcome::Sent { .. }
            | RecordOutcome::Created { .. }
            | RecordOutcome::Updated { .. } => AuditEvent::Delivered,
            RecordOutcome::NoConsent { .. } => AuditEvent::RefusedNoConsent,
            RecordOutcome::ConsentRevoked { .. } => AuditEvent::ConsentRevoked,
            _ => return None,
        };
        let consent = match event {
            AuditEvent::Delivered => share.consent.unwrap_or(ConsentBasis::NotTransmitted),
            _ => ConsentBasis::Absent,
        };
        Some(AuditEntry {
            at: bridge_store::now(),
            flow: self.flow.clone(),
            run_id: self.run_id.clone(),
            event: event.as_str().to_string(),
            source_id: source_id.to_string(),
            target_id: outcome.target_id().map(str::to_string),
            // A case written in Primero is the case of the share.
            case_id: share.case_id.clone().or_else(|| match outcome {
                RecordOutcome::Created { case_id } | RecordOutcome::Updated { case_id } => {
                    Some(case_id.clone())
                }
                _ => None,
            }),
            permitted_by: share.permitted_by.clone(),
            consent: consent.as_str().to_string(),
            job: self.job.clone(),
            job_version: self.job_version.clone(),
            job_hash: self.job_hash.clone(),
            mappings_hash: self.mappings_hash.clone(),
        })
    }

    /// Append the entry `outcome` makes, if any. A failed append is logged
    /// (ids only) and counted by the store's monitor: the share happened,
    /// so the record's outcome stands.
    pub async fn record(
        &self,
        store: &dyn Store,
        source_id: &str,
        outcome: &RecordOutcome,
        share: &Share,
    ) {
        if !self.enabled {
            return;
        }
        let Some(entry) = self.entry(source_id, outcome, share) else {
            return;
        };
        self.append(store, vec![entry]).await;
    }

    /// The entry `outcome` makes, when the run records any (not a dry
    /// run): for a flow that appends it later ([`AuditContext::append`]).
    pub fn entry_to_append(
        &self,
        source_id: &str,
        outcome: &RecordOutcome,
        share: &Share,
    ) -> Option<AuditEntry> {
        self.enabled
            .then(|| self.entry(source_id, outcome, share))
            .flatten()
    }

    /// [`AuditContext::append`], returning how many entries were handed to
    /// the store (written, or failed and logged: either way done with).
    pub async fn append_counted(&self, store: &dyn Store, entries: Vec<AuditEntry>) -> usize {
        let n = entries.len();
        self.append(store, entries).await;
        n
    }

    /// Append entries, sharing a commit with the other records' entries
    /// appended at the same time; a failure is logged (ids only).
    pub async fn append(&self, store: &dyn Store, entries: Vec<AuditEntry>) {
        if entries.is_empty() {
            return;
        }
        let _ = self
            .commits
            .commit(entries, |batch| async move {
                store.audit_append(&batch).await.map_err(|e| {
                    for entry in &batch {
                        tracing::error!(error = %e, record = %entry.source_id, event = %entry.event, "audit entry not written");
                    }
                    e.to_string()
                })
            })
            .await;
    }

    /// [`AuditContext::record`] for several records, in one append.
    pub async fn record_all<'r>(
        &self,
        store: &dyn Store,
        records: impl IntoIterator<Item = (&'r str, &'r RecordOutcome, &'r Share)>,
    ) {
        if !self.enabled {
            return;
        }
        let entries: Vec<AuditEntry> = records
            .into_iter()
            .filter_map(|(id, outcome, share)| self.entry(id, outcome, share))
            .collect();
        self.append(store, entries).await;
    }
}
