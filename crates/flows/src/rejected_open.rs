//! `bridge report rejected-open` (issue 16 part 5, the pilot's open question
//! 1): the Primero cases created from proGres whose every proGres referral
//! was rejected in Primero and which are still open, so the focal point can
//! decide on closure. Ids and dates only; read-only.
//!
//! Where the answer comes from, and why:
//! - **Primero** for which cases qualify. It is the only place that knows a
//!   case's current status and the caseworker's decision on each proGres
//!   referral (`unhcr_referral_status` on the service, read by flows
//!   ping-1.2 / dtp-1.2). It also knows who created each case
//!   (`created_by`, set by Primero to the creating user and readable by the
//!   API role: `PermittedFieldService::PERMITTED_RECORD_INFORMATION_FIELDS`),
//!   which covers both designs and the cases the OpenFn jobs created before
//!   the cutover (their API user is passed as another creator). The state
//!   store cannot: DTP 1-1 keeps no per-record outcomes, and a store that is
//!   newer than the deployment misses the older cases.
//! - The listing asks only for the fields the report uses (`fields=`,
//!   Primero's `FieldSelectionService`), so no name or date of birth is ever
//!   received; it filters on `status=open` and `created_by=<user>` (exact
//!   text filters), and checks every row again, because Primero drops a
//!   filter on a field the role may not read and answers the whole scope.
//! - **The state store** only for the date of the last rejection: the day
//!   the bridge sent the rejection to proGres (the delivery of flow ping-1.2
//!   or dtp-1.2 for `<case id>/<service id>`). Primero keeps no date on the
//!   service decision. Without a store, or before the decision was sent,
//!   the date is empty.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::case_upsert::same_intervention;
use super::outgoing_decisions::delivery_key;
use bridge_mappings::MappingSet;
use bridge_partners::primero::{Case, CaseOrderBy, CaseQuery, PrimeroClient, Service, SortOrder};
use bridge_store::Store;

/// The fields the report reads; nothing else is asked of Primero.
pub const CASE_FIELDS: &[&str] = &[
    "case_id",
    "case_id_display",
    "status",
    "record_state",
    "created_at",
    "created_by",
    "unhcr_individual_no",
    "services_section",
];

/// The country table that says which `unhcr_referral_status` values are
/// rejections (mappings/<country>/outbound-decision-status.toml).
pub const DECISION_TABLE: &str = "outbound-decision-status";
/// Its value for a rejection.
pub const REJECTED: &str = "rejected";
/// Primero's status of an open case.
pub const OPEN: &str = "open";
/// Times the listing is read again when Primero's pages did not add up.
const LISTING_TRIES: usize = 3;

/// What the report needs to know about the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Criteria {
    /// User names whose cases count as created from proGres: the bridge's
    /// Primero API user, and the OpenFn jobs' if it was another one.
    pub creators: Vec<String>,
    /// `unhcr_referral_status` values meaning "rejected".
    pub rejected_statuses: BTreeSet<String>,
}

impl Criteria {
    /// The rejected statuses from the country's decision table (those it
    /// maps to `rejected`), or `rejected` itself without the table.
    pub fn new(creators: Vec<String>, mappings: Option<&MappingSet>) -> Self {
        let from_table: BTreeSet<String> = mappings
            .and_then(|m| m.tables.get(DECISION_TABLE))
            .map(|t| {
                t.map
                    .iter()
                    .filter(|(_, v)| v.as_str() == REJECTED)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let rejected_statuses = if from_table.is_empty() {
            BTreeSet::from([REJECTED.to_string()])
        } else {
            from_table
        };
        Self {
            creators,
            rejected_statuses,
        }
    }
}

/// One case to decide on. Ids, codes and dates only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedOpenCase {
    /// Primero record id (`/api/v2/cases/:id`).
    pub case_record_id: String,
    /// Primero `case_id` and its short display form.
    pub case_id: Option<String>,
    pub case_id_display: Option<String>,
    /// proGres individual number.
    pub unhcr_individual_no: Option<String>,
    /// proGres intervention numbers of the rejected referrals.
    pub intervention_numbers: Vec<String>,
    /// When Primero created the case.
    pub created_at: Option<String>,
    /// When the bridge last sent one of its rejections to proGres.
    pub last_rejected_at: Option<String>,
    pub status: String,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedOpenReport {
    pub cases: Vec<RejectedOpenCase>,
    /// Open cases of the creators Primero listed.
    pub listed: usize,
    /// False when Primero's pages never added up to its total (cases
    /// changing during the listing): run the report again.
    pub complete: bool,
    pub creators: Vec<String>,
    pub rejected_statuses: Vec<String>,
}

fn text<'a>(case: &'a Case, field: &str) -> Option<&'a str> {
    case.extra
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The services that came from proGres: they carry an intervention number.
fn progres_services(case: &Case) -> Vec<&Service> {
    case.services_section
        .iter()
        .filter(|s| {
            s.progres_interventionnumber
                .as_deref()
                .is_some_and(|n| !n.trim().is_empty())
        })
        .collect()
}

/// Whether the case qualifies: created by one of the creators, open (and
/// not disabled), at least one proGres referral and every one rejected.
pub fn qualifies(case: &Case, criteria: &Criteria) -> bool {
    let created_by_us =
        text(case, "created_by").is_some_and(|c| criteria.creators.iter().any(|u| u == c));
    let open = text(case, "status") == Some(OPEN)
        && case.extra.get("record_state") != Some(&Value::Bool(false))
        && case.extra.get("enabled") != Some(&Value::Bool(false));
    let services = progres_services(case);
    created_by_us
        && open
        && !services.is_empty()
        && services.iter().all(|s| {
            s.unhcr_referral_status
                .as_deref()
                .is_some_and(|st| criteria.rejected_statuses.contains(st))
        })
}

/// The number part of a stored intervention number (plain or composite).
fn intervention_number(stored: &str) -> String {
    let number = stored.split(',').next().unwrap_or_default().trim();
    debug_assert!(same_intervention(stored, number));
    number.to_string()
}

/// When the bridge last sent a decision on one of these services to proGres.
async fn last_sent(store: &dyn Store, case: &Case) -> anyhow::Result<Option<String>> {
    let mut last: Option<String> = None;
    for service in progres_services(case) {
        let Some(service_id) = service.unique_id.as_deref() else {
            continue;
        };
        let key = delivery_key(&case.id, service_id);
        for flow in [super::ping_1_2::FLOW, super::dtp_1_2::FLOW] {
            if let Some(d) = store.delivery(flow, &key).await? {
                if last.as_ref().is_none_or(|l| d.delivered_at > *l) {
                    last = Some(d.delivered_at);
                }
            }
        }
    }
    Ok(last)
}

/// The open cases of one creator, every page, keyed by record id; whether
/// the pages added up to Primero's total.
async fn open_cases_of(
    primero: &PrimeroClient,
    creator: &str,
) -> anyhow::Result<(BTreeMap<String, Case>, bool)> {
    let query = CaseQuery::new()
        .status(OPEN)
        .created_by(creator)
        .fields(CASE_FIELDS)
        .order_by(CaseOrderBy::CreatedAt, SortOrder::Asc);
    let mut complete = false;
    let mut cases = BTreeMap::new();
    for _ in 0..LISTING_TRIES {
        cases.clear();
        let mut page_no = 1;
        let total = loop {
            let page = primero.list_cases_page(&query, page_no).await?;
            let (total, more) = (page.total, page.has_next());
            for case in page.data {
                cases.insert(case.id.clone(), case);
            }
            if !more {
                break total;
            }
            page_no += 1;
        };
        // Primero pages by number with no tie-breaker: a case that changed
        // during the listing can be served twice and another not at all.
        if cases.len() as u64 == total {
            complete = true;
            break;
        }
    }
    Ok((cases, complete))
}

/// Build the report: Primero for the cases (read-only), the store (when
/// there is one) for the rejection dates.
pub async fn rejected_open(
    primero: &PrimeroClient,
    store: Option<&dyn Store>,
    criteria: &Criteria,
) -> anyhow::Result<RejectedOpenReport> {
    let mut listed = BTreeMap::new();
    let mut complete = true;
    for creator in &criteria.creators {
        let (cases, whole) = open_cases_of(primero, creator).await?;
        complete &= whole;
        listed.extend(cases);
    }
    let mut cases = Vec::new();
    for case in listed.values().filter(|c| qualifies(c, criteria)) {
        let last_rejected_at = match store {
            Some(store) => last_sent(store, case).await?,
            None => None,
        };
        cases.push(RejectedOpenCase {
            case_record_id: case.id.clone(),
            case_id: case.case_id.clone(),
            case_id_display: text(case, "case_id_display").map(str::to_string),
            unhcr_individual_no: case.unhcr_individual_no.clone(),
            intervention_numbers: progres_services(case)
                .iter()
                .filter_map(|s| s.progres_interventionnumber.as_deref())
                .map(intervention_number)
                .collect(),
            created_at: text(case, "created_at").map(str::to_string),
            last_rejected_at,
            status: text(case, "status").unwrap_or_default().to_string(),
        });
    }
    cases.sort_by(|a, b| {
        (a.created_at.as_deref(), &a.case_record_id)
            .cmp(&(b.created_at.as_deref(), &b.case_record_id))
    });
    Ok(RejectedOpenReport {
        cases,
        listed: listed.len(),
        complete,
        creators: criteria.creators.clone(),
        rejected_statuses: criteria.rejected_statuses.iter().cloned().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn case(v: Value) -> Case {
        serde_json::from_value(v).unwrap()
    }

    fn criteria() -> Criteria {
        Criteria {
            creators: vec!["bridge_api".into()],
            rejected_statuses: BTreeSet::from(["rejected".to_string()]),
        }
    }

    fn svc(number: Option<&str>, status: &str) -> Value {
        json!({"unique_id": "s", "progres_interventionnumber": number, "unhcr_referral_status": status})
    }

    #[test]
    fn only_open_cases_of_ours_whose_every_progres_referral_is_rejected() {
        let base = |services: Vec<Value>, status: &str, creator: &str| {
            case(
                json!({"id": "r", "status": status, "created_by": creator, "services_section": services}),
            )
        };
        let c = criteria();
        let rejected = svc(Some("803-24-PRTITV-1,x,y"), "rejected");
        assert!(qualifies(
            &base(vec![rejected.clone()], "open", "bridge_api"),
            &c
        ));
        // A caseworker's own service does not count either way.
        assert!(qualifies(
            &base(
                vec![rejected.clone(), svc(None, "pending")],
                "open",
                "bridge_api"
            ),
            &c
        ));
        for (services, status, creator) in [
            (
                vec![rejected.clone(), svc(Some("803-24-PRTITV-2"), "accepted")],
                "open",
                "bridge_api",
            ),
            (
                vec![rejected.clone(), svc(Some("803-24-PRTITV-2"), "pending")],
                "open",
                "bridge_api",
            ),
            (vec![rejected.clone()], "closed", "bridge_api"),
            (vec![rejected.clone()], "open", "cw_amal"),
            (vec![svc(None, "rejected")], "open", "bridge_api"),
            (vec![], "open", "bridge_api"),
        ] {
            assert!(
                !qualifies(&base(services.clone(), status, creator), &c),
                "{services:?} {status} {creator}"
            );
        }
        let mut disabled = base(vec![rejected], "open", "bridge_api");
        disabled.extra.insert("record_state".into(), json!(false));
        assert!(!qualifies(&disabled, &c));
        assert_eq!(
            intervention_number("803-24-PRTITV-1,x,y"),
            "803-24-PRTITV-1"
        );
    }

    #[test]
    fn the_rejected_statuses_come_from_the_country_table() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../mappings/kenya-dadaab");
        let set = MappingSet::load_dir(std::path::Path::new(dir)).unwrap();
        let c = Criteria::new(vec!["u".into()], Some(&set));
        assert_eq!(
            c.rejected_statuses,
            BTreeSet::from(["rejected".to_string()])
        );
        assert_eq!(Criteria::new(vec![], None).rejected_statuses.len(), 1);
    }
}
