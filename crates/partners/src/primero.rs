//! Client for the Primero v2 API (spec §2): cases, services, referrals, users.
//!
//! Auth is HTTP Basic (every Primero v2 version; the production mode) or,
//! for Primero up to v2.10 only, the JWT that `POST /api/v2/tokens` hands out
//! in its `Authorization` answer header; a token is refreshed before it
//! expires (its `exp` claim) and once more on a 401. v2.11 removed tokens: a
//! login answered without one is an auth error saying to use Basic. Paging follows
//! `metadata` until `page >= ceil(total / per)` with `per` ≤ 1000 (Primero's
//! cap), so no record is lost above the cap.
//!
//! Errors name the endpoint by its path template (`GET /api/v2/cases/{id}`),
//! never the query string, which may hold an individual number.

pub mod section;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use tracing::Instrument;

use super::limits::{Limiter, PartnerLimits};
use super::retry::{self, AttemptError, CallKind, RetryPolicy};
use super::{ConnectorError, System};

/// Primero refuses larger pages (silently lowering `per`).
pub const MAX_PER: u32 = 1000;
/// Primero's documented token lifetime.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);
const REASON_MAX_CHARS: usize = 200;
/// A runaway paging loop is a partner bug; stop rather than spin forever.
const MAX_PAGES: u64 = 100_000;

const EP_TOKENS: &str = "POST /api/v2/tokens";
const EP_LIST_CASES: &str = "GET /api/v2/cases";
const EP_CREATE_CASE: &str = "POST /api/v2/cases";
const EP_GET_CASE: &str = "GET /api/v2/cases/{id}";
const EP_PATCH_CASE: &str = "PATCH /api/v2/cases/{id}";
const EP_LIST_REFERRALS: &str = "GET /api/v2/cases/{id}/referrals";
const EP_CREATE_REFERRAL: &str = "POST /api/v2/cases/{id}/referrals";
const EP_PATCH_REFERRAL: &str = "PATCH /api/v2/cases/{id}/referrals/{referral_id}";
const EP_LIST_USERS: &str = "GET /api/v2/users";
const EP_CREATE_FLAG: &str = "POST /api/v2/cases/{id}/flags";

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// How the client authenticates.
#[derive(Clone)]
pub enum PrimeroAuth {
    /// `Authorization: Basic` on every call (no session, no expiry, exempt
    /// from CSRF). Works on every Primero v2 version.
    Basic { user_name: String, password: String },
    /// Primero v2.10 and older: log in at `POST /api/v2/tokens`, take the JWT
    /// from the `Authorization` answer header and send it as `Bearer`.
    /// v2.11 and later have no tokens (the login opens a cookie session).
    V210Token { user_name: String, password: String },
}

impl PrimeroAuth {
    pub fn user_name(&self) -> &str {
        match self {
            PrimeroAuth::Basic { user_name, .. } | PrimeroAuth::V210Token { user_name, .. } => {
                user_name
            }
        }
    }
}

// Hand-written so a logged config never shows the password.
impl fmt::Debug for PrimeroAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, user_name) = match self {
            PrimeroAuth::Basic { user_name, .. } => ("Basic", user_name),
            PrimeroAuth::V210Token { user_name, .. } => ("V210Token", user_name),
        };
        f.debug_struct(name)
            .field("user_name", user_name)
            .field("password", &"***")
            .finish()
    }
}

/// Connection settings for one Primero instance.
#[derive(Debug, Clone)]
pub struct PrimeroConfig {
    /// Instance root, e.g. `https://cpims.example.org` (the client adds `/api/v2/…`).
    pub base_url: String,
    pub auth: PrimeroAuth,
    /// Per-request timeout.
    pub timeout: Duration,
    /// How long a token from `POST /api/v2/tokens` lives when its JWT does
    /// not say (`exp` − `iat`); v2.10 token mode only.
    pub token_lifetime: Duration,
    /// Retry of one call inside a run (default on).
    pub retry: RetryPolicy,
    /// Calls in flight and call rate towards this instance.
    pub limits: PartnerLimits,
}

impl PrimeroConfig {
    /// Defaults: 30 s timeout, 60 min token lifetime, default retry and limits.
    pub fn new(base_url: impl Into<String>, auth: PrimeroAuth) -> Self {
        Self {
            base_url: base_url.into(),
            auth,
            timeout: Duration::from_secs(30),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            retry: RetryPolicy::default(),
            limits: PartnerLimits::default(),
        }
    }
}

/// A configuration the client cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum PrimeroConfigError {
    #[error("Primero base_url is not a valid http(s) URL")]
    BaseUrl,
    #[error("Primero credentials cannot be sent as an HTTP header")]
    Credentials,
    #[error("HTTP client could not be built")]
    Http,
}

/// How long before expiry a token is replaced: 10 % of its lifetime or
/// 5 minutes, whichever is smaller.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(5 * 60))
}

// ---------------------------------------------------------------------------
// Domain types
// ---------------------------------------------------------------------------

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A Primero case. Only the fields the flows interpret are typed; all others
/// (names, dates of birth, …) stay in `extra`. `Debug` prints ids only.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// Record id (the `:id` of `/api/v2/cases/:id`).
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhcr_individual_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub services_section: Vec<Service>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("id", &self.id)
            .field("case_id", &self.case_id)
            .field("unhcr_individual_no", &self.unhcr_individual_no)
            .field("owned_by", &self.owned_by)
            .field("last_updated_at", &self.last_updated_at)
            .field("services_section", &self.services_section)
            .field("extra_fields", &self.extra.len())
            .finish()
    }
}

/// One entry of a case's `services_section` subform. `Debug` prints ids and
/// codes only (free-text fields may hold personal data).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progres_interventionnumber: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_implementing_agency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_request_agency: Option<String>,
    /// `external_referral` | `internal_referral`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_referral: Option<String>,
    /// `pending` | `accepted` | `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhcr_referral_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhcr_referral_rejection_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("unique_id", &self.unique_id)
            .field("service_type", &self.service_type)
            .field(
                "progres_interventionnumber",
                &self.progres_interventionnumber,
            )
            .field(
                "service_implementing_agency",
                &self.service_implementing_agency,
            )
            .field("service_request_agency", &self.service_request_agency)
            .field("service_referral", &self.service_referral)
            .field("unhcr_referral_status", &self.unhcr_referral_status)
            .field(
                "has_rejection_reason",
                &self.unhcr_referral_rejection_reason.is_some(),
            )
            .field("extra_fields", &self.extra.len())
            .finish()
    }
}

/// Referral (transition) status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferralStatus {
    InProgress,
    Accepted,
    Rejected,
    Done,
    Revoked,
    /// A status this client does not know (never sent).
    #[serde(other)]
    Unknown,
}

/// A referral of a case (`GET /api/v2/cases/:id/referrals`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Referral {
    pub id: String,
    pub status: ReferralStatus,
    /// The case record id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    /// The service `unique_id` the referral is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_record_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transitioned_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl fmt::Debug for Referral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Referral")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("record_id", &self.record_id)
            .field("service_record_id", &self.service_record_id)
            .field("created_at", &self.created_at)
            .field("transitioned_to", &self.transitioned_to)
            .field("has_rejected_reason", &self.rejected_reason.is_some())
            .field("extra_fields", &self.extra.len())
            .finish()
    }
}

/// A Primero user (`GET /api/v2/users`). `Debug` prints the user name only.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub user_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("user_name", &self.user_name)
            .finish_non_exhaustive()
    }
}

/// A flag to set on a case (`POST /api/v2/cases/:id/flags`,
/// `app/controllers/api/v2/flags_controller.rb`: only `message` and `date`
/// are read). It shows in the case list and on its owner's dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewFlag {
    pub message: String,
    /// `YYYY-MM-DD`; Primero takes today when empty.
    pub date: String,
}

/// A flag as Primero answers it; only the id is kept (an integer in Primero).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Flag {
    #[serde(deserialize_with = "id_as_text")]
    pub id: String,
}

fn id_as_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "flag id is not a number or a string: {}",
            match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Array(_) => "an array",
                _ => "an object",
            }
        ))),
    }
}

/// A decision on a referral (`PATCH …/referrals/:referral_id`). Primero
/// reads only these three keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReferralUpdate {
    pub status: ReferralStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection_note: Option<String>,
}

impl ReferralUpdate {
    pub fn new(status: ReferralStatus) -> Self {
        Self {
            status,
            rejected_reason: None,
            rejection_note: None,
        }
    }
}

/// A new referral (`POST /api/v2/cases/:id/referrals`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewReferral {
    pub transitioned_to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transitioned_to_agency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_record_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent_overridden: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One page of a list answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub total: u64,
    /// `per` as Primero applied it (after its own cap).
    pub per: u64,
    pub page: u64,
}

impl<T> Page<T> {
    /// `ceil(total / per)`.
    pub fn last_page(&self) -> u64 {
        if self.per == 0 {
            return self.page;
        }
        self.total.div_ceil(self.per)
    }

    pub fn has_next(&self) -> bool {
        !self.data.is_empty() && self.page < self.last_page()
    }
}

/// Sort field of a case query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseOrderBy {
    CreatedAt,
    LastUpdatedAt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    Asc,
    Desc,
}

/// Filters of `GET /api/v2/cases`, built fluently:
/// `CaseQuery::new().updated_since(t).per(1000)`. There is no `remote`:
/// it is not a filter of Primero's case index (the OpenFn jobs sent it for nothing).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaseQuery {
    pub unhcr_individual_no: Option<String>,
    pub case_id: Option<String>,
    pub updated_from: Option<DateTime<Utc>>,
    pub updated_to: Option<DateTime<Utc>>,
    pub associated_user_names: Vec<String>,
    /// Requested page size; clamped to 1..=1000 (default 1000).
    pub per: Option<u32>,
    pub order_by: Option<CaseOrderBy>,
    pub order: Option<SortOrder>,
}

impl CaseQuery {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn unhcr_individual_no(mut self, v: impl Into<String>) -> Self {
        self.unhcr_individual_no = Some(v.into());
        self
    }

    pub fn case_id(mut self, v: impl Into<String>) -> Self {
        self.case_id = Some(v.into());
        self
    }

    /// `last_updated_at` ≥ `from` (inclusive).
    pub fn updated_since(mut self, from: DateTime<Utc>) -> Self {
        self.updated_from = Some(from);
        self
    }

    /// `last_updated_at` ≤ `to` (inclusive).
    pub fn updated_until(mut self, to: DateTime<Utc>) -> Self {
        self.updated_to = Some(to);
        self
    }

    pub fn associated_user_name(mut self, user_name: impl Into<String>) -> Self {
        self.associated_user_names.push(user_name.into());
        self
    }

    pub fn per(mut self, per: u32) -> Self {
        self.per = Some(per);
        self
    }

    pub fn order_by(mut self, field: CaseOrderBy, order: SortOrder) -> Self {
        self.order_by = Some(field);
        self.order = Some(order);
        self
    }

    /// The page size actually sent.
    pub fn effective_per(&self) -> u32 {
        self.per.unwrap_or(MAX_PER).clamp(1, MAX_PER)
    }

    fn to_pairs(&self, page: u64) -> Vec<(String, String)> {
        let ts = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut pairs = Vec::new();
        if let Some(v) = &self.unhcr_individual_no {
            pairs.push(("unhcr_individual_no".to_string(), v.clone()));
        }
        if let Some(v) = &self.case_id {
            pairs.push(("case_id".to_string(), v.clone()));
        }
        if self.updated_from.is_some() || self.updated_to.is_some() {
            // Primero drops a range without a lower bound (and then answers
            // every case): an upper bound alone is sent from the epoch.
            let from = ts(&self.updated_from.unwrap_or(DateTime::UNIX_EPOCH));
            let to = self.updated_to.as_ref().map(ts).unwrap_or_default();
            pairs.push(("last_updated_at".to_string(), format!("{from}..{to}")));
        }
        for (i, name) in self.associated_user_names.iter().enumerate() {
            pairs.push((format!("associated_user_names[{i}]"), name.clone()));
        }
        if let Some(order_by) = self.order_by {
            let field = match order_by {
                CaseOrderBy::CreatedAt => "created_at",
                CaseOrderBy::LastUpdatedAt => "last_updated_at",
            };
            pairs.push(("order_by".to_string(), field.to_string()));
        }
        if let Some(order) = self.order {
            let order = match order {
                SortOrder::Asc => "asc",
                SortOrder::Desc => "desc",
            };
            pairs.push(("order".to_string(), order.to_string()));
        }
        pairs.push(("per".to_string(), self.effective_per().to_string()));
        pairs.push(("page".to_string(), page.to_string()));
        pairs
    }
}

// ---------------------------------------------------------------------------
// Wire envelopes
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct DataEnvelope<T> {
    data: T,
}

#[derive(Serialize)]
struct DataBody<'a, T: ?Sized> {
    data: &'a T,
}

#[derive(Deserialize)]
struct ListEnvelope<T> {
    #[serde(
        deserialize_with = "null_as_empty",
        bound(deserialize = "T: Deserialize<'de>")
    )]
    data: Vec<T>,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default, deserialize_with = "lenient_u64")]
    total: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    per: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    page: Option<u64>,
}

/// Metadata numbers may arrive as strings (they echo request params).
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

#[derive(Serialize)]
struct LoginRequest<'a> {
    user: LoginUser<'a>,
}

#[derive(Serialize)]
struct LoginUser<'a> {
    user_name: &'a str,
    password: &'a str,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Option<Vec<ErrorItem>>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    message: Option<Value>,
    #[serde(default)]
    detail: Option<Value>,
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

struct CachedToken {
    header: HeaderValue,
    /// Which login produced it, so a 401 only invalidates the token it was sent with.
    generation: u64,
    refresh_at: Instant,
}

#[derive(Default)]
struct TokenState {
    current: Option<CachedToken>,
    generation: u64,
}

struct Inner {
    http: reqwest::Client,
    base: url::Url,
    config: PrimeroConfig,
    /// Precomputed `Basic …` header (Basic mode only).
    basic: Option<HeaderValue>,
    token: Mutex<TokenState>,
    limiter: Limiter,
}

/// Primero client. Clones share the HTTP pool and the token; concurrent
/// calls that find the token stale wait for one login instead of each
/// logging in.
#[derive(Clone)]
pub struct PrimeroClient {
    inner: Arc<Inner>,
    /// Dry run: every call but a GET (and the login) is refused before it
    /// is sent.
    read_only: bool,
}

impl fmt::Debug for PrimeroClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrimeroClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// A successful answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Auth attached to one attempt; `generation` is set for bearer tokens.
struct AttemptAuth {
    header: HeaderValue,
    generation: Option<u64>,
}

impl PrimeroClient {
    pub fn new(config: PrimeroConfig) -> Result<Self, PrimeroConfigError> {
        let base = url::Url::parse(&config.base_url).map_err(|_| PrimeroConfigError::BaseUrl)?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(PrimeroConfigError::BaseUrl);
        }
        let basic = match &config.auth {
            PrimeroAuth::Basic {
                user_name,
                password,
            } => {
                use base64::Engine;
                let raw = format!("{user_name}:{password}");
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                let mut header = HeaderValue::from_str(&format!("Basic {encoded}"))
                    .map_err(|_| PrimeroConfigError::Credentials)?;
                header.set_sensitive(true);
                Some(header)
            }
            PrimeroAuth::V210Token { .. } => None,
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|_| PrimeroConfigError::Http)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                limiter: Limiter::new(config.limits),
                config,
                basic,
                token: Mutex::new(TokenState::default()),
            }),
            read_only: false,
        })
    }

    /// A client that refuses every write (anything but GET; the token
    /// login still works) before it is sent. For dry runs.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    pub fn config(&self) -> &PrimeroConfig {
        &self.inner.config
    }

    // ---- cases ----------------------------------------------------------

    /// One page of cases (1-based `page`).
    pub async fn list_cases_page(
        &self,
        query: &CaseQuery,
        page: u64,
    ) -> Result<Page<Case>, ConnectorError> {
        let page = page.max(1);
        let answer = self
            .call(
                Method::GET,
                EP_LIST_CASES,
                &["cases"],
                &query.to_pairs(page),
                None,
            )
            .await?;
        let list: ListEnvelope<Case> = parse(EP_LIST_CASES, &answer.body)?;
        Ok(into_page(list, page, u64::from(query.effective_per())))
    }

    /// Every matching case, following all pages. For large sets prefer
    /// [`case_pages`](Self::case_pages), which holds one page at a time.
    pub async fn list_cases(&self, query: &CaseQuery) -> Result<Vec<Case>, ConnectorError> {
        let mut pager = self.case_pages(query.clone());
        let mut cases = Vec::new();
        while let Some(page) = pager.next_page().await? {
            cases.extend(page.data);
        }
        Ok(cases)
    }

    /// A page-at-a-time iterator over a case query.
    pub fn case_pages(&self, query: CaseQuery) -> CasePager {
        CasePager {
            client: self.clone(),
            query,
            next: Some(1),
            rows: 0,
        }
    }

    pub async fn get_case(&self, id: &str) -> Result<Case, ConnectorError> {
        let answer = self
            .call(Method::GET, EP_GET_CASE, &["cases", id], &[], None)
            .await?;
        let env: DataEnvelope<Case> = parse(EP_GET_CASE, &answer.body)?;
        Ok(env.data)
    }

    /// Create a case from `data` (the inner object of `{"data": …}`). When
    /// `data` carries its own `id`, Primero answers 204 without a body; the
    /// case is then read back with [`get_case`](Self::get_case).
    pub async fn create_case<B>(&self, data: &B) -> Result<Case, ConnectorError>
    where
        B: Serialize + ?Sized,
    {
        let value = serde_json::to_value(data).map_err(|_| ConnectorError::Protocol {
            system: System::Primero,
            endpoint: EP_CREATE_CASE.to_string(),
            reason: "request body could not be serialised".to_string(),
        })?;
        let client_id = value.get("id").and_then(Value::as_str).map(str::to_string);
        let body = encode_data(EP_CREATE_CASE, &value)?;
        let answer = self
            .call(Method::POST, EP_CREATE_CASE, &["cases"], &[], Some(body))
            .await?;
        if answer.status == StatusCode::NO_CONTENT || answer.body.is_empty() {
            return match client_id {
                Some(id) => self.get_case(&id).await,
                None => Err(ConnectorError::Protocol {
                    system: System::Primero,
                    endpoint: EP_CREATE_CASE.to_string(),
                    reason: "empty answer to a create without a client id".to_string(),
                }),
            };
        }
        let env: DataEnvelope<Case> = parse(EP_CREATE_CASE, &answer.body)?;
        Ok(env.data)
    }

    /// Update a case with Primero's merge semantics (subforms merge by
    /// `unique_id`, `"_destroy": true` in an entry removes it; `_delete` is
    /// not a Primero key and is dropped unread). Returns what Primero echoes:
    /// the `id` and the fields the update changed, not the whole case.
    pub async fn patch_case<B>(&self, id: &str, data: &B) -> Result<Case, ConnectorError>
    where
        B: Serialize + ?Sized,
    {
        let body = encode_data(EP_PATCH_CASE, data)?;
        let answer = self
            .call(
                Method::PATCH,
                EP_PATCH_CASE,
                &["cases", id],
                &[],
                Some(body),
            )
            .await?;
        if answer.body.is_empty() {
            return Ok(Case {
                id: id.to_string(),
                ..Case::default()
            });
        }
        let env: DataEnvelope<Case> = parse(EP_PATCH_CASE, &answer.body)?;
        Ok(env.data)
    }

    /// Flag a case for its users. Not retried once sent (a POST): a lost
    /// answer leaves at most one flag.
    pub async fn flag_case(&self, id: &str, flag: &NewFlag) -> Result<Flag, ConnectorError> {
        let body = encode_data(EP_CREATE_FLAG, flag)?;
        let answer = self
            .call(
                Method::POST,
                EP_CREATE_FLAG,
                &["cases", id, "flags"],
                &[],
                Some(body),
            )
            .await?;
        let env: DataEnvelope<Flag> = parse(EP_CREATE_FLAG, &answer.body)?;
        Ok(env.data)
    }

    // ---- referrals ------------------------------------------------------

    pub async fn list_referrals(&self, case_id: &str) -> Result<Vec<Referral>, ConnectorError> {
        let answer = self
            .call(
                Method::GET,
                EP_LIST_REFERRALS,
                &["cases", case_id, "referrals"],
                &[],
                None,
            )
            .await?;
        let list: ListEnvelope<Referral> = parse(EP_LIST_REFERRALS, &answer.body)?;
        Ok(list.data)
    }

    pub async fn create_referral(
        &self,
        case_id: &str,
        referral: &NewReferral,
    ) -> Result<Referral, ConnectorError> {
        let body = encode_data(EP_CREATE_REFERRAL, referral)?;
        let answer = self
            .call(
                Method::POST,
                EP_CREATE_REFERRAL,
                &["cases", case_id, "referrals"],
                &[],
                Some(body),
            )
            .await?;
        let env: DataEnvelope<Referral> = parse(EP_CREATE_REFERRAL, &answer.body)?;
        Ok(env.data)
    }

    /// Send a decision. Primero answers 200 with the referral unchanged when
    /// the transition is not allowed (e.g. rejecting an accepted referral),
    /// so compare the returned `status` with the one sent.
    pub async fn patch_referral(
        &self,
        case_id: &str,
        referral_id: &str,
        update: &ReferralUpdate,
    ) -> Result<Referral, ConnectorError> {
        let body = encode_data(EP_PATCH_REFERRAL, update)?;
        let answer = self
            .call(
                Method::PATCH,
                EP_PATCH_REFERRAL,
                &["cases", case_id, "referrals", referral_id],
                &[],
                Some(body),
            )
            .await?;
        let env: DataEnvelope<Referral> = parse(EP_PATCH_REFERRAL, &answer.body)?;
        Ok(env.data)
    }

    // ---- users ----------------------------------------------------------

    pub async fn list_users_page(&self, page: u64, per: u32) -> Result<Page<User>, ConnectorError> {
        let page = page.max(1);
        let per = per.clamp(1, MAX_PER);
        let pairs = [
            ("per".to_string(), per.to_string()),
            ("page".to_string(), page.to_string()),
        ];
        let answer = self
            .call(Method::GET, EP_LIST_USERS, &["users"], &pairs, None)
            .await?;
        let list: ListEnvelope<User> = parse(EP_LIST_USERS, &answer.body)?;
        Ok(into_page(list, page, u64::from(per)))
    }

    /// `GET /api/v2/users?user_name=…` (one page). Primero filters by exact
    /// name among the users the API user may see; with `extended` each row
    /// also lists its role's permissions. The caller must check the rows'
    /// `user_name`: a server that ignores the filter answers every user.
    pub async fn users_named(
        &self,
        user_name: &str,
        extended: bool,
    ) -> Result<Page<User>, ConnectorError> {
        let mut pairs = vec![("user_name".to_string(), user_name.to_string())];
        if extended {
            pairs.push(("extended".to_string(), "true".to_string()));
        }
        pairs.push(("per".to_string(), MAX_PER.to_string()));
        pairs.push(("page".to_string(), "1".to_string()));
        let answer = self
            .call(Method::GET, EP_LIST_USERS, &["users"], &pairs, None)
            .await?;
        let list: ListEnvelope<User> = parse(EP_LIST_USERS, &answer.body)?;
        Ok(into_page(list, 1, u64::from(MAX_PER)))
    }

    /// Every user, following all pages.
    pub async fn list_users(&self) -> Result<Vec<User>, ConnectorError> {
        let mut users = Vec::new();
        let mut page = 1;
        loop {
            let current = self.list_users_page(page, MAX_PER).await?;
            let more = current.has_next();
            users.extend(current.data);
            if !more || page >= MAX_PAGES {
                return Ok(users);
            }
            page += 1;
        }
    }

    // ---- transport ------------------------------------------------------

    fn url(&self, segments: &[&str], query: &[(String, String)]) -> url::Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // `push` percent-encodes ids, should they hold odd characters.
            path.pop_if_empty().extend(["api", "v2"]).extend(segments);
        }
        url.set_query(None);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// One API call: retried per [`RetryPolicy`] (a GET on any transient
    /// error, a POST/PATCH only when surely not processed); each attempt
    /// authenticates, logs in again once on a 401 in token mode, and maps
    /// the status. Returns only 2xx answers.
    async fn call(
        &self,
        method: Method,
        endpoint: &'static str,
        segments: &[&str],
        query: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ConnectorError> {
        let effect = if method == Method::GET {
            super::Effect::Read
        } else {
            super::Effect::Write
        };
        super::guard(self.read_only, effect, System::Primero, endpoint)?;
        let url = self.url(segments, query);
        let span = tracing::debug_span!(
            "primero_call",
            endpoint,
            status = tracing::field::Empty,
            elapsed_ms = tracing::field::Empty
        );
        async move {
            let started = Instant::now();
            let result = retry::run(
                &self.inner.config.retry,
                "primero",
                endpoint,
                CallKind::of_method(&method),
                Some(&self.inner.limiter),
                || self.attempt(&method, endpoint, &url, body.as_deref()),
            )
            .await;
            let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let span = tracing::Span::current();
            let status = match &result {
                Ok(answer) => Some(answer.status.as_u16()),
                Err(err) => err.status(),
            };
            if let Some(status) = status {
                span.record("status", status);
            }
            span.record("elapsed_ms", elapsed_ms);
            tracing::debug!(status, elapsed_ms, "Primero call done");
            result
        }
        .instrument(span)
        .await
    }

    /// One attempt of [`call`](Self::call). Login failures are final here:
    /// the login has its own retries.
    async fn attempt(
        &self,
        method: &Method,
        endpoint: &'static str,
        url: &url::Url,
        body: Option<&[u8]>,
    ) -> Result<Answer, AttemptError> {
        let mut auth = self.attempt_auth(None).await.map_err(AttemptError::Final)?;
        let mut retried = false;
        loop {
            let mut request = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, auth.header.clone());
            if let Some(body) = body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_vec());
            }
            let answer = {
                let _permit = self.inner.limiter.acquire().await;
                send(request, endpoint).await?
            };
            if answer.status == StatusCode::UNAUTHORIZED && !retried {
                if let Some(generation) = auth.generation {
                    // The token expired or was revoked: log in again once.
                    retried = true;
                    tracing::debug!("Primero token refused; logging in again");
                    auth = self
                        .attempt_auth(Some(generation))
                        .await
                        .map_err(AttemptError::Final)?;
                    continue;
                }
            }
            return Ok(check_status(endpoint, answer)?);
        }
    }

    /// The `Authorization` header for the next attempt. In token mode, logs
    /// in when there is no token, when it is due for refresh, or when
    /// `refused` names the generation a 401 was answered to.
    async fn attempt_auth(&self, refused: Option<u64>) -> Result<AttemptAuth, ConnectorError> {
        let (user_name, password) = match &self.inner.config.auth {
            PrimeroAuth::Basic { .. } => {
                let header = self
                    .inner
                    .basic
                    .clone()
                    .ok_or_else(|| ConnectorError::Auth {
                        system: System::Primero,
                        endpoint: EP_TOKENS.to_string(),
                        reason: "basic credentials missing".to_string(),
                    })?;
                return Ok(AttemptAuth {
                    header,
                    generation: None,
                });
            }
            PrimeroAuth::V210Token {
                user_name,
                password,
            } => (user_name, password),
        };
        // Held across the login so concurrent callers wait for one login.
        let mut state = self.inner.token.lock().await;
        if let Some(current) = &state.current {
            let fresh = Instant::now() < current.refresh_at;
            if fresh && refused != Some(current.generation) {
                return Ok(AttemptAuth {
                    header: current.header.clone(),
                    generation: Some(current.generation),
                });
            }
        }
        state.current = None;
        let obtained = Instant::now();
        let token = self.login(user_name, password).await?;
        let mut header = token.header;
        header.set_sensitive(true);
        state.generation += 1;
        let lifetime = token.lifetime.unwrap_or(self.inner.config.token_lifetime);
        let generation = state.generation;
        state.current = Some(CachedToken {
            header: header.clone(),
            generation,
            refresh_at: obtained + lifetime.saturating_sub(refresh_margin(lifetime)),
        });
        Ok(AttemptAuth {
            header,
            generation: Some(generation),
        })
    }

    /// `POST /api/v2/tokens`, retried like an idempotent call (a login
    /// changes nothing); returns the ready `Bearer …` header.
    async fn login(&self, user_name: &str, password: &str) -> Result<LoginToken, ConnectorError> {
        retry::run(
            &self.inner.config.retry,
            "primero",
            EP_TOKENS,
            CallKind::Idempotent,
            None,
            || async {
                self.login_once(user_name, password)
                    .await
                    .map_err(AttemptError::Call)
            },
        )
        .await
    }

    async fn login_once(
        &self,
        user_name: &str,
        password: &str,
    ) -> Result<LoginToken, ConnectorError> {
        let span = tracing::debug_span!(
            "primero_call",
            endpoint = EP_TOKENS,
            status = tracing::field::Empty,
            elapsed_ms = tracing::field::Empty
        );
        async move {
            let started = Instant::now();
            let body = LoginRequest {
                user: LoginUser {
                    user_name,
                    password,
                },
            };
            let request = self.inner.http.post(self.url(&["tokens"], &[])).json(&body);
            let answer = send(request, EP_TOKENS).await?;
            let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let span = tracing::Span::current();
            span.record("status", answer.status.as_u16());
            span.record("elapsed_ms", elapsed_ms);
            tracing::debug!(
                status = answer.status.as_u16(),
                elapsed_ms,
                "Primero login done"
            );
            let status = answer.status;
            if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                return Err(ConnectorError::Auth {
                    system: System::Primero,
                    endpoint: EP_TOKENS.to_string(),
                    reason: error_reason(status, &answer.body),
                });
            }
            let answer = check_status(EP_TOKENS, answer)?;
            token_from_login(&answer.headers)
        }
        .instrument(span)
        .await
    }
}

/// A token from a v2.10 login: the ready header and, when its JWT says, how
/// long it lives.
struct LoginToken {
    header: HeaderValue,
    lifetime: Option<Duration>,
}

/// Up to v2.10 devise-jwt puts the JWT in the `Authorization` answer header
/// of a successful login. From v2.11 the login opens a cookie session and
/// no header comes: there is nothing to refresh, and only Basic works for an
/// API client (sessions need CSRF tokens for every write).
fn token_from_login(headers: &HeaderMap) -> Result<LoginToken, ConnectorError> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ConnectorError::Auth {
            system: System::Primero,
            endpoint: EP_TOKENS.to_string(),
            reason: "login answered without a token: this Primero (v2.11 or later) has no \
                     tokens; set auth = \"basic\" in [primero] with a dedicated API user"
                .to_string(),
        })?;
    let header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        ConnectorError::Protocol {
            system: System::Primero,
            endpoint: EP_TOKENS.to_string(),
            reason: "token is not a valid header value".to_string(),
        }
    })?;
    Ok(LoginToken {
        header,
        lifetime: jwt_lifetime(token),
    })
}

/// `exp − iat` of a JWT (devise-jwt sets both), read without checking the
/// signature: it only decides when to log in again. Differences of clocks
/// between Primero and us do not matter this way.
fn jwt_lifetime(token: &str) -> Option<Duration> {
    use base64::Engine;
    #[derive(Deserialize)]
    struct Claims {
        iat: Option<i64>,
        exp: Option<i64>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    let secs = claims.exp?.checked_sub(claims.iat?)?;
    u64::try_from(secs)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// Pages of a case query, fetched on demand.
#[derive(Debug)]
pub struct CasePager {
    client: PrimeroClient,
    query: CaseQuery,
    next: Option<u64>,
    /// Rows served so far, to notice a listing that repeated or skipped rows.
    rows: u64,
}

impl CasePager {
    /// The next page, or `None` after the last one.
    pub async fn next_page(&mut self) -> Result<Option<Page<Case>>, ConnectorError> {
        let Some(page_no) = self.next else {
            return Ok(None);
        };
        let page = self.client.list_cases_page(&self.query, page_no).await?;
        self.next = (page.has_next() && page_no < MAX_PAGES).then_some(page_no + 1);
        self.rows += page.data.len() as u64;
        if self.next.is_none() && self.rows != page.total {
            // Records changing while we page, or a partner paging bug: the
            // caller's cursor logic copes; say so for the operator.
            tracing::warn!(
                endpoint = EP_LIST_CASES,
                rows = self.rows,
                total = page.total,
                pages = page_no,
                "Primero listing served a different number of rows than its total"
            );
        }
        Ok(Some(page))
    }
}

fn into_page<T>(list: ListEnvelope<T>, page: u64, requested_per: u64) -> Page<T> {
    let meta = list.metadata.unwrap_or(Metadata {
        total: None,
        per: None,
        page: None,
    });
    let count = list.data.len() as u64;
    Page {
        total: meta.total.unwrap_or(count),
        per: meta.per.filter(|p| *p > 0).unwrap_or(requested_per),
        // Our own counter drives paging; a server echoing a wrong page must
        // not send us in circles.
        page: meta.page.filter(|p| *p == page).unwrap_or(page),
        data: list.data,
    }
}

async fn send(request: reqwest::RequestBuilder, endpoint: &str) -> Result<Answer, ConnectorError> {
    let response = request
        .send()
        .await
        .map_err(|e| ConnectorError::transport(System::Primero, endpoint, &e))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|e| ConnectorError::transport(System::Primero, endpoint, &e))?
        .to_vec();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// 2xx passes; 401 is an auth failure; anything else a status error carrying
/// Primero's own short message and `Retry-After`.
fn check_status(endpoint: &str, answer: Answer) -> Result<Answer, ConnectorError> {
    let status = answer.status;
    if status.is_success() {
        return Ok(answer);
    }
    let reason = error_reason(status, &answer.body);
    if status == StatusCode::UNAUTHORIZED {
        return Err(ConnectorError::Auth {
            system: System::Primero,
            endpoint: endpoint.to_string(),
            reason,
        });
    }
    Err(ConnectorError::Status {
        system: System::Primero,
        endpoint: endpoint.to_string(),
        status: status.as_u16(),
        reason,
        retry_after: retry_after(&answer.headers),
    })
}

/// Primero's own words: `{"errors":[{status, resource, message, detail}]}`
/// (ErrorService; `message` may be an array, `detail` a field name or, for
/// "Invalid Record JSON", an array of JSON pointers) or Devise's
/// `{"error": …}`; otherwise the status's canonical reason. Messages and
/// pointers name fields, never their values; the raw body is never shown.
/// Bounded: a few errors, a few pointers each, [`REASON_MAX_CHARS`] in all.
fn error_reason(status: StatusCode, body: &[u8]) -> String {
    const MAX_ERRORS: usize = 3;
    const MAX_POINTERS: usize = 5;
    /// A string, or the strings of an array, joined; `None` when neither.
    fn words(v: Option<&Value>, sep: &str, max: usize) -> Option<String> {
        match v? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Array(items) => {
                let texts: Vec<&str> = items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                if texts.is_empty() {
                    return None;
                }
                let mut joined = texts[..texts.len().min(max)].join(sep);
                if texts.len() > max {
                    joined.push_str(&format!(" (+{} more)", texts.len() - max));
                }
                Some(joined)
            }
            _ => None,
        }
    }
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let from_body = parsed.and_then(|b| {
        let items: Vec<String> = b
            .errors
            .iter()
            .flatten()
            .filter_map(|e| {
                let message = words(e.message.as_ref(), "; ", MAX_POINTERS)?;
                Some(match words(e.detail.as_ref(), ", ", MAX_POINTERS) {
                    Some(detail) => format!("{message} (detail: {detail})"),
                    None => message,
                })
            })
            .collect();
        if items.is_empty() {
            return words(b.error.as_ref(), "; ", MAX_POINTERS);
        }
        let mut joined = items[..items.len().min(MAX_ERRORS)].join("; ");
        if items.len() > MAX_ERRORS {
            joined.push_str(&format!("; +{} more errors", items.len() - MAX_ERRORS));
        }
        Some(joined)
    });
    let reason =
        from_body.unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    truncate(&reason, REASON_MAX_CHARS)
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// Seconds, or an HTTP date turned into seconds from now.
fn retry_after(headers: &HeaderMap) -> Option<u64> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(secs);
    }
    let at = DateTime::parse_from_rfc2822(raw).ok()?.with_timezone(&Utc);
    Some(u64::try_from((at - Utc::now()).num_seconds()).unwrap_or(0))
}

fn encode_data<T: Serialize + ?Sized>(endpoint: &str, data: &T) -> Result<Vec<u8>, ConnectorError> {
    serde_json::to_vec(&DataBody { data }).map_err(|_| ConnectorError::Protocol {
        system: System::Primero,
        endpoint: endpoint.to_string(),
        reason: "request body could not be serialised".to_string(),
    })
}

/// Parse a 2xx body. The reason names the kind and position of the problem
/// only: serde messages quote the offending value, which may be personal data.
fn parse<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, ConnectorError> {
    serde_json::from_slice(body).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Io => "unreadable body",
            serde_json::error::Category::Syntax => "malformed JSON",
            serde_json::error::Category::Data => "unexpected JSON shape",
            serde_json::error::Category::Eof => "truncated JSON",
        };
        ConnectorError::Protocol {
            system: System::Primero,
            endpoint: endpoint.to_string(),
            reason: format!("{kind} at line {} column {}", e.line(), e.column()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn debug_hides_password() {
        let auth = PrimeroAuth::V210Token {
            user_name: "api".into(),
            password: "s3cret-pw".into(),
        };
        let config = PrimeroConfig::new("http://127.0.0.1:1", auth);
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret-pw"), "{printed}");
        assert!(printed.contains("***"));
    }

    fn jwt(claims: &str) -> String {
        use base64::Engine;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", enc(r#"{"alg":"HS256"}"#), enc(claims))
    }

    #[test]
    fn v2_10_login_token_comes_from_the_authorization_header() {
        let token = jwt(r#"{"sub":"1","scp":"user","iat":1700000000,"exp":1700003600,"jti":"x"}"#);
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        let login = token_from_login(&headers).unwrap();
        assert_eq!(login.header.to_str().unwrap(), format!("Bearer {token}"));
        assert_eq!(login.lifetime, Some(Duration::from_secs(3600)));
        // Not a JWT (or no claims): the configured lifetime applies.
        assert_eq!(jwt_lifetime("opaque"), None);
        assert_eq!(jwt_lifetime(&jwt(r#"{"exp":5}"#)), None);
        assert_eq!(jwt_lifetime(&jwt(r#"{"iat":9,"exp":5}"#)), None);
    }

    #[test]
    fn v2_11_login_without_token_says_to_use_basic() {
        // v2.11+ answers {id, user_name, group_permission} and a cookie.
        let err = token_from_login(&HeaderMap::new()).err().unwrap();
        match &err {
            ConnectorError::Auth { reason, .. } => {
                assert!(reason.contains("v2.11"), "{reason}");
                assert!(reason.contains(r#"auth = "basic""#), "{reason}");
            }
            other => panic!("expected Auth, got {other:?}"),
        }
        assert!(!err.is_transient());
    }

    #[test]
    fn refresh_margin_is_smaller_of_ten_percent_and_five_minutes() {
        assert_eq!(
            refresh_margin(DEFAULT_TOKEN_LIFETIME),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(600)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn query_pairs_clamp_per_and_format_range() {
        let from = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let q = CaseQuery::new()
            .updated_since(from)
            .associated_user_name("unhcr_cw")
            .per(5000);
        let pairs = q.to_pairs(2);
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("per"), Some("1000"));
        assert_eq!(get("page"), Some("2"));
        assert_eq!(get("remote"), None, "not a Primero filter");
        assert_eq!(get("last_updated_at"), Some("2024-05-01T10:00:00.000Z.."));
        assert_eq!(get("associated_user_names[0]"), Some("unhcr_cw"));
        // An upper bound alone gets a lower one: Primero drops open-below ranges.
        let pairs = CaseQuery::new().updated_until(from).to_pairs(1);
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("last_updated_at"),
            Some("1970-01-01T00:00:00.000Z..2024-05-01T10:00:00.000Z")
        );
        assert_eq!(CaseQuery::new().per(0).effective_per(), 1);
    }

    #[test]
    fn error_reason_prefers_primero_message() {
        let body = br#"{"errors":[{"code":422,"resource":"/api/v2/cases","message":"Please enter the date in a valid format (dd-mmm-yyyy)","detail":"registration_date"}]}"#;
        assert_eq!(
            error_reason(StatusCode::UNPROCESSABLE_ENTITY, body),
            "Please enter the date in a valid format (dd-mmm-yyyy) (detail: registration_date)"
        );
        assert_eq!(
            error_reason(
                StatusCode::UNAUTHORIZED,
                br#"{"error":"Invalid User name or password."}"#
            ),
            "Invalid User name or password."
        );
        assert_eq!(
            error_reason(StatusCode::BAD_GATEWAY, b"<html>Amina Example</html>"),
            "Bad Gateway"
        );
        // ErrorService's shape for an invalid record: pointers, not values.
        let body = br#"{"errors":[{"status":422,"resource":"/api/v2/cases/x","detail":["/date_of_birth","/services_section/0/_destroy"],"message":"Invalid Record JSON"}]}"#;
        assert_eq!(
            error_reason(StatusCode::UNPROCESSABLE_ENTITY, body),
            "Invalid Record JSON (detail: /date_of_birth, /services_section/0/_destroy)"
        );
        // ActiveRecord::RecordInvalid: one error per field, message an array.
        let body = br#"{"errors":[{"status":422,"resource":"/api/v2/cases","detail":"name","message":["can't be blank","is too short"]},{"status":422,"resource":"/api/v2/cases","detail":"age","message":["must be a number"]}]}"#;
        assert_eq!(
            error_reason(StatusCode::UNPROCESSABLE_ENTITY, body),
            "can't be blank; is too short (detail: name); must be a number (detail: age)"
        );
        // Bounded however many pointers and errors come.
        let pointers: Vec<String> = (0..400).map(|i| format!("/f{i}")).collect();
        let body = json!({"errors": [{"status": 422, "message": "Invalid Record JSON", "detail": pointers}]});
        let reason = error_reason(
            StatusCode::UNPROCESSABLE_ENTITY,
            body.to_string().as_bytes(),
        );
        assert_eq!(
            reason,
            "Invalid Record JSON (detail: /f0, /f1, /f2, /f3, /f4 (+395 more))"
        );
        // Non-text details (objects) are left out rather than dumped.
        let body =
            br#"{"errors":[{"status":404,"message":"Not Found","detail":{"name":"Amina"}}]}"#;
        assert_eq!(error_reason(StatusCode::NOT_FOUND, body), "Not Found");
        let long = format!(r#"{{"error":"{}"}}"#, "x".repeat(500));
        assert_eq!(
            error_reason(StatusCode::BAD_REQUEST, long.as_bytes()).len(),
            200
        );
    }

    #[test]
    fn protocol_reason_does_not_quote_values() {
        let err = parse::<DataEnvelope<Case>>(
            "GET /api/v2/cases/{id}",
            br#"{"data":{"id":"x","owned_by":["Amina"]}}"#,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("Amina"), "{text}");
        assert!(matches!(err, ConnectorError::Protocol { .. }));
    }

    #[test]
    fn case_round_trips_unknown_fields_and_null_services() {
        let raw = r#"{"id":"r1","name_first":"A","services_section":null,"last_updated_at":"2024-06-10T09:00:00.000Z"}"#;
        let case: Case = serde_json::from_str(raw).unwrap();
        assert!(case.services_section.is_empty());
        assert_eq!(case.extra["name_first"], "A");
        let back = serde_json::to_value(&case).unwrap();
        assert_eq!(back["name_first"], "A");
        assert!(!format!("{case:?}").contains("\"A\""));
        let r: Referral = serde_json::from_str(r#"{"id":"x","status":"something_new"}"#).unwrap();
        assert_eq!(r.status, ReferralStatus::Unknown);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("17"));
        assert_eq!(retry_after(&h), Some(17));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(0));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
