//! DTP checks (design "dtp"): the client certificate and key load, and a
//! TLS handshake with them at each endpoint URL, carried by a `GET` (DTP's
//! endpoints take only POST, so nothing is delivered). Never a POST.

use super::primero::secret_source;
use super::{shown_url, transport_fix, Finding};
use crate::config::BridgeConfig;
use bridge_partners::dtp::{sha1_thumbprint, DtpClient, DtpEndpoint};
use bridge_partners::{ConnectorError, RetryPolicy, TransportCause};

const ENDPOINTS: [(DtpEndpoint, &str); 3] = [
    (
        DtpEndpoint::ReceiveIncomingReferral,
        "dtp.receive_incoming_referral_url",
    ),
    (
        DtpEndpoint::ReceiveDecisionOutgoingReferral,
        "dtp.receive_decision_outgoing_referral_url",
    ),
    (DtpEndpoint::Notification, "dtp.notification_url"),
];

pub async fn check(config: &BridgeConfig, out: &mut Vec<Finding>) {
    let file = config.file.display().to_string();
    let Some(section) = &config.dtp else {
        out.push(Finding::error(
            "dtp.config",
            "deployment.design is \"dtp\" but the config has no [dtp] section",
            format!("add a [dtp] section to {file} (see bridge.example.toml)"),
        ));
        return;
    };
    let dtp_config = match config.dtp_client_config() {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            out.push(Finding::error(
                "dtp.config",
                e.to_string(),
                format!("fix the key named in {file}"),
            ));
            return;
        }
    };
    let thumbprint = sha1_thumbprint(&dtp_config.client_cert_pem).ok();
    let client = match DtpClient::new(dtp_config) {
        Ok(c) => c.with_retry(RetryPolicy::none()),
        Err(e) => {
            out.push(Finding::error(
                "dtp.config",
                e.to_string(),
                format!(
                    "`dtp.client_cert`, `dtp.client_key`, `dtp.extra_root` and the URLs in {file}"
                ),
            ));
            return;
        }
    };
    let pinned = thumbprint
        .as_deref()
        .map(|t| format!("UNHCR must have pinned the thumbprint {t} (`bridge dtp thumbprint`)"))
        .unwrap_or_else(|| "UNHCR must have pinned this certificate's thumbprint".into());
    let cert_fix = format!(
        "`dtp.client_cert` and `dtp.client_key` in {file} must be the certificate UNHCR accepts: {pinned}; if it was renewed, send UNHCR the new thumbprint"
    );
    let mut accepted = 0;
    for (endpoint, key) in ENDPOINTS {
        let url = shown_url(client.urls().get(endpoint));
        let check = format!("dtp.endpoint.{}", endpoint.name());
        match client.probe(endpoint).await {
            Ok((status @ (401 | 403), reason)) => {
                let key_refused = reason.to_ascii_lowercase().contains("subscription key");
                out.push(if key_refused {
                    Finding::error(
                        check,
                        format!("{url}: TLS accepted, but the gateway refused the subscription key (HTTP {status}: {reason})"),
                        format!(
                            "the key named by {} in {file}: the APIM subscription key UNHCR issued for DTP",
                            secret_source("dtp.subscription_key", &section.subscription_key)
                        ),
                    )
                } else {
                    Finding::error(
                        check,
                        format!("{url}: the gateway refused the client certificate (HTTP {status}: {reason})"),
                        cert_fix.clone(),
                    )
                });
            }
            Ok((status, _)) if status >= 500 => out.push(Finding::warning(
                check,
                format!("{url}: TLS with the client certificate accepted, but the gateway answered HTTP {status}"),
                "DTP is failing on its side: ask UNHCR, then run doctor again",
            )),
            Ok((status, _)) => {
                accepted += 1;
                out.push(Finding::ok(
                    check,
                    format!("{url}: TLS handshake with the client certificate accepted; a GET answered HTTP {status} (the endpoint takes POST; nothing was posted)"),
                ));
            }
            Err(ConnectorError::Transport {
                cause: TransportCause::TlsRefusedByServer,
                ..
            }) => out.push(Finding::error(
                check,
                format!("{url}: DTP refused the TLS handshake with the client certificate"),
                cert_fix.clone(),
            )),
            // A server refusing a client certificate under TLS 1.3 alerts
            // and closes; the client may see only the closed connection.
            Err(ConnectorError::Transport {
                cause: TransportCause::Tls | TransportCause::Other,
                ..
            }) => out.push(Finding::error(
                check,
                format!("{url}: DTP closed the connection in the TLS handshake (most likely it refused the client certificate)"),
                cert_fix.clone(),
            )),
            Err(ConnectorError::Transport { cause, .. }) => out.push(Finding::error(
                check,
                format!("{url}: {}", cause.describe()),
                if cause == TransportCause::TlsServerCertificate {
                    format!("this machine does not trust DTP's server certificate at `{key}` in {file}: check the host name, or (a private CA only) `dtp.extra_root`")
                } else {
                    transport_fix(cause, key, &file)
                },
            )),
            Err(e) => out.push(Finding::error(
                check,
                format!("{url}: {e}"),
                format!("check `{key}` in {file}"),
            )),
        }
    }
    if accepted > 0 {
        out.push(Finding::ok(
            "dtp.certificate",
            format!(
                "the client certificate was accepted at the TLS layer; {}",
                thumbprint
                    .map(|t| format!("its SHA-1 thumbprint is {t} (what UNHCR pins; only a POST would show the pin is checked)"))
                    .unwrap_or_default()
            ),
        ));
    }
}
