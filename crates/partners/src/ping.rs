//! Client for UNHCR's PING middleware (PRIMES PING, Azure APIM), design B.
//!
//! Wire formats are copied from the original jobs byte for byte, including the
//! inconsistent `InteropID` (retrieve, async ingestion, check status) versus
//! `InteropId` (sync ingestion) casing.
//!
//! Paging (an assumption, the original never paged): a continuation request
//! repeats the first request and adds the `PagingCookie` and the next
//! `PageNumber` at the top level of the body.

pub mod section;

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, COOKIE, RETRY_AFTER};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::limits::{Limiter, PartnerLimits};
use super::retry::{self, AttemptError, CallKind, RetryPolicy};
use super::{ConnectorError, Effect, System};

/// One retrieved proGres row. Keys are Dynamics-style and depend on the
/// shipping process, so rows stay dynamic.
pub type Row = Map<String, Value>;

pub const RETRIEVE_PATH: &str = "/primes/fetch/paging/v3/retrievedatawithpaging";
pub const CHECK_STATUS_PATH: &str = "/primes/ingestion/checkstatus/v1/pingdata";
/// Path templates, as they appear in error endpoints.
pub const INGEST_PATH_TEMPLATE: &str = "/api/ingestion/v2/{PartnerId}/data";
pub const INGEST_ASYNC_PATH_TEMPLATE: &str = "/api/ingestion/v2/{PartnerId}/asyncdata";
/// What PING puts in `Data` when a retrieve matched nothing.
pub const NO_DATA: &str = "No Data Available";
/// UAT scope of the original deployment.
pub const DEFAULT_SCOPE: &str = "https://primespingb2cuat.onmicrosoft.com/apimurls/API.Read";

const SUBSCRIPTION_KEY_HEADER: &str = "Ocp-Apim-Subscription-Key";
const REASON_MAX_CHARS: usize = 200;
/// Used when the token service sends no `expires_in`.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);
/// A runaway paging loop is a partner bug; stop rather than spin forever.
const MAX_PAGES: usize = 100_000;

/// Connection settings for one PING deployment.
#[derive(Clone)]
pub struct PingConfig {
    /// APIM base URL, e.g. `https://msawe-primes-ping-bau-uat-apimgmt.azure-api.net`.
    pub base_url: String,
    /// Full Azure AD B2C token URL (tenant and policy are deployment-specific).
    pub token_url: String,
    pub username: String,
    pub password: String,
    pub client_id: String,
    pub scope: String,
    pub subscription_key: String,
    /// e.g. `PNR-1363`; also part of the ingestion URLs.
    pub partner_id: String,
    /// e.g. `INT-1436`.
    pub interop_id: String,
    /// Per-request timeout (token and API calls alike).
    pub timeout: Duration,
}

// Hand-written so a logged config never shows the password or subscription key.
impl fmt::Debug for PingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PingConfig")
            .field("base_url", &self.base_url)
            .field("token_url", &self.token_url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .field("subscription_key", &"<redacted>")
            .field("partner_id", &self.partner_id)
            .field("interop_id", &self.interop_id)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A configuration the client cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum PingConfigError {
    #[error("PING base_url is not a valid http(s) URL")]
    BaseUrl,
    #[error("PING token_url is not a valid http(s) URL")]
    TokenUrl,
    #[error("PING subscription key cannot be sent as an HTTP header")]
    SubscriptionKey,
    #[error("HTTP client could not be built")]
    Http,
}

// ---------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct RetrieveRequest<'a> {
    #[serde(rename = "ShippingProcessId")]
    shipping_process_id: &'a str,
    #[serde(rename = "PartnerId")]
    partner_id: &'a str,
    #[serde(rename = "InteropID")]
    interop_id: &'a str,
    #[serde(rename = "APIVersion")]
    api_version: &'a str,
    #[serde(rename = "QueryParameters")]
    query_parameters: Vec<QueryParameter<'a>>,
    #[serde(rename = "PagingCookie", skip_serializing_if = "Option::is_none")]
    paging_cookie: Option<&'a str>,
    #[serde(rename = "PageNumber", skip_serializing_if = "Option::is_none")]
    page_number: Option<i64>,
}

#[derive(Serialize)]
struct QueryParameter<'a> {
    #[serde(rename = "ParameterName")]
    parameter_name: &'a str,
    #[serde(rename = "Value")]
    value: &'a str,
}

/// A retrieve answer. Parsed by [`ResponseSeed`] straight from the bytes:
/// `Data` is either rows or a text, and an untagged enum would first buffer
/// the whole page in serde's generic tree (a second copy of a 5,000-row page).
#[derive(Default)]
struct RetrieveResponse {
    data: Option<RetrieveData>,
    error_message: Option<Value>,
    record_count: Option<Value>,
    sph_transaction_id: Option<String>,
    paging_summary: Option<PagingSummary>,
}

enum RetrieveData {
    Rows(Vec<Row>),
    Text(String),
}

/// Parses a [`RetrieveResponse`], keeping every column of a row or only these.
struct ResponseSeed<'k>(Option<&'k [String]>);

impl<'de> DeserializeSeed<'de> for ResponseSeed<'_> {
    type Value = RetrieveResponse;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ResponseSeed<'_> {
    type Value = RetrieveResponse;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a PING retrieve answer")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = RetrieveResponse::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "Data" => out.data = map.next_value_seed(DataSeed(self.0))?,
                "ErrorMessage" => out.error_message = map.next_value()?,
                "RecordCount" => out.record_count = map.next_value()?,
                "SPHTransactionId" => out.sph_transaction_id = map.next_value()?,
                "PagingSummary" => out.paging_summary = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// `Data`: rows, a text ("No Data Available") or null.
struct DataSeed<'k>(Option<&'k [String]>);

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = Option<RetrieveData>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_> {
    type Value = Option<RetrieveData>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of rows or a text")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Some(RetrieveData::Text(text.to_string())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(row) = seq.next_element_seed(RowSeed(self.0))? {
            rows.push(row);
        }
        Ok(Some(RetrieveData::Rows(rows)))
    }
}

/// One row, without the columns nobody asked for (their values are skipped
/// unparsed).
struct RowSeed<'k>(Option<&'k [String]>);

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Row;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Row;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut row = Row::new();
        while let Some(key) = map.next_key::<String>()? {
            if self.0.is_none_or(|keep| keep.contains(&key)) {
                let value: Value = map.next_value()?;
                row.insert(key, value);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(row)
    }
}

#[derive(Deserialize, Default)]
struct PagingSummary {
    #[serde(rename = "PagingCookie", default)]
    paging_cookie: Option<String>,
    #[serde(rename = "PageNumber", default)]
    page_number: Option<Value>,
    #[serde(rename = "IsMoreRecordsAvailable", default)]
    is_more_records_available: Option<bool>,
}

#[derive(Serialize)]
struct IngestionRequest<'a> {
    #[serde(rename = "ShippingProcessId")]
    shipping_process_id: &'a str,
    // Sync ingestion spells it `InteropId`, unlike every other endpoint.
    #[serde(rename = "InteropId")]
    interop_id: &'a str,
    #[serde(rename = "Data")]
    data: &'a [IngestionRecord],
}

#[derive(Serialize)]
struct AsyncIngestionRequest<'a> {
    #[serde(rename = "ShippingProcessId")]
    shipping_process_id: &'a str,
    #[serde(rename = "InteropID")]
    interop_id: &'a str,
    #[serde(rename = "APIVersion")]
    api_version: &'a str,
    #[serde(rename = "Data")]
    data: &'a [AsyncIngestionRecord],
}

#[derive(Serialize)]
struct CheckStatusRequest<'a> {
    #[serde(rename = "ShippingProcessId")]
    shipping_process_id: &'a str,
    #[serde(rename = "InteropID")]
    interop_id: &'a str,
    #[serde(rename = "PartnerId")]
    partner_id: &'a str,
    #[serde(rename = "SPHTransactionId")]
    sph_transaction_id: &'a str,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<ExpiresIn>,
}

// Azure AD v1 sends `expires_in` as a string, B2C as a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum ExpiresIn {
    Number(u64),
    Text(String),
}

impl ExpiresIn {
    fn seconds(&self) -> Option<u64> {
        match self {
            ExpiresIn::Number(n) => Some(*n),
            ExpiresIn::Text(s) => s.trim().parse().ok(),
        }
    }
}

/// One record of a sync ingestion (`/data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestionRecord {
    #[serde(rename = "ExternalId")]
    pub external_id: String,
    /// `None` omits the key (SHP-2748 transfer status); `Some(vec![])` sends
    /// `"Attachments": []` (SHP-2284).
    #[serde(
        rename = "Attachments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub attachments: Option<Vec<Attachment>>,
    #[serde(rename = "Fields")]
    pub fields: Vec<Field>,
}

impl IngestionRecord {
    /// The record without the fields that have no value. The original jobs
    /// left an empty value `undefined`, which JSON drops; a `null` would
    /// blank what proGres holds.
    pub fn without_empty_fields(&self) -> Self {
        Self {
            external_id: self.external_id.clone(),
            attachments: self.attachments.clone(),
            fields: valued(&self.fields),
        }
    }
}

fn valued(fields: &[Field]) -> Vec<Field> {
    fields
        .iter()
        .filter(|f| f.value.is_some())
        .cloned()
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "Comment")]
    pub comment: String,
}

/// One `{Name, Value}` pair. proGres takes every value as a string; `None`
/// sends an explicit `null`, which clears the column when the ingestion
/// updates a record: records of the workflows leave such fields out
/// ([`IngestionRecord::without_empty_fields`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Value")]
    pub value: Option<String>,
}

impl Field {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: Some(value.into()),
        }
    }

    pub fn null(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: None,
        }
    }
}

/// One record of an async ingestion (`/asyncdata`, SHP-2731).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsyncIngestionRecord {
    #[serde(rename = "ExternalId")]
    pub external_id: String,
    #[serde(rename = "ExternalGUID")]
    pub external_guid: String,
    #[serde(rename = "Fields")]
    pub fields: Vec<Field>,
}

impl AsyncIngestionRecord {
    /// The record without the fields that have no value (see
    /// [`IngestionRecord::without_empty_fields`]).
    pub fn without_empty_fields(&self) -> Self {
        Self {
            external_id: self.external_id.clone(),
            external_guid: self.external_guid.clone(),
            fields: valued(&self.fields),
        }
    }
}

/// What PING answered to a sync ingestion. The real success body is not
/// documented, so every part is optional and parsed leniently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestionResponse {
    pub sph_transaction_id: Option<String>,
    pub record_count: Option<u64>,
    /// Per-record outcomes, when PING lists them in `Data`.
    pub results: Vec<IngestionResult>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestionResult {
    pub external_id: Option<String>,
    pub status: Option<String>,
    pub message: Option<String>,
}

impl IngestionResponse {
    /// Records PING reported as not applied (a status other than a success word).
    pub fn failures(&self) -> Vec<&IngestionResult> {
        self.results
            .iter()
            .filter(|r| match r.status.as_deref() {
                None => false,
                Some(s) => !["success", "succeeded", "processed", "ok", "completed"]
                    .iter()
                    .any(|w| s.eq_ignore_ascii_case(w)),
            })
            .collect()
    }
}

/// One item of a check-status answer. The item keys are undocumented
/// (spec example 19 is a guess), so the known ones are lifted out and the rest
/// kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestionStatus {
    pub status: Option<String>,
    pub message: Option<String>,
    /// The inner `Data` object (e.g. `progres_interoperabilityreferralid`),
    /// repaired from its unescaped string form.
    pub data: Option<Row>,
    /// The inner `Data` was present but could not be parsed even after repair.
    pub data_unparsed: bool,
    pub extra: Row,
}

/// Why a check-status body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusParseError {
    #[error("body is not JSON, even after repair")]
    NotJson,
    #[error("unexpected shape: {0}")]
    Shape(&'static str),
    #[error("PING reported an error: {0}")]
    Remote(String),
}

/// Where a paged retrieve continues. Opaque to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    cookie: String,
    page_number: Option<i64>,
}

/// One page of a retrieve.
#[derive(Debug, Clone, Default)]
pub struct RetrievePage {
    pub rows: Vec<Row>,
    pub record_count: Option<u64>,
    pub sph_transaction_id: Option<String>,
    pub page_number: Option<i64>,
    /// `Some` when PING has more records (`IsMoreRecordsAvailable`).
    pub next: Option<PageCursor>,
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

struct CachedToken {
    access_token: String,
    /// Which login produced it, so a 401 only invalidates the token it was sent with.
    generation: u64,
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Default)]
struct TokenState {
    current: Option<CachedToken>,
    logins: u64,
}

/// PING client. Cheap to share behind an `Arc`; the token is cached and
/// refreshed by whichever call first finds it stale, the others wait for it.
pub struct PingClient {
    http: reqwest::Client,
    config: PingConfig,
    base: url::Url,
    token_endpoint: String,
    subscription_key: HeaderValue,
    token: Mutex<TokenState>,
    retry: RetryPolicy,
    limiter: Limiter,
    /// Dry run: ingestion is refused before it is sent.
    read_only: bool,
}

impl fmt::Debug for PingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PingClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How long before expiry a token is replaced: min(60 s, expires_in / 10).
pub fn refresh_margin(expires_in: Duration) -> Duration {
    (expires_in / 10).min(Duration::from_secs(60))
}

impl PingClient {
    pub fn new(config: PingConfig) -> Result<Self, PingConfigError> {
        let base = parse_http_url(&config.base_url).ok_or(PingConfigError::BaseUrl)?;
        let token_url = parse_http_url(&config.token_url).ok_or(PingConfigError::TokenUrl)?;
        let mut subscription_key = HeaderValue::from_str(&config.subscription_key)
            .map_err(|_| PingConfigError::SubscriptionKey)?;
        subscription_key.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|_| PingConfigError::Http)?;
        Ok(Self {
            http,
            base,
            token_endpoint: format!("POST {}", token_url.path()),
            subscription_key,
            config,
            token: Mutex::new(TokenState::default()),
            retry: RetryPolicy::default(),
            limiter: Limiter::new(PartnerLimits::default()),
            read_only: false,
        })
    }

    /// Replace the retry policy (default: [`RetryPolicy::default`]). Retrieve
    /// and check status are retried on any transient error, ingestion only
    /// when surely not processed; the token call like an idempotent call.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Replace the concurrency and rate limits (default: [`PartnerLimits::default`]).
    /// A client that refuses every write (ingestion) before it is sent:
    /// retrieve and check status still work. For dry runs.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    pub fn with_limits(mut self, limits: PartnerLimits) -> Self {
        self.limiter = Limiter::new(limits);
        self
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    pub fn limits(&self) -> &PartnerLimits {
        self.limiter.limits()
    }

    pub fn config(&self) -> &PingConfig {
        &self.config
    }

    /// Obtain (or reuse) the access token without calling the API: tells a
    /// token-service problem apart from an API one.
    pub async fn authenticate(&self) -> Result<(), ConnectorError> {
        self.bearer(None).await.map(|_| ())
    }

    /// Every row of a retrieve, following all pages.
    pub async fn retrieve(
        &self,
        shipping_process_id: &str,
        params: &[(&str, &str)],
    ) -> Result<Vec<Row>, ConnectorError> {
        let mut pager = self.pages(shipping_process_id, params);
        let mut rows = Vec::new();
        while let Some(mut page) = pager.next_page().await? {
            rows.append(&mut page);
        }
        Ok(rows)
    }

    /// A page-at-a-time iterator over a retrieve, for streaming large sets.
    pub fn pages(&self, shipping_process_id: &str, params: &[(&str, &str)]) -> RetrievePager<'_> {
        RetrievePager {
            client: self,
            shipping_process_id: shipping_process_id.to_string(),
            params: params
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            cursor: None,
            done: false,
            seen_cookies: HashSet::new(),
            pages: 0,
            columns: None,
        }
    }

    /// One page: the first when `cursor` is `None`, else the one it points at.
    pub async fn retrieve_page(
        &self,
        shipping_process_id: &str,
        params: &[(&str, &str)],
        cursor: Option<&PageCursor>,
    ) -> Result<RetrievePage, ConnectorError> {
        self.retrieve_page_with(shipping_process_id, params, cursor, None)
            .await
    }

    /// [`retrieve_page`](Self::retrieve_page), keeping only these columns of
    /// each row when `columns` is `Some` (the others are skipped unparsed).
    async fn retrieve_page_with(
        &self,
        shipping_process_id: &str,
        params: &[(&str, &str)],
        cursor: Option<&PageCursor>,
        columns: Option<&[String]>,
    ) -> Result<RetrievePage, ConnectorError> {
        let endpoint = format!("POST {RETRIEVE_PATH} {shipping_process_id}");
        let body = RetrieveRequest {
            shipping_process_id,
            partner_id: &self.config.partner_id,
            interop_id: &self.config.interop_id,
            api_version: "V3",
            query_parameters: params
                .iter()
                .map(|(n, v)| QueryParameter {
                    parameter_name: n,
                    value: v,
                })
                .collect(),
            paging_cookie: cursor.map(|c| c.cookie.as_str()),
            page_number: cursor.and_then(|c| c.page_number),
        };
        let url = self.url_for(&[RETRIEVE_PATH]);
        let bytes = self
            .post_api(url, &endpoint, &body, CallKind::Idempotent, Effect::Read)
            .await?;
        // Parsed in one pass, keeping only the columns asked for; the body is
        // dropped right after.
        let page = parse_retrieve_page_with(&bytes, columns).map_err(|reason| {
            ConnectorError::Protocol {
                system: System::Ping,
                endpoint: endpoint.clone(),
                reason: self.scrub(&reason),
            }
        })?;
        drop(bytes);
        tracing::debug!(
            shipping_process = shipping_process_id,
            rows = page.rows.len(),
            page = page.page_number,
            more = page.next.is_some(),
            "PING retrieve page"
        );
        Ok(page)
    }

    /// Sync ingestion (`/api/ingestion/v2/{PartnerId}/data`). No call is made
    /// for an empty record list (the original skipped it too).
    pub async fn ingest(
        &self,
        shipping_process_id: &str,
        records: &[IngestionRecord],
    ) -> Result<IngestionResponse, ConnectorError> {
        if records.is_empty() {
            return Ok(IngestionResponse::default());
        }
        let endpoint = format!("POST {INGEST_PATH_TEMPLATE} {shipping_process_id}");
        let body = IngestionRequest {
            shipping_process_id,
            interop_id: &self.config.interop_id,
            data: records,
        };
        let url = self.ingestion_url("data");
        let bytes = self
            .post_api(
                url,
                &endpoint,
                &body,
                CallKind::NonIdempotent,
                Effect::Write,
            )
            .await?;
        let response =
            parse_ingestion_response(&bytes).map_err(|reason| ConnectorError::Protocol {
                system: System::Ping,
                endpoint: endpoint.clone(),
                reason: self.scrub(&reason),
            })?;
        tracing::debug!(
            shipping_process = shipping_process_id,
            records = records.len(),
            transaction = response.sph_transaction_id.as_deref(),
            failures = response.failures().len(),
            "PING ingestion answered"
        );
        Ok(response)
    }

    /// Async ingestion (`/asyncdata`). Returns the `SPHTransactionId` to pass
    /// to [`check_status`](Self::check_status); `None` when PING accepted the
    /// records without one (the original only warned).
    pub async fn ingest_async(
        &self,
        shipping_process_id: &str,
        records: &[AsyncIngestionRecord],
    ) -> Result<Option<String>, ConnectorError> {
        let endpoint = format!("POST {INGEST_ASYNC_PATH_TEMPLATE} {shipping_process_id}");
        let body = AsyncIngestionRequest {
            shipping_process_id,
            interop_id: &self.config.interop_id,
            api_version: "V2",
            data: records,
        };
        let url = self.ingestion_url("asyncdata");
        let bytes = self
            .post_api(
                url,
                &endpoint,
                &body,
                CallKind::NonIdempotent,
                Effect::Write,
            )
            .await?;
        let response =
            parse_ingestion_response(&bytes).map_err(|reason| ConnectorError::Protocol {
                system: System::Ping,
                endpoint: endpoint.clone(),
                reason: self.scrub(&reason),
            })?;
        if response.sph_transaction_id.is_none() {
            tracing::warn!(
                shipping_process = shipping_process_id,
                "PING async ingestion answered without SPHTransactionId"
            );
        }
        Ok(response.sph_transaction_id)
    }

    /// Status of an async ingestion. Tolerates the malformed body PING sends
    /// (see [`parse_check_status`]).
    pub async fn check_status(
        &self,
        shipping_process_id: &str,
        sph_transaction_id: &str,
    ) -> Result<Vec<IngestionStatus>, ConnectorError> {
        let endpoint = format!("POST {CHECK_STATUS_PATH} {shipping_process_id}");
        let body = CheckStatusRequest {
            shipping_process_id,
            interop_id: &self.config.interop_id,
            partner_id: &self.config.partner_id,
            sph_transaction_id,
        };
        let url = self.url_for(&[CHECK_STATUS_PATH]);
        // Asking about a transaction changes nothing.
        let bytes = self
            .post_api(url, &endpoint, &body, CallKind::Idempotent, Effect::Read)
            .await?;
        parse_check_status(&bytes).map_err(|e| ConnectorError::Protocol {
            system: System::Ping,
            endpoint,
            reason: self.scrub(&truncate(&e.to_string(), REASON_MAX_CHARS)),
        })
    }

    fn url_for(&self, paths: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            for path in paths {
                segments.extend(path.split('/').filter(|s| !s.is_empty()));
            }
        }
        url
    }

    fn ingestion_url(&self, last: &str) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            // `push` percent-encodes the partner id, should it hold odd characters.
            segments
                .pop_if_empty()
                .extend(["api", "ingestion", "v2"])
                .push(&self.config.partner_id)
                .push(last);
        }
        url
    }

    /// POST a JSON body with the PING headers, retried per the policy and
    /// `kind`; in each attempt a 401 gets one fresh login and one more try.
    /// Returns the 2xx body.
    async fn post_api<B: Serialize + ?Sized>(
        &self,
        url: url::Url,
        endpoint: &str,
        body: &B,
        kind: CallKind,
        effect: Effect,
    ) -> Result<Vec<u8>, ConnectorError> {
        super::guard(self.read_only, effect, System::Ping, endpoint)?;
        let payload = serde_json::to_vec(body).map_err(|_| ConnectorError::Protocol {
            system: System::Ping,
            endpoint: endpoint.to_string(),
            reason: "request body could not be encoded".to_string(),
        })?;
        retry::run(
            &self.retry,
            "ping",
            endpoint,
            kind,
            Some(&self.limiter),
            || self.post_once(&url, endpoint, &payload),
        )
        .await
    }

    /// One attempt of [`post_api`](Self::post_api). Token failures are final
    /// here: the token call has its own retries.
    async fn post_once(
        &self,
        url: &url::Url,
        endpoint: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, AttemptError> {
        let mut rejected: Option<u64> = None;
        loop {
            let (token, generation) = self.bearer(rejected).await.map_err(AttemptError::Final)?;
            let (status, retry_after, bytes) = {
                let _permit = self.limiter.acquire().await;
                let response = self
                    .http
                    .post(url.clone())
                    .bearer_auth(&token)
                    .header(SUBSCRIPTION_KEY_HEADER, self.subscription_key.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(payload.to_vec())
                    .send()
                    .await
                    .map_err(|e| ConnectorError::transport(System::Ping, endpoint, &e))?;
                let status = response.status();
                let retry_after = parse_retry_after(response.headers());
                if status == reqwest::StatusCode::UNAUTHORIZED && rejected.is_none() {
                    (status, retry_after, Default::default())
                } else {
                    let bytes = response
                        .bytes()
                        .await
                        .map_err(|e| ConnectorError::transport(System::Ping, endpoint, &e))?;
                    (status, retry_after, bytes)
                }
            };
            if status == reqwest::StatusCode::UNAUTHORIZED && rejected.is_none() {
                // Token revoked or expired early on the server: one fresh login.
                tracing::debug!(endpoint, "PING answered 401; logging in again");
                rejected = Some(generation);
                continue;
            }
            if !status.is_success() {
                return Err(AttemptError::Call(ConnectorError::Status {
                    system: System::Ping,
                    endpoint: endpoint.to_string(),
                    status: status.as_u16(),
                    reason: self.scrub(&error_reason(&bytes, status)),
                    retry_after,
                }));
            }
            // Without a copy when the body is the sole owner of its buffer (a
            // 5,000-row page is megabytes).
            return Ok(Vec::from(bytes));
        }
    }

    /// A usable access token and its generation. `rejected` names a generation
    /// the server refused; a newer cached token is still used.
    async fn bearer(&self, rejected: Option<u64>) -> Result<(String, u64), ConnectorError> {
        let mut state = self.token.lock().await;
        let now = Instant::now();
        if let Some(tok) = &state.current {
            if Some(tok.generation) != rejected && now < tok.refresh_at {
                return Ok((tok.access_token.clone(), tok.generation));
            }
        }
        match self.login().await {
            Ok((access_token, ttl, started)) => {
                state.logins += 1;
                let generation = state.logins;
                state.current = Some(CachedToken {
                    access_token: access_token.clone(),
                    generation,
                    // Counted from before the request, so never later than the server's clock.
                    refresh_at: started + ttl.saturating_sub(refresh_margin(ttl)),
                    expires_at: started + ttl,
                });
                Ok((access_token, generation))
            }
            Err(err) => {
                // A refresh inside the margin may fail transiently; the old
                // token is still good until it expires.
                if let Some(tok) = &state.current {
                    if Some(tok.generation) != rejected && Instant::now() < tok.expires_at {
                        tracing::warn!("PING token refresh failed; using the current token");
                        return Ok((tok.access_token.clone(), tok.generation));
                    }
                }
                state.current = None;
                Err(err)
            }
        }
    }

    /// The token call, retried like an idempotent call.
    async fn login(&self) -> Result<(String, Duration, Instant), ConnectorError> {
        retry::run(
            &self.retry,
            "ping",
            &self.token_endpoint,
            CallKind::Idempotent,
            None,
            || async { self.login_once().await.map_err(AttemptError::Call) },
        )
        .await
    }

    async fn login_once(&self) -> Result<(String, Duration, Instant), ConnectorError> {
        let endpoint = self.token_endpoint.as_str();
        let started = Instant::now();
        let form = [
            ("username", self.config.username.as_str()),
            ("password", self.config.password.as_str()),
            ("grant_type", "password"),
            ("scope", self.config.scope.as_str()),
            ("client_id", self.config.client_id.as_str()),
            ("response_type", "token"),
        ];
        let response = self
            .http
            .post(&self.config.token_url)
            // Pins the B2C geography, as the original did.
            .header(COOKIE, "x-ms-cpim-geo=EU")
            .form(&form)
            .send()
            .await
            .map_err(|e| ConnectorError::transport(System::PingToken, endpoint, &e))?;
        let status = response.status();
        let retry_after = parse_retry_after(response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ConnectorError::transport(System::PingToken, endpoint, &e))?;
        if !status.is_success() {
            let reason = self.scrub(&error_reason(&bytes, status));
            let code = status.as_u16();
            return Err(if matches!(code, 400 | 401 | 403) {
                ConnectorError::Auth {
                    system: System::PingToken,
                    endpoint: endpoint.to_string(),
                    reason: format!("HTTP {code}: {reason}"),
                }
            } else {
                ConnectorError::Status {
                    system: System::PingToken,
                    endpoint: endpoint.to_string(),
                    status: code,
                    reason,
                    retry_after,
                }
            });
        }
        let protocol = |reason: &str| ConnectorError::Protocol {
            system: System::PingToken,
            endpoint: endpoint.to_string(),
            reason: reason.to_string(),
        };
        let token: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|_| protocol("token response is not the expected JSON"))?;
        if token.access_token.is_empty() {
            return Err(protocol("token response has an empty access_token"));
        }
        let ttl = token
            .expires_in
            .and_then(|e| e.seconds())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_TTL);
        tracing::debug!(expires_in = ttl.as_secs(), "PING token obtained");
        Ok((token.access_token, ttl, started))
    }

    /// Belt and braces: a partner message must never echo a secret into our errors.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in [&self.config.password, &self.config.subscription_key] {
            if secret.len() >= 4 {
                out = out.replace(secret.as_str(), "<redacted>");
            }
        }
        out
    }
}

/// Page-at-a-time retrieve; see [`PingClient::pages`].
pub struct RetrievePager<'c> {
    client: &'c PingClient,
    shipping_process_id: String,
    params: Vec<(String, String)>,
    cursor: Option<PageCursor>,
    done: bool,
    seen_cookies: HashSet<String>,
    pages: usize,
    columns: Option<Vec<String>>,
}

impl RetrievePager<'_> {
    /// Whether the last page was read (or paging failed for good).
    pub fn finished(&self) -> bool {
        self.done
    }

    /// Keep only these columns of each row (a long listing then costs only
    /// what the caller uses; the other values are skipped unparsed).
    pub fn only_columns(mut self, columns: &[&str]) -> Self {
        self.columns = Some(columns.iter().map(|c| c.to_string()).collect());
        self
    }

    /// The next page's rows, or `None` after the last page.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Row>>, ConnectorError> {
        if self.done {
            return Ok(None);
        }
        let params: Vec<(&str, &str)> = self
            .params
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let page = self
            .client
            .retrieve_page_with(
                &self.shipping_process_id,
                &params,
                self.cursor.as_ref(),
                self.columns.as_deref(),
            )
            .await?;
        self.pages += 1;
        match page.next {
            None => self.done = true,
            Some(next) => {
                // The same cookie twice would loop forever.
                if !self.seen_cookies.insert(next.cookie.clone()) || self.pages >= MAX_PAGES {
                    self.done = true;
                    return Err(ConnectorError::Protocol {
                        system: System::Ping,
                        endpoint: format!("POST {RETRIEVE_PATH} {}", self.shipping_process_id),
                        reason: "paging does not advance".to_string(),
                    });
                }
                self.cursor = Some(next);
            }
        }
        Ok(Some(page.rows))
    }
}

// ---------------------------------------------------------------------------
// Parsing helpers (pure, unit-tested)
// ---------------------------------------------------------------------------

fn parse_http_url(text: &str) -> Option<url::Url> {
    let url = url::Url::parse(text).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.has_host()).then_some(url)
}

fn json_error(e: &serde_json::Error) -> String {
    // serde's message can quote a value; keep only its category and position.
    format!(
        "response is not the expected JSON ({:?} at line {} column {})",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// A non-empty `ErrorMessage` as text.
fn error_message_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn lenient_u64(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn lenient_i64(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
fn parse_retrieve_page(bytes: &[u8]) -> Result<RetrievePage, String> {
    parse_retrieve_page_with(bytes, None)
}

/// A retrieve page, keeping every column of its rows (`None`) or only these.
fn parse_retrieve_page_with(
    bytes: &[u8],
    columns: Option<&[String]>,
) -> Result<RetrievePage, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let response = ResponseSeed(columns)
        .deserialize(&mut de)
        .and_then(|r| de.end().map(|()| r))
        .map_err(|e| json_error(&e))?;
    if let Some(message) = error_message_text(response.error_message.as_ref()) {
        return Err(format!(
            "ErrorMessage: {}",
            truncate(&message, REASON_MAX_CHARS)
        ));
    }
    let rows = match response.data {
        None => Vec::new(),
        Some(RetrieveData::Rows(rows)) => rows,
        Some(RetrieveData::Text(text)) if text.trim() == NO_DATA || text.trim().is_empty() => {
            Vec::new()
        }
        Some(RetrieveData::Text(_)) => return Err("Data is an unexpected string".to_string()),
    };
    let summary = response.paging_summary.unwrap_or_default();
    let page_number = lenient_i64(summary.page_number.as_ref());
    let next = if summary.is_more_records_available == Some(true) {
        match summary.paging_cookie {
            Some(cookie) if !cookie.is_empty() => Some(PageCursor {
                cookie,
                page_number: page_number.map(|n| n + 1),
            }),
            _ => return Err("IsMoreRecordsAvailable without a PagingCookie".to_string()),
        }
    } else {
        None
    };
    Ok(RetrievePage {
        rows,
        record_count: lenient_u64(response.record_count.as_ref()),
        sph_transaction_id: response.sph_transaction_id,
        page_number,
        next,
    })
}

fn parse_ingestion_response(bytes: &[u8]) -> Result<IngestionResponse, String> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(IngestionResponse::default());
    }
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        // The 2xx status is the contract; an undocumented non-JSON body is tolerated.
        tracing::debug!("PING ingestion answered 2xx with a non-JSON body");
        return Ok(IngestionResponse::default());
    };
    let Value::Object(obj) = value else {
        return Ok(IngestionResponse::default());
    };
    if let Some(message) = error_message_text(get_ci(&obj, "ErrorMessage")) {
        return Err(format!(
            "ErrorMessage: {}",
            truncate(&message, REASON_MAX_CHARS)
        ));
    }
    let results = match get_ci(&obj, "Data") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_object)
            .map(|item| IngestionResult {
                external_id: get_ci(item, "ExternalId").and_then(scalar_text),
                status: get_ci(item, "Status").and_then(scalar_text),
                message: get_ci(item, "Message").and_then(scalar_text),
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(IngestionResponse {
        sph_transaction_id: get_ci(&obj, "SPHTransactionId").and_then(scalar_text),
        record_count: lenient_u64(get_ci(&obj, "RecordCount")),
        results,
    })
}

/// Case-insensitive key lookup, exact match first.
fn get_ci<'a>(obj: &'a Row, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A short reason from an error body: PING `ErrorMessage`, APIM `message`,
/// or the B2C `error`/`error_description`; else the HTTP reason phrase.
fn error_reason(bytes: &[u8], status: reqwest::StatusCode) -> String {
    let fallback = || {
        status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_string()
    };
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(bytes) else {
        return fallback();
    };
    let text = |key: &str| get_ci(&obj, key).and_then(|v| error_message_text(Some(v)));
    let reason = text("ErrorMessage")
        .or_else(|| text("message"))
        .or_else(|| {
            // B2C descriptions continue with correlation ids and timestamps; the first line is the point.
            let description = text("error_description")
                .map(|d| d.lines().next().unwrap_or_default().trim().to_string());
            match (text("error"), description) {
                (Some(e), Some(d)) => Some(format!("{e}: {d}")),
                (e, d) => e.or(d),
            }
        });
    truncate(&reason.unwrap_or_else(fallback), REASON_MAX_CHARS)
}

/// At most `max` characters, on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((idx, _)) => format!("{}…", &text[..idx]),
        None => text.to_string(),
    }
}

/// `Retry-After` as seconds: delta-seconds or an HTTP date.
fn parse_retry_after(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs);
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = (when.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds();
    Some(secs.max(0) as u64)
}

/// Parse a check-status body. PING's `Data` may be an array, an object, or a
/// string holding a JSON array whose items' inner `Data` is a JSON object
/// written without escaping its quotes (spec §1.B 2.1 step 6, example 19).
/// Never panics; garbage yields an error.
pub fn parse_check_status(body: &[u8]) -> Result<Vec<IngestionStatus>, StatusParseError> {
    let top = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v,
        Err(_) => {
            let text = std::str::from_utf8(body).map_err(|_| StatusParseError::NotJson)?;
            parse_lenient(text).ok_or(StatusParseError::NotJson)?
        }
    };
    let data = match &top {
        Value::Object(obj) => {
            if let Some(message) = error_message_text(get_ci(obj, "ErrorMessage")) {
                return Err(StatusParseError::Remote(truncate(
                    &message,
                    REASON_MAX_CHARS,
                )));
            }
            get_ci(obj, "Data").cloned().unwrap_or(Value::Null)
        }
        Value::Array(_) => top.clone(),
        _ => {
            return Err(StatusParseError::Shape(
                "body is neither an object nor an array",
            ))
        }
    };
    let items = status_items(data, 0)?;
    Ok(items.into_iter().filter_map(status_from_item).collect())
}

fn status_items(data: Value, depth: u8) -> Result<Vec<Value>, StatusParseError> {
    match data {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => Ok(items),
        Value::Object(_) => Ok(vec![data]),
        Value::String(text) => {
            let trimmed = text.trim();
            if trimmed.is_empty() || trimmed == NO_DATA {
                return Ok(Vec::new());
            }
            if depth > 0 {
                return Err(StatusParseError::Shape("Data is a string inside a string"));
            }
            let inner = parse_lenient(trimmed).ok_or(StatusParseError::NotJson)?;
            status_items(inner, depth + 1)
        }
        Value::Bool(_) | Value::Number(_) => Err(StatusParseError::Shape("Data is a scalar")),
    }
}

fn status_from_item(item: Value) -> Option<IngestionStatus> {
    let mut obj = match item {
        Value::Object(obj) => obj,
        Value::Null => return None,
        // A bare status word.
        other => {
            return Some(IngestionStatus {
                status: scalar_text(&other),
                ..IngestionStatus::default()
            })
        }
    };
    let mut take = |key: &str| -> Option<Value> {
        let actual = obj.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned()?;
        obj.shift_remove(&actual)
    };
    let status = take("Status").as_ref().and_then(scalar_text);
    let message = take("Message").as_ref().and_then(scalar_text);
    let (data, data_unparsed) = match take("Data") {
        None | Some(Value::Null) => (None, false),
        Some(Value::Object(map)) => (Some(map), false),
        Some(Value::String(s)) if s.trim().is_empty() => (None, false),
        Some(Value::String(s)) => match parse_lenient(&s) {
            Some(Value::Object(map)) => (Some(map), false),
            _ => (None, true),
        },
        Some(_) => (None, true),
    };
    Some(IngestionStatus {
        status,
        message,
        data,
        data_unparsed,
        extra: obj,
    })
}

/// JSON, or JSON after [`repair_embedded_json`].
fn parse_lenient(text: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str(text) {
        return Some(v);
    }
    // Repair is quadratic at worst; PING status bodies are small.
    if text.len() > 1 << 20 {
        return None;
    }
    let mut budget = 8 * text.len() + 1024;
    serde_json::from_str(&repair_embedded_json(text, 0, &mut budget)).ok()
}

/// Rewrites `"key":"{…}"` (an object or array written into a string without
/// escaping its quotes) as `"key":{…}`, where the bracketed part is valid JSON.
/// `budget` bounds the bytes scanned so hostile input cannot make it slow.
fn repair_embedded_json(text: &str, depth: u8, budget: &mut usize) -> String {
    let bytes = text.as_bytes();
    if depth > 4 {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i + 1 < bytes.len() && *budget > 0 {
        *budget -= 1;
        if bytes[i] == b'"' && matches!(bytes[i + 1], b'{' | b'[') && after_colon(bytes, i) {
            if let Some(end) = matching_close(bytes, i + 1, budget) {
                if bytes.get(end + 1) == Some(&b'"') {
                    // All indices are at ASCII bytes, so slicing is on char boundaries.
                    let fixed = repair_embedded_json(&text[i + 1..=end], depth + 1, budget);
                    if serde_json::from_str::<Value>(&fixed).is_ok() {
                        out.push_str(&text[copied..i]);
                        out.push_str(&fixed);
                        copied = end + 2;
                        i = end + 2;
                        continue;
                    }
                }
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

fn after_colon(bytes: &[u8], quote: usize) -> bool {
    bytes[..quote]
        .iter()
        .rev()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b':')
}

/// Index of the bracket closing the one at `open`, skipping JSON strings.
fn matching_close(bytes: &[u8], open: usize, budget: &mut usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (offset, &b) in bytes[open..].iter().enumerate() {
        if *budget == 0 {
            return None;
        }
        *budget -= 1;
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(open + offset);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> PingConfig {
        PingConfig {
            base_url: "http://127.0.0.1:9".into(),
            token_url: "http://127.0.0.1:9/oauth2/v2.0/token".into(),
            username: "svc-user".into(),
            password: "hunter2-very-secret".into(),
            client_id: "client".into(),
            scope: DEFAULT_SCOPE.into(),
            subscription_key: "sub-key-0123456789".into(),
            partner_id: "PNR-1363".into(),
            interop_id: "INT-1436".into(),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let client = PingClient::new(config()).unwrap();
        for text in [format!("{:?}", config()), format!("{client:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("sub-key-0123456789"), "{text}");
            assert!(text.contains("PNR-1363"));
        }
    }

    #[test]
    fn rejects_bad_urls() {
        let mut c = config();
        c.base_url = "not a url".into();
        assert!(matches!(PingClient::new(c), Err(PingConfigError::BaseUrl)));
        let mut c = config();
        c.token_url = "ftp://127.0.0.1/x".into();
        assert!(matches!(PingClient::new(c), Err(PingConfigError::TokenUrl)));
    }

    #[test]
    fn urls_keep_base_path_and_encode_partner() {
        let mut c = config();
        c.base_url = "http://127.0.0.1:9/prefix/".into();
        c.partner_id = "PNR 1".into();
        let client = PingClient::new(c).unwrap();
        assert_eq!(
            client.url_for(&[RETRIEVE_PATH]).as_str(),
            "http://127.0.0.1:9/prefix/primes/fetch/paging/v3/retrievedatawithpaging"
        );
        assert_eq!(
            client.ingestion_url("data").as_str(),
            "http://127.0.0.1:9/prefix/api/ingestion/v2/PNR%201/data"
        );
    }

    #[test]
    fn refresh_margin_is_min_of_60s_and_a_tenth() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(300)),
            Duration::from_secs(30)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(2)),
            Duration::from_millis(200)
        );
        assert_eq!(refresh_margin(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn ingestion_bodies_match_examples() {
        let sync = IngestionRequest {
            shipping_process_id: "SHP-2748",
            interop_id: "INT-1436",
            data: &[IngestionRecord {
                external_id: "id55".into(),
                attachments: None,
                fields: vec![Field::new("progres_primerotransferstatus", "125080002")],
            }],
        };
        assert_eq!(
            serde_json::to_string(&sync).unwrap(),
            r#"{"ShippingProcessId":"SHP-2748","InteropId":"INT-1436","Data":[{"ExternalId":"id55","Fields":[{"Name":"progres_primerotransferstatus","Value":"125080002"}]}]}"#
        );
        let synced = IngestionRecord {
            external_id: "x".into(),
            attachments: Some(vec![]),
            fields: vec![Field::null("progres_comments")],
        };
        assert_eq!(
            serde_json::to_string(&synced).unwrap(),
            r#"{"ExternalId":"x","Attachments":[],"Fields":[{"Name":"progres_comments","Value":null}]}"#
        );
        let asynchronous = AsyncIngestionRequest {
            shipping_process_id: "SHP-2731",
            interop_id: "INT-1436",
            api_version: "V2",
            data: &[AsyncIngestionRecord {
                external_id: "e".into(),
                external_guid: "g".into(),
                fields: vec![],
            }],
        };
        assert_eq!(
            serde_json::to_string(&asynchronous).unwrap(),
            r#"{"ShippingProcessId":"SHP-2731","InteropID":"INT-1436","APIVersion":"V2","Data":[{"ExternalId":"e","ExternalGUID":"g","Fields":[]}]}"#
        );
        let check = CheckStatusRequest {
            shipping_process_id: "SHP-2731",
            interop_id: "INT-1436",
            partner_id: "PNR-1363",
            sph_transaction_id: "t",
        };
        assert_eq!(
            serde_json::to_string(&check).unwrap(),
            r#"{"ShippingProcessId":"SHP-2731","InteropID":"INT-1436","PartnerId":"PNR-1363","SPHTransactionId":"t"}"#
        );
    }

    #[test]
    fn retrieve_request_matches_example_14() {
        let body = RetrieveRequest {
            shipping_process_id: "SHP-2747",
            partner_id: "PNR-1363",
            interop_id: "INT-1436",
            api_version: "V3",
            query_parameters: vec![],
            paging_cookie: None,
            page_number: None,
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"ShippingProcessId":"SHP-2747","PartnerId":"PNR-1363","InteropID":"INT-1436","APIVersion":"V3","QueryParameters":[]}"#
        );
    }

    #[test]
    fn retrieve_page_shapes() {
        let empty = json!({"Data": NO_DATA, "ErrorMessage": null, "RecordCount": null,
            "SPHTransactionId": "t", "PagingSummary": {"PagingCookie": null, "PageNumber": 0, "IsMoreRecordsAvailable": false}});
        let page = parse_retrieve_page(empty.to_string().as_bytes()).unwrap();
        assert!(page.rows.is_empty() && page.next.is_none());

        let null = json!({"Data": null, "ErrorMessage": null});
        assert!(parse_retrieve_page(null.to_string().as_bytes())
            .unwrap()
            .rows
            .is_empty());

        let more = json!({"Data": [{"a": 1}], "RecordCount": 1,
            "PagingSummary": {"PagingCookie": "<cookie page=\"1\"/>", "PageNumber": 0, "IsMoreRecordsAvailable": true}});
        let page = parse_retrieve_page(more.to_string().as_bytes()).unwrap();
        assert_eq!(page.rows.len(), 1);
        assert_eq!(page.record_count, Some(1));
        assert_eq!(
            page.next,
            Some(PageCursor {
                cookie: "<cookie page=\"1\"/>".into(),
                page_number: Some(1)
            })
        );

        let err = json!({"Data": null, "ErrorMessage": "Invalid shipping process"});
        let reason = parse_retrieve_page(err.to_string().as_bytes()).unwrap_err();
        assert!(reason.contains("Invalid shipping process"));

        let no_cookie = json!({"Data": [], "PagingSummary": {"IsMoreRecordsAvailable": true}});
        assert!(parse_retrieve_page(no_cookie.to_string().as_bytes()).is_err());
        assert!(parse_retrieve_page(b"<html>").is_err());
        assert!(parse_retrieve_page(json!({"Data": "oops"}).to_string().as_bytes()).is_err());
    }

    #[test]
    fn retrieve_page_keeps_only_the_columns_asked_for() {
        let body = json!({"Data": [{"a": 1, "b": {"deep": [1, 2]}, "c": "x"}, {"c": null}],
            "ErrorMessage": null, "Extra": {"ignored": true},
            "PagingSummary": {"PagingCookie": null, "PageNumber": 0, "IsMoreRecordsAvailable": false}});
        let bytes = body.to_string();
        let all = parse_retrieve_page(bytes.as_bytes()).unwrap();
        assert_eq!(all.rows[0].len(), 3);
        let keep = ["a".to_string(), "c".to_string()];
        let some = parse_retrieve_page_with(bytes.as_bytes(), Some(&keep)).unwrap();
        assert_eq!(some.rows.len(), 2);
        assert_eq!(
            Value::Object(some.rows[0].clone()),
            json!({"a": 1, "c": "x"})
        );
        assert_eq!(Value::Object(some.rows[1].clone()), json!({"c": null}));
        // A row that is not an object, or trailing garbage, is still refused.
        let bad = json!({"Data": [1]}).to_string();
        assert!(parse_retrieve_page_with(bad.as_bytes(), Some(&keep)).is_err());
        assert!(parse_retrieve_page(b"{\"Data\": []} x").is_err());
        assert!(parse_retrieve_page(b"[]").is_err());
    }

    #[test]
    fn error_reason_sources_and_truncation() {
        let s = reqwest::StatusCode::BAD_REQUEST;
        assert_eq!(error_reason(br#"{"ErrorMessage":"bad SHP"}"#, s), "bad SHP");
        assert_eq!(
            error_reason(br#"{"statusCode":401,"message":"Access denied"}"#, s),
            "Access denied"
        );
        assert_eq!(
            error_reason(
                br#"{"error":"invalid_grant","error_description":"AADB2C90225: wrong.\r\nCorrelation ID: x"}"#,
                s
            ),
            "invalid_grant: AADB2C90225: wrong."
        );
        assert_eq!(error_reason(b"<html>", s), "Bad Request");
        let long = format!(r#"{{"ErrorMessage":"{}"}}"#, "é".repeat(500));
        assert_eq!(error_reason(long.as_bytes(), s).chars().count(), 201);
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("17"));
        assert_eq!(parse_retry_after(&h), Some(17));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&h), Some(0));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h), None);
    }

    #[test]
    fn ingestion_response_lenient() {
        let ok = br#"{"SPHTransactionId":"t1","ErrorMessage":null,"RecordCount":2,
            "Data":[{"ExternalId":"a","Status":"Success","Message":null},
                    {"ExternalId":"b","Status":"Failed","Message":"Record not found"}]}"#;
        let r = parse_ingestion_response(ok).unwrap();
        assert_eq!(r.sph_transaction_id.as_deref(), Some("t1"));
        assert_eq!(r.record_count, Some(2));
        assert_eq!(r.failures().len(), 1);
        assert_eq!(r.failures()[0].external_id.as_deref(), Some("b"));
        assert_eq!(
            parse_ingestion_response(b"").unwrap(),
            IngestionResponse::default()
        );
        assert_eq!(
            parse_ingestion_response(b"Accepted").unwrap(),
            IngestionResponse::default()
        );
        assert!(parse_ingestion_response(br#"{"ErrorMessage":"no"}"#).is_err());
    }

    #[test]
    fn check_status_example_19() {
        // The body of example 19 as sent on the wire.
        let body = r#"{"Data": "[{\"Status\":\"Processed\",\"Data\":\"{\"progres_interoperabilityreferralid\":\"0b7f1c2e-9999-4a4a-9c9c-000000000009\"}\",\"Message\":\"OK\"}]"}"#;
        let statuses = parse_check_status(body.as_bytes()).unwrap();
        assert_eq!(statuses.len(), 1);
        let s = &statuses[0];
        assert_eq!(s.status.as_deref(), Some("Processed"));
        assert_eq!(s.message.as_deref(), Some("OK"));
        assert!(!s.data_unparsed);
        assert_eq!(
            s.data.as_ref().unwrap()["progres_interoperabilityreferralid"],
            "0b7f1c2e-9999-4a4a-9c9c-000000000009"
        );
    }

    #[test]
    fn check_status_other_shapes() {
        // Well-formed: array with an escaped inner string.
        let body = json!({"Data": [{"Status": "Failed", "Message": "x",
            "Data": "{\"progres_interoperabilityreferralid\":\"i\"}", "Other": 1}]});
        let s = parse_check_status(body.to_string().as_bytes()).unwrap();
        assert_eq!(s[0].status.as_deref(), Some("Failed"));
        assert_eq!(
            s[0].data.as_ref().unwrap()["progres_interoperabilityreferralid"],
            "i"
        );
        assert_eq!(s[0].extra["Other"], 1);
        // Inner data as object, lower-case keys, and a bare array body.
        let body = json!([{"status": "Processed", "data": {"k": "v"}}]);
        let s = parse_check_status(body.to_string().as_bytes()).unwrap();
        assert_eq!(s[0].data.as_ref().unwrap()["k"], "v");
        // Whole body malformed the same way (not escaped at the outer level either).
        let raw = r#"{"Data":"[{"Status":"Processed","Data":"{"id":"1"}","Message":"OK"}]"}"#;
        let s = parse_check_status(raw.as_bytes()).unwrap();
        assert_eq!(s[0].data.as_ref().unwrap()["id"], "1");
        // Empty answers.
        for empty in [
            r#"{"Data":null}"#,
            r#"{"Data":"No Data Available"}"#,
            r#"{}"#,
            r#"{"Data":[]}"#,
        ] {
            assert!(
                parse_check_status(empty.as_bytes()).unwrap().is_empty(),
                "{empty}"
            );
        }
        // Inner data beyond repair is flagged, not fatal.
        let body = json!({"Data": [{"Status": "Processed", "Data": "{not json"}]});
        let s = parse_check_status(body.to_string().as_bytes()).unwrap();
        assert!(s[0].data_unparsed && s[0].data.is_none());
        assert!(matches!(
            parse_check_status(br#"{"ErrorMessage":"Transaction not found","Data":null}"#),
            Err(StatusParseError::Remote(_))
        ));
    }

    #[test]
    fn check_status_never_panics_on_garbage() {
        use rand::{Rng, SeedableRng};
        let fixed: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"null".to_vec(),
            b"42".to_vec(),
            b"\"text\"".to_vec(),
            b"{".to_vec(),
            b"{\"Data\":\"[{\"Data\":\"{\"".to_vec(),
            b"{\"Data\":\"[{\\\"Data\\\":\\\"{\\\"\"}".to_vec(),
            b"{\"Data\":5}".to_vec(),
            b"{\"Data\":\"\\\"nested\\\"\"}".to_vec(),
            vec![0xff, 0xfe, b'{'],
            "\"a\":\"{".repeat(10_000).into_bytes(),
            "[".repeat(100_000).into_bytes(),
            format!("{{\"Data\":\"{}\"}}", ":\"[".repeat(50_000)).into_bytes(),
            "{\"Data\":\"é\"}".as_bytes().to_vec(),
        ];
        for body in &fixed {
            let _ = parse_check_status(body);
        }
        assert!(parse_check_status(b"{").is_err());
        assert!(parse_check_status(b"{\"Data\":5}").is_err());
        let alphabet = b"{}[]\":,\\ Data0\xc3\xa9";
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        for _ in 0..2_000 {
            let len = rng.random_range(0..80);
            let body: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let _ = parse_check_status(&body);
        }
    }
}
