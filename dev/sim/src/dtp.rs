//! Simulator of UNHCR's DTP (design A, spec §1.A, §3.1): an HTTPS server that
//! requires a TLS client certificate signed by the CA it was given (mutual
//! TLS, as DTP behind Azure APIM did) and the `Ocp-Apim-Subscription-Key`
//! header, serving the three endpoints the bridge posts to. It records every
//! body it accepts so tests can assert on it, and has fault knobs.
//!
//! DTP also *pushes* to the bridge's inbox: [`push_to_inbox`] does that, with
//! the inbox API key in `x-api-key`; [`referral_message`] and
//! [`decision_message`] build bodies of the shape of examples 01 and 11.
//!
//! [`TestPki`] makes a CA, a server certificate for 127.0.0.1/localhost and a
//! client certificate at run time, so no certificate file is ever committed.
//!
//! Choices where the real DTP is undocumented: paths are
//! `<base>/ReceiveIncomingReferral`, `<base>/ReceiveDecisionOutgoingReferral`
//! and `<base>/Notification` under base `/primero-uat`; an accepted body is
//! answered 200 `{}`; each endpoint checks the body's `request_type`
//! (`Notification` takes `Feedback` or none), answering 400 otherwise; a
//! pinned thumbprint that does not match the presented certificate is 403.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::{IncomingStream, Listener};
use axum::{Json, Router};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::ping::SimIntervention;
use super::primero::{hangup_response, InFlight};

/// The header DTP's API gateway (Azure API Management) reads the
/// subscription key from. Written here from DTP's documentation, not taken
/// from the client: a client that sent another header would be refused.
const SUBSCRIPTION_KEY_HEADER: &str = "Ocp-Apim-Subscription-Key";

/// DTP's endpoints (spec §1.A, §3.1), as the simulator serves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtpEndpoint {
    /// Primero referral → proGres (flow 2-2), `request_type: ReceiveIncomingReferral`.
    ReceiveIncomingReferral,
    /// Primero decision on a proGres referral (flow 1-2), `ReceiveDecisionOutgoingReferral`.
    ReceiveDecisionOutgoingReferral,
    /// Delivery success/failure notifications (flows 1-3, 1-4).
    Notification,
}

impl DtpEndpoint {
    /// The last segment of its path.
    pub fn name(self) -> &'static str {
        match self {
            DtpEndpoint::ReceiveIncomingReferral => "ReceiveIncomingReferral",
            DtpEndpoint::ReceiveDecisionOutgoingReferral => "ReceiveDecisionOutgoingReferral",
            DtpEndpoint::Notification => "Notification",
        }
    }
}

/// The full URL of each endpoint of a running simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtpUrls {
    pub receive_incoming_referral: String,
    pub receive_decision_outgoing_referral: String,
    pub notification: String,
}

/// SHA-1 thumbprint of a DER certificate, upper-case hex: what UNHCR pins.
fn der_thumbprint(der: &[u8]) -> String {
    use sha1::Digest as _;
    hex::encode_upper(sha1::Sha1::digest(der))
}

pub const DEFAULT_BASE_PATH: &str = "/primero-uat";
/// Header DTP puts the inbox API key in (spec §3.1).
pub const INBOX_KEY_HEADER: &str = "x-api-key";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Test PKI
// ---------------------------------------------------------------------------

/// A throw-away PKI made at run time: a CA, a server certificate for
/// `127.0.0.1`/`localhost`, and a client certificate, all signed by the CA.
#[derive(Clone)]
pub struct TestPki {
    pub ca_cert_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl fmt::Debug for TestPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestPki")
            .field("client_thumbprint", &self.client_thumbprint())
            .finish_non_exhaustive()
    }
}

/// Where [`TestPki::write_files`] put the files the bridge config names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestPkiFiles {
    pub ca_cert: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// A fresh PKI. Key generation cannot fail with valid parameters, which
    /// these are, so this panics only on a broken crypto backend.
    pub fn generate() -> Self {
        Self::try_generate().expect("test PKI generation")
    }

    pub fn try_generate() -> Result<Self, rcgen::Error> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "referral bridge test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "dtp simulator");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        let mut client_params = CertificateParams::new(Vec::<String>::new())?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, "referral bridge client");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate()?;
        let client_cert = client_params.signed_by(&client_key, &issuer)?;

        Ok(Self {
            ca_cert_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        })
    }

    /// SHA-1 thumbprint of the client certificate (what UNHCR would pin).
    pub fn client_thumbprint(&self) -> String {
        use rustls::pki_types::pem::PemObject as _;
        let cert =
            rustls::pki_types::CertificateDer::from_pem_slice(self.client_cert_pem.as_bytes())
                .expect("generated certificate is valid PEM");
        der_thumbprint(cert.as_ref())
    }

    /// Write the CA certificate and the client certificate and key (the key
    /// readable by the owner only) into `dir`.
    pub fn write_files(&self, dir: &Path) -> io::Result<TestPkiFiles> {
        let files = TestPkiFiles {
            ca_cert: dir.join("dtp-ca.pem"),
            client_cert: dir.join("dtp-client.pem"),
            client_key: dir.join("dtp-client.key"),
        };
        std::fs::write(&files.ca_cert, &self.ca_cert_pem)?;
        std::fs::write(&files.client_cert, &self.client_cert_pem)?;
        write_private(&files.client_key, self.client_key_pem.as_bytes())?;
        Ok(files)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    std::fs::write(path, bytes)
}

// ---------------------------------------------------------------------------
// Simulator
// ---------------------------------------------------------------------------

/// What the simulator expects and how it serves.
#[derive(Clone)]
pub struct DtpSimConfig {
    pub subscription_key: String,
    /// CA whose client certificates are accepted.
    pub client_ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    /// When set, only a client certificate with this SHA-1 thumbprint
    /// (upper-case hex) is let through, as UNHCR pinned it.
    pub pinned_thumbprint: Option<String>,
    /// Path prefix of the endpoints, e.g. `/primero-uat`.
    pub base_path: String,
}

impl DtpSimConfig {
    pub fn new(pki: &TestPki) -> Self {
        Self {
            subscription_key: "sim-dtp-subscription-key".into(),
            client_ca_pem: pki.ca_cert_pem.clone(),
            server_cert_pem: pki.server_cert_pem.clone(),
            server_key_pem: pki.server_key_pem.clone(),
            pinned_thumbprint: None,
            base_path: DEFAULT_BASE_PATH.into(),
        }
    }

    pub fn path(&self, endpoint: DtpEndpoint) -> String {
        format!(
            "{}/{}",
            self.base_path.trim_end_matches('/'),
            endpoint.name()
        )
    }
}

impl fmt::Debug for DtpSimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtpSimConfig")
            .field("subscription_key", &"<redacted>")
            .field("pinned_thumbprint", &self.pinned_thumbprint)
            .field("base_path", &self.base_path)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DtpSimError {
    #[error("DTP simulator TLS setup: {0}")]
    Tls(String),
    #[error("DTP simulator socket: {0}")]
    Io(#[from] io::Error),
}

/// A body the simulator accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct DtpReceived {
    pub endpoint: DtpEndpoint,
    pub body: Value,
    /// SHA-1 thumbprint of the client certificate the body came with.
    pub client_thumbprint: Option<String>,
}

/// One request and the status it was answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtpRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// An injected failure (the same shape as the PING simulator's).
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
    /// Process (record) the request, then close the connection without a
    /// complete answer.
    HangupAfter,
}

struct Fault {
    path_prefix: String,
    kind: FaultKind,
    remaining: usize,
}

#[derive(Default)]
struct SimState {
    latency: Duration,
    received: Vec<DtpReceived>,
    requests: Vec<DtpRequest>,
    arrivals: Vec<Instant>,
    faults: Vec<Fault>,
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
}

struct Inner {
    config: DtpSimConfig,
    state: Mutex<SimState>,
    in_flight: InFlight,
}

/// Handle to the simulator's state. Cheap to clone.
#[derive(Clone)]
pub struct DtpSim {
    inner: Arc<Inner>,
}

impl fmt::Debug for DtpSim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtpSim")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl DtpSim {
    pub fn new(config: DtpSimConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(SimState::default()),
                in_flight: InFlight::default(),
            }),
        }
    }

    /// Bind `addr` (port 0 for any) and serve HTTPS with client certificates
    /// required, until the handle is dropped.
    pub async fn start(
        config: DtpSimConfig,
        addr: SocketAddr,
    ) -> Result<RunningDtpSim, DtpSimError> {
        let tls = Arc::new(server_tls_config(&config)?);
        let sim = DtpSim::new(config);
        let tcp = TcpListener::bind(addr).await?;
        let addr = tcp.local_addr()?;
        let (conns, rx) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_tls(tcp, TlsAcceptor::from(tls), conns));
        let listener = TlsListener { rx, local: addr };
        let (shutdown, stop) = oneshot::channel::<()>();
        let app = sim
            .router()
            .into_make_service_with_connect_info::<TlsPeer>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop.await;
                })
                .await;
            if let Err(err) = served {
                tracing::warn!(error = %err, "DTP simulator stopped");
            }
        });
        tracing::debug!(%addr, "DTP simulator listening");
        Ok(RunningDtpSim {
            sim,
            addr,
            shutdown: Some(shutdown),
            task: Some(task),
            acceptor: Some(acceptor),
        })
    }

    /// On 127.0.0.1, any free port.
    pub async fn start_loopback(config: DtpSimConfig) -> Result<RunningDtpSim, DtpSimError> {
        Self::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub fn config(&self) -> &DtpSimConfig {
        &self.inner.config
    }

    /// The routes, without TLS (the TLS listener wraps them).
    fn router(&self) -> Router {
        let mut router = Router::new();
        for endpoint in [
            DtpEndpoint::ReceiveIncomingReferral,
            DtpEndpoint::ReceiveDecisionOutgoingReferral,
            DtpEndpoint::Notification,
        ] {
            router = router.route(
                &self.inner.config.path(endpoint),
                post(
                    move |State(sim): State<DtpSim>,
                          ConnectInfo(peer): ConnectInfo<TlsPeer>,
                          headers: HeaderMap,
                          body: Bytes| async move {
                        sim.receive(endpoint, peer, &headers, &body)
                    },
                ),
            );
        }
        router
            .layer(middleware::from_fn_with_state(self.clone(), edge))
            .with_state(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panicking test thread must not hide the state from the others.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn receive(
        &self,
        endpoint: DtpEndpoint,
        peer: TlsPeer,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        let config = &self.inner.config;
        match headers
            .get(SUBSCRIPTION_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            None => return apim_error(
                StatusCode::UNAUTHORIZED,
                "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.",
            ),
            Some(key) if key != config.subscription_key => return apim_error(
                StatusCode::UNAUTHORIZED,
                "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.",
            ),
            Some(_) => {}
        }
        if let Some(pinned) = &config.pinned_thumbprint {
            if peer.client_thumbprint.as_deref() != Some(pinned.as_str()) {
                return apim_error(
                    StatusCode::FORBIDDEN,
                    "Client certificate thumbprint is not allowed.",
                );
            }
        }
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return apim_error(StatusCode::BAD_REQUEST, "Body is not JSON.");
        };
        let request_type = body.get("request_type").and_then(Value::as_str);
        let expected_ok = match endpoint {
            DtpEndpoint::Notification => matches!(request_type, None | Some("Feedback")),
            other => request_type == Some(other.name()),
        };
        if !body.is_object() || !expected_ok {
            return apim_error(
                StatusCode::BAD_REQUEST,
                &format!("request_type does not fit {}.", endpoint.name()),
            );
        }
        self.lock().received.push(DtpReceived {
            endpoint,
            body,
            client_thumbprint: peer.client_thumbprint,
        });
        (StatusCode::OK, Json(json!({}))).into_response()
    }

    /// Every accepted body, in order.
    pub fn received(&self) -> Vec<DtpReceived> {
        self.lock().received.clone()
    }

    /// Accepted bodies of one endpoint, in order.
    pub fn bodies(&self, endpoint: DtpEndpoint) -> Vec<Value> {
        self.lock()
            .received
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .map(|r| r.body.clone())
            .collect()
    }

    /// Every request that reached HTTP (after the TLS handshake), with its status.
    pub fn requests(&self) -> Vec<DtpRequest> {
        self.lock().requests.clone()
    }

    /// Forget what was received.
    pub fn clear_received(&self) {
        let mut st = self.lock();
        st.received.clear();
        st.requests.clear();
    }

    /// Delay every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// The next `count` requests whose path starts with `path_prefix` are
    /// answered with `status` and not recorded as received.
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

    /// Apply `kind` to the next `count` requests whose path starts with `path_prefix`.
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

    /// When each request arrived (after the TLS handshake), in order.
    pub fn arrival_times(&self) -> Vec<Instant> {
        self.lock().arrivals.clone()
    }
}

/// A simulator serving on a socket; stops when dropped. Derefs to [`DtpSim`].
pub struct RunningDtpSim {
    sim: DtpSim,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    acceptor: Option<JoinHandle<()>>,
}

impl RunningDtpSim {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// e.g. `https://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn url(&self, endpoint: DtpEndpoint) -> String {
        format!("{}{}", self.base_url(), self.sim.config().path(endpoint))
    }

    /// The URLs to give the bridge's DTP client.
    pub fn urls(&self) -> DtpUrls {
        DtpUrls {
            receive_incoming_referral: self.url(DtpEndpoint::ReceiveIncomingReferral),
            receive_decision_outgoing_referral: self
                .url(DtpEndpoint::ReceiveDecisionOutgoingReferral),
            notification: self.url(DtpEndpoint::Notification),
        }
    }

    /// A `[dtp]` section for `bridge.toml`; the subscription key is read from
    /// the environment variable `subscription_key_env`.
    pub fn config_toml(&self, files: &TestPkiFiles, subscription_key_env: &str) -> String {
        let urls = self.urls();
        format!(
            "[dtp]\nreceive_incoming_referral_url = {}\nreceive_decision_outgoing_referral_url = {}\nnotification_url = {}\nclient_cert = {}\nclient_key = {}\nextra_root = {}\nsubscription_key = {{ env = {} }}\n",
            toml_str(&urls.receive_incoming_referral),
            toml_str(&urls.receive_decision_outgoing_referral),
            toml_str(&urls.notification),
            toml_str(&files.client_cert.display().to_string()),
            toml_str(&files.client_key.display().to_string()),
            toml_str(&files.ca_cert.display().to_string()),
            toml_str(subscription_key_env),
        )
    }

    pub fn sim(&self) -> &DtpSim {
        &self.sim
    }

    /// Stop accepting, finish in-flight requests, and wait.
    pub async fn shutdown(mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

impl Deref for RunningDtpSim {
    type Target = DtpSim;
    fn deref(&self) -> &DtpSim {
        &self.sim
    }
}

impl Drop for RunningDtpSim {
    fn drop(&mut self) {
        for task in [self.acceptor.take(), self.task.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------
// TLS plumbing
// ---------------------------------------------------------------------------

fn server_tls_config(config: &DtpSimConfig) -> Result<ServerConfig, DtpSimError> {
    let tls = |what: &str, e: &dyn fmt::Display| DtpSimError::Tls(format!("{what}: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(config.client_ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| tls("client CA", &e))?;
        roots.add(ca).map_err(|e| tls("client CA", &e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls("client verifier", &e))?;
    let chain = CertificateDer::pem_slice_iter(config.server_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls("server certificate", &e))?;
    let key = PrivateKeyDer::from_pem_slice(config.server_key_pem.as_bytes())
        .map_err(|_| DtpSimError::Tls("server key is not a PEM private key".into()))?;
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("protocol versions", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls("server certificate", &e))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server)
}

/// The peer of a TLS connection, handed to the routes as connect info.
#[derive(Debug, Clone)]
struct TlsPeer {
    #[allow(dead_code)]
    addr: SocketAddr,
    client_thumbprint: Option<String>,
}

impl Connected<IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Connections whose handshake succeeded, fed by [`accept_tls`] so a slow or
/// failing handshake never holds up the others.
struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, TlsPeer)>,
    local: SocketAddr,
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = TlsPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The acceptor stopped: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(TlsPeer {
            addr: self.local,
            client_thumbprint: None,
        })
    }
}

async fn accept_tls(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    conns: mpsc::Sender<(TlsStream<TcpStream>, TlsPeer)>,
) {
    loop {
        let (stream, addr) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::debug!(error = %err, "DTP simulator accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let client_thumbprint = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .map(|cert| der_thumbprint(cert.as_ref()));
                    let peer = TlsPeer {
                        addr,
                        client_thumbprint,
                    };
                    let _ = conns.send((tls, peer)).await;
                }
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "DTP simulator refused a TLS handshake");
                }
                Err(_) => tracing::debug!("DTP simulator TLS handshake timed out"),
            }
        });
    }
}

/// Latency, injected faults and the request log, for every path.
async fn edge(State(sim): State<DtpSim>, req: Request, next: Next) -> Response {
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
    let code =
        |status: u16| StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let response = match fault {
        Some(FaultKind::Status {
            status,
            retry_after,
        }) => {
            let mut response = apim_error(code(status), "Injected fault");
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        Some(FaultKind::Body { status, body }) => (
            code(status),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Some(FaultKind::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(FaultKind::Hangup) => hangup_response(),
        Some(FaultKind::HangupAfter) => {
            let _ = next.run(req).await;
            hangup_response()
        }
        None => next.run(req).await,
    };
    let status = response.status().as_u16();
    tracing::debug!(%method, %path, status, "DTP simulator answered");
    sim.lock().requests.push(DtpRequest {
        method,
        path,
        status,
    });
    response
}

fn apim_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"statusCode": status.as_u16(), "message": message})),
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// DTP pushing to the bridge's inbox
// ---------------------------------------------------------------------------

/// The inbox's answer to a push.
#[derive(Debug, Clone, PartialEq)]
pub struct PushResponse {
    pub status: u16,
    /// The JSON answer (`Value::Null` if it was not JSON).
    pub body: Value,
}

/// POST a message to a bridge inbox as DTP does (API key in `x-api-key`).
pub async fn push_to_inbox(
    inbox_url: &str,
    api_key: &str,
    message: &Value,
) -> Result<PushResponse, reqwest::Error> {
    let bytes = serde_json::to_vec(message).expect("a JSON value serialises");
    push_raw_to_inbox(inbox_url, Some(api_key), bytes).await
}

/// POST raw bytes (tests of malformed bodies); `api_key: None` sends no key.
pub async fn push_raw_to_inbox(
    inbox_url: &str,
    api_key: Option<&str>,
    body: Vec<u8>,
) -> Result<PushResponse, reqwest::Error> {
    let mut request = reqwest::Client::new()
        .post(inbox_url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(key) = api_key {
        request = request.header(INBOX_KEY_HEADER, key);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await?;
    Ok(PushResponse {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    })
}

/// A `PrimeroOutgoingReferral` message (flow 1-1) of the shape of example 01,
/// one intervention per entry.
pub fn referral_message(interventions: &[SimIntervention]) -> Value {
    json!({
        "interventions": interventions.iter().map(referral_row).collect::<Vec<_>>(),
        "request_type": "PrimeroOutgoingReferral",
    })
}

fn lookup(id: &str, logical_name: &str, name: &str) -> Value {
    json!({
        "Id": id,
        "KeyAttributes": [],
        "LogicalName": logical_name,
        "Name": name,
        "RowVersion": null,
    })
}

/// One flattened FetchXML row as DTP sends it (example 01).
pub fn referral_row(i: &SimIntervention) -> Value {
    let p = &i.person;
    let mut row = json!({
        "progres_interventionnumber": i.intervention_number,
        "progres_lpinterventionid": i.lpinterventionid,
        "progres_businessunit": i.business_unit,
        "progres_businessowner": "0b7f1c2e-2222-4a4a-9c9c-000000000002",
        "progres_interventiontype2": "0b7f1c2e-3333-4a4a-9c9c-000000000003",
        "progres_interventionstartdate": format!("{}T00:00:00Z", i.start_date),
        "progres_interventiondescription": i.description,
        "progres_reasonforreferral": i.reason_for_referral,
        "interventiontype.progres_description": i.intervention_type,
        "childprotection.progres_priority": "125080001",
        "user.title": i.caseworker_title,
        "user.internalemailaddress": i.caseworker_email,
        "user.mobilephone": i.caseworker_phone,
        "individuals.progres_id": p.progres_id,
        "individuals.progres_registrationgroupid": lookup(&i.registration_group_guid, "progres_registrationgroup", &p.registration_group),
        "individuals.progres_givenname": p.given_name,
        "individuals.progres_middlename": p.middle_name,
        "individuals.progres_familyname": p.family_name,
        "individuals.progres_dateofbirth": format!("{}T00:00:00Z", p.date_of_birth),
        "individuals.progres_sex": p.sex_code.to_string(),
        "individuals.progres_primaryphonenumber": p.phone,
        "individuals.progres_commonyusedname": p.given_name,
        "individuals.progres_coalocationlevel1": lookup("0b7f1c2e-5555-4a4a-9c9c-000000000005", "progres_locationlevel", "Gambella"),
        "individuals.progres_coalocationlevel2": lookup("0b7f1c2e-6666-4a4a-9c9c-000000000006", "progres_locationlevel", "Camp A"),
    });
    let obj = row.as_object_mut().expect("built as an object");
    if let Some(language) = i.languages.first() {
        obj.insert(
            "languages.progres_languagecodeid".into(),
            lookup(
                "0b7f1c2e-7777-4a4a-9c9c-000000000007",
                "progres_languagecode",
                language,
            ),
        );
    }
    if let Some(need) = i.specific_needs.first() {
        obj.insert(
            "specificneeds.progres_spncategory2".into(),
            lookup(
                &need.category_id,
                "progres_specificneedcode",
                &need.category,
            ),
        );
    }
    if let Some(primero_id) = &i.primero_id {
        obj.insert("progres_primeroid".into(), Value::from(primero_id.as_str()));
    }
    row
}

/// A proGres decision on a Primero referral (flow 2-3), as DTP pushes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDecision {
    /// `<case_id>#<last 12 chars of the service unique_id>`.
    pub org_referral_id: String,
    /// `125080000` accepted, `125080001` rejected.
    pub review_decision: String,
    /// `125080000..=125080002`, or `None`.
    pub rejection_reason: Option<String>,
    pub rejection_comment: Option<String>,
    /// e.g. `REF-IOP-DAD-000000777`.
    pub referral_number: String,
}

/// A `PrimeroIncomingReferralDecision` message of the shape of example 11
/// (with proGres' own spelling of its field names).
pub fn decision_message(decisions: &[SimDecision]) -> Value {
    let rows: Vec<Value> = decisions
        .iter()
        .enumerate()
        .map(|(n, d)| {
            json!({
                "progres_individualid": format!("0b7f1c2e-8888-4a4a-9c9c-{n:012}"),
                "progres_interoperabilityreferralid": format!("0b7f1c2e-9999-4a4a-9c9c-{n:012}"),
                "progres_interoperabilityreferralnumber": d.referral_number,
                "progres_interoperabilityreferralrouteto": "125080001",
                "progres_interventiontype": "7ad37dd0-0306-e611-80d9-00155d34051a",
                "progres_orgreferralid": d.org_referral_id,
                "progres_reviewby": "0b7f1c2e-aaaa-4a4a-9c9c-00000000000a",
                "progres_reviewdate": "2024-06-12T00:00:00Z",
                "progres_reviewdecision": d.review_decision,
                "progres_interoperabiltyreferralrejectionreason": d.rejection_reason,
                "progres_interoperabilityreferralrejectionomment": d.rejection_comment,
            })
        })
        .collect();
    json!({"interventions": rows, "request_type": "PrimeroIncomingReferralDecision"})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::people::PeopleGenerator;

    const EXAMPLE_01: &str = include_str!(
        "../../../tests/fixtures/examples/01_dtp_inbound_progres_referral_flowA-1-1.json"
    );
    const EXAMPLE_11: &str =
        include_str!("../../../tests/fixtures/examples/11_dtp_decision_to_primero_flowA-2-3.json");

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn messages_have_the_example_shapes() {
        let person = PeopleGenerator::new(1).person();
        let i = SimIntervention::for_person(person, 1)
            .with_specific_needs(vec![super::super::ping::SpecificNeed::unaccompanied_child()]);
        let msg = referral_message(&[i]);
        let ex: Value = serde_json::from_str(EXAMPLE_01).unwrap();
        assert_eq!(keys(&msg), keys(&ex));
        assert_eq!(
            keys(&msg["interventions"][0]),
            keys(&ex["interventions"][0])
        );
        let d = decision_message(&[SimDecision {
            org_referral_id: "c#abcdef123456".into(),
            review_decision: "125080001".into(),
            rejection_reason: Some("125080001".into()),
            rejection_comment: Some("x".into()),
            referral_number: "REF-IOP-DAD-000000777".into(),
        }]);
        let ex: Value = serde_json::from_str(EXAMPLE_11).unwrap();
        assert_eq!(keys(&d), keys(&ex));
        assert_eq!(keys(&d["interventions"][0]), keys(&ex["interventions"][0]));
    }

    #[test]
    fn pki_files_are_written_and_thumbprints_differ() {
        let pki = TestPki::generate();
        let dir = tempfile::tempdir().unwrap();
        let files = pki.write_files(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&files.client_cert).unwrap(),
            pki.client_cert_pem
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.client_key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key readable by the owner only");
        }
        assert_ne!(
            pki.client_thumbprint(),
            TestPki::generate().client_thumbprint()
        );
    }
}
