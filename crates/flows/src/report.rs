//! Per-record outcomes and the run summary. Only system ids, codes and
//! reasons: never a name, a date of birth or free text from a case.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::record_stream::{RecordStream, KEPT_IN_FULL};

/// What happened to one source record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum RecordOutcome {
    /// A new Primero case was created.
    Created { case_id: String },
    /// The service was appended to the existing case.
    Updated { case_id: String },
    /// The service with this intervention number was already on the case.
    AlreadyPresent { case_id: String },
    /// Not written: needs an operator (e.g. `ambiguous-match`).
    Held {
        reason: String,
        candidates: Vec<String>,
    },
    /// The job deliberately skipped it.
    Skipped { reason: String },
    /// Not written because of an error; retried next run.
    Failed { code: String, reason: String },
    /// Sent to the partner, which confirmed it (e.g. a proGres interoperability
    /// referral id from PING check status, or the DTP correlation id).
    Sent { target_id: Option<String> },
    /// Sent by an earlier run already: not sent again.
    AlreadySent { target_id: Option<String> },
    /// Failed once too often: moved to the dead letter (the cursor may move
    /// past it); an operator replays it.
    DeadLettered { code: String, reason: String },
    /// Waits in the dead letter from an earlier run: not attempted.
    Parked { dead_letter_id: i64 },
    /// Not sent: the case does not record consent (issue 16). Looked at again
    /// when the case changes; never retried blindly. Fields named, no values.
    NoConsent { reason: String },
    /// A case shared earlier no longer records consent: an alert for the
    /// manual procedure was raised (nothing is sent by the bridge).
    ConsentRevoked {
        case_id: String,
        alert_id: Option<i64>,
    },
    /// Dry run: what a real run would write (an action code such as
    /// `create-case`, and the target's id when known); nothing was written.
    WouldWrite {
        action: String,
        target_id: Option<String>,
    },
}

impl RecordOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            RecordOutcome::Created { .. } => "created",
            RecordOutcome::Updated { .. } => "updated",
            RecordOutcome::AlreadyPresent { .. } => "already present",
            RecordOutcome::Held { .. } => "held",
            RecordOutcome::Skipped { .. } => "skipped",
            RecordOutcome::Failed { .. } => "failed",
            RecordOutcome::Sent { .. } => "sent",
            RecordOutcome::AlreadySent { .. } => "already sent",
            RecordOutcome::DeadLettered { .. } => "dead-lettered",
            RecordOutcome::Parked { .. } => "in dead letter",
            RecordOutcome::WouldWrite { .. } => "would write",
            RecordOutcome::NoConsent { .. } => "no-consent",
            RecordOutcome::ConsentRevoked { .. } => "consent-revoked",
        }
    }

    /// Whether a cursor must stay so the next run reads the record again.
    pub fn holds_cursor(&self) -> bool {
        matches!(
            self,
            RecordOutcome::Failed { .. } | RecordOutcome::Held { .. }
        )
    }

    /// The reason code of a record not written.
    pub fn reason_code(&self) -> Option<&str> {
        match self {
            RecordOutcome::Failed { code, .. } | RecordOutcome::DeadLettered { code, .. } => {
                Some(code)
            }
            RecordOutcome::NoConsent { .. } => Some(crate::consent::NO_CONSENT),
            RecordOutcome::ConsentRevoked { .. } => Some("consent-revoked"),
            RecordOutcome::Held { reason, .. } | RecordOutcome::Skipped { reason } => {
                // Codes lead the reason ("ambiguous-match", "not-referred: …").
                reason.split([':', ' ']).next()
            }
            _ => None,
        }
    }

    /// Why a record was not delivered, in full (the reason code leads it
    /// or is given apart by [`RecordOutcome::reason_code`]).
    pub fn reason(&self) -> Option<&str> {
        match self {
            RecordOutcome::Failed { reason, .. }
            | RecordOutcome::DeadLettered { reason, .. }
            | RecordOutcome::Held { reason, .. }
            | RecordOutcome::Skipped { reason }
            | RecordOutcome::NoConsent { reason } => Some(reason),
            _ => None,
        }
    }

    /// The id the target system knows the record by, when there is one.
    pub fn target_id(&self) -> Option<&str> {
        match self {
            RecordOutcome::Created { case_id }
            | RecordOutcome::Updated { case_id }
            | RecordOutcome::AlreadyPresent { case_id } => Some(case_id),
            RecordOutcome::Sent { target_id }
            | RecordOutcome::AlreadySent { target_id }
            | RecordOutcome::WouldWrite { target_id, .. } => target_id.as_deref(),
            _ => None,
        }
    }

    /// Whether the target now holds the record (so the source may be told).
    pub fn is_delivered(&self) -> bool {
        matches!(
            self,
            RecordOutcome::Created { .. }
                | RecordOutcome::Updated { .. }
                | RecordOutcome::AlreadyPresent { .. }
                | RecordOutcome::Sent { .. }
                | RecordOutcome::AlreadySent { .. }
        )
    }
}

/// A record not written because of an error, with its reason code.
pub fn failed(code: &str, reason: impl Into<String>) -> RecordOutcome {
    RecordOutcome::Failed {
        code: code.to_string(),
        reason: reason.into(),
    }
}

/// A record not written because a partner call failed: `partner-unavailable`
/// when the failure is worth retrying, `partner-error` otherwise.
pub fn partner_failure(e: &bridge_partners::ConnectorError) -> RecordOutcome {
    let code = if e.is_transient() {
        "partner-unavailable"
    } else {
        "partner-error"
    };
    failed(code, e.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordReport {
    /// Source system id (e.g. the proGres intervention id).
    pub source_id: String,
    pub outcome: RecordOutcome,
    /// Whether the source system was told (e.g. PING transfer status written).
    pub acknowledged: bool,
    /// Why acknowledging failed, when it did.
    pub ack_error: Option<String>,
    /// Dry run: the acknowledgement a real run would write to the source
    /// system (e.g. `transfer-status`); nothing was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_acknowledge: Option<String>,
}

/// Dry run: the planned write of a record, nothing written.
pub fn would_write(action: &str, target_id: Option<String>) -> RecordOutcome {
    RecordOutcome::WouldWrite {
        action: action.to_string(),
        target_id,
    }
}

/// What an operator should know about a record besides its outcome. Ids
/// and codes only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "note", rename_all = "kebab-case")]
pub enum Note {
    /// A code has no entry in a mapping table: the record went with the raw
    /// code. A warning: someone should add the code to the table.
    MappingGap { table: String, code: String },
    /// The new service went onto a closed case: `reopened` when Primero now
    /// has it open, `flag_id` when the case was flagged for its owner.
    ClosedCase {
        case_id: String,
        reopened: bool,
        flag_id: Option<String>,
        /// Why the flag could not be set.
        #[serde(skip_serializing_if = "Option::is_none")]
        flag_error: Option<String>,
    },
}

impl Note {
    pub fn level(&self) -> NoteLevel {
        match self {
            Note::MappingGap { .. } => NoteLevel::Warning,
            Note::ClosedCase {
                reopened, flag_id, ..
            } if *reopened && flag_id.is_some() => NoteLevel::Info,
            Note::ClosedCase { .. } => NoteLevel::Warning,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoteLevel {
    Info,
    Warning,
}

/// A job's report that it passed a value its mapping table does not list
/// (`{"table", "code"}` in the emitted payload's `mapping_gaps`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct MappingGap {
    pub table: String,
    pub code: String,
}

/// The longest value reported as a code.
const MAX_CODE_LEN: usize = 40;

impl MappingGap {
    /// The warning for the run report. The value came from a partner: only
    /// something shaped like a code (an option-set number, a key) is
    /// repeated, never free text that might be personal data.
    pub fn note(&self) -> Note {
        let is_code = |v: &str| {
            !v.is_empty()
                && v.len() <= MAX_CODE_LEN
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        };
        let shaped = |v: &str| {
            if is_code(v) {
                v.to_string()
            } else {
                format!("(a value of {} characters, not a code)", v.chars().count())
            }
        };
        Note::MappingGap {
            table: shaped(&self.table),
            code: shaped(&self.code),
        }
    }
}

/// A [`Note`] on one source record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordNote {
    pub source_id: String,
    pub level: NoteLevel,
    #[serde(flatten)]
    pub note: Note,
}

impl RecordNote {
    pub fn new(source_id: impl Into<String>, note: Note) -> Self {
        Self {
            source_id: source_id.into(),
            level: note.level(),
            note,
        }
    }
}

impl fmt::Display for RecordNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            NoteLevel::Info => "note",
            NoteLevel::Warning => "warning",
        };
        write!(f, "{level:<8}{}: ", self.source_id)?;
        match &self.note {
            Note::MappingGap { table, code } => write!(
                f,
                "mapping gap: table {table} has no entry for {code}; sent as the raw code"
            ),
            Note::ClosedCase {
                case_id,
                reopened,
                flag_id,
                flag_error,
            } => {
                write!(f, "case {case_id} was closed: ")?;
                write!(
                    f,
                    "{}",
                    if *reopened {
                        "reopened"
                    } else {
                        "still closed (Primero kept the status)"
                    }
                )?;
                match (flag_id, flag_error) {
                    (Some(id), _) => write!(f, ", flagged (flag {id})"),
                    (None, Some(e)) => write!(f, ", not flagged: {e}"),
                    (None, None) => write!(f, ", not flagged"),
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunReport {
    pub flow: String,
    pub run_id: String,
    pub fetched: usize,
    /// The run's records in full: all of them, or for a recorded run the
    /// first [`KEPT_IN_FULL`](crate::record_stream::KEPT_IN_FULL) (the
    /// others are in [`RunReport::beyond`] and the state database).
    pub records: Vec<RecordReport>,
    /// Records of a recorded run past the ones kept in full: counted only.
    #[serde(default, skip_serializing_if = "Tally::is_empty")]
    pub beyond: Tally,
    /// A failure that stopped the run before every record was seen.
    pub aborted: Option<String>,
    /// The process is shutting down: the run stopped between records; what
    /// was not reached is read again next run.
    #[serde(default)]
    pub stopped: bool,
    /// Warnings and notes on records, besides their outcomes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<RecordNote>,

    /// A dry run: read and mapped, nothing written anywhere.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,

    /// A recorded run's: where each record goes as it is pushed.
    #[serde(skip)]
    pub streaming: Streaming,
}

/// Where a recorded run's records go (see [`RunReport::stream_to`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Streaming {
    stream: Option<RecordStream>,
    /// How many of the report's `records` went to the stream.
    sent: usize,
}

/// Where a pushed record is: in the report, or only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Kept(usize),
    Counted,
}

/// Counts of records not kept in full.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// By outcome label.
    pub by_label: BTreeMap<&'static str, usize>,
    pub delivered: usize,
    pub acknowledged: usize,
    /// Delivered but the source system could not be told (each is logged).
    pub ack_failed: usize,
}

impl Tally {
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    pub fn total(&self) -> usize {
        self.by_label.values().sum()
    }

    fn add(&mut self, r: &RecordReport) {
        *self.by_label.entry(r.outcome.label()).or_default() += 1;
        self.delivered += usize::from(r.outcome.is_delivered());
        self.acknowledged += usize::from(r.acknowledged);
        self.ack_failed += usize::from(r.ack_error.is_some());
    }
}

impl RunReport {
    /// A run that stopped before its first record, with the reason.
    pub fn aborted(flow: &str, run_id: &str, reason: impl Into<String>) -> Self {
        RunReport {
            flow: flow.into(),
            run_id: run_id.into(),
            aborted: Some(reason.into()),
            ..RunReport::default()
        }
    }

    pub fn count(&self, label: &str) -> usize {
        self.records
            .iter()
            .filter(|r| r.outcome.label() == label)
            .count()
            + self.beyond.by_label.get(label).copied().unwrap_or(0)
    }

    /// Records of the run, kept in full or counted.
    pub fn total(&self) -> usize {
        self.records.len() + self.beyond.total()
    }

    /// Records the target now holds.
    pub fn delivered(&self) -> usize {
        self.records
            .iter()
            .filter(|r| r.outcome.is_delivered())
            .count()
            + self.beyond.delivered
    }

    pub fn acknowledged(&self) -> usize {
        self.records.iter().filter(|r| r.acknowledged).count() + self.beyond.acknowledged
    }

    /// Every record delivered and acknowledged.
    pub fn all_through(&self) -> bool {
        self.records
            .iter()
            .all(|r| r.outcome.is_delivered() && r.acknowledged)
            && self.beyond.delivered == self.beyond.total()
            && self.beyond.acknowledged == self.beyond.total()
    }

    /// Stream the records of this (recorded) run as they are pushed; keep
    /// only the first [`KEPT_IN_FULL`] in full.
    pub fn stream_to(&mut self, stream: Option<RecordStream>) {
        self.streaming.stream = stream;
    }

    /// A finished record. A streamed report sends it on, and keeps it in
    /// full while it holds fewer than [`KEPT_IN_FULL`] records (else counts
    /// it); any other keeps it.
    pub fn push(&mut self, record: RecordReport) -> Slot {
        self.catch_up();
        let Some(stream) = &self.streaming.stream else {
            self.records.push(record);
            return Slot::Kept(self.records.len() - 1);
        };
        if !stream.send(&record) {
            tracing::error!(record = %record.source_id, "record outcome not streamed: the writer stopped");
        }
        if self.records.len() < KEPT_IN_FULL {
            self.records.push(record);
            self.streaming.sent = self.records.len();
            Slot::Kept(self.records.len() - 1)
        } else {
            self.beyond.add(&record);
            Slot::Counted
        }
    }

    /// [`RunReport::push`] for each.
    pub fn extend(&mut self, records: impl IntoIterator<Item = RecordReport>) {
        for r in records {
            self.push(r);
        }
    }

    /// Records put in `records` directly (not through `push`) go to the
    /// stream too.
    fn catch_up(&mut self) {
        if let Some(stream) = &self.streaming.stream {
            for r in &self.records[self.streaming.sent.min(self.records.len())..] {
                stream.send(r);
            }
            self.streaming.sent = self.records.len();
        }
    }

    /// The flow is done: send what is left and let go of the stream.
    pub fn end_stream(&mut self) {
        self.catch_up();
        self.streaming.stream = None;
    }

    /// Dry run: the acknowledgement a real run would write for a pushed
    /// record.
    pub fn would_acknowledge(&mut self, slot: Slot, what: &str) {
        if let Slot::Kept(i) = slot {
            if let Some(record) = self.records.get_mut(i) {
                record.would_acknowledge = Some(what.to_string());
            }
        }
    }

    /// How the source system's acknowledgement of a pushed record went.
    pub fn acknowledge(&mut self, slot: Slot, result: Result<(), String>) {
        match (slot, result) {
            (Slot::Kept(i), result) => {
                if let Some(record) = self.records.get_mut(i) {
                    match result {
                        Ok(()) => record.acknowledged = true,
                        Err(e) => record.ack_error = Some(e),
                    }
                }
            }
            (Slot::Counted, Ok(())) => self.beyond.acknowledged += 1,
            (Slot::Counted, Err(_)) => self.beyond.ack_failed += 1,
        }
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "flow {}  run {}", self.flow, self.run_id)?;
        writeln!(f, "  {:<18}{:>6}", "fetched", self.fetched)?;
        for label in [
            "created",
            "updated",
            "already present",
            "held",
            "skipped",
            "failed",
            "sent",
            "already sent",
            "dead-lettered",
            "in dead letter",
            "would write",
            "no-consent",
            "consent-revoked",
        ] {
            writeln!(f, "  {:<18}{:>6}", label, self.count(label))?;
        }
        writeln!(f, "  {:<18}{:>6}", "acknowledged", self.acknowledged())?;
        if let Some(why) = &self.aborted {
            writeln!(f, "  run stopped early: {why}")?;
        }
        if self.stopped {
            writeln!(f, "  run stopped between records: shutting down")?;
        }
        if self.dry_run {
            writeln!(
                f,
                "  dry run: nothing was written to any partner or to the state database"
            )?;
        }
        for r in &self.records {
            match &r.outcome {
                RecordOutcome::Held { reason, candidates } => writeln!(
                    f,
                    "  held    {}: {reason} (candidates: {})",
                    r.source_id,
                    candidates.join(", ")
                )?,
                RecordOutcome::Failed { code, reason } => {
                    writeln!(f, "  failed  {}: [{code}] {reason}", r.source_id)?
                }
                RecordOutcome::Skipped { reason } => {
                    writeln!(f, "  skipped {}: {reason}", r.source_id)?
                }
                RecordOutcome::DeadLettered { code, reason } => {
                    writeln!(f, "  dead-lettered {}: [{code}] {reason}", r.source_id)?
                }
                RecordOutcome::WouldWrite { action, target_id } => writeln!(
                    f,
                    "  would {action} {} -> {}",
                    r.source_id,
                    target_id.as_deref().unwrap_or("(new)")
                )?,
                o if self.dry_run => writeln!(
                    f,
                    "  {} {}{}",
                    o.label(),
                    r.source_id,
                    o.target_id()
                        .map(|t| format!(" -> {t}"))
                        .unwrap_or_default()
                )?,
                _ => {}
            }
            if let Some(ack) = &r.would_acknowledge {
                writeln!(f, "  would acknowledge {} ({ack})", r.source_id)?;
            }
            if let Some(e) = &r.ack_error {
                writeln!(f, "  not acknowledged {}: {e}", r.source_id)?;
            }
        }
        if !self.beyond.is_empty() {
            writeln!(
                f,
                "  ({} more records are counted above, not listed: `bridge runs show {}` lists every record)",
                self.beyond.total(),
                self.run_id
            )?;
            if self.beyond.ack_failed > 0 {
                writeln!(
                    f,
                    "  not acknowledged: {} more (each is in the log)",
                    self.beyond.ack_failed
                )?;
            }
        }
        for note in &self.notes {
            writeln!(f, "  {note}")?;
        }
        Ok(())
    }
}
