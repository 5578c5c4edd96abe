//! In-memory simulator of UNHCR's PING middleware (design B), served by axum.
//!
//! It reproduces the wire formats of spec §3.2 and examples 13–20: the B2C
//! password-grant token endpoint, `retrievedatawithpaging` (SHP-2747, SHP-2358,
//! SHP-2795, SHP-2796), sync ingestion (SHP-2748, SHP-2284), async ingestion
//! (SHP-2731) and check status, with APIM-style 401s. Tests seed and inspect
//! it through plain methods on [`PingSim`].
//!
//! Choices where the real PING is undocumented:
//! - Paging: the cookie is accepted at the top level (`PagingCookie`, with an
//!   optional `PageNumber` that must match) or inside `PagingSummary`. Each
//!   retrieve is snapshotted when its first page is served, so later pages
//!   never skip or repeat rows; cookies stay valid so a retried page works.
//!   `RecordCount` counts the rows of the page; `PageNumber` starts at 0.
//! - Absent values (no language, no specific need, no rejection reason) are
//!   omitted from rows, as Dataverse omits null attributes.
//! - Sync ingestion answers 200 with
//!   `{"SPHTransactionId", "ErrorMessage": null, "RecordCount", "Data": [{"ExternalId", "Status": "Success"|"Failed", "Message"}]}`;
//!   a record that names an unknown key is `Failed`, the others still apply.
//! - Check status answers `{"Data": "<malformed string>"}` exactly as example 19
//!   (other shapes PING sends: [`FaultKind::CheckStatus`]).
//!
//! Fault knobs ([`FaultKind`]) apply to the next N requests on a path prefix,
//! in the same shape as the Primero and DTP simulators'.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Extension;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::people::Person;
use super::primero::{hangup_response, truncate_response, InFlight};

/// A row as PING returns it.
pub type Row = Map<String, Value>;

pub const TOKEN_PATH: &str = "/oauth2/v2.0/token";
pub const RETRIEVE_PATH: &str = "/primes/fetch/paging/v3/retrievedatawithpaging";
pub const CHECK_STATUS_PATH: &str = "/primes/ingestion/checkstatus/v1/pingdata";
pub const NO_DATA: &str = "No Data Available";

/// `progres_primerotransferstatus` written by workflow 1.1.
pub const TRANSFER_STATUS_PENDING: &str = "125080002";
/// `progres_interoperabilityreferralstatus` of a referral just created by SHP-2731.
pub const INTEROP_STATUS_NEW: u32 = 125_080_000;

const DEFAULT_BUSINESS_UNIT: &str = "577ccdf6-86de-e811-80d8-001dd8b71fe3";
const DEFAULT_BUSINESS_UNIT_NAME: &str = "Kenya - Dadaab";

/// The deployment's shipping process ids, by purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippingProcesses {
    /// SHP-2747: pending Primero-outgoing-referral deliveries.
    pub pending_deliveries: String,
    /// SHP-2358: intervention details, one row per language × specific need.
    pub intervention_details: String,
    /// SHP-2748: sync ingestion of the intervention's Primero transfer status.
    pub transfer_status: String,
    /// SHP-2731: async ingestion creating an interoperability referral.
    pub interop_referral: String,
    /// SHP-2795: list of interoperability referrals with status.
    pub interop_referral_list: String,
    /// SHP-2796: one interoperability referral's decision details.
    pub interop_referral_details: String,
    /// SHP-2284: sync ingestion of an interoperability referral's status.
    pub interop_referral_status: String,
}

impl Default for ShippingProcesses {
    fn default() -> Self {
        Self {
            pending_deliveries: "SHP-2747".into(),
            intervention_details: "SHP-2358".into(),
            transfer_status: "SHP-2748".into(),
            interop_referral: "SHP-2731".into(),
            interop_referral_list: "SHP-2795".into(),
            interop_referral_details: "SHP-2796".into(),
            interop_referral_status: "SHP-2284".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shp {
    PendingDeliveries,
    InterventionDetails,
    TransferStatus,
    InteropReferral,
    InteropReferralList,
    InteropReferralDetails,
    InteropReferralStatus,
}

impl ShippingProcesses {
    fn kind(&self, id: &str) -> Option<Shp> {
        [
            (&self.pending_deliveries, Shp::PendingDeliveries),
            (&self.intervention_details, Shp::InterventionDetails),
            (&self.transfer_status, Shp::TransferStatus),
            (&self.interop_referral, Shp::InteropReferral),
            (&self.interop_referral_list, Shp::InteropReferralList),
            (&self.interop_referral_details, Shp::InteropReferralDetails),
            (&self.interop_referral_status, Shp::InteropReferralStatus),
        ]
        .into_iter()
        .find(|(name, _)| name.as_str() == id)
        .map(|(_, kind)| kind)
    }
}

/// Credentials and identifiers the simulator expects.
#[derive(Clone)]
pub struct PingSimConfig {
    pub username: String,
    pub password: String,
    pub client_id: String,
    pub subscription_key: String,
    pub partner_id: String,
    pub interop_id: String,
    /// `expires_in` of issued tokens; they are refused after it.
    pub token_ttl_secs: u64,
    /// Rows per retrieve page.
    pub page_size: usize,
    pub shipping: ShippingProcesses,
}

impl Default for PingSimConfig {
    fn default() -> Self {
        Self {
            username: "bridge-sim@ping.example".into(),
            password: "sim-password".into(),
            client_id: "00000000-0000-4000-8000-00000000c11e".into(),
            subscription_key: "sim-subscription-key".into(),
            partner_id: "PNR-1363".into(),
            interop_id: "INT-1436".into(),
            token_ttl_secs: 3600,
            page_size: 5000,
            shipping: ShippingProcesses::default(),
        }
    }
}

impl fmt::Debug for PingSimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PingSimConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("client_id", &self.client_id)
            .field("subscription_key", &"<redacted>")
            .field("partner_id", &self.partner_id)
            .field("interop_id", &self.interop_id)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("page_size", &self.page_size)
            .field("shipping", &self.shipping)
            .finish()
    }
}

/// Which columns an SHP-2747 pending-delivery row carries: the shipping
/// process's column list is PING configuration and has changed over time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PendingRowShape {
    /// Example 14: the intervention GUID under both `progres_intervention`
    /// and `progres_lpinterventionid`.
    #[default]
    Current,
    /// OpenFn/ping-primero `sample-data/referral-from-progres.json`: the GUID
    /// only under `progres_intervention`, plus
    /// `progres_lpintervention.progres_individualname`.
    Sample2023,
}

/// A proGres specific need attached to an intervention's individual.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecificNeed {
    pub category: String,
    pub subcategory: String,
    pub category_id: String,
    pub subcategory_id: String,
}

impl SpecificNeed {
    pub fn new(
        category: impl Into<String>,
        subcategory: impl Into<String>,
        category_id: impl Into<String>,
        subcategory_id: impl Into<String>,
    ) -> Self {
        Self {
            category: category.into(),
            subcategory: subcategory.into(),
            category_id: category_id.into(),
            subcategory_id: subcategory_id.into(),
        }
    }

    /// The need of example 15.
    pub fn unaccompanied_child() -> Self {
        Self::new(
            "Unaccompanied or separated child",
            "Unaccompanied child",
            "abc5b4fb-8f76-e611-80c9-00155d340529",
            "0b7f1c2e-dddd-4a4a-9c9c-00000000000d",
        )
    }

    pub fn separated_child() -> Self {
        Self::new(
            "Unaccompanied or separated child",
            "Separated child",
            "abc5b4fb-8f76-e611-80c9-00155d340529",
            "0b7f1c2e-dddd-4a4a-9c9c-00000000000e",
        )
    }

    pub fn child_labour() -> Self {
        Self::new(
            "Child at risk",
            "Child labour",
            "a1c5b4fb-8f76-e611-80c9-00155d340529",
            "0b7f1c2e-dddd-4a4a-9c9c-00000000000f",
        )
    }
}

/// A proGres intervention to seed (a proGres → Primero referral).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimIntervention {
    pub person: Person,
    /// e.g. `803-24-PRTITV-1000123`.
    pub intervention_number: String,
    /// GUID, `progres_lpinterventionid`.
    pub lpinterventionid: String,
    /// GUID of the `progres_individual` row.
    pub individual_guid: String,
    /// GUID of the registration group (its number is `person.registration_group`).
    pub registration_group_guid: String,
    pub business_unit: String,
    pub business_unit_name: String,
    /// `progres_interventiontype2.interventiontype.progres_description`.
    pub intervention_type: String,
    pub languages: Vec<String>,
    pub specific_needs: Vec<SpecificNeed>,
    /// May contain HTML, as in proGres.
    pub description: String,
    pub reason_for_referral: String,
    /// `YYYY-MM-DD`.
    pub start_date: String,
    pub caseworker_title: String,
    pub caseworker_phone: String,
    pub caseworker_email: String,
    /// `progres_primeroid`, when proGres already knows the Primero case.
    pub primero_id: Option<String>,
}

impl SimIntervention {
    /// Defaults modelled on example 15; ids derived from `n` so tests can
    /// predict them (`n` must be unique within a simulator).
    pub fn for_person(person: Person, n: u64) -> Self {
        Self {
            person,
            intervention_number: format!("803-24-PRTITV-{}", 1_000_000 + n),
            lpinterventionid: format!("0b7f1c2e-1111-4a4a-9c9c-{n:012}"),
            individual_guid: format!("0b7f1c2e-8888-4a4a-9c9c-{n:012}"),
            registration_group_guid: format!("0b7f1c2e-4444-4a4a-9c9c-{n:012}"),
            business_unit: DEFAULT_BUSINESS_UNIT.into(),
            business_unit_name: DEFAULT_BUSINESS_UNIT_NAME.into(),
            intervention_type: "Alternative Care".into(),
            languages: vec!["Nuer".into()],
            specific_needs: Vec::new(),
            description: "<p>Child needs interim care&nbsp;arrangement</p>".into(),
            reason_for_referral: "Caregiver hospitalised".into(),
            start_date: "2024-05-02".into(),
            caseworker_title: "Protection Assistant".into(),
            caseworker_phone: "+251900000001".into(),
            caseworker_email: "pa.example@unhcr.example".into(),
            primero_id: None,
        }
    }

    pub fn with_languages<I, S>(mut self, languages: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.languages = languages.into_iter().map(Into::into).collect();
        self
    }

    pub fn with_specific_needs(mut self, needs: Vec<SpecificNeed>) -> Self {
        self.specific_needs = needs;
        self
    }

    pub fn with_intervention_type(mut self, description: impl Into<String>) -> Self {
        self.intervention_type = description.into();
        self
    }

    pub fn with_primero_id(mut self, primero_id: impl Into<String>) -> Self {
        self.primero_id = Some(primero_id.into());
        self
    }
}

/// What proGres holds about an intervention's Primero transfer (ids, codes, dates only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterventionState {
    pub lpinterventionid: String,
    /// In the SHP-2747 queue.
    pub pending: bool,
    pub transfer_status: Option<String>,
    pub transfer_status_date: Option<String>,
    /// `progres_primeroid` written by SHP-2748 (workflow 1.2).
    pub primero_id: Option<String>,
    pub primero_caseworker: Option<String>,
    /// Attachment comments received.
    pub comments: Vec<String>,
    /// Number of SHP-2748 records applied.
    pub status_writes: usize,
}

/// A proGres interoperability referral (a Primero → proGres referral).
#[derive(Debug, Clone, PartialEq)]
pub struct InteropReferralState {
    /// `progres_interoperabilityreferralid`.
    pub id: String,
    /// `progres_interoperabilityreferralnumber`, e.g. `REF-IOP-DAD-000000001`.
    pub number: String,
    /// `progres_interoperabilityreferralstatus`.
    pub status: u32,
    /// `progres_offlineid` (Primero `case_id`).
    pub offline_id: Option<String>,
    /// `progres_orgreferralid` (Primero service `unique_id`).
    pub org_referral_id: Option<String>,
    pub external_id: Option<String>,
    pub external_guid: Option<String>,
    pub rejection_reason_name: Option<String>,
    pub rejection_comment: Option<String>,
    /// `progres_comments` received through SHP-2284.
    pub comments: Vec<String>,
    /// The fields it was created with (SHP-2731).
    pub fields: Vec<(String, Value)>,
}

/// One ingestion record as received (for test assertions).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedIngestion {
    /// Request path, e.g. `/api/ingestion/v2/PNR-1363/data`.
    pub path: String,
    pub shipping_process_id: String,
    pub sph_transaction_id: String,
    pub external_id: String,
    /// `ExternalGUID` (async ingestion only).
    pub external_guid: Option<String>,
    /// Comments of `Attachments`; `None` when the key was absent.
    pub attachments: Option<Vec<String>>,
    pub fields: Vec<(String, Value)>,
}

impl ReceivedIngestion {
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// The raw JSON body of an ingestion or check-status request.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedBody {
    pub path: String,
    pub body: Value,
}

/// One request and the status it was answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// An injected failure (the same shape as the Primero simulator's `Fault`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this status (and `Retry-After` seconds) without processing.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Answer this status with this body verbatim, without processing.
    Body { status: u16, body: String },
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Close the connection without a complete answer; not processed.
    Hangup,
    /// Process the request, then close the connection without a complete answer.
    HangupAfter,
    /// Process the request, then answer with the body cut in half.
    Truncate,
    /// Retrieve continuation: serve the previous page again, with the paging
    /// cookie the client just sent (paging does not advance).
    RepeatPage,
    /// Retrieve: leave out the first `n` rows of the page; they are never seen.
    SkipRows(usize),
    /// Retrieve: answer `Data: "No Data Available"` whatever matches.
    NoData,
    /// Check status: process normally, write the answer in this shape.
    CheckStatus(StatusShape),
    /// Expire every issued token, then handle the request (answered 401).
    ExpireTokens,
}

/// Shapes of a check-status answer PING has been seen to send (spec §1.B
/// 2.1 step 6, example 19).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusShape {
    /// `{"Data": "<array as a string, inner Data unescaped>"}` (example 19, the default).
    Example19,
    /// `{"Data": [{"Status", "Data": "<escaped JSON string>", "Message"}]}`.
    WellFormed,
    /// A bare array of items whose inner `Data` is an object.
    BareArray,
    /// Not JSON at all: the outer `Data` string is not escaped either.
    UnescapedTwice,
    /// `{"Data": "No Data Available"}`.
    NoData,
    /// `{"ErrorMessage": "<message>", "Data": null}`.
    ErrorMessage(String),
    /// Bytes no parser can read.
    Garbage,
}

struct Fault {
    path_prefix: String,
    kind: FaultKind,
    remaining: usize,
}

struct Delivery {
    delivery_id: String,
    status_date: String,
}

struct StoredIntervention {
    spec: SimIntervention,
    delivery: Option<Delivery>,
    transfer_status: Option<String>,
    transfer_status_date: Option<String>,
    primero_id: Option<String>,
    primero_caseworker: Option<String>,
    comments: Vec<String>,
    status_writes: usize,
}

impl StoredIntervention {
    fn state(&self) -> InterventionState {
        InterventionState {
            lpinterventionid: self.spec.lpinterventionid.clone(),
            pending: self.delivery.is_some(),
            transfer_status: self.transfer_status.clone(),
            transfer_status_date: self.transfer_status_date.clone(),
            primero_id: self.primero_id.clone(),
            primero_caseworker: self.primero_caseworker.clone(),
            comments: self.comments.clone(),
            status_writes: self.status_writes,
        }
    }
}

/// One item of an async ingestion's outcome, served by check status.
struct TransactionItem {
    status: String,
    data: Row,
    message: String,
}

struct PagingCursor {
    shipping_process_id: String,
    rows: Arc<Vec<Row>>,
    offset: usize,
    page_number: i64,
}

struct SimState {
    token_ttl: Duration,
    page_size: usize,
    latency: Duration,
    tokens: HashMap<String, Instant>,
    tokens_issued: usize,
    interventions: Vec<StoredIntervention>,
    /// `lpinterventionid` → position in `interventions` (only ever pushed to
    /// or replaced in place), so a lookup does not scan thousands of them.
    intervention_index: HashMap<String, usize>,
    interop_referrals: Vec<InteropReferralState>,
    transactions: HashMap<String, Vec<TransactionItem>>,
    paging: HashMap<String, PagingCursor>,
    ingestions: Vec<ReceivedIngestion>,
    bodies: Vec<ReceivedBody>,
    requests: Vec<ReceivedRequest>,
    arrivals: Vec<Instant>,
    faults: Vec<Fault>,
    /// Messages for the next async records that proGres refuses (check status `Failed`).
    async_refusals: Vec<String>,
    pending_row_shape: PendingRowShape,
}

impl SimState {
    fn take_fault(&mut self, path: &str) -> Option<FaultKind> {
        let fault = self
            .faults
            .iter_mut()
            .find(|f| f.remaining > 0 && path.starts_with(&f.path_prefix))?;
        fault.remaining -= 1;
        let kind = fault.kind.clone();
        self.faults.retain(|f| f.remaining > 0);
        Some(kind)
    }

    fn intervention(&self, id: &str) -> Option<&StoredIntervention> {
        self.intervention_index
            .get(id)
            .map(|&i| &self.interventions[i])
    }

    fn intervention_mut(&mut self, id: &str) -> Option<&mut StoredIntervention> {
        match self.intervention_index.get(id) {
            Some(&i) => Some(&mut self.interventions[i]),
            None => None,
        }
    }
}

struct Inner {
    config: PingSimConfig,
    state: Mutex<SimState>,
    in_flight: InFlight,
}

/// Handle to a simulator's shared state. Cheap to clone.
#[derive(Clone)]
pub struct PingSim {
    inner: Arc<Inner>,
}

impl fmt::Debug for PingSim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PingSim")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn today() -> String {
    chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string()
}

fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl PingSim {
    pub fn new(config: PingSimConfig) -> Self {
        let state = SimState {
            token_ttl: Duration::from_secs(config.token_ttl_secs),
            page_size: config.page_size.max(1),
            latency: Duration::ZERO,
            tokens: HashMap::new(),
            tokens_issued: 0,
            interventions: Vec::new(),
            intervention_index: HashMap::new(),
            interop_referrals: Vec::new(),
            transactions: HashMap::new(),
            paging: HashMap::new(),
            ingestions: Vec::new(),
            bodies: Vec::new(),
            requests: Vec::new(),
            arrivals: Vec::new(),
            faults: Vec::new(),
            async_refusals: Vec::new(),
            pending_row_shape: PendingRowShape::default(),
        };
        Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(state),
                in_flight: InFlight::default(),
            }),
        }
    }

    /// Bind `addr` (use port 0 for any) and serve until the handle is dropped.
    pub async fn start(config: PingSimConfig, addr: SocketAddr) -> io::Result<RunningPingSim> {
        let sim = PingSim::new(config);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let app = sim.router();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop.await;
                })
                .await;
            if let Err(err) = served {
                tracing::warn!(error = %err, "PING simulator stopped");
            }
        });
        tracing::debug!(%addr, "PING simulator listening");
        Ok(RunningPingSim {
            sim,
            addr,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    pub fn config(&self) -> &PingSimConfig {
        &self.inner.config
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panicking test thread must not wedge every later request.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The axum router (token endpoint, API endpoints, edge faults and logging).
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route(RETRIEVE_PATH, post(retrieve))
            .route("/api/ingestion/v2/{partner_id}/data", post(ingest_sync))
            .route(
                "/api/ingestion/v2/{partner_id}/asyncdata",
                post(ingest_async),
            )
            .route(CHECK_STATUS_PATH, post(check_status))
            .route_layer(middleware::from_fn_with_state(self.clone(), require_auth));
        Router::new()
            .route(TOKEN_PATH, post(token))
            .merge(api)
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(self.clone(), edge))
            .with_state(self.clone())
    }

    // ----- seeding and driving -------------------------------------------------

    /// Seed an intervention, queued as a pending delivery (SHP-2747). An
    /// intervention with the same `lpinterventionid` is replaced. Returns the id.
    pub fn add_intervention(&self, intervention: SimIntervention) -> String {
        let id = intervention.lpinterventionid.clone();
        let stored = StoredIntervention {
            delivery: Some(Delivery {
                delivery_id: new_guid(),
                status_date: intervention.start_date.clone(),
            }),
            transfer_status: None,
            // proGres stamps the transfer status date when it queues the delivery (example 15).
            transfer_status_date: Some(intervention.start_date.clone()),
            primero_id: None,
            primero_caseworker: None,
            comments: Vec::new(),
            status_writes: 0,
            spec: intervention,
        };
        let mut st = self.lock();
        match st.intervention_mut(&id) {
            Some(existing) => *existing = stored,
            None => {
                let at = st.interventions.len();
                st.intervention_index.insert(id.clone(), at);
                st.interventions.push(stored);
            }
        }
        id
    }

    /// Queue an intervention again (proGres re-sending it). False if unknown.
    pub fn requeue_intervention(&self, lpinterventionid: &str) -> bool {
        let mut st = self.lock();
        let Some(i) = st.intervention_mut(lpinterventionid) else {
            return false;
        };
        i.delivery = Some(Delivery {
            delivery_id: new_guid(),
            status_date: today(),
        });
        true
    }

    pub fn intervention_state(&self, lpinterventionid: &str) -> Option<InterventionState> {
        self.lock()
            .intervention(lpinterventionid)
            .map(StoredIntervention::state)
    }

    /// The written `progres_primerotransferstatus`, if any.
    pub fn transfer_status(&self, lpinterventionid: &str) -> Option<String> {
        self.intervention_state(lpinterventionid)
            .and_then(|s| s.transfer_status)
    }

    /// Ids in the SHP-2747 queue, in seeding order.
    pub fn pending_intervention_ids(&self) -> Vec<String> {
        self.lock()
            .interventions
            .iter()
            .filter(|i| i.delivery.is_some())
            .map(|i| i.spec.lpinterventionid.clone())
            .collect()
    }

    /// Seed an interoperability referral as if SHP-2731 had created it.
    pub fn add_interop_referral(
        &self,
        offline_id: impl Into<String>,
        org_referral_id: impl Into<String>,
    ) -> String {
        let mut st = self.lock();
        let referral = new_interop_referral(st.interop_referrals.len() + 1);
        let id = referral.id.clone();
        st.interop_referrals.push(InteropReferralState {
            offline_id: Some(offline_id.into()),
            org_referral_id: Some(org_referral_id.into()),
            ..referral
        });
        id
    }

    /// Record a proGres decision on an interoperability referral. False if unknown.
    pub fn decide_interop_referral(
        &self,
        id: &str,
        status: u32,
        rejection_reason_name: Option<&str>,
        rejection_comment: Option<&str>,
    ) -> bool {
        let mut st = self.lock();
        let Some(r) = st.interop_referrals.iter_mut().find(|r| r.id == id) else {
            return false;
        };
        r.status = status;
        r.rejection_reason_name = rejection_reason_name.map(str::to_string);
        r.rejection_comment = rejection_comment.map(str::to_string);
        true
    }

    pub fn interop_referral(&self, id: &str) -> Option<InteropReferralState> {
        self.lock()
            .interop_referrals
            .iter()
            .find(|r| r.id == id)
            .cloned()
    }

    pub fn interop_referrals(&self) -> Vec<InteropReferralState> {
        self.lock().interop_referrals.clone()
    }

    // ----- inspection ----------------------------------------------------------

    /// Every ingestion record received (sync and async), in order.
    pub fn ingestion_records(&self) -> Vec<ReceivedIngestion> {
        self.lock().ingestions.clone()
    }

    /// Raw JSON bodies of ingestion and check-status requests, in order.
    pub fn ingestion_bodies(&self) -> Vec<ReceivedBody> {
        self.lock().bodies.clone()
    }

    /// Every request received, with the status it got.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.lock().requests.clone()
    }

    /// Requests received on exactly this path.
    pub fn request_count(&self, path: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// Requests on `path` answered with `status`.
    pub fn status_count(&self, path: &str, status: u16) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == path && r.status == status)
            .count()
    }

    pub fn tokens_issued(&self) -> usize {
        self.lock().tokens_issued
    }

    // ----- knobs ---------------------------------------------------------------

    /// Invalidate every issued token now (server-side early expiry).
    pub fn expire_all_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// `expires_in` of tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.lock().token_ttl = ttl;
    }

    /// The columns of the SHP-2747 rows served from now on.
    pub fn set_pending_row_shape(&self, shape: PendingRowShape) {
        self.lock().pending_row_shape = shape;
    }

    /// Rows per page for retrieves started from now on.
    pub fn set_page_size(&self, rows: usize) {
        self.lock().page_size = rows.max(1);
    }

    /// Delay before every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// The next `count` requests whose path starts with `path_prefix` are
    /// answered with `status` and not processed.
    pub fn fail_next(&self, path_prefix: &str, status: u16, count: usize) {
        self.inject_fault(
            path_prefix,
            FaultKind::Status {
                status,
                retry_after: None,
            },
            count,
        );
    }

    pub fn inject_fault(&self, path_prefix: &str, kind: FaultKind, count: usize) {
        if count > 0 {
            self.lock().faults.push(Fault {
                path_prefix: path_prefix.to_string(),
                kind,
                remaining: count,
            });
        }
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The most requests ever handled at the same time (since the last reset).
    pub fn max_in_flight_seen(&self) -> usize {
        self.inner.in_flight.max_seen()
    }

    /// Forget the in-flight high-water mark and the arrival times.
    pub fn reset_in_flight(&self) {
        self.inner.in_flight.reset();
        self.lock().arrivals.clear();
    }

    /// When each request arrived, in order (for rate-limit checks).
    pub fn arrival_times(&self) -> Vec<Instant> {
        self.lock().arrivals.clone()
    }

    /// proGres refuses the next `count` async ingestion records: the
    /// ingestion is accepted (a transaction id is returned) but check status
    /// reports `Failed` with `message`, and no interoperability referral is created.
    pub fn refuse_next_async_records(&self, count: usize, message: &str) {
        self.lock()
            .async_refusals
            .extend(std::iter::repeat_n(message.to_string(), count));
    }
}

fn new_interop_referral(n: usize) -> InteropReferralState {
    InteropReferralState {
        id: new_guid(),
        number: format!("REF-IOP-DAD-{n:09}"),
        status: INTEROP_STATUS_NEW,
        offline_id: None,
        org_referral_id: None,
        external_id: None,
        external_guid: None,
        rejection_reason_name: None,
        rejection_comment: None,
        comments: Vec::new(),
        fields: Vec::new(),
    }
}

/// A simulator serving on a socket; stops when dropped. Derefs to [`PingSim`].
pub struct RunningPingSim {
    sim: PingSim,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningPingSim {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Token endpoint (served by the same listener).
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.base_url())
    }

    pub fn sim(&self) -> &PingSim {
        &self.sim
    }

    /// Stop accepting, finish in-flight requests, and wait.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Deref for RunningPingSim {
    type Target = PingSim;
    fn deref(&self) -> &PingSim {
        &self.sim
    }
}

impl Drop for RunningPingSim {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------
// Middleware
// ---------------------------------------------------------------------------

/// Latency, injected faults and the request log, for every path.
async fn edge(State(sim): State<PingSim>, mut req: Request, next: Next) -> Response {
    let _in_flight = sim.inner.in_flight.enter();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let (latency, fault) = {
        let mut st = sim.lock();
        st.arrivals.push(Instant::now());
        (st.latency, st.take_fault(&path))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = match fault {
        Some(FaultKind::Body { status, body }) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Some(FaultKind::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(FaultKind::Hangup) => hangup_response(),
        Some(FaultKind::HangupAfter) => {
            let _ = next.run(req).await;
            hangup_response()
        }
        Some(FaultKind::Truncate) => truncate_response(next.run(req).await).await,
        Some(FaultKind::ExpireTokens) => {
            sim.lock().tokens.clear();
            next.run(req).await
        }
        Some(
            fault @ (FaultKind::RepeatPage
            | FaultKind::SkipRows(_)
            | FaultKind::NoData
            | FaultKind::CheckStatus(_)),
        ) => {
            req.extensions_mut().insert(HandlerFault(fault));
            next.run(req).await
        }
        Some(FaultKind::Status {
            status,
            retry_after,
        }) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (
                code,
                Json(json!({"statusCode": code.as_u16(), "message": "Injected fault"})),
            )
                .into_response();
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        None => next.run(req).await,
    };
    let status = response.status().as_u16();
    tracing::debug!(%method, %path, status, "PING simulator answered");
    sim.lock().requests.push(ReceivedRequest {
        method,
        path,
        status,
    });
    response
}

fn apim_401(message: &str) -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({"statusCode": 401, "message": message})),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// APIM checks the subscription key, then the JWT.
async fn require_auth(State(sim): State<PingSim>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    match headers
        .get("Ocp-Apim-Subscription-Key")
        .and_then(|v| v.to_str().ok())
    {
        None => {
            return apim_401(
                "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.",
            )
        }
        Some(key) if key != sim.inner.config.subscription_key => {
            return apim_401(
                "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.",
            )
        }
        Some(_) => {}
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string());
    let valid = token.is_some_and(|token| {
        let mut st = sim.lock();
        let now = Instant::now();
        st.tokens.retain(|_, expires| *expires > now);
        st.tokens.contains_key(&token)
    });
    if !valid {
        return apim_401("Unauthorized. Access token is missing or invalid.");
    }
    next.run(req).await
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"statusCode": 404, "message": "Resource not found"})),
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// Token endpoint
// ---------------------------------------------------------------------------

fn b2c_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn token(State(sim): State<PingSim>, headers: HeaderMap, body: Bytes) -> Response {
    let config = &sim.inner.config;
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return b2c_error(
            "invalid_request",
            "AADB2C90079: Clients must send a form-encoded request body.",
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    if field("grant_type") != "password" {
        return b2c_error(
            "unsupported_grant_type",
            "AADB2C90086: The supplied grant_type is not supported.",
        );
    }
    if field("client_id") != config.client_id {
        return b2c_error(
            "unauthorized_client",
            "AADB2C90057: The provided application is not configured to allow this flow.",
        );
    }
    if field("scope").trim().is_empty() || !field("response_type").contains("token") {
        return b2c_error(
            "invalid_request",
            "AADB2C90055: The scope or response_type provided in the request is missing or invalid.",
        );
    }
    if field("username") != config.username || field("password") != config.password {
        return b2c_error(
            "invalid_grant",
            "AADB2C90225: The username or password provided in the request are invalid.",
        );
    }
    let access_token = format!("sim.{}", uuid::Uuid::new_v4().simple());
    let ttl = {
        let mut st = sim.lock();
        let ttl = st.token_ttl;
        st.tokens.insert(access_token.clone(), Instant::now() + ttl);
        st.tokens_issued += 1;
        ttl
    };
    Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
    }))
    .into_response()
}

// ---------------------------------------------------------------------------
// Request bodies (strict: a wrongly cased key is an error, as a test needs)
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrieveBody {
    #[serde(rename = "ShippingProcessId")]
    shipping_process_id: String,
    #[serde(rename = "PartnerId")]
    partner_id: String,
    #[serde(rename = "InteropID")]
    interop_id: String,
    #[serde(rename = "APIVersion")]
    api_version: String,
    #[serde(rename = "QueryParameters", default)]
    query_parameters: Vec<QueryParameterIn>,
    #[serde(rename = "PagingCookie", default)]
    paging_cookie: Option<String>,
    #[serde(rename = "PageNumber", default)]
    page_number: Option<i64>,
    #[serde(rename = "PagingSummary", default)]
    paging_summary: Option<PagingSummaryIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryParameterIn {
    #[serde(rename = "ParameterName")]
    parameter_name: String,
    #[serde(rename = "Value")]
    value: String,
}

#[derive(Deserialize)]
struct PagingSummaryIn {
    #[serde(rename = "PagingCookie", default)]
    paging_cookie: Option<String>,
    #[serde(rename = "PageNumber", default)]
    page_number: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncIngestionBody {
    #[serde(rename = "ShippingProcessId")]
    shipping_process_id: String,
    #[serde(rename = "InteropId")]
    interop_id: String,
    #[serde(rename = "Data")]
    data: Vec<SyncRecordIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncRecordIn {
    #[serde(rename = "ExternalId")]
    external_id: String,
    #[serde(rename = "Attachments", default)]
    attachments: Option<Vec<AttachmentIn>>,
    #[serde(rename = "Fields")]
    fields: Vec<FieldIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachmentIn {
    #[serde(rename = "Comment")]
    comment: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldIn {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Value")]
    value: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AsyncIngestionBody {
    #[serde(rename = "ShippingProcessId")]
    shipping_process_id: String,
    #[serde(rename = "InteropID")]
    interop_id: String,
    #[serde(rename = "APIVersion")]
    api_version: String,
    #[serde(rename = "Data")]
    data: Vec<AsyncRecordIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AsyncRecordIn {
    #[serde(rename = "ExternalId")]
    external_id: String,
    #[serde(rename = "ExternalGUID")]
    external_guid: String,
    #[serde(rename = "Fields")]
    fields: Vec<FieldIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckStatusBody {
    #[serde(rename = "ShippingProcessId")]
    shipping_process_id: String,
    #[serde(rename = "InteropID")]
    interop_id: String,
    #[serde(rename = "PartnerId")]
    partner_id: String,
    #[serde(rename = "SPHTransactionId")]
    sph_transaction_id: String,
}

/// A PING-style error answer (retrieve envelope, ErrorMessage set).
fn ping_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({
            "Data": null,
            "ErrorMessage": message.into(),
            "RecordCount": null,
            "SPHTransactionId": new_guid(),
            "PagingSummary": null,
        })),
    )
        .into_response()
}

/// A request refused before processing; answered by [`ping_error`].
struct Rejection {
    status: StatusCode,
    message: String,
}

impl Rejection {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        ping_error(self.status, self.message)
    }
}

/// Check the content type and decode the JSON body. Error answers name the
/// offending key but never echo a value (they may end up in client logs).
fn decode<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, Rejection> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        let message = if text.starts_with("unknown field") || text.starts_with("missing field") {
            format!(
                "Invalid request body: {}",
                text.split(", expected").next().unwrap_or("")
            )
        } else {
            "Invalid request body".to_string()
        };
        Rejection::new(StatusCode::BAD_REQUEST, message)
    })
}

fn check_ids(sim: &PingSim, partner_id: &str, interop_id: &str) -> Result<(), Rejection> {
    let config = &sim.inner.config;
    if partner_id != config.partner_id {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "PartnerId is not valid for this subscription",
        ));
    }
    if interop_id != config.interop_id {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "InteropID is not valid for this partner",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Retrieve
// ---------------------------------------------------------------------------

async fn retrieve(
    State(sim): State<PingSim>,
    fault: Option<Extension<HandlerFault>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = fault.map(|Extension(HandlerFault(f))| f);
    if fault == Some(FaultKind::NoData) {
        return Json(json!({
            "Data": NO_DATA,
            "ErrorMessage": null,
            "RecordCount": null,
            "SPHTransactionId": new_guid(),
            "PagingSummary": {"PagingCookie": null, "PageNumber": 0, "IsMoreRecordsAvailable": false},
        }))
        .into_response();
    }
    let req: RetrieveBody = match decode(&headers, &body) {
        Ok(req) => req,
        Err(rejection) => return rejection.into_response(),
    };
    if let Err(rejection) = check_ids(&sim, &req.partner_id, &req.interop_id) {
        return rejection.into_response();
    }
    if req.api_version != "V3" {
        return ping_error(StatusCode::BAD_REQUEST, "Unsupported APIVersion");
    }
    let summary_cookie = req
        .paging_summary
        .as_ref()
        .and_then(|s| s.paging_cookie.clone());
    let cookie = req.paging_cookie.clone().or(summary_cookie);
    let requested_page = req
        .page_number
        .or(req.paging_summary.as_ref().and_then(|s| s.page_number));

    let mut st = sim.lock();
    let cookie = cookie.filter(|c| !c.is_empty());
    if let (Some(FaultKind::RepeatPage), Some(cookie)) = (&fault, &cookie) {
        if let Some(cursor) = st.paging.get(cookie) {
            let start = cursor.offset.saturating_sub(st.page_size);
            let page: Vec<Value> = cursor.rows[start..cursor.offset]
                .iter()
                .cloned()
                .map(Value::Object)
                .collect();
            return Json(json!({
                "Data": page,
                "ErrorMessage": null,
                "RecordCount": page.len(),
                "SPHTransactionId": new_guid(),
                "PagingSummary": {
                    "PagingCookie": cookie,
                    "PageNumber": cursor.page_number - 1,
                    "IsMoreRecordsAvailable": true,
                },
            }))
            .into_response();
        }
    }
    let (rows, offset, page_number) = match cookie {
        Some(cookie) => {
            let Some(cursor) = st.paging.get(&cookie) else {
                return ping_error(StatusCode::BAD_REQUEST, "Invalid PagingCookie");
            };
            if cursor.shipping_process_id != req.shipping_process_id {
                return ping_error(
                    StatusCode::BAD_REQUEST,
                    "PagingCookie belongs to another shipping process",
                );
            }
            if requested_page.is_some_and(|n| n != cursor.page_number) {
                return ping_error(
                    StatusCode::BAD_REQUEST,
                    "PageNumber does not match PagingCookie",
                );
            }
            (cursor.rows.clone(), cursor.offset, cursor.page_number)
        }
        None => {
            let Some(kind) = sim.inner.config.shipping.kind(&req.shipping_process_id) else {
                return ping_error(
                    StatusCode::BAD_REQUEST,
                    "Shipping process is not configured for this partner",
                );
            };
            let record_ids: Option<Vec<String>> = req
                .query_parameters
                .iter()
                .find(|p| p.parameter_name == "{record_ids}")
                .map(|p| {
                    p.value
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                });
            let rows = match (kind, record_ids) {
                (Shp::PendingDeliveries, _) => pending_delivery_rows(&st),
                (Shp::InteropReferralList, _) => interop_list_rows(&st),
                (Shp::InterventionDetails, Some(ids)) => ids
                    .iter()
                    .flat_map(|id| intervention_detail_rows(&st, id))
                    .collect(),
                (Shp::InteropReferralDetails, Some(ids)) => ids
                    .iter()
                    .filter_map(|id| interop_detail_row(&st, id))
                    .collect(),
                (Shp::InterventionDetails | Shp::InteropReferralDetails, None) => {
                    return ping_error(
                        StatusCode::BAD_REQUEST,
                        "Missing query parameter {record_ids}",
                    )
                }
                (Shp::TransferStatus | Shp::InteropReferral | Shp::InteropReferralStatus, _) => {
                    return ping_error(
                        StatusCode::BAD_REQUEST,
                        "Shipping process is not a retrieve process",
                    )
                }
            };
            (Arc::new(rows), 0, 0)
        }
    };

    let end = (offset + st.page_size).min(rows.len());
    let first = match fault {
        Some(FaultKind::SkipRows(n)) => offset.saturating_add(n).min(end),
        _ => offset,
    };
    let page: Vec<Value> = rows[first..end]
        .iter()
        .cloned()
        .map(Value::Object)
        .collect();
    let more = end < rows.len();
    let next_cookie = more.then(|| {
        // Opaque and XML-ish like Dataverse's, so clients must pass it back verbatim.
        let cookie = format!(
            "<cookie page=\"{}\" snapshot=\"{}\" />",
            page_number + 1,
            uuid::Uuid::new_v4().simple()
        );
        st.paging.insert(
            cookie.clone(),
            PagingCursor {
                shipping_process_id: req.shipping_process_id.clone(),
                rows: rows.clone(),
                offset: end,
                page_number: page_number + 1,
            },
        );
        cookie
    });
    drop(st);

    let count = page.len();
    Json(json!({
        "Data": if count == 0 { json!(NO_DATA) } else { Value::Array(page) },
        "ErrorMessage": null,
        "RecordCount": if count == 0 { Value::Null } else { json!(count) },
        "SPHTransactionId": new_guid(),
        "PagingSummary": {
            "PagingCookie": next_cookie,
            "PageNumber": page_number,
            "IsMoreRecordsAvailable": more,
        },
    }))
    .into_response()
}

fn into_row(value: Value) -> Row {
    match value {
        Value::Object(map) => map,
        _ => Row::new(),
    }
}

fn sex_name(code: u32) -> &'static str {
    match code {
        125_080_000 => "Female",
        125_080_001 => "Male",
        125_080_002 => "Other",
        _ => "Unknown",
    }
}

/// SHP-2747: the keys of example 14, in its order (or of the 2023 sample,
/// see [`PendingRowShape`]).
fn pending_delivery_rows(st: &SimState) -> Vec<Row> {
    let shape = st.pending_row_shape;
    st.interventions
        .iter()
        .filter_map(|i| {
            let delivery = i.delivery.as_ref()?;
            let s = &i.spec;
            let p = &s.person;
            let mut row = into_row(json!({
                "progres_statusdate": delivery.status_date,
                "progres_individual.indiv.progres_sex": p.sex_code,
                "progres_individual.progres_sexname": sex_name(p.sex_code),
                "progres_individual.indiv.progres_givenname": p.given_name,
                "progres_individual.indiv.progres_registrationgroupid": s.registration_group_guid,
                "progres_individual.progres_registrationgroupidname": p.registration_group,
                "progres_lpintervention.int.progres_interventionnumber": s.intervention_number,
                "statuscode": 1,
                "progres_lpintervention.int.progres_interventionstartdate": s.start_date,
                "progres_dtpdeliveryid": delivery.delivery_id,
                "progres_deliverytype": 125_080_004,
                "progres_deliverytypename": "Primero Outgoing Referral",
                "progres_businessunit": s.business_unit,
                "progres_businessunitname": s.business_unit_name,
                "progres_individual.indiv.progres_id": p.progres_id,
                "progres_intervention": s.lpinterventionid,
                "progres_interventionname": s.intervention_number,
                "progres_lpinterventionid": s.lpinterventionid,
                "progres_lpintervention.int.progres_individual": s.individual_guid,
            }));
            if shape == PendingRowShape::Sample2023 {
                row.shift_remove("progres_lpinterventionid");
                row.insert(
                    "progres_lpintervention.progres_individualname".into(),
                    json!(p.progres_id),
                );
            }
            Some(row)
        })
        .collect()
}

/// SHP-2358: the keys of example 15, one row per language × specific need.
fn intervention_detail_rows(st: &SimState, id: &str) -> Vec<Row> {
    let Some(i) = st.intervention(id) else {
        return Vec::new();
    };
    let s = &i.spec;
    let p = &s.person;
    let mut base = into_row(json!({
        "progres_interventionnumber": s.intervention_number,
        "progres_businessunit": s.business_unit,
        "progres_interventionstartdate": format!("{}T00:00:00Z", s.start_date),
        "progres_primerotransferstatusdate": i.transfer_status_date,
        "progres_interventiondescription": s.description,
        "progres_reasonforreferral": s.reason_for_referral,
        "progres_interventiontype2.interventiontype.progres_description": s.intervention_type,
        "progres_individual.individuals.progres_id": p.progres_id,
        "progres_individual.individuals.progres_registrationgroupid": s.registration_group_guid,
        "progres_individual.progres_registrationgroupidname": p.registration_group,
        "progres_individual.individuals.progres_givenname": p.given_name,
        "progres_individual.individuals.progres_familyname": p.family_name,
        "progres_individual.individuals.progres_dateofbirth": format!("{}T00:00:00Z", p.date_of_birth),
        "progres_individual.individuals.progres_sex": p.sex_code,
        "progres_individual.individuals.progres_primaryphonenumber": p.phone,
        "systemuser.title": s.caseworker_title,
        "systemuser.su.mobilephone": s.caseworker_phone,
        "systemuser.su.internalemailaddress": s.caseworker_email,
    }));
    if let Some(primero_id) = &s.primero_id {
        base.insert("progres_primeroid".into(), json!(primero_id));
    }
    // An empty side of the join still yields the base row, like an outer join.
    let languages: Vec<Option<&String>> = if s.languages.is_empty() {
        vec![None]
    } else {
        s.languages.iter().map(Some).collect()
    };
    let needs: Vec<Option<&SpecificNeed>> = if s.specific_needs.is_empty() {
        vec![None]
    } else {
        s.specific_needs.iter().map(Some).collect()
    };
    let mut rows = Vec::with_capacity(languages.len() * needs.len());
    for language in &languages {
        for need in &needs {
            let mut row = base.clone();
            if let Some(language) = language {
                row.insert(
                    "progres_language.progres_languagecodeidname".into(),
                    json!(language),
                );
            }
            if let Some(need) = need {
                row.insert(
                    "progres_specificneed.progres_spncategory2name".into(),
                    json!(need.category),
                );
                row.insert(
                    "progres_specificneed.progres_spnsubcategory2name".into(),
                    json!(need.subcategory),
                );
                row.insert(
                    "progres_specificneed.specificneeds.progres_spncategory2".into(),
                    json!(need.category_id),
                );
                row.insert(
                    "progres_specificneed.specificneeds.progres_spnsubcategory2".into(),
                    json!(need.subcategory_id),
                );
            }
            rows.push(row);
        }
    }
    rows
}

/// SHP-2795: every interoperability referral with its status (example 20).
fn interop_list_rows(st: &SimState) -> Vec<Row> {
    st.interop_referrals
        .iter()
        .map(|r| {
            into_row(json!({
                "progres_interoperabilityreferralid": r.id,
                "progres_interoperabilityreferralstatus": r.status,
            }))
        })
        .collect()
}

/// SHP-2796: decision details (example 20, proGres spellings kept).
fn interop_detail_row(st: &SimState, id: &str) -> Option<Row> {
    let r = st.interop_referrals.iter().find(|r| r.id == id)?;
    let mut row = into_row(json!({
        "progres_interoperabilityreferralid": r.id,
        "progres_interoperabilityreferralnumber": r.number,
        "progres_interoperabilityreferralstatus": r.status,
    }));
    let optional = [
        ("progres_offlineid", &r.offline_id),
        ("progres_orgreferralid", &r.org_referral_id),
        (
            "progres_interoperabiltyreferralrejectionreasonname",
            &r.rejection_reason_name,
        ),
        (
            "progres_interoperabilityreferralrejectionomment",
            &r.rejection_comment,
        ),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            row.insert(key.into(), json!(value));
        }
    }
    Some(row)
}

// ---------------------------------------------------------------------------
// Ingestion
// ---------------------------------------------------------------------------

fn record_body(sim: &PingSim, path: &str, body: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        sim.lock().bodies.push(ReceivedBody {
            path: path.to_string(),
            body: value,
        });
    }
}

fn fields_of(fields: Vec<FieldIn>) -> Vec<(String, Value)> {
    fields.into_iter().map(|f| (f.name, f.value)).collect()
}

/// A field's string value; proGres takes every value as a string.
fn text_field<'a>(record: &'a ReceivedIngestion, name: &str) -> Result<Option<&'a str>, String> {
    match record.field(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("Field {name} must be a string")),
    }
}

/// Whether the record carries `name` with an explicit `null` value.
fn sent_null(record: &ReceivedIngestion, name: &str) -> bool {
    matches!(record.field(name), Some(Value::Null))
}

async fn ingest_sync(
    State(sim): State<PingSim>,
    Path(partner_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/api/ingestion/v2/{partner_id}/data");
    record_body(&sim, &path, &body);
    let req: SyncIngestionBody = match decode(&headers, &body) {
        Ok(req) => req,
        Err(rejection) => return rejection.into_response(),
    };
    if let Err(rejection) = check_ids(&sim, &partner_id, &req.interop_id) {
        return rejection.into_response();
    }
    let kind = sim.inner.config.shipping.kind(&req.shipping_process_id);
    if !matches!(kind, Some(Shp::TransferStatus | Shp::InteropReferralStatus)) {
        return ping_error(
            StatusCode::BAD_REQUEST,
            "Shipping process is not a sync ingestion process for this partner",
        );
    }
    let transaction_id = new_guid();
    let mut st = sim.lock();
    let mut results = Vec::with_capacity(req.data.len());
    for record in req.data {
        let received = ReceivedIngestion {
            path: path.clone(),
            shipping_process_id: req.shipping_process_id.clone(),
            sph_transaction_id: transaction_id.clone(),
            external_id: record.external_id,
            external_guid: None,
            attachments: record
                .attachments
                .map(|a| a.into_iter().map(|a| a.comment).collect()),
            fields: fields_of(record.fields),
        };
        let outcome = match kind {
            Some(Shp::TransferStatus) => apply_transfer_status(&mut st, &received),
            _ => apply_interop_status(&mut st, &received),
        };
        results.push(json!({
            "ExternalId": received.external_id,
            "Status": if outcome.is_ok() { "Success" } else { "Failed" },
            "Message": outcome.err(),
        }));
        st.ingestions.push(received);
    }
    drop(st);
    Json(json!({
        "SPHTransactionId": transaction_id,
        "ErrorMessage": null,
        "RecordCount": results.len(),
        "Data": results,
    }))
    .into_response()
}

/// SHP-2748: write the Primero transfer status onto the intervention; a
/// written status takes it out of the SHP-2747 queue.
fn apply_transfer_status(st: &mut SimState, record: &ReceivedIngestion) -> Result<(), String> {
    let id = text_field(record, "progres_lpinterventionid")?
        .ok_or("Missing key field progres_lpinterventionid")?;
    let status = text_field(record, "progres_primerotransferstatus")?;
    let date = text_field(record, "progres_primerotransferstatusdate")?;
    let primero_id = text_field(record, "progres_primeroid")?;
    let caseworker = text_field(record, "progres_primerocaseworker")?;
    let intervention = st.intervention_mut(id).ok_or("Record not found")?;
    if let Some(status) = status {
        intervention.transfer_status = Some(status.to_string());
        intervention.transfer_status_date = date.map(str::to_string);
        intervention.delivery = None;
    }
    // Dataverse writes what it is given: `"Value": null` clears the column,
    // a field left out keeps it.
    if primero_id.is_some() || sent_null(record, "progres_primeroid") {
        intervention.primero_id = primero_id.map(str::to_string);
    }
    if caseworker.is_some() || sent_null(record, "progres_primerocaseworker") {
        intervention.primero_caseworker = caseworker.map(str::to_string);
    }
    intervention
        .comments
        .extend(record.attachments.iter().flatten().cloned());
    intervention.status_writes += 1;
    Ok(())
}

/// SHP-2284: write status and comments onto an interoperability referral.
fn apply_interop_status(st: &mut SimState, record: &ReceivedIngestion) -> Result<(), String> {
    let id = text_field(record, "progres_interoperabilityreferralid")?
        .ok_or("Missing key field progres_interoperabilityreferralid")?;
    let status = text_field(record, "progres_interoperabilityreferralstatus")?
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| "Invalid option set value for progres_interoperabilityreferralstatus")
        })
        .transpose()?;
    let comment = text_field(record, "progres_comments")?;
    let referral = st
        .interop_referrals
        .iter_mut()
        .find(|r| r.id == id)
        .ok_or("Record not found")?;
    if let Some(status) = status {
        referral.status = status;
    }
    if let Some(comment) = comment {
        referral.comments.push(comment.to_string());
    }
    referral
        .comments
        .extend(record.attachments.iter().flatten().cloned());
    Ok(())
}

async fn ingest_async(
    State(sim): State<PingSim>,
    Path(partner_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/api/ingestion/v2/{partner_id}/asyncdata");
    record_body(&sim, &path, &body);
    let req: AsyncIngestionBody = match decode(&headers, &body) {
        Ok(req) => req,
        Err(rejection) => return rejection.into_response(),
    };
    if let Err(rejection) = check_ids(&sim, &partner_id, &req.interop_id) {
        return rejection.into_response();
    }
    if req.api_version != "V2" {
        return ping_error(StatusCode::BAD_REQUEST, "Unsupported APIVersion");
    }
    if sim.inner.config.shipping.kind(&req.shipping_process_id) != Some(Shp::InteropReferral) {
        return ping_error(
            StatusCode::BAD_REQUEST,
            "Shipping process is not an async ingestion process for this partner",
        );
    }
    let transaction_id = new_guid();
    let mut st = sim.lock();
    let mut items = Vec::with_capacity(req.data.len());
    for record in req.data {
        let received = ReceivedIngestion {
            path: path.clone(),
            shipping_process_id: req.shipping_process_id.clone(),
            sph_transaction_id: transaction_id.clone(),
            external_id: record.external_id,
            external_guid: Some(record.external_guid),
            attachments: None,
            fields: fields_of(record.fields),
        };
        let text = |name: &str| {
            text_field(&received, name)
                .ok()
                .flatten()
                .map(str::to_string)
        };
        if !st.async_refusals.is_empty() {
            let message = st.async_refusals.remove(0);
            items.push(TransactionItem {
                status: "Failed".into(),
                data: Row::new(),
                message,
            });
            st.ingestions.push(received);
            continue;
        }
        let mut referral = new_interop_referral(st.interop_referrals.len() + 1);
        referral.offline_id = text("progres_offlineid");
        referral.org_referral_id = text("progres_orgreferralid");
        referral.external_id = Some(received.external_id.clone());
        referral.external_guid = received.external_guid.clone();
        referral.fields = received.fields.clone();
        items.push(TransactionItem {
            status: "Processed".into(),
            data: into_row(json!({"progres_interoperabilityreferralid": referral.id})),
            message: "OK".into(),
        });
        st.interop_referrals.push(referral);
        st.ingestions.push(received);
    }
    st.transactions.insert(transaction_id.clone(), items);
    drop(st);
    // Example 18's response.
    Json(json!({"SPHTransactionId": transaction_id, "ErrorMessage": null})).into_response()
}

async fn check_status(
    State(sim): State<PingSim>,
    fault: Option<Extension<HandlerFault>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record_body(&sim, CHECK_STATUS_PATH, &body);
    let req: CheckStatusBody = match decode(&headers, &body) {
        Ok(req) => req,
        Err(rejection) => return rejection.into_response(),
    };
    if let Err(rejection) = check_ids(&sim, &req.partner_id, &req.interop_id) {
        return rejection.into_response();
    }
    if sim.inner.config.shipping.kind(&req.shipping_process_id) != Some(Shp::InteropReferral) {
        return ping_error(
            StatusCode::BAD_REQUEST,
            "Shipping process is not an async ingestion process for this partner",
        );
    }
    let st = sim.lock();
    let Some(items) = st.transactions.get(&req.sph_transaction_id) else {
        return ping_error(StatusCode::BAD_REQUEST, "SPHTransactionId not found");
    };
    let shape = match fault {
        Some(Extension(HandlerFault(FaultKind::CheckStatus(shape)))) => shape,
        _ => StatusShape::Example19,
    };
    status_body(&shape, items)
}

/// A check-status answer in one of the shapes PING sends.
fn status_body(shape: &StatusShape, items: &[TransactionItem]) -> Response {
    let json_body = |v: Value| Json(v).into_response();
    let raw_body = |text: String| {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            text,
        )
            .into_response()
    };
    match shape {
        StatusShape::Example19 => json_body(json!({"Data": malformed_status_text(items)})),
        StatusShape::WellFormed => json_body(json!({"Data": items
            .iter()
            .map(|i| json!({
                "Status": i.status,
                "Data": Value::Object(i.data.clone()).to_string(),
                "Message": i.message,
            }))
            .collect::<Vec<_>>()})),
        StatusShape::BareArray => json_body(Value::Array(
            items
                .iter()
                .map(|i| json!({"Status": i.status, "Data": i.data, "Message": i.message}))
                .collect(),
        )),
        StatusShape::UnescapedTwice => {
            raw_body(format!("{{\"Data\":\"{}\"}}", malformed_status_text(items)))
        }
        StatusShape::NoData => json_body(json!({"Data": NO_DATA})),
        StatusShape::ErrorMessage(message) => {
            json_body(json!({"ErrorMessage": message, "Data": null}))
        }
        StatusShape::Garbage => raw_body("{\"Data\": [{\"Status\": ".to_string()),
    }
}

/// A fault the handler applies itself (paging, shapes).
#[derive(Clone)]
struct HandlerFault(FaultKind);

/// The check-status `Data` string as PING writes it (example 19): a JSON
/// array whose items' inner `Data` object is embedded without escaping.
fn malformed_status_text(items: &[TransactionItem]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|item| {
            format!(
                "{{\"Status\":{},\"Data\":\"{}\",\"Message\":{}}}",
                Value::String(item.status.clone()),
                Value::Object(item.data.clone()),
                Value::String(item.message.clone()),
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_2023_pending_rows_have_the_sample_s_keys() {
        let text = include_str!(
            "../../../tests/fixtures/samples/ping-1-1_SHP-2747_rows-without-lpinterventionid.json"
        );
        let sample: Value = serde_json::from_str(text).unwrap();
        // The sample's first row has no middle name, as the seeded one.
        let want: Vec<&String> = sample["Data"][0].as_object().unwrap().keys().collect();
        let sim = PingSim::new(PingSimConfig::default());
        let mut people = super::super::people::PeopleGenerator::new(7);
        sim.add_intervention(SimIntervention::for_person(people.person(), 1));
        sim.set_pending_row_shape(PendingRowShape::Sample2023);
        let rows = pending_delivery_rows(&sim.lock());
        let got: Vec<&String> = rows[0].keys().collect();
        assert_eq!(got, want);
        sim.set_pending_row_shape(PendingRowShape::Current);
        let rows = pending_delivery_rows(&sim.lock());
        assert!(rows[0].contains_key("progres_lpinterventionid"));
    }
    use crate::people::PeopleGenerator;

    async fn started(config: PingSimConfig) -> (RunningPingSim, reqwest::Client, String) {
        let sim = PingSim::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let config = sim.config().clone();
        let form = [
            ("username", config.username.as_str()),
            ("password", config.password.as_str()),
            ("grant_type", "password"),
            ("scope", "s"),
            ("client_id", config.client_id.as_str()),
            ("response_type", "token"),
        ];
        let token: Value = http
            .post(sim.token_url())
            .form(&form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = token["access_token"].as_str().unwrap().to_string();
        (sim, http, token)
    }

    async fn post(
        sim: &RunningPingSim,
        http: &reqwest::Client,
        token: &str,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let response = http
            .post(format!("{}{path}", sim.base_url()))
            .bearer_auth(token)
            .header("Ocp-Apim-Subscription-Key", "sim-subscription-key")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    fn retrieve_body(shp: &str, record_id: Option<&str>) -> Value {
        let params: Vec<Value> = record_id
            .map(|id| json!({"ParameterName": "{record_ids}", "Value": id}))
            .into_iter()
            .collect();
        json!({"ShippingProcessId": shp, "PartnerId": "PNR-1363", "InteropID": "INT-1436",
               "APIVersion": "V3", "QueryParameters": params})
    }

    #[test]
    fn join_rows_per_language_and_need() {
        let sim = PingSim::new(PingSimConfig::default());
        let mut people = PeopleGenerator::new(1);
        let one = sim.add_intervention(SimIntervention::for_person(people.person(), 1));
        let none = sim.add_intervention(
            SimIntervention::for_person(people.person(), 2).with_languages(Vec::<String>::new()),
        );
        let many = sim.add_intervention(
            SimIntervention::for_person(people.person(), 3)
                .with_languages(["Nuer", "Swahili"])
                .with_specific_needs(vec![
                    SpecificNeed::unaccompanied_child(),
                    SpecificNeed::child_labour(),
                ]),
        );
        let st = sim.lock();
        let rows = intervention_detail_rows(&st, &one);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0]["progres_language.progres_languagecodeidname"],
            "Nuer"
        );
        assert!(!rows[0].contains_key("progres_specificneed.progres_spncategory2name"));
        let rows = intervention_detail_rows(&st, &none);
        assert_eq!(rows.len(), 1);
        assert!(!rows[0].contains_key("progres_language.progres_languagecodeidname"));
        assert_eq!(intervention_detail_rows(&st, &many).len(), 4);
        assert!(intervention_detail_rows(&st, "unknown").is_empty());
        assert_eq!(pending_delivery_rows(&st).len(), 3);
    }

    #[test]
    fn check_status_text_is_example_19() {
        let items = [TransactionItem {
            status: "Processed".into(),
            data: into_row(
                json!({"progres_interoperabilityreferralid": "0b7f1c2e-9999-4a4a-9c9c-000000000009"}),
            ),
            message: "OK".into(),
        }];
        let wire = serde_json::to_string(&json!({"Data": malformed_status_text(&items)})).unwrap();
        assert_eq!(
            wire,
            r#"{"Data":"[{\"Status\":\"Processed\",\"Data\":\"{\"progres_interoperabilityreferralid\":\"0b7f1c2e-9999-4a4a-9c9c-000000000009\"}\",\"Message\":\"OK\"}]"}"#
        );
    }

    #[tokio::test]
    async fn token_endpoint_checks_credentials() {
        let (sim, http, _) = started(PingSimConfig::default()).await;
        let form = [
            ("username", "bridge-sim@ping.example"),
            ("password", "wrong"),
            ("grant_type", "password"),
            ("scope", "s"),
            ("client_id", "00000000-0000-4000-8000-00000000c11e"),
            ("response_type", "token"),
        ];
        let response = http.post(sim.token_url()).form(&form).send().await.unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant");
        assert_eq!(sim.tokens_issued(), 1);
    }

    #[tokio::test]
    async fn api_requires_key_and_token() {
        let (sim, http, token) = started(PingSimConfig::default()).await;
        let url = format!("{}{RETRIEVE_PATH}", sim.base_url());
        let body = retrieve_body("SHP-2747", None);
        let no_key = http
            .post(&url)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(no_key.status(), 401);
        let no_token = http
            .post(&url)
            .header("Ocp-Apim-Subscription-Key", "sim-subscription-key")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(no_token.status(), 401);
        let (status, answer) = post(&sim, &http, &token, RETRIEVE_PATH, body.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(answer["Data"], NO_DATA);
        assert_eq!(answer["RecordCount"], Value::Null);
        sim.expire_all_tokens();
        let (status, _) = post(&sim, &http, &token, RETRIEVE_PATH, body).await;
        assert_eq!(status, 401);
        assert_eq!(sim.status_count(RETRIEVE_PATH, 401), 3);
    }

    #[tokio::test]
    async fn retrieve_validates_body_and_pages_with_either_cookie_form() {
        let config = PingSimConfig {
            page_size: 2,
            ..PingSimConfig::default()
        };
        let (sim, http, token) = started(config).await;
        let mut people = PeopleGenerator::new(2);
        for n in 1..=3 {
            sim.add_intervention(SimIntervention::for_person(people.person(), n));
        }
        let mut wrong_case = retrieve_body("SHP-2747", None);
        let obj = wrong_case.as_object_mut().unwrap();
        let interop = obj.shift_remove("InteropID").unwrap();
        obj.insert("InteropId".into(), interop);
        let (status, answer) = post(&sim, &http, &token, RETRIEVE_PATH, wrong_case).await;
        assert_eq!(status, 400);
        assert!(answer["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("InteropId"));

        let (status, answer) = post(
            &sim,
            &http,
            &token,
            RETRIEVE_PATH,
            retrieve_body("SHP-9999", None),
        )
        .await;
        assert_eq!(status, 400);
        assert!(answer["ErrorMessage"].is_string());

        let (_, first) = post(
            &sim,
            &http,
            &token,
            RETRIEVE_PATH,
            retrieve_body("SHP-2747", None),
        )
        .await;
        assert_eq!(first["RecordCount"], 2);
        assert_eq!(first["PagingSummary"]["IsMoreRecordsAvailable"], true);
        let cookie = first["PagingSummary"]["PagingCookie"].clone();
        let mut nested = retrieve_body("SHP-2747", None);
        nested["PagingSummary"] = json!({"PagingCookie": cookie, "PageNumber": 1});
        let (_, second) = post(&sim, &http, &token, RETRIEVE_PATH, nested).await;
        assert_eq!(second["RecordCount"], 1);
        assert_eq!(second["PagingSummary"]["IsMoreRecordsAvailable"], false);
        let mut top = retrieve_body("SHP-2747", None);
        top["PagingCookie"] = cookie;
        let (_, again) = post(&sim, &http, &token, RETRIEVE_PATH, top).await;
        assert_eq!(again["Data"], second["Data"]);
        let mut bogus = retrieve_body("SHP-2747", None);
        bogus["PagingCookie"] = json!("<cookie page=\"9\" />");
        let (status, _) = post(&sim, &http, &token, RETRIEVE_PATH, bogus).await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn sync_ingestion_checks_partner_and_casing() {
        let (sim, http, token) = started(PingSimConfig::default()).await;
        let id = sim.add_intervention(SimIntervention::for_person(
            PeopleGenerator::new(3).person(),
            1,
        ));
        let record = json!({"ExternalId": "id55", "Fields": [
            {"Name": "progres_lpinterventionid", "Value": id},
            {"Name": "progres_primerotransferstatus", "Value": "125080002"},
            {"Name": "progres_primerotransferstatusdate", "Value": "2024-05-03"}]});
        let good = json!({"ShippingProcessId": "SHP-2748", "InteropId": "INT-1436", "Data": [record.clone()]});
        let wrong_case =
            json!({"ShippingProcessId": "SHP-2748", "InteropID": "INT-1436", "Data": [record]});
        let (status, _) = post(
            &sim,
            &http,
            &token,
            "/api/ingestion/v2/PNR-1363/data",
            wrong_case,
        )
        .await;
        assert_eq!(status, 400);
        let (status, _) = post(
            &sim,
            &http,
            &token,
            "/api/ingestion/v2/PNR-9999/data",
            good.clone(),
        )
        .await;
        assert_eq!(status, 400);
        assert!(sim.ingestion_records().is_empty());
        assert_eq!(sim.pending_intervention_ids(), vec![id.clone()]);
        let (status, answer) =
            post(&sim, &http, &token, "/api/ingestion/v2/PNR-1363/data", good).await;
        assert_eq!(status, 200);
        assert_eq!(answer["Data"][0]["Status"], "Success");
        assert!(sim.pending_intervention_ids().is_empty());
        let state = sim.intervention_state(&id).unwrap();
        assert_eq!(
            state.transfer_status.as_deref(),
            Some(TRANSFER_STATUS_PENDING)
        );
        assert_eq!(state.transfer_status_date.as_deref(), Some("2024-05-03"));
        assert_eq!(sim.ingestion_records().len(), 1);
        assert_eq!(sim.ingestion_bodies().len(), 3);
        assert!(sim.requeue_intervention(&id));
        assert_eq!(sim.pending_intervention_ids(), vec![id]);
    }

    #[tokio::test]
    async fn faults_and_latency() {
        let (sim, http, token) = started(PingSimConfig::default()).await;
        sim.inject_fault(
            RETRIEVE_PATH,
            FaultKind::Status {
                status: 503,
                retry_after: Some(3),
            },
            1,
        );
        sim.set_latency(Duration::from_millis(50));
        let started_at = Instant::now();
        let response = http
            .post(format!("{}{RETRIEVE_PATH}", sim.base_url()))
            .json(&retrieve_body("SHP-2747", None))
            .send()
            .await
            .unwrap();
        assert!(started_at.elapsed() >= Duration::from_millis(50));
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "3");
        let (status, _) = post(
            &sim,
            &http,
            &token,
            RETRIEVE_PATH,
            retrieve_body("SHP-2747", None),
        )
        .await;
        assert_eq!(status, 200);
    }
}
