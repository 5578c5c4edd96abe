//! Delivers raised alerts (issue 16: consent revoked after a share) to the
//! operator's webhook: one signed JSON POST per alert, ids only, retried
//! with a doubling delay until the webhook answers 2xx. The alerts wait in
//! the state database, so a restart or a webhook outage loses none; the
//! receiver tells repeats apart by `alert_id`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::config::AlertSettings;
use bridge_store::{Alert, Store};

/// How often the dispatcher looks for due alerts.
const POLL: Duration = Duration::from_secs(5);
/// The longest wait between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Alerts sent per look.
const BATCH: i64 = 50;

/// Header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-bridge-signature";

/// What the webhook receives. Ids, codes and timestamps only.
#[derive(Debug, serde::Serialize)]
struct Payload<'a> {
    alert_id: i64,
    kind: &'a str,
    case_id: &'a str,
    flow: &'a str,
    run_id: &'a str,
    raised_at: &'a str,
    /// What the receiver is expected to do.
    action: &'static str,
}

fn action(kind: &str) -> &'static str {
    match kind {
        bridge_store::CONSENT_REVOKED => {
            "start the manual consent-withdrawal procedure agreed in the ISP for this case; the bridge sends nothing itself"
        }
        _ => "see the operator guide",
    }
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub struct Dispatcher {
    settings: AlertSettings,
    store: Arc<dyn Store>,
    client: reqwest::Client,
}

impl Dispatcher {
    pub fn new(settings: AlertSettings, store: Arc<dyn Store>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            settings,
            store,
            client,
        })
    }

    /// Deliver what is due now; returns how many were delivered.
    pub async fn deliver_due(&self) -> usize {
        let due = match self.store.alerts_due(&bridge_store::now(), BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the alerts due");
                return 0;
            }
        };
        let mut delivered = 0;
        for alert in &due {
            if self.deliver(alert).await {
                delivered += 1;
            }
        }
        if let Ok(pending) = self.store.alerts(true).await {
            bridge_telemetry::metrics().set_alerts_pending(pending.len() as i64);
        }
        delivered
    }

    async fn deliver(&self, alert: &Alert) -> bool {
        let body = serde_json::to_vec(&Payload {
            alert_id: alert.id,
            kind: &alert.kind,
            case_id: &alert.case_id,
            flow: &alert.flow,
            run_id: &alert.run_id,
            raised_at: &alert.raised_at,
            action: action(&alert.kind),
        })
        .unwrap_or_default();
        let signature = sign(&self.settings.secret, &body);
        let answer = self
            .client
            .post(&self.settings.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header("x-bridge-alert-id", alert.id.to_string())
            .body(body)
            .send()
            .await;
        // Only a status or an error class is kept: never the far side's text.
        let error = match answer {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("http-{}", r.status().as_u16())),
            Err(e) if e.is_timeout() => Some("timeout".into()),
            Err(e) if e.is_connect() => Some("unreachable".into()),
            Err(_) => Some("request-failed".into()),
        };
        let metrics = bridge_telemetry::metrics();
        match error {
            None => {
                metrics.alert_delivery(&alert.flow, "delivered");
                tracing::info!(alert = alert.id, kind = %alert.kind, case = %alert.case_id, "alert delivered to the webhook");
                if let Err(e) = self.store.alert_delivered(alert.id).await {
                    // Sent again later: the receiver sees the same alert_id.
                    tracing::warn!(alert = alert.id, error = %e, "alert delivered but not recorded");
                }
                true
            }
            Some(code) => {
                metrics.alert_delivery(&alert.flow, "retry");
                let delay = self.delay(alert.attempts);
                let next = Utc::now() + delay;
                tracing::warn!(alert = alert.id, code = %code, retry_in_secs = delay.as_secs(), "alert webhook failed; retried");
                let next = bridge_flows::outbound_referrals::format_cursor(next);
                if let Err(e) = self.store.alert_retry(alert.id, &next, &code).await {
                    tracing::warn!(alert = alert.id, error = %e, "alert retry not recorded");
                }
                false
            }
        }
    }

    /// `retry`, doubled per attempt so far, at most an hour.
    fn delay(&self, attempts: i64) -> Duration {
        let factor = 1u32 << attempts.clamp(0, 16) as u32;
        self.settings.retry.saturating_mul(factor).min(MAX_DELAY)
    }

    /// Deliver due alerts every few seconds until `stop`.
    pub fn spawn(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                self.deliver_due().await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        let sig = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
