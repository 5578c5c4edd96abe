//! The audit trail: one entry per record shared (or refused on consent),
//! append-only and tamper-evident.
//!
//! # The chain
//!
//! Entries are numbered (`seq`, 1, 2, …) in the order they were appended.
//! Each carries `prev_hash`, the `hash` of the entry before it (64 zeros for
//! the first), and its own `hash`: SHA-256, lower-case hex, over this text,
//! UTF-8, one `name=value` line per field in this order, each line ending in
//! `\n`, an absent optional value written as nothing after `=`:
//!
//! ```text
//! bridge-audit-v1
//! at=2026-12-01T10:00:00.000Z
//! flow=ping-1.1
//! run_id=…
//! event=delivered
//! source_id=…
//! target_id=…
//! case_id=…
//! permitted_by=…
//! consent=recorded
//! job=…
//! job_version=…
//! job_hash=…
//! mappings_hash=…
//! prev_hash=…
//! ```
//!
//! Values hold no control characters (an entry with one is refused), so the
//! text is unambiguous; an optional value is never the empty string (refused
//! too), so absent and empty cannot be confused. `seq` is not hashed: the
//! order is what the links say, which is how a reordering is told apart from
//! a change.
//!
//! A head row (newest seq and hash) is updated in the same transaction as
//! every append, so removing entries from the end is detected too; an
//! auditor who notes the head down can later tell whether the whole table
//! was rewritten. Retention removes the oldest entries and keeps the last
//! removed one's seq and hash as the anchor the first remaining entry links
//! to. Appenders in several processes serialize on the head: on SQLite an
//! append runs in a `BEGIN IMMEDIATE` transaction (SQLite's write lock), on
//! PostgreSQL it locks the head row (`SELECT … FOR UPDATE`) first; either way
//! each continues the chain where the previous one left it.
//!
//! The chain logic (what verification finds) is written once here over
//! [`ChainRead`]; each backend's module holds its SQL.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::StoreError;

pub(crate) mod postgres;
pub(crate) mod sqlite;

/// The first line of every hashed text: the encoding's version.
pub const ENCODING: &str = "bridge-audit-v1";
/// `prev_hash` of the first entry ever, and the anchor before any prune.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest value of a field, in characters (ids and codes are far shorter).
pub const MAX_FIELD_CHARS: usize = 256;

/// One audited share, as a flow appends it. Ids and codes only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// RFC 3339 UTC with milliseconds ([`crate::now`]).
    pub at: String,
    pub flow: String,
    pub run_id: String,
    /// [`AuditEvent`]: `delivered` | `refused-no-consent` | `consent-revoked`.
    pub event: String,
    /// The record's id in the system it left.
    pub source_id: String,
    /// Its id in the system it reached, when known.
    pub target_id: Option<String>,
    /// The Primero case record id, when known.
    pub case_id: Option<String>,
    /// Primero user name (`transitioned_by` / owner) or proGres user id.
    pub permitted_by: Option<String>,
    /// [`ConsentBasis`]: `recorded` | `overridden` | `not-transmitted` | `absent`.
    pub consent: String,
    pub job: String,
    pub job_version: String,
    pub job_hash: String,
    pub mappings_hash: String,
}

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditEvent {
    /// The record reached the other system.
    Delivered,
    /// Not sent: the case does not record consent.
    RefusedNoConsent,
    /// A case shared earlier no longer records consent.
    ConsentRevoked,
}

impl AuditEvent {
    pub const ALL: [AuditEvent; 3] = [
        AuditEvent::Delivered,
        AuditEvent::RefusedNoConsent,
        AuditEvent::ConsentRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::Delivered => "delivered",
            AuditEvent::RefusedNoConsent => "refused-no-consent",
            AuditEvent::ConsentRevoked => "consent-revoked",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == code)
    }
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// On what consent basis a record was shared (or refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentBasis {
    /// The case records consent.
    Recorded,
    /// Shared without consent under the country's override policy.
    Overridden,
    /// The source system carries no consent indicator (proGres → Primero).
    NotTransmitted,
    /// No consent: the record was refused (or consent was revoked).
    Absent,
}

impl ConsentBasis {
    pub const ALL: [ConsentBasis; 4] = [
        ConsentBasis::Recorded,
        ConsentBasis::Overridden,
        ConsentBasis::NotTransmitted,
        ConsentBasis::Absent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConsentBasis::Recorded => "recorded",
            ConsentBasis::Overridden => "overridden",
            ConsentBasis::NotTransmitted => "not-transmitted",
            ConsentBasis::Absent => "absent",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ConsentBasis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An entry as stored: its place in the chain and its hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// The hash the entry's content and `prev_hash` give.
    pub fn expected_hash(&self) -> String {
        entry_hash(&self.entry, &self.prev_hash)
    }
}

/// Which entries `audit_list` returns. `from` is inclusive, `to` exclusive
/// (RFC 3339, any offset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub from: Option<String>,
    pub to: Option<String>,
    pub flow: Option<String>,
    pub case_id: Option<String>,
    pub limit: Option<i64>,
    /// Only the entry with this seq.
    pub seq: Option<i64>,
    /// Newest first (default: in chain order, oldest first).
    pub newest_first: bool,
}

/// The last entry retention removed: the first remaining one links to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditAnchor {
    /// 0 (and [`GENESIS_HASH`]) when nothing was ever pruned.
    pub seq: i64,
    pub hash: String,
    /// The cut-off of the last prune.
    pub before: Option<String>,
    /// When the last prune ran.
    pub at: Option<String>,
}

/// What is wrong with the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// The entry's content no longer gives its hash, or its hash is not the
    /// one the next entry (or the head) recorded.
    Changed,
    /// The entry is missing.
    Removed,
    /// The entry links to another entry than the one before it.
    Reordered,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Changed => "changed",
            ProblemKind::Removed => "removed",
            ProblemKind::Reordered => "reordered",
        })
    }
}

/// The first problem verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditProblem {
    /// The entry concerned.
    pub seq: i64,
    pub kind: ProblemKind,
    /// One sentence for the auditor.
    pub detail: String,
}

impl fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {} {}: {}", self.seq, self.kind, self.detail)
    }
}

/// The outcome of `audit_verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditVerification {
    /// Entries whose hash and link were checked.
    pub checked: u64,
    /// The newest entry as the head records it (0 and [`GENESIS_HASH`] when
    /// nothing was ever appended): what an auditor notes down.
    pub head_seq: i64,
    pub head_hash: String,
    pub anchor: AuditAnchor,
    /// `None` when the chain is intact.
    pub problem: Option<AuditProblem>,
}

impl AuditVerification {
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// The entry's hash: SHA-256 of its canonical text (see the module
/// documentation) followed by `prev_hash`.
pub fn entry_hash(entry: &AuditEntry, prev_hash: &str) -> String {
    let mut h = Sha256::new();
    h.update(ENCODING.as_bytes());
    h.update(b"\n");
    for (name, value) in entry.fields() {
        h.update(name.as_bytes());
        h.update(b"=");
        h.update(value.unwrap_or_default().as_bytes());
        h.update(b"\n");
    }
    h.update(b"prev_hash=");
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    hex::encode(h.finalize())
}

/// An RFC 3339 date-time as stored: UTC with milliseconds, `Z`.
pub fn canonical_time(text: &str) -> Option<String> {
    DateTime::parse_from_rfc3339(text.trim()).ok().map(|t| {
        t.with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    })
}

impl AuditEntry {
    /// The hashed fields in their canonical order.
    pub fn fields(&self) -> [(&'static str, Option<&str>); 13] {
        [
            ("at", Some(self.at.as_str())),
            ("flow", Some(self.flow.as_str())),
            ("run_id", Some(self.run_id.as_str())),
            ("event", Some(self.event.as_str())),
            ("source_id", Some(self.source_id.as_str())),
            ("target_id", self.target_id.as_deref()),
            ("case_id", self.case_id.as_deref()),
            ("permitted_by", self.permitted_by.as_deref()),
            ("consent", Some(self.consent.as_str())),
            ("job", Some(self.job.as_str())),
            ("job_version", Some(self.job_version.as_str())),
            ("job_hash", Some(self.job_hash.as_str())),
            ("mappings_hash", Some(self.mappings_hash.as_str())),
        ]
    }

    /// Why the entry cannot be stored, if it cannot: an unknown event or
    /// consent code, a time not in the stored form, an empty id, a value
    /// with a control character or longer than [`MAX_FIELD_CHARS`]. Never
    /// quotes a value (only codes are quoted).
    pub fn problem(&self) -> Option<String> {
        if AuditEvent::parse(&self.event).is_none() {
            return Some(format!(
                "unknown event code `{}`; known: {}",
                printable(&self.event),
                AuditEvent::ALL.map(AuditEvent::as_str).join(", ")
            ));
        }
        if ConsentBasis::parse(&self.consent).is_none() {
            return Some(format!(
                "unknown consent code `{}`; known: {}",
                printable(&self.consent),
                ConsentBasis::ALL.map(ConsentBasis::as_str).join(", ")
            ));
        }
        if canonical_time(&self.at).as_deref() != Some(self.at.as_str()) {
            return Some(
                "`at` is not an RFC 3339 UTC time with milliseconds (bridge_store::now())".into(),
            );
        }
        for (name, value) in self.fields() {
            let required = !matches!(name, "target_id" | "case_id" | "permitted_by");
            match value {
                None => {}
                Some("") if required && matches!(name, "flow" | "run_id" | "source_id") => {
                    return Some(format!("`{name}` is empty"));
                }
                Some("") if !required => {
                    return Some(format!("`{name}` is empty: leave it out (None) instead"));
                }
                Some(v) if v.chars().any(char::is_control) => {
                    return Some(format!("`{name}` holds a control character"));
                }
                Some(v) if v.chars().count() > MAX_FIELD_CHARS => {
                    return Some(format!(
                        "`{name}` is longer than {MAX_FIELD_CHARS} characters: ids and codes only"
                    ));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// [`problem`](Self::problem) as a store error.
    pub fn check(&self) -> Result<(), StoreError> {
        match self.problem() {
            Some(why) => Err(StoreError::Invalid(format!(
                "audit entry of flow {} refused: {why}",
                printable(&self.flow)
            ))),
            None => Ok(()),
        }
    }
}

/// A code quoted in an error: short, without control characters.
fn printable(code: &str) -> String {
    code.chars().filter(|c| !c.is_control()).take(40).collect()
}

/// Every entry is storable, or the first that is not.
pub fn check_all(entries: &[AuditEntry]) -> Result<(), StoreError> {
    entries.iter().try_for_each(AuditEntry::check)
}

pub(crate) const COLUMNS: &str =
    "seq, at, flow, run_id, event, source_id, target_id, case_id, permitted_by,
    consent, job, job_version, job_hash, mappings_hash, prev_hash, hash";

/// An entry from a row of [`COLUMNS`], on either backend.
pub(crate) fn record<R>(r: &R) -> AuditRecord
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    AuditRecord {
        seq: r.get(0),
        entry: AuditEntry {
            at: r.get(1),
            flow: r.get(2),
            run_id: r.get(3),
            event: r.get(4),
            source_id: r.get(5),
            target_id: r.get(6),
            case_id: r.get(7),
            permitted_by: r.get(8),
            consent: r.get(9),
            job: r.get(10),
            job_version: r.get(11),
            job_hash: r.get(12),
            mappings_hash: r.get(13),
        },
        prev_hash: r.get(14),
        hash: r.get(15),
    }
}

/// The head row.
pub(crate) struct Head {
    pub seq: i64,
    pub hash: String,
    pub anchor: AuditAnchor,
}

/// `entries` chained after the head `(seq, hash)`: each with its seq, the
/// hash before it and its own (the rows [`crate::inserts::audit`] writes),
/// and the new head's seq and hash.
pub(crate) fn chain(
    mut seq: i64,
    mut prev: String,
    entries: &[AuditEntry],
) -> (Vec<crate::inserts::ChainedEntry<'_>>, i64, String) {
    let mut rows = Vec::with_capacity(entries.len());
    for e in entries {
        seq += 1;
        let hash = entry_hash(e, &prev);
        rows.push((seq, e, prev, hash.clone()));
        prev = hash;
    }
    (rows, seq, prev)
}

pub(crate) const HEAD_COLUMNS: &str =
    "seq, hash, pruned_seq, pruned_hash, pruned_before, pruned_at";

pub(crate) fn head_row<R>(r: Option<R>) -> Result<Head, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let r = r.ok_or_else(|| {
        StoreError::Database(
            "the audit head row is missing: the audit table was tampered with".into(),
        )
    })?;
    Ok(Head {
        seq: r.get(0),
        hash: r.get(1),
        anchor: AuditAnchor {
            seq: r.get(2),
            hash: r.get(3),
            before: r.get(4),
            at: r.get(5),
        },
    })
}

/// What verification reads, inside one snapshot of the database.
#[async_trait::async_trait]
pub(crate) trait ChainRead: Send {
    async fn head(&mut self) -> Result<Head, StoreError>;
    /// Up to `limit` entries with a seq above `seq`, in seq order.
    async fn entries_after(&mut self, seq: i64, limit: i64)
        -> Result<Vec<AuditRecord>, StoreError>;
    /// The seq of an entry with this hash, if any.
    async fn seq_with_hash(&mut self, hash: &str) -> Result<Option<i64>, StoreError>;
}

pub(crate) fn time_bound(key: &str, value: &Option<String>) -> Result<Option<String>, StoreError> {
    value
        .as_deref()
        .map(|v| {
            canonical_time(v).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "audit filter `{key}`: not an RFC 3339 date-time, e.g. 2026-12-01T00:00:00Z"
                ))
            })
        })
        .transpose()
}

/// Entries read at a time while verifying.
const VERIFY_BATCH: i64 = 1000;

/// Walk the chain from the anchor to the head; stop at the first problem.
pub(crate) async fn verify_in(conn: &mut impl ChainRead) -> Result<AuditVerification, StoreError> {
    let head = conn.head().await?;
    let mut v = AuditVerification {
        checked: 0,
        head_seq: head.seq,
        head_hash: head.hash.clone(),
        anchor: head.anchor.clone(),
        problem: None,
    };
    let (mut last_seq, mut prev) = (head.anchor.seq, head.anchor.hash.clone());
    loop {
        let rows = conn.entries_after(last_seq, VERIFY_BATCH).await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            if let Some(p) = check_row(conn, &row, last_seq, &prev, &head.anchor).await? {
                v.problem = Some(p);
                return Ok(v);
            }
            v.checked += 1;
            last_seq = row.seq;
            prev = row.hash;
        }
    }
    v.problem = if last_seq < head.seq {
        Some(AuditProblem {
            seq: last_seq + 1,
            kind: ProblemKind::Removed,
            detail: format!(
                "the trail ends at entry {last_seq} but its head records entry {}: the last {} \
                 entr(y/ies) were removed",
                head.seq,
                head.seq - last_seq
            ),
        })
    } else if last_seq > head.seq {
        Some(AuditProblem {
            seq: head.seq + 1,
            kind: ProblemKind::Changed,
            detail: format!(
                "entries after the head (entry {}) were added outside the bridge",
                head.seq
            ),
        })
    } else if prev != head.hash {
        Some(AuditProblem {
            seq: last_seq,
            kind: ProblemKind::Changed,
            detail: "the newest entry's hash is not the one its head records".into(),
        })
    } else {
        None
    };
    Ok(v)
}

/// The problem of one entry, given the entry before it (`last_seq`, `prev`).
async fn check_row(
    conn: &mut impl ChainRead,
    row: &AuditRecord,
    last_seq: i64,
    prev: &str,
    anchor: &AuditAnchor,
) -> Result<Option<AuditProblem>, StoreError> {
    let problem = |seq, kind, detail: String| Ok(Some(AuditProblem { seq, kind, detail }));
    if row.seq != last_seq + 1 {
        return problem(
            last_seq + 1,
            ProblemKind::Removed,
            format!(
                "entry {} is missing: entry {} follows entry {last_seq}",
                last_seq + 1,
                row.seq
            ),
        );
    }
    if row.expected_hash() != row.hash {
        return problem(
            row.seq,
            ProblemKind::Changed,
            "its content no longer gives its hash".into(),
        );
    }
    if row.prev_hash == prev {
        return Ok(None);
    }
    // Self-consistent but linked elsewhere: to another entry (moved), or
    // to a hash no entry has (the one before was changed and re-hashed).
    match conn.seq_with_hash(&row.prev_hash).await? {
        Some(other) => problem(
            row.seq,
            ProblemKind::Reordered,
            format!("it links to entry {other}, not to entry {last_seq}"),
        ),
        None if last_seq == anchor.seq && anchor.seq > 0 => problem(
            row.seq,
            ProblemKind::Changed,
            format!(
                "it does not link to the retention anchor (entry {}): it, or the anchor, was changed",
                anchor.seq
            ),
        ),
        None if last_seq == 0 => problem(
            row.seq,
            ProblemKind::Changed,
            "the first entry does not start the chain".into(),
        ),
        None => problem(
            last_seq,
            ProblemKind::Changed,
            format!(
                "entry {} does not link to it: it was changed and re-hashed",
                row.seq
            ),
        ),
    }
}

/// The prune cut-off as stored, or the refusal of an unreadable one.
pub(crate) fn prune_cutoff(before: &str) -> Result<String, StoreError> {
    canonical_time(before).ok_or_else(|| {
        StoreError::Invalid(
            "audit prune: the cut-off is not an RFC 3339 date-time, e.g. 2026-01-01T00:00:00Z"
                .into(),
        )
    })
}

/// Pruning destroys evidence: refused while the chain does not verify.
pub(crate) fn prune_allowed(v: &AuditVerification) -> Result<(), StoreError> {
    match &v.problem {
        Some(p) => Err(StoreError::Invalid(format!(
            "audit prune refused: the audit trail does not verify ({p}); nothing was removed"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
