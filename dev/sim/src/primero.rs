//! In-memory simulator of the Primero v2 API (the parts the flows use, spec
//! §2): Basic auth, and a login that behaves as the configured version's
//! ([`SimPrimeroVersion`]: v2.10's JWT or v2.11's cookie session with CSRF),
//! case query/create/patch with subform merge,
//! referrals with their state machine, users, plus knobs for tests (request
//! counters, latency, an in-flight high-water mark, arrival times, a write
//! hook, and per-endpoint faults for the next N matching requests: statuses
//! with or without `Retry-After`, raw bodies, stalls, hangups before or after
//! processing, truncated answers, repeated or skipped pages, no-op PATCHes,
//! token expiry).
//!
//! Records are kept as JSON objects because Primero's case schema is open
//! (every deployment adds fields); the simulator only interprets the fields
//! the API semantics depend on.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, SubsecRound, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::people::Person;

mod role;
pub use role::SimRole;

/// The module the bridge creates cases in.
pub const CP_MODULE: &str = "primeromodule-cp";
const DEFAULT_PER: usize = 20;
const LOGIN_FAILED: &str = "Invalid User name or password.";
/// Devise's answer to a request without valid credentials.
const UNAUTHENTICATED: &str = "You need to sign in or sign up before continuing.";
/// ErrorService's message when a record fails its JSON schema.
const INVALID_RECORD_JSON: &str = "Invalid Record JSON";
/// Rails' message when a session write lacks its CSRF token.
const CSRF_REFUSED: &str = "Can't verify CSRF token authenticity.";
/// Primero's session cookie (config/initializers/session_store.rb) and the
/// cookie / header of its CSRF token (concerns/csrf_protection.rb).
const SESSION_COOKIE: &str = "_app_session";
const CSRF_COOKIE: &str = "CSRF-TOKEN";
const CSRF_HEADER: &str = "x-csrf-token";
/// A native session lives this long without use (PRIMERO_NATIVE_SESSION_TIMEOUT).
const SESSION_TTL: Duration = Duration::from_secs(60 * 60);
/// Date fields Primero validates on write (a 422 points at the field in `detail`).
const DATE_FIELDS: &[&str] = &["date_of_birth", "registration_date"];

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
    /// referrals it sees. Changed at run time with [`PrimeroSim::set_role`].
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

/// Why a driving call (or the equivalent HTTP call) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("case not found")]
    CaseNotFound,
    #[error("referral not found")]
    ReferralNotFound,
    #[error("a record with this id already exists")]
    Conflict,
    /// A model validation (ActiveRecord::RecordInvalid): one message about a field.
    #[error("invalid field {field}: {message}")]
    Invalid { field: String, message: String },
    /// The body fails the record's JSON schema: JSON pointers of the bad values.
    #[error("invalid record JSON at {}", pointers.join(", "))]
    InvalidJson { pointers: Vec<String> },
    /// A required request parameter is missing (ActionController::ParameterMissing).
    #[error("param is missing or the value is empty: {0}")]
    ParamMissing(String),
}

impl SimError {
    fn invalid(field: &str, message: &str) -> Self {
        SimError::Invalid {
            field: field.to_string(),
            message: message.to_string(),
        }
    }

    fn invalid_json(pointer: String) -> Self {
        SimError::InvalidJson {
            pointers: vec![pointer],
        }
    }

    /// ErrorService's answer (app/services/error_service.rb).
    fn into_response(self, resource: &str) -> Response {
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        match self {
            SimError::CaseNotFound | SimError::ReferralNotFound => {
                primero_error(StatusCode::NOT_FOUND, resource, json!("Not Found"), None)
            }
            SimError::Conflict => primero_error(
                StatusCode::CONFLICT,
                resource,
                json!("Conflict: A record with this id already exists"),
                None,
            ),
            // `errors.messages` of the model: an array of messages per field.
            SimError::Invalid { field, message } => primero_error(
                unprocessable,
                resource,
                json!([message]),
                Some(json!(field)),
            ),
            SimError::InvalidJson { pointers } => primero_error(
                unprocessable,
                resource,
                json!(INVALID_RECORD_JSON),
                Some(json!(pointers)),
            ),
            e @ SimError::ParamMissing(_) => {
                primero_error(unprocessable, resource, json!(e.to_string()), None)
            }
        }
    }
}

/// Referral statuses (spec §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferralStatus {
    InProgress,
    Accepted,
    Rejected,
    Done,
    Revoked,
}

impl ReferralStatus {
    fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }
}

/// A referral (transition) row as Primero lists it (example 09).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimReferral {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: ReferralStatus,
    pub record_id: String,
    pub record_type: String,
    pub transitioned_to: String,
    pub transitioned_to_agency: Option<String>,
    pub transitioned_by: String,
    pub notes: String,
    pub service: Option<String>,
    pub service_record_id: Option<String>,
    pub remote: bool,
    pub consent_overridden: bool,
    pub consent_individual_transfer: bool,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responded_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_reason: Option<String>,
    pub record_access_denied: bool,
    pub user_can_accept_or_reject: bool,
}

/// What a caseworker fills in to refer a case (`POST …/referrals` `data`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct NewSimReferral {
    pub transitioned_to: String,
    #[serde(default)]
    pub transitioned_to_agency: Option<String>,
    #[serde(default)]
    pub service_record_id: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub remote: Option<bool>,
    #[serde(default)]
    pub consent_overridden: Option<bool>,
    #[serde(default)]
    pub consent_individual_transfer: Option<bool>,
}

/// A decision on a referral (`PATCH …/referrals/:rid` `data`); only these
/// three keys are read, like Primero.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SimReferralDecision {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub rejected_reason: Option<String>,
    #[serde(default)]
    pub rejection_note: Option<String>,
}

impl SimReferralDecision {
    pub fn status(status: ReferralStatus) -> Self {
        Self {
            status: serde_json::to_value(status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string)),
            ..Self::default()
        }
    }
}

/// A user as `GET /api/v2/users` lists it (spec §2.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimUser {
    pub id: u64,
    pub user_name: String,
    pub full_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub position: Option<String>,
    pub agency_id: u64,
    pub role_id: u64,
    pub time_zone: String,
    pub locale: String,
    pub send_mail: bool,
    pub disabled: bool,
    pub created_at: String,
    pub updated_at: String,
    pub identity_provider_unique_id: Option<String>,
    pub agency_office: Option<String>,
}

impl SimUser {
    /// A user with the given name and empty contact details.
    pub fn new(user_name: impl Into<String>) -> Self {
        let user_name = user_name.into();
        Self {
            id: 0,
            full_name: user_name.clone(),
            user_name,
            email: None,
            phone: None,
            position: None,
            agency_id: 1,
            role_id: 1,
            time_zone: "UTC".to_string(),
            locale: "en".to_string(),
            send_mail: false,
            disabled: false,
            created_at: String::new(),
            updated_at: String::new(),
            identity_provider_unique_id: None,
            agency_office: None,
        }
    }
}

/// What an injected fault does to a matching request. The same shape is
/// used by the PING and DTP simulators (their `FaultKind`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer this status with a Primero error body (and `Retry-After`
    /// seconds), without processing the request.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Answer this status with this body verbatim (`application/json`), e.g.
    /// a malformed 200, without processing the request.
    Body { status: u16, body: String },
    /// Wait this long, then handle the request normally (longer than the
    /// client's timeout: a stalled answer).
    Delay(Duration),
    /// Close the connection without a complete answer; not processed.
    Hangup,
    /// Process the request, then close the connection without a complete
    /// answer (the client cannot know whether it was applied).
    HangupAfter,
    /// Process the request, then answer its status with the body cut in half
    /// (truncated JSON).
    Truncate,
    /// Case listing: answer page k with the rows of page k-1 (page 1 is
    /// served normally); the rows of page k are never seen.
    RepeatPage,
    /// Case listing: leave out the first `n` rows of the page; they are never seen.
    SkipRows(usize),
    /// `PATCH` of a case or a referral: answer 200 with the record as it is
    /// and change nothing (as Primero does for a referral already decided).
    NoopWrite,
    /// Expire every issued bearer token, then handle the request (a token
    /// expiring mid-run: the request is answered 401).
    ExpireTokens,
}

/// Called after a write has been applied, before its answer is sent.
pub type WriteHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// A fault applied to the next `remaining` requests that match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    /// HTTP method, or `None` for any.
    pub method: Option<String>,
    /// Matches when the request path starts with it (e.g. `/api/v2/cases`).
    pub path_prefix: String,
    pub fault: Fault,
    pub remaining: usize,
}

impl FaultRule {
    fn matches(&self, method: &str, path: &str) -> bool {
        self.remaining > 0
            && self
                .method
                .as_deref()
                .is_none_or(|m| m == "*" || m.eq_ignore_ascii_case(method))
            && path.starts_with(&self.path_prefix)
    }
}

struct IssuedToken {
    user_name: String,
    expires_at: Instant,
}

/// A v2.11 cookie session: its user, CSRF token and idle expiry.
struct Session {
    user_name: String,
    csrf: String,
    expires_at: Instant,
}

/// Timestamps for `created_at` / `last_updated_at`: whole seconds, as
/// Primero v2.11+ compares and sorts them, so several writes share a second
/// (and a listing orders them arbitrarily). Never goes backwards. Tests may
/// pin it to one second ([`PrimeroSim::pin_clock`]).
#[derive(Default)]
struct Clock {
    last: Option<DateTime<Utc>>,
    pinned: Option<DateTime<Utc>>,
}

impl Clock {
    fn tick(&mut self) -> DateTime<Utc> {
        let now = self.pinned.unwrap_or_else(Utc::now).trunc_subsecs(0);
        let next = self.last.map_or(now, |last| last.max(now));
        self.last = Some(next);
        next
    }

    fn tick_string(&mut self) -> String {
        format_ts(self.tick())
    }
}

fn format_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

struct SimState {
    config: PrimeroSimConfig,
    /// Creation order; `case_index` maps record id → position.
    cases: Vec<Map<String, Value>>,
    case_index: HashMap<String, usize>,
    /// `unhcr_individual_no` → positions of the cases that carry (or once
    /// carried) it, so a search by individual does not scan every case. A
    /// hint: the filter still checks each candidate. Cases handed out by
    /// `case_mut` are re-read into it before the next search (`individual_dirty`).
    individual_index: HashMap<String, Vec<usize>>,
    individual_dirty: Vec<usize>,
    /// Referrals by case record id.
    referrals: HashMap<String, Vec<SimReferral>>,
    users: Vec<SimUser>,
    tokens: HashMap<String, IssuedToken>,
    /// v2.11 sessions by cookie value.
    sessions: HashMap<String, Session>,
    clock: Clock,
    requests: BTreeMap<String, u64>,
    arrivals: Vec<Instant>,
    faults: Vec<FaultRule>,
    latency: Duration,
    write_hook: Option<WriteHook>,
    /// Option lists of the select fields checked on HTTP writes.
    lookups: BTreeMap<String, Vec<String>>,
    /// Flags of all cases, in creation order (ids are their position + 1).
    flags: Vec<SimFlag>,
}

/// The simulator: a cheap-to-clone handle on shared state. The HTTP API
/// ([`router`](Self::router), [`start`](Self::start)) and the driving methods
/// below see the same data.
#[derive(Clone)]
pub struct PrimeroSim {
    state: Arc<Mutex<SimState>>,
    in_flight: Arc<InFlight>,
}

impl std::fmt::Debug for PrimeroSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrimeroSim").finish_non_exhaustive()
    }
}

impl Default for PrimeroSim {
    fn default() -> Self {
        Self::new(PrimeroSimConfig::default())
    }
}

/// A simulator serving HTTP. Dereferences to [`PrimeroSim`] for driving; the
/// server stops on [`shutdown`](Self::shutdown) or when this is dropped.
pub struct RunningPrimeroSim {
    sim: PrimeroSim,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningPrimeroSim {
    /// `http://IP:PORT`, no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn sim(&self) -> &PrimeroSim {
        &self.sim
    }

    /// Stop accepting connections and wait (briefly) for the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            // Idle keep-alive connections of a client may hold graceful
            // shutdown open; don't let a test hang on them.
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                tracing::debug!("Primero simulator shutdown timed out");
            }
        }
    }
}

impl std::ops::Deref for RunningPrimeroSim {
    type Target = PrimeroSim;
    fn deref(&self) -> &PrimeroSim {
        &self.sim
    }
}

impl Drop for RunningPrimeroSim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl PrimeroSim {
    pub fn new(config: PrimeroSimConfig) -> Self {
        let mut clock = Clock::default();
        let now = clock.tick_string();
        let mut api_user = SimUser::new(config.user_name.clone());
        api_user.id = 1;
        api_user.full_name = "Bridge API user".to_string();
        api_user.position = Some("Interoperability service account".to_string());
        api_user.created_at = now.clone();
        api_user.updated_at = now;
        Self {
            state: Arc::new(Mutex::new(SimState {
                config,
                cases: Vec::new(),
                case_index: HashMap::new(),
                individual_index: HashMap::new(),
                individual_dirty: Vec::new(),
                referrals: HashMap::new(),
                users: vec![api_user],
                tokens: HashMap::new(),
                sessions: HashMap::new(),
                clock,
                requests: BTreeMap::new(),
                arrivals: Vec::new(),
                faults: Vec::new(),
                latency: Duration::ZERO,
                write_hook: None,
                lookups: role::default_lookups(),
                flags: Vec::new(),
            })),
            in_flight: Arc::new(InFlight::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panicking test thread must not take every later call down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The API routes, for mounting into another axum app.
    pub fn router(&self) -> Router {
        let protected = Router::new()
            .route("/api/v2/cases", get(list_cases).post(create_case))
            .route("/api/v2/cases/{id}", get(get_case).patch(patch_case))
            .route(
                "/api/v2/cases/{id}/referrals",
                get(list_referrals).post(create_referral),
            )
            .route(
                "/api/v2/cases/{id}/referrals/{referral_id}",
                patch(patch_referral),
            )
            .route("/api/v2/users", get(list_users))
            .route(
                "/api/v2/cases/{id}/flags",
                get(list_flags).post(create_flag),
            )
            .route_layer(middleware::from_fn_with_state(self.clone(), require_auth));
        Router::new()
            .route("/api/v2/tokens", post(login).delete(logout))
            .merge(protected)
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(self.clone(), inject_faults))
            .layer(middleware::from_fn_with_state(self.clone(), count_request))
            .with_state(self.clone())
    }

    /// Bind `addr` (e.g. `127.0.0.1:0`) and serve in a background task.
    pub async fn start(self, addr: SocketAddr) -> std::io::Result<RunningPrimeroSim> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let app = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });
        Ok(RunningPrimeroSim {
            sim: self,
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The configured API user name.
    pub fn api_user(&self) -> String {
        self.lock().config.user_name.clone()
    }

    // ---- cases ----------------------------------------------------------

    /// Create a case as `POST /api/v2/cases` would (ids, timestamps, owner =
    /// the API user unless `owned_by` is given). Returns the record id.
    pub fn insert_case(&self, data: Map<String, Value>) -> Result<String, SimError> {
        let mut st = self.lock();
        let user = st.config.user_name.clone();
        st.create_case(data, &user)
    }

    /// Create a case for a generated person (see [`case_for_person`]).
    pub fn seed_person(&self, person: &Person, services: Vec<Map<String, Value>>) -> String {
        let data = case_for_person(person, services);
        // Cannot fail: no client id, and the person's fields are valid.
        self.insert_case(data)
            .unwrap_or_else(|e| panic!("seeding a generated person failed: {e}"))
    }

    /// Every case, in creation order.
    pub fn cases(&self) -> Vec<Value> {
        self.lock()
            .cases
            .iter()
            .map(|c| Value::Object(c.clone()))
            .collect()
    }

    pub fn case(&self, id: &str) -> Option<Value> {
        let st = self.lock();
        st.case_index
            .get(id)
            .map(|&i| Value::Object(st.cases[i].clone()))
    }

    pub fn case_count(&self) -> usize {
        self.lock().cases.len()
    }

    /// Record ids of the cases with this `unhcr_individual_no`.
    pub fn find_by_individual_no(&self, unhcr_individual_no: &str) -> Vec<String> {
        self.lock()
            .cases
            .iter()
            .filter(|c| str_field(c, "unhcr_individual_no") == Some(unhcr_individual_no))
            .filter_map(|c| str_field(c, "id").map(str::to_string))
            .collect()
    }

    /// Edit a case as a caseworker would (`PATCH` merge semantics). Returns
    /// the whole case after the change.
    pub fn update_case(&self, id: &str, patch: Map<String, Value>) -> Result<Value, SimError> {
        let mut st = self.lock();
        st.patch_case(id, patch)?;
        Ok(st
            .case(id)
            .map(|c| Value::Object(c.clone()))
            .unwrap_or(Value::Null))
    }

    /// The flags of a case, oldest first.
    pub fn flags(&self, case_id: &str) -> Vec<SimFlag> {
        self.lock()
            .flags
            .iter()
            .filter(|f| f.record_id == case_id)
            .cloned()
            .collect()
    }

    // ---- referrals ------------------------------------------------------

    /// Refer a case as its owner would. Returns the referral.
    pub fn add_referral(
        &self,
        case_id: &str,
        referral: NewSimReferral,
    ) -> Result<SimReferral, SimError> {
        let mut st = self.lock();
        let owner = st
            .case(case_id)
            .ok_or(SimError::CaseNotFound)?
            .get("owned_by")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| st.config.user_name.clone());
        st.create_referral(case_id, referral, &owner)
    }

    /// Apply a decision through the state machine (same rules as `PATCH`).
    pub fn set_referral_decision(
        &self,
        case_id: &str,
        referral_id: &str,
        decision: SimReferralDecision,
    ) -> Result<SimReferral, SimError> {
        self.lock().decide_referral(case_id, referral_id, decision)
    }

    pub fn referrals(&self, case_id: &str) -> Vec<SimReferral> {
        self.lock()
            .referrals
            .get(case_id)
            .cloned()
            .unwrap_or_default()
    }

    // ---- users ----------------------------------------------------------

    /// Add a user; its `id` and timestamps are assigned. Returns the id.
    pub fn add_user(&self, mut user: SimUser) -> u64 {
        let mut st = self.lock();
        user.id = st.users.iter().map(|u| u.id).max().unwrap_or(0) + 1;
        let now = st.clock.tick_string();
        if user.created_at.is_empty() {
            user.created_at = now.clone();
        }
        user.updated_at = now;
        let id = user.id;
        st.users.push(user);
        id
    }

    pub fn users(&self) -> Vec<SimUser> {
        self.lock().users.clone()
    }

    // ---- test knobs -----------------------------------------------------

    /// Requests seen for `"METHOD /path/{template}"`, e.g.
    /// `"POST /api/v2/tokens"` or `"PATCH /api/v2/cases/{id}"`. Counted
    /// before auth and faults, so refused requests count too.
    pub fn request_count(&self, key: &str) -> u64 {
        self.lock().requests.get(key).copied().unwrap_or(0)
    }

    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.lock().requests.clone()
    }

    pub fn reset_request_counts(&self) {
        self.lock().requests.clear();
    }

    /// Answer the next `count` requests whose method is `method` (`"*"` for
    /// any) and whose path starts with `path_prefix` with `status` and a
    /// Primero error body.
    pub fn fail_next(&self, method: &str, path_prefix: &str, status: u16, count: usize) {
        self.add_fault(FaultRule {
            method: Some(method.to_string()),
            path_prefix: path_prefix.to_string(),
            fault: Fault::Status {
                status,
                retry_after: None,
            },
            remaining: count,
        });
    }

    /// Add a fault rule; rules are tried in the order added.
    pub fn add_fault(&self, rule: FaultRule) {
        self.lock().faults.push(rule);
    }

    /// Apply `fault` to the next `count` requests whose method is `method`
    /// (`"*"` for any) and whose path starts with `path_prefix`.
    pub fn inject_fault(&self, method: &str, path_prefix: &str, fault: Fault, count: usize) {
        self.add_fault(FaultRule {
            method: Some(method.to_string()),
            path_prefix: path_prefix.to_string(),
            fault,
            remaining: count,
        });
    }

    /// The most requests ever handled at the same time (since the last reset).
    pub fn max_in_flight_seen(&self) -> usize {
        self.in_flight.max_seen()
    }

    /// Forget the in-flight high-water mark and the arrival times.
    pub fn reset_in_flight(&self) {
        self.in_flight.reset();
        self.lock().arrivals.clear();
    }

    /// When each request arrived, in order (for rate-limit checks).
    pub fn arrival_times(&self) -> Vec<Instant> {
        self.lock().arrivals.clone()
    }

    /// Call `hook(method, path)` after every case create/update and referral
    /// create/decision has been applied, before its answer is sent.
    pub fn set_write_hook(&self, hook: WriteHook) {
        self.lock().write_hook = Some(hook);
    }

    pub fn clear_write_hook(&self) {
        self.lock().write_hook = None;
    }

    fn after_write(&self, method: &str, path: &str) {
        let hook = self.lock().write_hook.clone();
        if let Some(hook) = hook {
            hook(method, path);
        }
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Delay added to every request before it is handled.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Change the API user's role from the next request on (see [`SimRole`]).
    pub fn set_role(&self, role: SimRole) {
        self.lock().config.role = role;
    }

    pub fn role(&self) -> SimRole {
        self.lock().config.role.clone()
    }

    /// The options of a select field checked on HTTP writes
    /// (`services_section.<field>` for a service field); `None` stops
    /// checking it. Defaults: `status`, `sex`, and the service's
    /// `service_response_type`, `service_implemented`, `service_referral`,
    /// `unhcr_referral_status`.
    pub fn set_lookup(&self, field: &str, options: Option<Vec<String>>) {
        let mut st = self.lock();
        match options {
            Some(options) => st.lookups.insert(field.to_string(), options),
            None => st.lookups.remove(field),
        };
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.lock().config.token_ttl = ttl;
    }

    /// Invalidate every issued bearer token (as a server restart would).
    pub fn revoke_all_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// Play another Primero version's login from now on.
    pub fn set_version(&self, version: SimPrimeroVersion) {
        self.lock().config.version = version;
    }

    /// Stamp every write from now on with this second (`None`: the real
    /// clock again), so tests can put many cases on one `last_updated_at`.
    /// The clock never goes backwards: an earlier pin reads as the latest
    /// stamp given.
    pub fn pin_clock(&self, at: Option<DateTime<Utc>>) {
        self.lock().clock.pinned = at;
    }
}

/// Realistic case fields for a generated person (an intake as created from
/// proGres): ids, names, date of birth, sex, phone, consent, CP module.
pub fn case_for_person(person: &Person, services: Vec<Map<String, Value>>) -> Map<String, Value> {
    let sex = if person.sex_code == 125_080_001 {
        "male"
    } else {
        "female"
    };
    let mut data = Map::new();
    data.insert("unhcr_individual_no".into(), json!(person.progres_id));
    data.insert("unhcr_id_no".into(), json!(person.registration_group));
    data.insert("name_first".into(), json!(person.given_name));
    data.insert("name_middle".into(), json!(person.middle_name));
    data.insert("name_last".into(), json!(person.family_name));
    data.insert("date_of_birth".into(), json!(person.date_of_birth));
    data.insert("sex".into(), json!(sex));
    data.insert("telephone_current".into(), json!(person.phone));
    data.insert("module_id".into(), json!(CP_MODULE));
    data.insert("status".into(), json!("open"));
    data.insert("consent_for_services".into(), json!(true));
    data.insert("disclosure_other_orgs".into(), json!(true));
    if !services.is_empty() {
        data.insert(
            "services_section".into(),
            Value::Array(services.into_iter().map(Value::Object).collect()),
        );
    }
    data
}

// ---------------------------------------------------------------------------
// Merge semantics
// ---------------------------------------------------------------------------

/// Primero treats a non-empty array whose items are all objects as a subform.
fn is_subform(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(Value::is_object)
}

fn truthy(v: &Value) -> bool {
    matches!(v, Value::Bool(true)) || v.as_str() == Some("true")
}

/// The subform delete flag (RecordMergeDataHashService drops merged entries
/// that carry it; the schema allows only `true`, `false` or `null`).
const DESTROY: &str = "_destroy";

/// Keys Primero's strong parameters drop unread: `_destroy` outside a
/// subform entry, and `_delete`, which Primero does not know at all.
fn dropped_key(key: &str) -> bool {
    key == DESTROY || key == "_delete"
}

/// Apply a `PATCH` body to a record: top-level fields overwrite, subform
/// arrays merge by `unique_id` (recursively). An empty or scalar array
/// replaces, as in Primero. Returns the keys it touched. The body must have
/// passed [`validate_record`].
pub fn merge_record(target: &mut Map<String, Value>, patch: Map<String, Value>) -> Vec<String> {
    let mut touched = Vec::with_capacity(patch.len());
    for (key, value) in patch {
        if dropped_key(&key) {
            continue;
        }
        match value {
            // RecordMergeDataHashService: `[]` counts as an array of hashes,
            // so over a subform it merges nothing and keeps every entry.
            Value::Array(items)
                if items.is_empty()
                    && matches!(target.get(&key), Some(Value::Array(old)) if is_subform(old)) => {}
            Value::Array(items) if is_subform(&items) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                let existing_is_subform = match slot {
                    Value::Array(existing) => existing.iter().all(Value::is_object),
                    _ => false,
                };
                if !existing_is_subform {
                    *slot = Value::Array(Vec::new());
                }
                if let Value::Array(existing) = slot {
                    merge_subform(existing, items);
                }
            }
            other => {
                target.insert(key.clone(), other);
            }
        }
        touched.push(key);
    }
    touched
}

/// Merge subform entries: a known `unique_id` updates field by field (or
/// removes, with `"_destroy": true`); any other entry is appended, keeping a
/// client-chosen `unique_id` (Primero's own UI generates them) or getting a
/// new one. `_delete` is no Primero key: dropped, it deletes nothing.
pub fn merge_subform(existing: &mut Vec<Value>, incoming: Vec<Value>) {
    for entry in incoming {
        let Value::Object(mut entry) = entry else {
            continue;
        };
        let delete = entry.remove(DESTROY) == Some(Value::Bool(true));
        let position = entry
            .get("unique_id")
            .and_then(Value::as_str)
            .and_then(|uid| {
                existing
                    .iter()
                    .position(|e| e.get("unique_id").and_then(Value::as_str) == Some(uid))
            });
        match (position, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (Some(i), false) => {
                if let Value::Object(target) = &mut existing[i] {
                    merge_record(target, entry);
                }
            }
            (None, true) => {}
            (None, false) => {
                let mut fresh = Map::new();
                merge_record(&mut fresh, entry);
                if !fresh.get("unique_id").is_some_and(Value::is_string) {
                    fresh.insert("unique_id".into(), json!(new_uuid()));
                }
                existing.push(Value::Object(fresh));
            }
        }
    }
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn str_field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

fn str_list(m: &Map<String, Value>, key: &str) -> Vec<String> {
    match m.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Primero derives `associated_user_names` (owner + assigned users) itself.
fn recompute_associated(case: &mut Map<String, Value>) {
    let mut names: Vec<String> = Vec::new();
    if let Some(owner) = str_field(case, "owned_by") {
        names.push(owner.to_string());
    }
    for name in str_list(case, "assigned_user_names") {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    case.insert("associated_user_names".into(), json!(names));
}

/// The part of Primero's record JSON schema the simulator checks (date
/// fields, the subform `_destroy` flag); a failure lists the JSON pointer
/// of every bad value, as RecordJsonValidatorService does.
fn validate_record(data: &Map<String, Value>) -> Result<(), SimError> {
    let mut pointers = Vec::new();
    for field in DATE_FIELDS {
        if let Some(v) = data.get(*field) {
            let ok = match v {
                Value::Null => true,
                Value::String(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
                _ => false,
            };
            if !ok {
                pointers.push(format!("/{field}"));
            }
        }
    }
    for (key, value) in data {
        let Value::Array(items) = value else { continue };
        if !is_subform(items) {
            continue;
        }
        for (i, item) in items.iter().enumerate() {
            let bad = item
                .get(DESTROY)
                .is_some_and(|v| !matches!(v, Value::Bool(_) | Value::Null));
            if bad {
                pointers.push(format!("/{key}/{i}/{DESTROY}"));
            }
        }
    }
    if pointers.is_empty() {
        Ok(())
    } else {
        Err(SimError::InvalidJson { pointers })
    }
}

// ---------------------------------------------------------------------------
// State operations (shared by HTTP handlers and driving methods)
// ---------------------------------------------------------------------------

impl SimState {
    fn case(&self, id: &str) -> Option<&Map<String, Value>> {
        self.case_index.get(id).map(|&i| &self.cases[i])
    }

    fn case_mut(&mut self, id: &str) -> Option<&mut Map<String, Value>> {
        match self.case_index.get(id) {
            Some(&i) => {
                // The caller may change `unhcr_individual_no`.
                self.individual_dirty.push(i);
                Some(&mut self.cases[i])
            }
            None => None,
        }
    }

    /// Record the current `unhcr_individual_no` of the case at `position`.
    fn index_individual(&mut self, position: usize) {
        if let Some(no) = str_field(&self.cases[position], "unhcr_individual_no") {
            let positions = self.individual_index.entry(no.to_string()).or_default();
            if !positions.contains(&position) {
                positions.push(position);
            }
        }
    }

    /// Bring `individual_index` up to date with the cases edited since.
    fn refresh_individual_index(&mut self) {
        for position in std::mem::take(&mut self.individual_dirty) {
            self.index_individual(position);
        }
    }

    /// Positions of the cases a search may match: all, or only those the
    /// individual index names when the filter asks for individual numbers.
    fn candidates(&mut self, filter: &CaseFilter) -> Vec<usize> {
        let Some(no) = &filter.individual_no else {
            return (0..self.cases.len()).collect();
        };
        self.refresh_individual_index();
        let mut positions: Vec<usize> = self
            .individual_index
            .get(no)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        positions.sort_unstable();
        positions.dedup();
        positions
    }

    fn create_case(
        &mut self,
        data: Map<String, Value>,
        api_user: &str,
    ) -> Result<String, SimError> {
        validate_record(&data)?;
        let id = match data.get("id") {
            Some(Value::String(id)) if !id.is_empty() => {
                if self.case_index.contains_key(id) {
                    return Err(SimError::Conflict);
                }
                id.clone()
            }
            Some(Value::Null) | None => new_uuid(),
            Some(_) => return Err(SimError::invalid_json("/id".to_string())),
        };
        let mut case = Map::new();
        merge_record(&mut case, data);
        let case_id = match str_field(&case, "case_id") {
            Some(c) if !c.is_empty() => c.to_string(),
            _ => new_uuid(),
        };
        let short: String = {
            let chars: Vec<char> = case_id.chars().collect();
            chars[chars.len().saturating_sub(7)..].iter().collect()
        };
        let now = self.clock.tick_string();
        case.insert("id".into(), json!(id));
        case.insert("case_id".into(), json!(case_id));
        case.insert("case_id_display".into(), json!(short));
        case.insert("short_id".into(), json!(short));
        case.insert("created_at".into(), json!(now));
        case.insert("last_updated_at".into(), json!(now));
        if str_field(&case, "owned_by").is_none_or(str::is_empty) {
            case.insert("owned_by".into(), json!(api_user));
        }
        if !case.get("status").is_some_and(Value::is_string) {
            case.insert("status".into(), json!("open"));
        }
        case.entry("record_state").or_insert(json!(true));
        recompute_associated(&mut case);
        self.case_index.insert(id.clone(), self.cases.len());
        self.cases.push(case);
        self.index_individual(self.cases.len() - 1);
        Ok(id)
    }

    /// Returns the keys the patch touched.
    fn patch_case(
        &mut self,
        id: &str,
        mut patch: Map<String, Value>,
    ) -> Result<Vec<String>, SimError> {
        validate_record(&patch)?;
        // The record id is the key; Primero ignores attempts to change it.
        patch.remove("id");
        let now = self.clock.tick_string();
        let user = self.config.user_name.clone();
        let case = self.case_mut(id).ok_or(SimError::CaseNotFound)?;
        let before = BeforeSave::of(case);
        let mut touched = merge_record(case, patch);
        touched.extend(before.reopenable(case, &user, &now));
        case.insert("last_updated_at".into(), json!(now));
        recompute_associated(case);
        touched.push("last_updated_at".to_string());
        Ok(touched)
    }

    fn create_referral(
        &mut self,
        case_id: &str,
        req: NewSimReferral,
        transitioned_by: &str,
    ) -> Result<SimReferral, SimError> {
        if req.transitioned_to.trim().is_empty() {
            return Err(SimError::invalid(
                "transitioned_to",
                "Transitioned to user is required",
            ));
        }
        let now = self.clock.tick_string();
        let case = self.case_mut(case_id).ok_or(SimError::CaseNotFound)?;
        let consent = case.get("consent_for_services").is_some_and(truthy)
            && case.get("disclosure_other_orgs").is_some_and(truthy);
        let overridden = req.consent_overridden.unwrap_or(false);
        if !consent && !overridden {
            return Err(SimError::invalid(
                "consent",
                "Consent is required to refer this record",
            ));
        }
        let mut service_type = None;
        if let Some(sid) = &req.service_record_id {
            let service = case
                .get_mut("services_section")
                .and_then(Value::as_array_mut)
                .and_then(|services| {
                    services
                        .iter_mut()
                        .find(|s| s.get("unique_id").and_then(Value::as_str) == Some(sid.as_str()))
                })
                .and_then(Value::as_object_mut)
                .ok_or_else(|| SimError::invalid("service_record_id", "Service not found"))?;
            service_type = str_field(service, "service_type").map(str::to_string);
            service.insert("service_status_referred".into(), json!(true));
        }
        let mut assigned = str_list(case, "assigned_user_names");
        if !assigned.contains(&req.transitioned_to) {
            assigned.push(req.transitioned_to.clone());
        }
        case.insert("assigned_user_names".into(), json!(assigned));
        case.insert("last_updated_at".into(), json!(now));
        recompute_associated(case);
        let referral = SimReferral {
            id: new_uuid(),
            kind: "Referral".to_string(),
            status: ReferralStatus::InProgress,
            record_id: case_id.to_string(),
            record_type: "case".to_string(),
            transitioned_to: req.transitioned_to,
            transitioned_to_agency: req.transitioned_to_agency,
            transitioned_by: transitioned_by.to_string(),
            notes: req.notes.unwrap_or_default(),
            service: service_type,
            service_record_id: req.service_record_id,
            remote: req.remote.unwrap_or(false),
            consent_overridden: overridden,
            consent_individual_transfer: req.consent_individual_transfer.unwrap_or(false),
            created_at: now,
            responded_at: None,
            rejected_reason: None,
            record_access_denied: false,
            user_can_accept_or_reject: false,
        };
        self.referrals
            .entry(case_id.to_string())
            .or_default()
            .push(referral.clone());
        Ok(referral)
    }

    /// The referral state machine (spec §2.4). A transition it does not know
    /// leaves everything unchanged and still succeeds, as Primero does.
    fn decide_referral(
        &mut self,
        case_id: &str,
        referral_id: &str,
        decision: SimReferralDecision,
    ) -> Result<SimReferral, SimError> {
        if self.case(case_id).is_none() {
            return Err(SimError::CaseNotFound);
        }
        let current = self
            .referrals
            .get(case_id)
            .and_then(|rs| rs.iter().find(|r| r.id == referral_id))
            .cloned()
            .ok_or(SimError::ReferralNotFound)?;
        let target = decision.status.as_deref().and_then(ReferralStatus::parse);
        let mut updated = current.clone();
        match (current.status, target) {
            (ReferralStatus::InProgress, Some(ReferralStatus::Accepted)) => {
                let now = self.clock.tick_string();
                updated.status = ReferralStatus::Accepted;
                updated.responded_at = Some(now.clone());
                self.touch_case(case_id, &now, |_| {});
            }
            (ReferralStatus::InProgress, Some(ReferralStatus::Rejected)) => {
                let now = self.clock.tick_string();
                updated.status = ReferralStatus::Rejected;
                updated.responded_at = Some(now.clone());
                updated.rejected_reason = decision.rejected_reason;
                let recipient = current.transitioned_to.clone();
                self.touch_case(case_id, &now, |case| {
                    let assigned: Vec<String> = str_list(case, "assigned_user_names")
                        .into_iter()
                        .filter(|u| *u != recipient)
                        .collect();
                    case.insert("assigned_user_names".into(), json!(assigned));
                });
            }
            (ReferralStatus::Accepted, Some(ReferralStatus::Done)) => {
                let now = self.clock.tick_string();
                updated.status = ReferralStatus::Done;
                let service_id = current.service_record_id.clone();
                let note = decision.rejection_note;
                let stamp = now.clone();
                self.touch_case(case_id, &now, |case| {
                    let Some(sid) = service_id else { return };
                    let service = case
                        .get_mut("services_section")
                        .and_then(Value::as_array_mut)
                        .and_then(|services| {
                            services.iter_mut().find(|s| {
                                s.get("unique_id").and_then(Value::as_str) == Some(sid.as_str())
                            })
                        })
                        .and_then(Value::as_object_mut);
                    if let Some(service) = service {
                        service.insert("service_implemented".into(), json!("implemented"));
                        service.insert("service_implemented_day_time".into(), json!(stamp));
                        if let Some(note) = note {
                            service.insert("note_on_referral_from_provider".into(), json!(note));
                        }
                    }
                });
            }
            _ => return Ok(current),
        }
        if let Some(slot) = self
            .referrals
            .get_mut(case_id)
            .and_then(|rs| rs.iter_mut().find(|r| r.id == referral_id))
        {
            *slot = updated.clone();
        }
        Ok(updated)
    }

    fn touch_case(&mut self, case_id: &str, now: &str, edit: impl FnOnce(&mut Map<String, Value>)) {
        if let Some(case) = self.case_mut(case_id) {
            edit(case);
            case.insert("last_updated_at".into(), json!(now));
            recompute_associated(case);
        }
    }

    /// A case as the API user's role is shown it.
    fn shown(&self, mut case: Map<String, Value>) -> Value {
        self.config.role.redact(&mut case);
        Value::Object(case)
    }

    /// What Primero keeps of a write by the API user: refused (422) when a
    /// value does not fit the form, else without the fields its role may
    /// not write.
    fn api_write(&self, mut data: Map<String, Value>) -> Result<Map<String, Value>, SimError> {
        let pointers = role::invalid_pointers(&data, &self.lookups);
        if !pointers.is_empty() {
            return Err(SimError::InvalidJson { pointers });
        }
        self.config.role.strip_unwritable(&mut data);
        Ok(data)
    }

    fn take_fault(&mut self, method: &str, path: &str) -> Option<Fault> {
        let rule = self.faults.iter_mut().find(|r| r.matches(method, path))?;
        rule.remaining -= 1;
        let fault = rule.fault.clone();
        self.faults.retain(|r| r.remaining > 0);
        Some(fault)
    }

    /// Who a request is, and how: Basic (both versions), a Bearer JWT
    /// (v2.10 only) or a session cookie (v2.11 only).
    fn authenticate(&mut self, headers: &HeaderMap) -> Option<Caller> {
        let version = self.config.version;
        if let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            let (scheme, credentials) = value.split_once(' ')?;
            if scheme.eq_ignore_ascii_case("basic") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(credentials.trim())
                    .ok()?;
                let decoded = String::from_utf8(decoded).ok()?;
                let (user, password) = decoded.split_once(':')?;
                return (user == self.config.user_name && password == self.config.password)
                    .then(|| Caller::Basic(user.to_string()));
            }
            if scheme.eq_ignore_ascii_case("bearer") && version == SimPrimeroVersion::V2_10 {
                let token = credentials.trim();
                return match self.tokens.get(token) {
                    Some(t) if Instant::now() < t.expires_at => {
                        Some(Caller::Token(t.user_name.clone()))
                    }
                    Some(_) => {
                        self.tokens.remove(token);
                        None
                    }
                    None => None,
                };
            }
            return None;
        }
        if version != SimPrimeroVersion::V2_11 {
            return None;
        }
        let id = cookie(headers, SESSION_COOKIE)?;
        let session = self.sessions.get_mut(&id)?;
        if Instant::now() >= session.expires_at {
            self.sessions.remove(&id);
            return None;
        }
        session.expires_at = Instant::now() + SESSION_TTL;
        Some(Caller::Session {
            user_name: session.user_name.clone(),
            csrf: session.csrf.clone(),
        })
    }
}

/// How a request authenticated.
enum Caller {
    Basic(String),
    Token(String),
    /// A v2.11 session; its writes must send `csrf` in `X-CSRF-Token`.
    Session {
        user_name: String,
        csrf: String,
    },
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct ApiUser(String);

/// An error as Primero's ErrorService renders it
/// (app/views/api/v2/errors/_error.json.jbuilder): `status`, `resource`,
/// `detail` when present, `message` (a string, or an array of them).
fn primero_error(
    status: StatusCode,
    resource: &str,
    message: Value,
    detail: Option<Value>,
) -> Response {
    let mut error = Map::new();
    error.insert("status".into(), json!(status.as_u16()));
    error.insert("resource".into(), json!(resource));
    if let Some(detail) = detail {
        error.insert("detail".into(), detail);
    }
    error.insert("message".into(), message);
    (status, Json(json!({ "errors": [error] }))).into_response()
}

/// Devise's refusal of a request or login: `{"error": …}`, not ErrorService's shape.
fn devise_refusal(message: &str) -> Response {
    let mut response =
        (StatusCode::UNAUTHORIZED, Json(json!({ "error": message }))).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Primero\""),
    );
    response
}

/// `{"data": {...}}` → the inner object; anything else is Primero's 422.
fn parse_data(body: &[u8]) -> Result<Map<String, Value>, SimError> {
    let missing = || SimError::ParamMissing("data".to_string());
    let value: Value = serde_json::from_slice(body).map_err(|_| missing())?;
    match value {
        Value::Object(mut envelope) => match envelope.remove("data") {
            Some(Value::Object(data)) => Ok(data),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

async fn count_request(State(sim): State<PrimeroSim>, req: Request, next: Next) -> Response {
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "<unmatched>".to_string());
    let key = format!("{} {}", req.method(), template);
    {
        let mut st = sim.lock();
        *st.requests.entry(key).or_insert(0) += 1;
        st.arrivals.push(Instant::now());
    }
    let _in_flight = sim.in_flight.enter();
    next.run(req).await
}

async fn inject_faults(State(sim): State<PrimeroSim>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let (latency, fault) = {
        let mut st = sim.lock();
        (st.latency, st.take_fault(req.method().as_str(), &path))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        None => next.run(req).await,
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(Fault::Hangup) => hangup_response(),
        Some(Fault::HangupAfter) => {
            let _ = next.run(req).await;
            hangup_response()
        }
        Some(Fault::Truncate) => truncate_response(next.run(req).await).await,
        Some(Fault::ExpireTokens) => {
            sim.lock().tokens.clear();
            next.run(req).await
        }
        Some(fault @ (Fault::RepeatPage | Fault::SkipRows(_) | Fault::NoopWrite)) => {
            let mut req = req;
            req.extensions_mut().insert(HandlerFault(fault));
            next.run(req).await
        }
        Some(Fault::Status {
            status,
            retry_after,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = status.canonical_reason().unwrap_or("Error");
            let mut response = primero_error(status, &path, json!(message), None);
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        Some(Fault::Body { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}

async fn require_auth(State(sim): State<PrimeroSim>, mut req: Request, next: Next) -> Response {
    let caller = sim.lock().authenticate(req.headers());
    let user = match caller {
        None => return devise_refusal(UNAUTHENTICATED),
        Some(Caller::Basic(user) | Caller::Token(user)) => user,
        Some(Caller::Session { user_name, csrf }) => {
            // protect_from_forgery: a session's writes need its CSRF token
            // (Basic is exempt, which is why the bridge uses Basic).
            let safe = matches!(req.method().as_str(), "GET" | "HEAD");
            let sent = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !safe && sent != Some(csrf.as_str()) {
                return primero_error(
                    StatusCode::FORBIDDEN,
                    req.uri().path(),
                    json!(CSRF_REFUSED),
                    None,
                );
            }
            user_name
        }
    };
    req.extensions_mut().insert(ApiUser(user));
    next.run(req).await
}

async fn not_found(req: Request) -> Response {
    primero_error(
        StatusCode::NOT_FOUND,
        req.uri().path(),
        json!("Not Found"),
        None,
    )
}

#[derive(Deserialize)]
struct LoginBody {
    user: LoginUser,
}

#[derive(Deserialize)]
struct LoginUser {
    user_name: String,
    password: String,
}

async fn login(State(sim): State<PrimeroSim>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<LoginBody>(&body) else {
        return devise_refusal(LOGIN_FAILED);
    };
    let mut st = sim.lock();
    if body.user.user_name != st.config.user_name || body.user.password != st.config.password {
        return devise_refusal(LOGIN_FAILED);
    }
    let user_name = body.user.user_name;
    let id = st
        .users
        .iter()
        .find(|u| u.user_name == user_name)
        .map_or(1, |u| u.id);
    match st.config.version {
        SimPrimeroVersion::V2_10 => {
            let ttl = st.config.token_ttl;
            let token = jwt(id, ttl);
            st.tokens.insert(
                token.clone(),
                IssuedToken {
                    user_name: user_name.clone(),
                    expires_at: Instant::now() + ttl,
                },
            );
            // tokens_controller renders the token in the body too; devise-jwt
            // adds the header.
            let mut response =
                Json(json!({ "id": id, "user_name": user_name, "token": token })).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
                response.headers_mut().insert(header::AUTHORIZATION, v);
            }
            response
        }
        SimPrimeroVersion::V2_11 => {
            let session = random_hex();
            let csrf = random_hex();
            st.sessions.insert(
                session.clone(),
                Session {
                    user_name: user_name.clone(),
                    csrf: csrf.clone(),
                    expires_at: Instant::now() + SESSION_TTL,
                },
            );
            let mut response = Json(json!({
                "id": id,
                "user_name": user_name,
                "group_permission": "self",
            }))
            .into_response();
            let cookies = [
                format!("{SESSION_COOKIE}={session}; path=/; HttpOnly; SameSite=Lax"),
                format!("{CSRF_COOKIE}={csrf}; path=/; SameSite=Strict"),
            ];
            for c in cookies {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    response.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            response
        }
    }
}

/// A JWT shaped as devise-jwt issues it (`sub`, `scp`, `iat`, `exp`, `jti`);
/// the signature is random, the simulator only looks tokens up.
fn jwt(user_id: u64, ttl: Duration) -> String {
    let enc = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let iat = Utc::now().timestamp();
    let exp = iat + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let header = json!({"alg": "HS256"});
    let claims = json!({
        "sub": user_id.to_string(),
        "scp": "user",
        "aud": null,
        "iat": iat,
        "exp": exp,
        "jti": new_uuid(),
    });
    format!("{}.{}.{}", enc(&header), enc(&claims), random_hex())
}

async fn logout(State(sim): State<PrimeroSim>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_string);
    let mut st = sim.lock();
    if let Some(token) = token {
        st.tokens.remove(&token);
    }
    if let Some(session) = cookie(&headers, SESSION_COOKIE) {
        st.sessions.remove(&session);
    }
    Json(json!({})).into_response()
}

/// Query parameters of `GET /api/v2/cases` after parsing.
#[derive(Default)]
struct CaseFilter {
    /// Id fields are exact matches on one value: not split on commas.
    individual_no: Option<String>,
    case_id: Option<String>,
    updated_from: Option<DateTime<Utc>>,
    updated_to: Option<DateTime<Utc>>,
    associated: Vec<String>,
    /// The search raised an error; Primero catches it and answers an empty
    /// page (`search_records` rescues `ActiveRecord::StatementInvalid`).
    failed: bool,
    page: usize,
    per: usize,
    order_by: String,
    descending: bool,
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// An ISO-8601 range bound; a bare date covers its whole day.
fn parse_bound(raw: &str, end: bool) -> Result<Option<DateTime<Utc>>, ()> {
    // An unencoded `+` in an offset arrives as a space after form decoding.
    let s = raw.trim().replace(' ', "+");
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(Some(t.and_utc()));
    }
    if let Ok(d) = NaiveDate::parse_from_str(&s, "%Y-%m-%d") {
        let t = if end {
            d.and_hms_milli_opt(23, 59, 59, 999)
        } else {
            d.and_hms_opt(0, 0, 0)
        };
        return Ok(t.map(|t| t.and_utc()));
    }
    Err(())
}

/// Parse the query of `GET /api/v2/cases` as Primero v2.11 does: a filter
/// on a field the role may not read is dropped; a `last_updated_at` range
/// without a (valid) lower bound is dropped (`SearchFilterService` builds no
/// range without a `from` date); an upper bound or a single value that is not
/// a date fails the SQL search. `remote`, `fields`, `query` and unknown keys
/// are ignored.
fn parse_case_filter(query: Option<&str>, max_per: usize, role: &SimRole) -> CaseFilter {
    let mut f = CaseFilter {
        page: 1,
        per: DEFAULT_PER,
        order_by: "created_at".to_string(),
        descending: true,
        ..CaseFilter::default()
    };
    let pairs = url::form_urlencoded::parse(query.unwrap_or("").as_bytes());
    for (key, value) in pairs {
        let field = key.split('[').next().unwrap_or_default();
        if !role.can_read(field) && !EXCLUDED_PARAMS.contains(&field) {
            continue;
        }
        match key.as_ref() {
            // Rails keeps the last of repeated keys.
            "unhcr_individual_no" => f.individual_no = Some(value.into_owned()),
            "case_id" => f.case_id = Some(value.into_owned()),
            "last_updated_at" => {
                let (from, to) = match value.split_once("..") {
                    Some((from, to)) => match parse_bound(from, false) {
                        Ok(Some(from)) => match parse_bound(to, true) {
                            Ok(to) => (Some(from), to),
                            Err(()) => {
                                f.failed = true;
                                (None, None)
                            }
                        },
                        // No lower bound: no filter at all.
                        Ok(None) | Err(()) => (None, None),
                    },
                    None => match parse_bound(&value, false) {
                        Ok(at) => (at, at),
                        Err(()) => {
                            f.failed = true;
                            (None, None)
                        }
                    },
                };
                f.updated_from = from;
                f.updated_to = to;
            }
            "page" => f.page = value.trim().parse().unwrap_or(1).max(1),
            "per" => f.per = value.trim().parse().unwrap_or(DEFAULT_PER).max(1),
            "order_by" if !value.trim().is_empty() => f.order_by = value.trim().to_string(),
            "order" => f.descending = !value.trim().eq_ignore_ascii_case("asc"),
            k if k == "associated_user_names" || k.starts_with("associated_user_names[") => {
                f.associated.extend(split_list(&value))
            }
            _ => {}
        }
    }
    f.per = f.per.min(max_per.max(1));
    f
}

/// Query keys that are not record fields (`SearchFilterService::EXCLUDED`),
/// so not subject to field permissions.
const EXCLUDED_PARAMS: &[&str] = &[
    "format",
    "controller",
    "action",
    "page",
    "per",
    "order",
    "order_by",
    "fields",
    "id_search",
];

impl CaseFilter {
    fn matches(&self, case: &Map<String, Value>) -> bool {
        if self.failed {
            return false;
        }
        if self
            .individual_no
            .as_ref()
            .is_some_and(|no| str_field(case, "unhcr_individual_no") != Some(no))
        {
            return false;
        }
        if self
            .case_id
            .as_ref()
            .is_some_and(|id| str_field(case, "case_id") != Some(id))
        {
            return false;
        }
        if self.updated_from.is_some() || self.updated_to.is_some() {
            let Some(t) = str_field(case, "last_updated_at")
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
            else {
                return false;
            };
            // v2.11+ SQL search compares whole seconds (`Time#iso8601`).
            let second = |t: DateTime<Utc>| t.trunc_subsecs(0);
            if self
                .updated_from
                .is_some_and(|from| second(t) < second(from))
                || self.updated_to.is_some_and(|to| second(t) > second(to))
            {
                return false;
            }
        }
        if !self.associated.is_empty() {
            let mut names = str_list(case, "assigned_user_names");
            names.extend(str_list(case, "associated_user_names"));
            if let Some(owner) = str_field(case, "owned_by") {
                names.push(owner.to_string());
            }
            if !names.iter().any(|n| self.associated.contains(n)) {
                return false;
            }
        }
        true
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum SortKey {
    Missing,
    Time(DateTime<Utc>),
    Number(i64),
    Text(String),
}

fn sort_key(case: &Map<String, Value>, field: &str) -> SortKey {
    match case.get(field) {
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => SortKey::Time(t.with_timezone(&Utc)),
            Err(_) => SortKey::Text(s.clone()),
        },
        Some(Value::Number(n)) => n
            .as_i64()
            .map(SortKey::Number)
            .unwrap_or_else(|| SortKey::Text(n.to_string())),
        Some(Value::Bool(b)) => SortKey::Number(i64::from(*b)),
        _ => SortKey::Missing,
    }
}

fn page_bounds(total: usize, page: usize, per: usize) -> (usize, usize) {
    let start = page.saturating_sub(1).saturating_mul(per).min(total);
    (start, start.saturating_add(per).min(total))
}

async fn list_cases(
    State(sim): State<PrimeroSim>,
    fault: Option<Extension<HandlerFault>>,
    RawQuery(query): RawQuery,
) -> Response {
    let mut st = sim.lock();
    let filter = parse_case_filter(query.as_deref(), st.config.max_per, &st.config.role);
    let candidates = st.candidates(&filter);
    let st = &*st;
    let mut hits: Vec<(SortKey, &Map<String, Value>)> = candidates
        .into_iter()
        .map(|i| &st.cases[i])
        .filter(|c| filter.matches(c))
        .map(|c| (sort_key(c, &filter.order_by), c))
        .collect();
    // No tie-breaker, as in Primero's SQL search: rows sharing a sort value
    // come in an order that may differ from one request to the next, so
    // paging through ties by page number can repeat some and skip others.
    rand::seq::SliceRandom::shuffle(hits.as_mut_slice(), &mut rand::rng());
    hits.sort_by(|a, b| a.0.cmp(&b.0));
    if filter.descending {
        hits.reverse();
    }
    let total = hits.len();
    let (mut start, mut end) = page_bounds(total, filter.page, filter.per);
    match fault.map(|Extension(HandlerFault(f))| f) {
        Some(Fault::RepeatPage) if filter.page > 1 => {
            (start, end) = page_bounds(total, filter.page - 1, filter.per);
        }
        Some(Fault::SkipRows(n)) => start = start.saturating_add(n).min(end),
        _ => {}
    }
    let data: Vec<Value> = hits[start..end]
        .iter()
        .map(|(_, c)| st.shown((*c).clone()))
        .collect();
    Json(json!({
        "data": data,
        "metadata": { "total": total, "per": filter.per, "page": filter.page },
    }))
    .into_response()
}

async fn create_case(
    State(sim): State<PrimeroSim>,
    Extension(ApiUser(user)): Extension<ApiUser>,
    body: Bytes,
) -> Response {
    const RESOURCE: &str = "/api/v2/cases";
    let data = match parse_data(&body) {
        Ok(d) => d,
        Err(e) => return e.into_response(RESOURCE),
    };
    let client_id = data.get("id").is_some_and(Value::is_string);
    let mut st = sim.lock();
    let data = match st.api_write(data) {
        Ok(d) => d,
        Err(e) => return e.into_response(RESOURCE),
    };
    let response = match st.create_case(data, &user) {
        Ok(_) if client_id => StatusCode::NO_CONTENT.into_response(),
        Ok(id) => {
            let case = st.case(&id).cloned().unwrap_or_default();
            Json(json!({ "data": st.shown(case) })).into_response()
        }
        Err(e) => return e.into_response(RESOURCE),
    };
    drop(st);
    sim.after_write("POST", RESOURCE);
    response
}

async fn get_case(State(sim): State<PrimeroSim>, Path(id): Path<String>) -> Response {
    let st = sim.lock();
    match st.case(&id) {
        Some(case) => Json(json!({ "data": st.shown(case.clone()) })).into_response(),
        None => SimError::CaseNotFound.into_response(&format!("/api/v2/cases/{id}")),
    }
}

async fn patch_case(
    State(sim): State<PrimeroSim>,
    fault: Option<Extension<HandlerFault>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let resource = format!("/api/v2/cases/{id}");
    let mut st = sim.lock();
    if st.case(&id).is_none() {
        return SimError::CaseNotFound.into_response(&resource);
    }
    let data = match parse_data(&body) {
        Ok(d) => d,
        Err(e) => return e.into_response(&resource),
    };
    if matches!(fault, Some(Extension(HandlerFault(Fault::NoopWrite)))) {
        return Json(json!({ "data": { "id": id } })).into_response();
    }
    let data = match st.api_write(data) {
        Ok(d) => d,
        Err(e) => return e.into_response(&resource),
    };
    let response = match st.patch_case(&id, data) {
        Ok(touched) => {
            // Primero answers with the id and the fields the update changed.
            let case = st.case(&id).cloned().unwrap_or_default();
            let case = match st.shown(case) {
                Value::Object(c) => c,
                _ => Map::new(),
            };
            let mut changed = Map::new();
            changed.insert("id".into(), json!(id));
            for key in touched {
                if let Some(v) = case.get(&key) {
                    changed.insert(key, v.clone());
                }
            }
            Json(json!({ "data": changed })).into_response()
        }
        Err(e) => return e.into_response(&resource),
    };
    drop(st);
    sim.after_write("PATCH", &resource);
    response
}

// ---- closing, reopening and flags ----------------------------------------

const STATUS_OPEN: &str = "open";
const STATUS_CLOSED: &str = "closed";

/// What Primero's save callbacks compare a case with before a save
/// (`app/models/concerns/reopenable.rb`, `workflow.rb`, `serviceable.rb`).
struct BeforeSave {
    status: Option<String>,
    services: usize,
    reopened: Option<Value>,
}

fn services_count(case: &Map<String, Value>) -> usize {
    case.get("services_section")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

impl BeforeSave {
    fn of(case: &Map<String, Value>) -> Self {
        Self {
            status: str_field(case, "status").map(str::to_string),
            services: services_count(case),
            reopened: case.get("case_status_reopened").cloned(),
        }
    }

    /// Primero's callbacks on an update, in its order; returns the keys they
    /// changed. A closed, enabled case that gets a new service is reopened
    /// (`reopen_record`, `services_section_added?`); a case newly closed gets
    /// its `date_closure`; closed → open with `case_status_reopened` logs who
    /// reopened it when (`reopened_logs`, newest first); a reopened case's
    /// workflow is `reopened`.
    fn reopenable(&self, case: &mut Map<String, Value>, user: &str, now: &str) -> Vec<String> {
        let mut touched = Vec::new();
        let enabled = case.get("record_state").is_none_or(truthy);
        if str_field(case, "status") == Some(STATUS_CLOSED)
            && enabled
            && services_count(case) > self.services
        {
            case.insert("status".into(), json!(STATUS_OPEN));
            case.insert("case_status_reopened".into(), json!(true));
            touched.extend(["status".to_string(), "case_status_reopened".to_string()]);
        }
        let status = str_field(case, "status").map(str::to_string);
        let was = self.status.as_deref();
        if was == Some(STATUS_OPEN)
            && status.as_deref() == Some(STATUS_CLOSED)
            && case.get("date_closure").is_none_or(Value::is_null)
        {
            case.insert("date_closure".into(), json!(&now[..10]));
            touched.push("date_closure".into());
        }
        let reopened = case.get("case_status_reopened").is_some_and(truthy);
        if reopened && was == Some(STATUS_CLOSED) && status.as_deref() == Some(STATUS_OPEN) {
            let log = json!({"reopened_date": now, "reopened_user": user});
            match case.get_mut("reopened_logs") {
                Some(Value::Array(logs)) => logs.insert(0, log),
                _ => {
                    case.insert("reopened_logs".into(), json!([log]));
                }
            }
            touched.push("reopened_logs".into());
        }
        let changed =
            was != status.as_deref() || self.reopened.as_ref() != case.get("case_status_reopened");
        if changed && reopened && status.as_deref() == Some(STATUS_OPEN) {
            case.insert("workflow".into(), json!("reopened"));
            touched.push("workflow".into());
        }
        touched
    }
}

/// A flag on a case (`app/models/flag.rb`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimFlag {
    pub id: u64,
    pub record_id: String,
    pub record_type: String,
    pub date: String,
    pub message: String,
    pub flagged_by: String,
    pub removed: bool,
    pub unflag_message: Option<String>,
    pub created_at: String,
    pub system_generated_followup: bool,
    pub unflagged_by: Option<String>,
    pub unflagged_date: Option<String>,
}

impl SimState {
    /// `Flaggable#add_flag!`: the flag, then the case saved with `flagged`
    /// recalculated. `message` and `date` are required (`Flag` validations);
    /// an empty date is today.
    fn add_flag(
        &mut self,
        case_id: &str,
        data: &Map<String, Value>,
        user: &str,
    ) -> Result<SimFlag, SimError> {
        if self.case(case_id).is_none() {
            return Err(SimError::CaseNotFound);
        }
        let message = str_field(data, "message").unwrap_or_default().trim();
        if message.is_empty() {
            return Err(SimError::invalid("message", "errors.models.flags.message"));
        }
        let now = self.clock.tick_string();
        let date = match str_field(data, "date").map(str::trim) {
            None | Some("") => now[..10].to_string(),
            Some(d) if NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok() => d.to_string(),
            Some(_) => return Err(SimError::invalid("date", "errors.models.flags.date")),
        };
        let flag = SimFlag {
            id: self.flags.len() as u64 + 1,
            record_id: case_id.to_string(),
            record_type: "cases".to_string(),
            date,
            message: message.to_string(),
            flagged_by: user.to_string(),
            removed: false,
            unflag_message: None,
            created_at: now.clone(),
            system_generated_followup: false,
            unflagged_by: None,
            unflagged_date: None,
        };
        self.flags.push(flag.clone());
        let count = self
            .flags
            .iter()
            .filter(|f| f.record_id == case_id && !f.removed)
            .count();
        self.touch_case(case_id, &now, |case| {
            case.insert("flagged".into(), json!(count > 0));
            case.insert("flag_count".into(), json!(count));
        });
        Ok(flag)
    }
}

/// `app/views/api/v2/flags/_flag.json.jbuilder`: the flag, a little of its
/// record, and the record's changed fields.
fn flag_view(flag: &SimFlag, case: &Map<String, Value>) -> Value {
    let mut view = serde_json::to_value(flag).unwrap_or_default();
    if let Value::Object(v) = &mut view {
        for key in ["short_id", "owned_by", "owned_by_agency_id"] {
            v.insert(key.into(), case.get(key).cloned().unwrap_or(Value::Null));
        }
        v.insert(
            "name".into(),
            case.get("name").cloned().unwrap_or(Value::Null),
        );
        v.insert("record_access_denied".into(), json!(false));
        v.insert(
            "record".into(),
            json!({
                "id": flag.record_id,
                "flag_count": case.get("flag_count"),
                "flagged": case.get("flagged"),
                "last_updated_at": case.get("last_updated_at"),
            }),
        );
    }
    view
}

async fn list_flags(State(sim): State<PrimeroSim>, Path(id): Path<String>) -> Response {
    let st = sim.lock();
    let Some(case) = st.case(&id) else {
        return SimError::CaseNotFound.into_response(&format!("/api/v2/cases/{id}/flags"));
    };
    let data: Vec<Value> = st
        .flags
        .iter()
        .filter(|f| f.record_id == id)
        .map(|f| flag_view(f, case))
        .collect();
    Json(json!({ "data": data })).into_response()
}

async fn create_flag(
    State(sim): State<PrimeroSim>,
    Extension(ApiUser(user)): Extension<ApiUser>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let resource = format!("/api/v2/cases/{id}/flags");
    let mut st = sim.lock();
    if st.case(&id).is_none() {
        return SimError::CaseNotFound.into_response(&resource);
    }
    let data = match parse_data(&body) {
        Ok(d) => d,
        Err(e) => return e.into_response(&resource),
    };
    let flag = match st.add_flag(&id, &data, &user) {
        Ok(f) => f,
        Err(e) => return e.into_response(&resource),
    };
    // FlagsController#status: 204 (no body) when the client sent an id.
    let response = if data.get("id").is_some_and(|v| !v.is_null()) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        let case = st.case(&id).cloned().unwrap_or_default();
        Json(json!({ "data": flag_view(&flag, &case) })).into_response()
    };
    drop(st);
    sim.after_write("POST", &resource);
    response
}

fn referral_view(mut r: SimReferral, user: &str) -> SimReferral {
    r.user_can_accept_or_reject =
        r.status == ReferralStatus::InProgress && r.transitioned_to == user;
    r
}

async fn list_referrals(
    State(sim): State<PrimeroSim>,
    Extension(ApiUser(user)): Extension<ApiUser>,
    Path(id): Path<String>,
) -> Response {
    let st = sim.lock();
    let Some(case) = st.case(&id) else {
        return SimError::CaseNotFound.into_response(&format!("/api/v2/cases/{id}/referrals"));
    };
    // `Transitionable#referrals_for_user`: the owner sees every referral;
    // a role that may not view others' referrals sees only the open ones
    // made to itself.
    let sees_all =
        st.config.role.sees_others_referrals() || str_field(case, "owned_by") == Some(&user);
    let data: Vec<SimReferral> = st
        .referrals
        .get(&id)
        .into_iter()
        .flatten()
        .filter(|r| {
            sees_all
                || (r.transitioned_to == user
                    && matches!(
                        r.status,
                        ReferralStatus::InProgress | ReferralStatus::Accepted
                    ))
        })
        .map(|r| referral_view(r.clone(), &user))
        .collect();
    Json(json!({ "data": data })).into_response()
}

async fn create_referral(
    State(sim): State<PrimeroSim>,
    Extension(ApiUser(user)): Extension<ApiUser>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let resource = format!("/api/v2/cases/{id}/referrals");
    let data = match parse_data(&body) {
        Ok(d) => d,
        Err(e) => return e.into_response(&resource),
    };
    let request: NewSimReferral = match serde_json::from_value(Value::Object(data)) {
        Ok(r) => r,
        Err(_) => {
            return SimError::invalid("transitioned_to", "Transitioned to user is required")
                .into_response(&resource)
        }
    };
    let mut st = sim.lock();
    let response = match st.create_referral(&id, request, &user) {
        Ok(r) => Json(json!({ "data": referral_view(r, &user) })).into_response(),
        Err(e) => return e.into_response(&resource),
    };
    drop(st);
    sim.after_write("POST", &resource);
    response
}

async fn patch_referral(
    State(sim): State<PrimeroSim>,
    Extension(ApiUser(user)): Extension<ApiUser>,
    fault: Option<Extension<HandlerFault>>,
    Path((id, referral_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let resource = format!("/api/v2/cases/{id}/referrals/{referral_id}");
    let data = match parse_data(&body) {
        Ok(d) => d,
        Err(e) => return e.into_response(&resource),
    };
    // Only status / rejected_reason / rejection_note are read; a key of the
    // wrong type is ignored rather than refused.
    let take = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_string);
    let decision = SimReferralDecision {
        status: take("status"),
        rejected_reason: take("rejected_reason"),
        rejection_note: take("rejection_note"),
    };
    let mut st = sim.lock();
    if matches!(fault, Some(Extension(HandlerFault(Fault::NoopWrite)))) {
        let current = st
            .referrals
            .get(&id)
            .and_then(|rs| rs.iter().find(|r| r.id == referral_id))
            .cloned();
        return match current {
            Some(r) => Json(json!({ "data": referral_view(r, &user) })).into_response(),
            None => SimError::ReferralNotFound.into_response(&resource),
        };
    }
    let response = match st.decide_referral(&id, &referral_id, decision) {
        Ok(r) => Json(json!({ "data": referral_view(r, &user) })).into_response(),
        Err(e) => return e.into_response(&resource),
    };
    drop(st);
    sim.after_write("PATCH", &resource);
    response
}

async fn list_users(State(sim): State<PrimeroSim>, RawQuery(query): RawQuery) -> Response {
    let st = sim.lock();
    let mut page = 1usize;
    let mut per = DEFAULT_PER;
    let mut user_name = None;
    for (key, value) in url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "page" => page = value.trim().parse().unwrap_or(1).max(1),
            "per" => per = value.trim().parse().unwrap_or(DEFAULT_PER).max(1),
            // `PermittedUsersService`: `where(user_name: …)`, exact.
            "user_name" if !value.is_empty() => user_name = Some(value.into_owned()),
            _ => {}
        }
    }
    per = per.min(st.config.max_per.max(1));
    let users: Vec<&SimUser> = st
        .users
        .iter()
        .filter(|u| user_name.as_ref().is_none_or(|n| *n == u.user_name))
        .collect();
    let total = users.len();
    let (start, end) = page_bounds(total, page, per);
    let total_enabled = users.iter().filter(|u| !u.disabled).count();
    Json(json!({
        "data": &users[start..end],
        "metadata": { "total": total, "per": per, "page": page, "total_enabled": total_enabled },
    }))
    .into_response()
}

// ---------------------------------------------------------------------------
// Fault helpers shared by the simulators
// ---------------------------------------------------------------------------

/// A fault the handler applies itself (paging, no-op writes).
#[derive(Clone)]
struct HandlerFault(Fault);

/// A 200 whose body fails at once: the server closes the connection without
/// a complete answer, so the client sees a transport error.
pub(crate) fn hangup_response() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected hangup",
        ))
    });
    (StatusCode::OK, Body::from_stream(stream)).into_response()
}

/// The same answer with its body cut in half (a truncated JSON document).
pub(crate) async fn truncate_response(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let cut = bytes.slice(..bytes.len() / 2);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(cut))
}

/// Requests being handled now, and the most ever at once.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

/// Leaves the count when dropped (also when the client goes away).
pub(crate) struct InFlightGuard<'a>(&'a InFlight);

impl InFlight {
    pub(crate) fn enter(&self) -> InFlightGuard<'_> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        InFlightGuard(self)
    }

    pub(crate) fn max_seen(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    pub(crate) fn reset(&self) {
        self.max
            .store(self.now.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::people::PeopleGenerator;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn services(case: &Value) -> Vec<Value> {
        case["services_section"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn merge_updates_appends_and_deletes_by_unique_id() {
        let mut case = obj(json!({
            "name_first": "Old",
            "language": ["a", "b"],
            "services_section": [
                {"unique_id": "s1", "service_type": "legal_support", "unhcr_referral_status": "pending"},
                {"unique_id": "s2", "service_type": "alternative_care"}
            ]
        }));
        let touched = merge_record(
            &mut case,
            obj(json!({
                "name_first": "New",
                "language": ["c"],
                "services_section": [
                    {"unique_id": "s1", "unhcr_referral_status": "accepted"},
                    {"unique_id": "s2", "_destroy": true},
                    {"service_type": "health"},
                    {"unique_id": "client-chosen", "service_type": "education"},
                    {"unique_id": "unknown", "_destroy": true}
                ]
            })),
        );
        assert_eq!(touched, vec!["name_first", "language", "services_section"]);
        assert_eq!(case["name_first"], "New");
        // A scalar array replaces, it is not a subform.
        assert_eq!(case["language"], json!(["c"]));
        let s = case["services_section"].as_array().unwrap();
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0]["unique_id"], "s1");
        assert_eq!(
            s[0]["service_type"], "legal_support",
            "untouched field kept"
        );
        assert_eq!(s[0]["unhcr_referral_status"], "accepted");
        assert_eq!(s[1]["service_type"], "health");
        let new_uid = s[1]["unique_id"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(new_uid).is_ok(), "{new_uid}");
        assert_eq!(s[2]["unique_id"], "client-chosen");
        assert!(s.iter().all(|e| e.get("_destroy").is_none()));
    }

    #[test]
    fn delete_is_no_primero_key_and_destroy_must_be_a_boolean() {
        let sim = PrimeroSim::default();
        let id = sim
            .insert_case(obj(json!({"services_section": [
                {"unique_id": "s1", "service_type": "x"},
                {"unique_id": "s2", "service_type": "y"}
            ]})))
            .unwrap();
        // `_delete` is dropped unread: the entry stays, without the key.
        let after = sim
            .update_case(
                &id,
                obj(json!({"services_section": [{"unique_id": "s1", "_delete": true}]})),
            )
            .unwrap();
        assert_eq!(services(&after).len(), 2);
        assert!(services(&after)[0].get("_delete").is_none());
        // `_destroy: false` keeps; anything but a boolean or null is refused
        // with a pointer to it, and nothing changes.
        let kept = sim
            .update_case(
                &id,
                obj(json!({"services_section": [{"unique_id": "s1", "_destroy": false}]})),
            )
            .unwrap();
        assert_eq!(services(&kept).len(), 2);
        let bad = sim.update_case(
            &id,
            obj(json!({"services_section": [
                {"unique_id": "s2", "_destroy": true},
                {"unique_id": "s1", "_destroy": "yes"}
            ]})),
        );
        assert_eq!(
            bad,
            Err(SimError::InvalidJson {
                pointers: vec!["/services_section/1/_destroy".into()]
            })
        );
        assert_eq!(services(&sim.case(&id).unwrap()).len(), 2);
        let gone = sim
            .update_case(
                &id,
                obj(json!({"services_section": [{"unique_id": "s2", "_destroy": true}]})),
            )
            .unwrap();
        assert_eq!(services(&gone).len(), 1);
        assert_eq!(services(&gone)[0]["unique_id"], "s1");
    }

    #[test]
    fn empty_array_keeps_a_subform_and_empties_a_list() {
        let mut case = obj(json!({
            "services_section": [{"unique_id": "s1"}],
            "language": ["language1"],
        }));
        merge_record(
            &mut case,
            obj(json!({"services_section": [], "language": []})),
        );
        assert_eq!(case["services_section"], json!([{"unique_id": "s1"}]));
        assert_eq!(case["language"], json!([]));
    }

    #[test]
    fn patch_bumps_last_updated_and_keeps_id() {
        let sim = PrimeroSim::default();
        let id = sim
            .insert_case(obj(json!({"services_section": [{"service_type": "x"}]})))
            .unwrap();
        let before = sim.case(&id).unwrap();
        let uid = services(&before)[0]["unique_id"]
            .as_str()
            .unwrap()
            .to_string();
        let after = sim
            .update_case(
                &id,
                obj(json!({"id": "other", "services_section": [{"unique_id": uid, "service_type": "y"}]})),
            )
            .unwrap();
        assert_eq!(after["id"], json!(id));
        assert_eq!(services(&after).len(), 1);
        assert_eq!(services(&after)[0]["service_type"], "y");
        // Whole seconds: the patch may share its second with the insert.
        assert!(
            after["last_updated_at"].as_str().unwrap()
                >= before["last_updated_at"].as_str().unwrap()
        );
        assert_eq!(after["created_at"], before["created_at"]);
        assert_eq!(
            sim.update_case("nope", Map::new()),
            Err(SimError::CaseNotFound)
        );
    }

    #[test]
    fn insert_assigns_server_fields() {
        let sim = PrimeroSim::default();
        let id = sim
            .insert_case(obj(
                json!({"case_id": "3e2d1c0b-bbbb-4ccc-9ddd-0000000000b2"}),
            ))
            .unwrap();
        let case = sim.case(&id).unwrap();
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        assert_eq!(case["short_id"], "00000b2");
        assert_eq!(case["case_id_display"], "00000b2");
        assert_eq!(case["owned_by"], "bridge_api");
        assert_eq!(case["status"], "open");
        assert_eq!(case["associated_user_names"], json!(["bridge_api"]));
        assert!(case["created_at"].as_str().unwrap().ends_with('Z'));
        let dup = sim.insert_case(obj(json!({"id": id})));
        assert_eq!(dup, Err(SimError::Conflict));
        let bad = sim.insert_case(obj(json!({"date_of_birth": "15/03/2012"})));
        assert_eq!(
            bad,
            Err(SimError::InvalidJson {
                pointers: vec!["/date_of_birth".into()]
            })
        );
    }

    #[test]
    fn clock_gives_whole_seconds_that_never_go_back() {
        let mut clock = Clock::default();
        let stamps: Vec<String> = (0..500).map(|_| clock.tick_string()).collect();
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
        assert!(stamps.iter().all(|s| s.ends_with(".000Z")), "{stamps:?}");
        // 500 ticks take far less than a second: most share one.
        assert!(stamps.windows(2).any(|w| w[0] == w[1]));
        let pinned = DateTime::parse_from_rfc3339("2031-01-01T10:00:00.700Z")
            .unwrap()
            .with_timezone(&Utc);
        clock.pinned = Some(pinned);
        assert_eq!(clock.tick_string(), "2031-01-01T10:00:00.000Z");
        clock.pinned = Some(pinned - chrono::Duration::days(1));
        assert_eq!(clock.tick_string(), "2031-01-01T10:00:00.000Z");
    }

    fn referred_case(sim: &PrimeroSim) -> (String, String, SimReferral) {
        let mut people = PeopleGenerator::new(3);
        let service =
            obj(json!({"service_type": "legal_support", "service_implementing_agency": "UNHCR"}));
        let id = sim.seed_person(&people.person(), vec![service]);
        let uid = services(&sim.case(&id).unwrap())[0]["unique_id"]
            .as_str()
            .unwrap()
            .to_string();
        let referral = sim
            .add_referral(
                &id,
                NewSimReferral {
                    transitioned_to: "unhcr_cw".into(),
                    service_record_id: Some(uid.clone()),
                    ..NewSimReferral::default()
                },
            )
            .unwrap();
        (id, uid, referral)
    }

    #[test]
    fn referral_creation_marks_service_and_assigns_recipient() {
        let sim = PrimeroSim::default();
        let (id, _, referral) = referred_case(&sim);
        assert_eq!(referral.status, ReferralStatus::InProgress);
        assert_eq!(referral.service.as_deref(), Some("legal_support"));
        let case = sim.case(&id).unwrap();
        assert_eq!(services(&case)[0]["service_status_referred"], true);
        assert_eq!(case["assigned_user_names"], json!(["unhcr_cw"]));
        assert!(case["associated_user_names"]
            .as_array()
            .unwrap()
            .contains(&json!("unhcr_cw")));
    }

    #[test]
    fn referral_without_consent_is_refused() {
        let sim = PrimeroSim::default();
        let id = sim.insert_case(Map::new()).unwrap();
        let refused = sim.add_referral(
            &id,
            NewSimReferral {
                transitioned_to: "unhcr_cw".into(),
                ..NewSimReferral::default()
            },
        );
        assert!(matches!(refused, Err(SimError::Invalid { .. })));
        let forced = sim.add_referral(
            &id,
            NewSimReferral {
                transitioned_to: "unhcr_cw".into(),
                consent_overridden: Some(true),
                ..NewSimReferral::default()
            },
        );
        assert!(forced.is_ok());
    }

    #[test]
    fn state_machine_accept_then_done() {
        let sim = PrimeroSim::default();
        let (id, _, referral) = referred_case(&sim);
        let accepted = sim
            .set_referral_decision(
                &id,
                &referral.id,
                SimReferralDecision::status(ReferralStatus::Accepted),
            )
            .unwrap();
        assert_eq!(accepted.status, ReferralStatus::Accepted);
        assert!(accepted.responded_at.is_some());
        // A late rejection after acceptance is a silent no-op.
        let late = sim
            .set_referral_decision(
                &id,
                &referral.id,
                SimReferralDecision {
                    status: Some("rejected".into()),
                    rejected_reason: Some("late".into()),
                    rejection_note: None,
                },
            )
            .unwrap();
        assert_eq!(late, accepted);
        let done = sim
            .set_referral_decision(
                &id,
                &referral.id,
                SimReferralDecision {
                    status: Some("done".into()),
                    rejected_reason: None,
                    rejection_note: Some("delivered".into()),
                },
            )
            .unwrap();
        assert_eq!(done.status, ReferralStatus::Done);
        let service = &services(&sim.case(&id).unwrap())[0];
        assert_eq!(service["service_implemented"], "implemented");
        assert_eq!(service["note_on_referral_from_provider"], "delivered");
        assert_eq!(sim.referrals(&id)[0].status, ReferralStatus::Done);
    }

    #[test]
    fn state_machine_reject_and_noops() {
        let sim = PrimeroSim::default();
        let (id, _, referral) = referred_case(&sim);
        let before = sim.case(&id).unwrap();
        // in_progress → done, same status, unknown status: all no-ops.
        for status in ["done", "in_progress", "bogus"] {
            let r = sim
                .set_referral_decision(
                    &id,
                    &referral.id,
                    SimReferralDecision {
                        status: Some(status.into()),
                        ..SimReferralDecision::default()
                    },
                )
                .unwrap();
            assert_eq!(r, referral, "{status}");
        }
        assert_eq!(
            sim.case(&id).unwrap(),
            before,
            "no-op must not touch the case"
        );
        let rejected = sim
            .set_referral_decision(
                &id,
                &referral.id,
                SimReferralDecision {
                    status: Some("rejected".into()),
                    rejected_reason: Some("not_match".into()),
                    rejection_note: None,
                },
            )
            .unwrap();
        assert_eq!(rejected.status, ReferralStatus::Rejected);
        assert_eq!(rejected.rejected_reason.as_deref(), Some("not_match"));
        assert!(rejected.responded_at.is_some());
        let case = sim.case(&id).unwrap();
        assert_eq!(case["assigned_user_names"], json!([]));
        assert!(!case["associated_user_names"]
            .as_array()
            .unwrap()
            .contains(&json!("unhcr_cw")));
        // rejected → accepted is not a transition either.
        let again = sim
            .set_referral_decision(
                &id,
                &referral.id,
                SimReferralDecision::status(ReferralStatus::Accepted),
            )
            .unwrap();
        assert_eq!(again, rejected);
        assert_eq!(
            sim.set_referral_decision(&id, "nope", SimReferralDecision::default()),
            Err(SimError::ReferralNotFound)
        );
    }

    #[test]
    fn case_filter_parses_ranges_and_caps_per() {
        let role = SimRole::default();
        let f = parse_case_filter(
            Some("per=5000&page=2&last_updated_at=2024-05-01T00:00:00.000Z..&associated_user_names%5B0%5D=u1&order=asc&order_by=last_updated_at"),
            1000,
            &role,
        );
        assert_eq!(f.per, 1000);
        assert_eq!(f.page, 2);
        assert!(f.updated_from.is_some() && f.updated_to.is_none());
        assert_eq!(f.associated, vec!["u1"]);
        assert!(!f.descending);
        assert_eq!(f.order_by, "last_updated_at");
        let f = parse_case_filter(
            Some("last_updated_at=2024-05-01T00:00:00Z..2024-05-01"),
            1000,
            &role,
        );
        assert_eq!(
            f.updated_to.map(format_ts).as_deref(),
            Some("2024-05-01T23:59:59.999Z")
        );
        // No lower bound, or one that is not a date: the range is dropped.
        for q in [
            "last_updated_at=..2024-05-01",
            "last_updated_at=yesterday..2024-05-01",
        ] {
            let f = parse_case_filter(Some(q), 1000, &role);
            assert!(
                f.updated_from.is_none() && f.updated_to.is_none() && !f.failed,
                "{q}"
            );
        }
        // A bad upper bound or value fails the search (an empty answer).
        for q in [
            "last_updated_at=2024-05-01..soon",
            "last_updated_at=yesterday",
        ] {
            assert!(parse_case_filter(Some(q), 1000, &role).failed, "{q}");
        }
        // Id filters are one exact value; `remote` is not a parameter.
        let f = parse_case_filter(
            Some("remote=true&unhcr_individual_no=803-100000519,803-100000520&case_id=a&case_id=b"),
            1000,
            &role,
        );
        assert_eq!(
            f.individual_no.as_deref(),
            Some("803-100000519,803-100000520")
        );
        assert_eq!(f.case_id.as_deref(), Some("b"));
        // A filter on a field the role may not read is dropped.
        let blind = SimRole::bridge()
            .without_read("unhcr_individual_no")
            .without_read("associated_user_names");
        let f = parse_case_filter(
            Some("unhcr_individual_no=803-100000519&associated_user_names%5B0%5D=u1&per=5"),
            1000,
            &blind,
        );
        assert!(f.individual_no.is_none() && f.associated.is_empty());
        assert_eq!(f.per, 5);
        let f = parse_case_filter(None, 1000, &role);
        assert_eq!((f.per, f.page, f.descending), (20, 1, true));
    }

    #[tokio::test]
    async fn http_role_knobs_and_validations() {
        let running = PrimeroSim::default()
            .start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut people = PeopleGenerator::new(11);
        let (a, b) = (people.person(), people.person());
        let case_a = running.seed_person(&a, Vec::new());
        running.seed_person(&b, Vec::new());
        let http = reqwest::Client::new();
        let base = running.base_url();
        let get = |path: String| {
            let http = http.clone();
            async move {
                http.get(path)
                    .basic_auth("bridge_api", Some("sim-password"))
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            }
        };
        let by_no = format!("{base}/api/v2/cases?unhcr_individual_no={}", a.progres_id);
        assert_eq!(get(by_no.clone()).await["metadata"]["total"], 1);

        // Unreadable: the filter is dropped and the field not shown.
        running.set_role(SimRole::bridge().without_read("unhcr_individual_no"));
        let all = get(by_no.clone()).await;
        assert_eq!(all["metadata"]["total"], 2);
        assert!(all["data"][0].get("unhcr_individual_no").is_none());
        running.set_role(SimRole::default());

        // Unwritable: stripped silently, 200.
        running.set_role(
            SimRole::bridge().without_write("services_section.progres_interventionnumber"),
        );
        let answer = http
            .patch(format!("{base}/api/v2/cases/{case_a}"))
            .basic_auth("bridge_api", Some("sim-password"))
            .json(&json!({"data": {"services_section": [
                {"service_type": "legal_support", "progres_interventionnumber": "803-24-PRTITV-1"}
            ]}}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let service = &services(&running.case(&case_a).unwrap())[0];
        assert_eq!(service["service_type"], "legal_support");
        assert!(service.get("progres_interventionnumber").is_none());
        running.set_role(SimRole::default());

        // Validations: upper-case id, a value outside a lookup.
        let refused = http
            .post(format!("{base}/api/v2/cases"))
            .basic_auth("bridge_api", Some("sim-password"))
            .json(&json!({"data": {
                "id": "3E2D1C0B-BBBB-4CCC-9DDD-0000000000B2",
                "sex": "intersex_x",
                "services_section": [{"unique_id": "svc-1"}]
            }}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 422);
        assert_eq!(
            refused.json::<Value>().await.unwrap(),
            json!({"errors": [{
                "status": 422,
                "resource": "/api/v2/cases",
                "message": "Invalid Record JSON",
                "detail": ["/id", "/sex", "/services_section/0/unique_id"]
            }]})
        );
        assert_eq!(running.case_count(), 2);

        // A search error is an empty 200; `remote` changes nothing.
        let failed = get(format!(
            "{base}/api/v2/cases?last_updated_at=2024-01-01..soon"
        ))
        .await;
        assert_eq!(failed["metadata"]["total"], 0);
        let remote = get(format!("{base}/api/v2/cases?remote=true")).await;
        assert_eq!(remote["metadata"]["total"], 2);

        // Referrals to others are hidden from a role without that view.
        let referral = running
            .add_referral(
                &case_a,
                NewSimReferral {
                    transitioned_to: "unhcr_cw".into(),
                    ..NewSimReferral::default()
                },
            )
            .unwrap();
        running
            .update_case(&case_a, obj(json!({"owned_by": "cp_worker"})))
            .unwrap();
        let listed = format!("{base}/api/v2/cases/{case_a}/referrals");
        assert_eq!(
            get(listed.clone()).await["data"][0]["id"],
            json!(referral.id)
        );
        running.set_role(SimRole::bridge().without_others_referrals());
        assert_eq!(get(listed).await["data"], json!([]));

        // Users by user_name, exact.
        running.add_user(SimUser::new("unhcr_cw"));
        running.add_user(SimUser::new("unhcr_cw2"));
        let one = get(format!("{base}/api/v2/users?user_name=unhcr_cw")).await;
        assert_eq!(one["metadata"]["total"], 1);
        assert_eq!(one["data"][0]["user_name"], "unhcr_cw");
        running.shutdown().await;
    }

    #[tokio::test]
    async fn http_auth_paging_and_counters() {
        let running = PrimeroSim::new(PrimeroSimConfig {
            max_per: 3,
            ..PrimeroSimConfig::default()
        })
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
        for _ in 0..7 {
            running.insert_case(Map::new()).unwrap();
        }
        let http = reqwest::Client::new();
        let url = format!(
            "{}/api/v2/cases?per=50&page=3&order=asc",
            running.base_url()
        );
        let unauthenticated = http.get(&url).send().await.unwrap();
        assert_eq!(unauthenticated.status(), 401);
        let body: Value = http
            .get(&url)
            .basic_auth("bridge_api", Some("sim-password"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["metadata"], json!({"total": 7, "per": 3, "page": 3}));
        assert_eq!(body["data"].as_array().unwrap().len(), 1);
        let login = http
            .post(format!("{}/api/v2/tokens", running.base_url()))
            .json(&json!({"user": {"user_name": "bridge_api", "password": "wrong"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 401);
        assert_eq!(
            login.json::<Value>().await.unwrap(),
            json!({"error": "Invalid User name or password."})
        );
        let missing = http
            .get(format!("{}/api/v2/cases/nope", running.base_url()))
            .basic_auth("bridge_api", Some("sim-password"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        assert_eq!(
            missing.json::<Value>().await.unwrap(),
            json!({"errors": [{"status": 404, "resource": "/api/v2/cases/nope", "message": "Not Found"}]})
        );
        assert_eq!(running.request_count("GET /api/v2/cases"), 2);
        assert_eq!(running.request_count("POST /api/v2/tokens"), 1);
        assert_eq!(running.request_count("GET /api/v2/cases/{id}"), 1);
        running.shutdown().await;
    }

    async fn login(http: &reqwest::Client, base: &str) -> reqwest::Response {
        http.post(format!("{base}/api/v2/tokens"))
            .json(&json!({"user": {"user_name": "bridge_api", "password": "sim-password"}}))
            .send()
            .await
            .unwrap()
    }

    fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
        response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next()?.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    #[tokio::test]
    async fn v2_11_login_opens_a_session_and_refuses_bearer() {
        let running = PrimeroSim::default()
            .start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let base = running.base_url();
        let http = reqwest::Client::new();
        let answer = login(&http, &base).await;
        assert_eq!(answer.status(), 200);
        assert!(answer.headers().get(header::AUTHORIZATION).is_none());
        let session = set_cookie(&answer, SESSION_COOKIE).expect("session cookie");
        let csrf = set_cookie(&answer, CSRF_COOKIE).expect("csrf cookie");
        assert_eq!(
            answer.json::<Value>().await.unwrap(),
            json!({"id": 1, "user_name": "bridge_api", "group_permission": "self"})
        );
        let cases = format!("{base}/api/v2/cases");
        // A bearer token (any) is refused, in Devise's shape.
        let bearer = http.get(&cases).bearer_auth("abc").send().await.unwrap();
        assert_eq!(bearer.status(), 401);
        assert_eq!(
            bearer.json::<Value>().await.unwrap(),
            json!({"error": UNAUTHENTICATED})
        );
        // The session reads; its writes need the CSRF token; Basic needs none.
        let with_session = |req: reqwest::RequestBuilder| {
            req.header(header::COOKIE, format!("{SESSION_COOKIE}={session}"))
        };
        let read = with_session(http.get(&cases)).send().await.unwrap();
        assert_eq!(read.status(), 200);
        let body = json!({"data": {"status": "open"}});
        let refused = with_session(http.post(&cases))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403);
        assert_eq!(
            refused.json::<Value>().await.unwrap()["errors"][0]["message"],
            CSRF_REFUSED
        );
        let written = with_session(http.post(&cases))
            .header(CSRF_HEADER, &csrf)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(written.status(), 200);
        let basic = http
            .post(&cases)
            .basic_auth("bridge_api", Some("sim-password"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status(), 200);
        assert_eq!(running.case_count(), 2);
        running.shutdown().await;
    }

    #[tokio::test]
    async fn v2_10_login_hands_out_a_jwt_in_the_authorization_header() {
        let running = PrimeroSim::new(PrimeroSimConfig {
            version: SimPrimeroVersion::V2_10,
            token_ttl: Duration::from_secs(3600),
            ..PrimeroSimConfig::default()
        })
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
        let base = running.base_url();
        let http = reqwest::Client::new();
        let answer = login(&http, &base).await;
        assert_eq!(answer.status(), 200);
        assert!(set_cookie(&answer, SESSION_COOKIE).is_none());
        let header = answer.headers()[header::AUTHORIZATION]
            .to_str()
            .unwrap()
            .to_string();
        let token = header.strip_prefix("Bearer ").unwrap().to_string();
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            3600
        );
        let body = answer.json::<Value>().await.unwrap();
        assert_eq!(
            body["token"],
            json!(token),
            "v2.10 renders it in the body too"
        );
        let read = http
            .get(format!("{base}/api/v2/cases"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
        running.revoke_all_tokens();
        let refused = http
            .get(format!("{base}/api/v2/cases"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
        running.shutdown().await;
    }

    #[tokio::test]
    async fn errors_are_in_primero_shape() {
        let running = PrimeroSim::default()
            .start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let post = |body: Value| {
            http.post(format!("{}/api/v2/cases", running.base_url()))
                .basic_auth("bridge_api", Some("sim-password"))
                .json(&body)
                .send()
        };
        let invalid = post(json!({"data": {"date_of_birth": "15/03/2012", "services_section": [{"_destroy": "yes"}]}}))
            .await
            .unwrap();
        assert_eq!(invalid.status(), 422);
        assert_eq!(
            invalid.json::<Value>().await.unwrap(),
            json!({"errors": [{
                "status": 422,
                "resource": "/api/v2/cases",
                "detail": ["/date_of_birth", "/services_section/0/_destroy"],
                "message": "Invalid Record JSON"
            }]})
        );
        let missing = post(json!({"nodata": {}})).await.unwrap();
        assert_eq!(
            missing.json::<Value>().await.unwrap()["errors"][0]["message"],
            "param is missing or the value is empty: data"
        );
        running.shutdown().await;
    }

    #[tokio::test]
    async fn ties_on_last_updated_at_come_in_varying_order() {
        let sim = PrimeroSim::default();
        sim.pin_clock(Some(
            DateTime::parse_from_rfc3339("2031-05-05T05:05:05.555Z")
                .unwrap()
                .with_timezone(&Utc),
        ));
        for _ in 0..30 {
            sim.insert_case(Map::new()).unwrap();
        }
        let running = sim.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let http = reqwest::Client::new();
        let mut orders = HashSet::new();
        for _ in 0..5 {
            // The bound is compared at whole seconds: .999 still matches .000.
            let body: Value = http
                .get(format!(
                    "{}/api/v2/cases?order_by=last_updated_at&order=asc&per=100&last_updated_at=2031-05-05T05:05:05.999Z..",
                    running.base_url()
                ))
                .basic_auth("bridge_api", Some("sim-password"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let ids: Vec<String> = body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(ids.len(), 30);
            orders.insert(ids);
        }
        assert!(orders.len() > 1, "ties must not have a stable order");
        running.shutdown().await;
    }
}
