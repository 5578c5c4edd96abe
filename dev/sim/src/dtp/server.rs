//! Serving the DTP simulator over mutual TLS, and the running server's handle.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::config::{DtpEndpoint, DtpSimConfig, DtpSimError, DtpUrls};
use super::pki::{der_thumbprint, TestPkiFiles};
use super::sim::DtpSim;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl DtpSim {
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
pub(super) struct TlsPeer {
    #[allow(dead_code)]
    addr: SocketAddr,
    pub(super) client_thumbprint: Option<String>,
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
