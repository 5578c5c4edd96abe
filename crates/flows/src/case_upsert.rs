//! Write one proGres referral into Primero: find the case by
//! `unhcr_individual_no`, then create it, append the new service, recognise
//! that the service is already there, or hold the record when several cases
//! match. Shared by PING workflow 1.1 and DTP flow 1-1.
//!
//! Better than the original (spec README): the idempotency check is an exact
//! match on the intervention number (design A had none, design B a prefix
//! match); several matching cases hold the record (`ambiguous-match`)
//! instead of writing to the first; an existing case receives only the new
//! service — its demographics and owner are Primero's. A closed case is
//! either left to Primero (which itself reopens an enabled closed case that
//! gets a new service: `Reopenable#reopen_record`) or, for DTP 1-1, reopened
//! explicitly and flagged for its owner ([`ClosedCase`]).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::case_lookup::{find_cases, CaseKey, LookupError};
use super::lease::Holding;
use super::report::{would_write, Note, RecordOutcome};
use super::sharing_check::{Destination, SharingCheck};
use bridge_partners::primero::{Case, NewFlag, PrimeroClient};
use bridge_partners::ConnectorError;

/// What an inbound referral job emits for one intervention.
#[derive(Debug, Clone, Deserialize)]
pub struct CaseReferral {
    pub unhcr_individual_no: String,
    /// The plain proGres intervention number (idempotency key).
    pub intervention_number: String,
    /// The Primero case body, with exactly one new service in `services_section`.
    pub case: Map<String, Value>,
}

impl CaseReferral {
    pub fn new_service(&self) -> Option<&Value> {
        self.case
            .get("services_section")
            .and_then(Value::as_array)
            .and_then(|s| s.first())
    }
}

/// One upsert at a time per UNHCR individual: two referrals of one person
/// worked on at once would otherwise both find no case and both create one.
#[derive(Default)]
pub struct IndividualLocks {
    locks: std::sync::Mutex<LockMap>,
}

type LockMap = std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>;

impl IndividualLocks {
    pub async fn lock(&self, unhcr_individual_no: &str) -> IndividualGuard<'_> {
        let lock = self
            .map()
            .entry(unhcr_individual_no.to_string())
            .or_default()
            .clone();
        IndividualGuard {
            locks: self,
            key: unhcr_individual_no.to_string(),
            _held: lock.lock_owned().await,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, LockMap> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One individual's lock, held. Dropping it lets the next writer in, and
/// forgets the lock when nobody waits for it, so a run keeps no entry per
/// individual it has written.
pub struct IndividualGuard<'a> {
    locks: &'a IndividualLocks,
    key: String,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for IndividualGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map();
        // Held by the map and this guard only: no other writer waits.
        if map
            .get(&self.key)
            .is_some_and(|l| std::sync::Arc::strong_count(l) == 2)
        {
            map.remove(&self.key);
        }
    }
}

/// Whether a stored `progres_interventionnumber` (plain, or the composite
/// `<number>,<lpinterventionid>,<businessunit>`) is this intervention. Exact
/// match on the number part: the original's prefix match took `…-100009`
/// for `…-1000095`.
pub fn same_intervention(stored: &str, number: &str) -> bool {
    stored.split(',').next().map(str::trim) == Some(number)
}

/// What the upsert did. The cases carry what Primero answered (create) or
/// what the search found (existing case): ids and owner.
#[derive(Debug, Clone)]
pub enum Upserted {
    /// A new case, as Primero answered the create.
    Created(Case),
    /// The service was appended to this existing case.
    Appended(Case),
    /// This existing case already has a service with the intervention number.
    AlreadyPresent(Case),
    /// Several cases carry the individual id: nothing was written.
    Ambiguous { candidates: Vec<String> },
    /// The service was appended to this case, which was closed: asked to
    /// reopen it (`reopened`: Primero now has it open) and flagged it
    /// (the flag id, or why not).
    Reopened {
        case: Case,
        reopened: bool,
        flag: Result<String, String>,
    },
}

impl Upserted {
    /// The Primero case now holding the service, if any.
    pub fn case(&self) -> Option<&Case> {
        match self {
            Upserted::Created(c)
            | Upserted::Appended(c)
            | Upserted::AlreadyPresent(c)
            | Upserted::Reopened { case: c, .. } => Some(c),
            Upserted::Ambiguous { .. } => None,
        }
    }

    /// What the run report should say besides the outcome.
    pub fn note(&self) -> Option<Note> {
        match self {
            Upserted::Reopened {
                case,
                reopened,
                flag,
            } => Some(Note::ClosedCase {
                case_id: case.id.clone(),
                reopened: *reopened,
                flag_id: flag.as_ref().ok().cloned(),
                flag_error: flag.as_ref().err().cloned(),
            }),
            _ => None,
        }
    }

    pub fn outcome(&self) -> RecordOutcome {
        match self {
            Upserted::Created(c) => RecordOutcome::Created {
                case_id: c.id.clone(),
            },
            Upserted::Appended(c) | Upserted::Reopened { case: c, .. } => RecordOutcome::Updated {
                case_id: c.id.clone(),
            },
            Upserted::AlreadyPresent(c) => RecordOutcome::AlreadyPresent {
                case_id: c.id.clone(),
            },
            Upserted::Ambiguous { candidates } => RecordOutcome::Held {
                reason: AMBIGUOUS_MATCH.into(),
                candidates: candidates.clone(),
            },
        }
    }
}

/// Reason code of a record held because several cases match.
pub const AMBIGUOUS_MATCH: &str = "ambiguous-match";

#[derive(Debug, thiserror::Error)]
pub enum UpsertError {
    /// The job's case body has no service to add.
    #[error("the case body has no service in services_section")]
    NoService,
    /// A body holds a field `sharing.toml` does not declare: nothing was written.
    #[error("refused before sending (undeclared field)")]
    Refused(RecordOutcome),
    #[error(transparent)]
    Partner(#[from] ConnectorError),
    /// The individual number is malformed, or Primero's answer to the
    /// search cannot be trusted: nothing was written.
    #[error(transparent)]
    Lookup(LookupError),
    /// Primero answered the append but the case does not hold the service
    /// (a silent no-op): not reported as delivered, tried again.
    #[error("Primero accepted the service on case {case_id} but does not hold it")]
    NotApplied { case_id: String },
    /// Primero created the case without the individual number or the
    /// intervention number (fields the API user's role may not write are
    /// stripped, answered 200): sending again would create or append again,
    /// so the record goes to the dead letter at once.
    #[error(
        "{WRITE_INCOMPLETE}: Primero created case {case_id} without the individual number or the \
         intervention number: the API user's role may not write unhcr_individual_no or \
         services_section.progres_interventionnumber (docs/operator/primero-role.md); \
         complete or delete the case before replaying"
    )]
    Incomplete { case_id: String },
    /// The lease or claim the write would be made under can no longer be
    /// counted on (the process was suspended past it, or another replica
    /// took it): nothing more was written.
    #[error("{NOT_HELD}: not written: this replica's lease or claim can no longer be counted on; left to the replica that holds it")]
    NotHeld,
}

/// Outcome code of a write refused because the lease or claim was lost.
pub const NOT_HELD: &str = "not-held";

impl From<LookupError> for UpsertError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::Partner(e) => UpsertError::Partner(e),
            other => UpsertError::Lookup(other),
        }
    }
}

pub use super::ledger::WRITE_INCOMPLETE;

/// Reason code of a write Primero answered but did not apply.
pub const NOT_APPLIED: &str = "write-not-applied";

/// What to do when the one case of the individual is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedCase<'a> {
    /// Append the service only (PING 1.1, as its original).
    Append,
    /// Append the service, reopen the case (`status` open with
    /// `case_status_reopened`, as Primero's own reopen action sends) and flag
    /// it for its owner, dated `date` (YYYY-MM-DD): DTP 1-1, whose original
    /// reopened it and handed it to the intake user.
    ReopenAndFlag { date: &'a str },
}

/// Primero's `status` of a closed case.
const STATUS_CLOSED: &str = "closed";
const STATUS_OPEN: &str = "open";

fn status(case: &Case) -> Option<&str> {
    case.extra.get("status").and_then(Value::as_str)
}

/// The flag's message: ids only (Primero shows it to the case's users).
fn flag_message(intervention_number: &str) -> String {
    format!(
        "New proGres referral {intervention_number} added while the case was closed (referral bridge)"
    )
}

fn holds(case: &Case, number: &str) -> bool {
    case.services_section.iter().any(|s| {
        s.progres_interventionnumber
            .as_deref()
            .is_some_and(|n| same_intervention(n, number))
    })
}

/// Create the case, append the service, or recognise it is already there.
pub async fn upsert_case(
    primero: &PrimeroClient,
    referral: &CaseReferral,
    on_closed: ClosedCase<'_>,
    sharing: &SharingCheck,
    holding: &Holding,
) -> Result<Upserted, UpsertError> {
    // Asked right before each write: the search's answer must still be the
    // latest word (a pause past the lease lets another replica write).
    let still_held = || {
        if holding.is_lost() {
            Err(UpsertError::NotHeld)
        } else {
            Ok(())
        }
    };
    let service = referral
        .new_service()
        .cloned()
        .ok_or(UpsertError::NoService)?;
    let key = CaseKey::IndividualNo(&referral.unhcr_individual_no);
    let matches = find_cases(primero, key).await?;
    match matches.as_slice() {
        [] => {
            let mut body = referral.case.clone();
            // Primero generates its own case_id for a new case.
            body.remove("case_id");
            sharing
                .check(Destination::PrimeroCreateCase, &body)
                .map_err(UpsertError::Refused)?;
            still_held()?;
            let created = primero.create_case(&body).await?;
            // The next run finds the case by the individual number and knows
            // the service by its intervention number: both must have stuck,
            // or every re-send would create or append again.
            if !(key.matches(&created) && holds(&created, &referral.intervention_number)) {
                return Err(UpsertError::Incomplete {
                    case_id: created.id,
                });
            }
            Ok(Upserted::Created(created))
        }
        [case] => {
            if holds(case, &referral.intervention_number) {
                return Ok(Upserted::AlreadyPresent(case.clone()));
            }
            // Only the service: an existing case's demographics are Primero's.
            let mut body = Map::new();
            body.insert("services_section".into(), Value::Array(vec![service]));
            let reopen = match on_closed {
                ClosedCase::ReopenAndFlag { date } if status(case) == Some(STATUS_CLOSED) => {
                    body.insert("status".into(), Value::from(STATUS_OPEN));
                    body.insert("case_status_reopened".into(), Value::Bool(true));
                    Some(date)
                }
                _ => None,
            };
            let flag = reopen.map(|date| NewFlag {
                message: flag_message(&referral.intervention_number),
                date: date.to_string(),
            });
            // Both writes are checked before the first is made.
            sharing
                .check(Destination::PrimeroUpdateCase, &body)
                .map_err(UpsertError::Refused)?;
            if let Some(flag) = &flag {
                sharing
                    .check(Destination::PrimeroFlagCase, flag)
                    .map_err(UpsertError::Refused)?;
            }
            still_held()?;
            let answered = primero.patch_case(&case.id, &body).await?;
            // Trust but verify: the answer (or, when it carries no services,
            // a fresh read) must hold the intervention.
            let fresh;
            let now = if answered.services_section.is_empty() {
                fresh = find_cases(primero, key)
                    .await?
                    .into_iter()
                    .find(|c| c.id == case.id);
                fresh.as_ref()
            } else {
                Some(&answered)
            };
            if !now.is_some_and(|c| holds(c, &referral.intervention_number)) {
                return Err(UpsertError::NotApplied {
                    case_id: case.id.clone(),
                });
            }
            let Some(flag) = flag else {
                return Ok(Upserted::Appended(case.clone()));
            };
            // The answer carries the status when the update changed it; a
            // role that may not write it leaves the case closed (silently).
            let reopened = now.and_then(status) == Some(STATUS_OPEN);
            let flag = primero
                .flag_case(&case.id, &flag)
                .await
                .map(|f| f.id)
                .map_err(|e| e.to_string());
            Ok(Upserted::Reopened {
                case: case.clone(),
                reopened,
                flag,
            })
        }
        several => Ok(Upserted::Ambiguous {
            candidates: several.iter().map(|c| c.id.clone()).collect(),
        }),
    }
}

/// Dry run: what [`upsert_case`] would do, from the same search, without
/// writing (`create-case`, or `append-service` to the one matching case).
pub async fn plan_case(
    primero: &PrimeroClient,
    referral: &CaseReferral,
    sharing: &SharingCheck,
) -> Result<RecordOutcome, UpsertError> {
    let service = referral.new_service().ok_or(UpsertError::NoService)?;
    let matches = find_cases(
        primero,
        CaseKey::IndividualNo(&referral.unhcr_individual_no),
    )
    .await?;
    // A dry run reports a body a real run would refuse.
    let mut create = referral.case.clone();
    create.remove("case_id");
    let append = serde_json::json!({ "services_section": [service] });
    Ok(match matches.as_slice() {
        [] => match sharing.check(Destination::PrimeroCreateCase, &create) {
            Err(refused) => refused,
            Ok(()) => would_write("create-case", None),
        },
        [case] if holds(case, &referral.intervention_number) => RecordOutcome::AlreadyPresent {
            case_id: case.id.clone(),
        },
        [case] => match sharing.check(Destination::PrimeroUpdateCase, &append) {
            Err(refused) => refused,
            Ok(()) => would_write("append-service", Some(case.id.clone())),
        },
        several => RecordOutcome::Held {
            reason: AMBIGUOUS_MATCH.into(),
            candidates: several.iter().map(|c| c.id.clone()).collect(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::{same_intervention, IndividualLocks};

    #[tokio::test]
    async fn one_writer_per_individual_and_no_lock_kept_after() {
        let locks = IndividualLocks::default();
        let first = locks.lock("803-1").await;
        let other = locks.lock("803-2").await;
        // A second writer for 803-1 waits until the first lets go.
        let waiting = locks.lock("803-1");
        tokio::pin!(waiting);
        assert!(futures::poll!(&mut waiting).is_pending());
        drop(first);
        let second = waiting.await;
        assert_eq!(locks.map().len(), 2);
        drop(second);
        drop(other);
        assert!(
            locks.map().is_empty(),
            "locks kept after their writers left"
        );
    }

    #[test]
    fn intervention_match_is_exact_not_prefix() {
        assert!(same_intervention(
            "803-24-PRTITV-1000095",
            "803-24-PRTITV-1000095"
        ));
        assert!(same_intervention(
            "803-24-PRTITV-1000095,0b7f,577c",
            "803-24-PRTITV-1000095"
        ));
        // The original's prefix match would have said yes here.
        assert!(!same_intervention(
            "803-24-PRTITV-1000095",
            "803-24-PRTITV-100009"
        ));
        assert!(!same_intervention(
            "803-24-PRTITV-100009,x,y",
            "803-24-PRTITV-1000095"
        ));
    }
}
