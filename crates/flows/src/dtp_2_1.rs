//! DTP flow 2-1 / 2-2 (design A, Gambella): Primero referral → proGres via DTP.
//!
//! cases associated with the UNHCR recipient user (deployment `unhcr_user`)
//! changed since the cursor (paged) → per case `GET referrals` → users (once
//! per run, only if needed) → job `dtp-2.1` (which services
//! are new UNHCR referrals; the `ReceiveIncomingReferral` body) → POST to
//! DTP. Shared steps and the cursor rules: [`super::outbound_referrals`].
//!
//! Better than the original: a DTP error fails that referral only (the
//! original aborted the run); it is sent again next run, and a referral DTP
//! accepted is never sent twice.

use futures::future::BoxFuture;

use crate::app::App;
use crate::registry::{Design, FlowRun, FlowSpec, Intake, Partner};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::outbound_referrals::{
    left_sending, maybe_applied, partner_failure, Deliver, EmittedReferral, OutboundRun,
    FP_DELIVERED, FP_NOT_SENT, FP_SENDING,
};
use super::report::{would_write, RecordOutcome, RunReport};
use super::sharing_check::{Destination, SharingCheck};
use bridge_partners::dtp::{DtpClient, DtpEndpoint};
use bridge_partners::primero::PrimeroClient;
use bridge_runtime::reload::Catalog;
use bridge_store::{Delivery, Store};

/// The flow's one name: its id (config, state, logs, metrics), its job and
/// the job's folder `jobs/<name>/`.
pub const FLOW: &str = "dtp-2.1";
pub const SPEC: FlowSpec = FlowSpec {
    name: FLOW,
    title: "Primero referral → proGres via DTP (DTP flows 2-1/2-2)",
    design: Design::Dtp,
    intake: Intake::Cursor(run),
    partners: &[Partner::Primero, Partner::Dtp],
};

fn run<'a>(app: &'a App, run: FlowRun<'a>) -> BoxFuture<'a, anyhow::Result<RunReport>> {
    Box::pin(async move {
        let dtp = app.dtp_for(FLOW)?;
        Ok(Dtp21 {
            records: run.records,
            primero: &app.primero,
            dtp,
            store: run.store,
            catalog: &app.catalog,
            ledger: run.ledger,
            stop: run.stop,
            holding: run.holding,
            concurrency: app.record_concurrency,
            initial_cursor: app.initial_cursors.get(FLOW).copied(),
            dry_run: app.dry_run,
        }
        .run(run.run_id, run.today)
        .await)
    })
}

/// The clients and versions one run works with.
pub struct Dtp21<'a> {
    /// A recorded run's: where the report streams its records.
    pub records: Option<crate::record_stream::RecordStream>,
    pub primero: &'a PrimeroClient,
    pub dtp: &'a DtpClient,
    pub store: &'a dyn Store,
    pub catalog: &'a Catalog,
    pub ledger: &'a crate::ledger::Ledger<'a>,
    pub stop: &'a tokio_util::sync::CancellationToken,
    /// Whether the flow's lease can still be counted on (checked before
    /// each referral is sent).
    pub holding: &'a crate::lease::Holding,
    /// Deliveries handed to the partner at once.
    pub concurrency: usize,
    pub initial_cursor: Option<chrono::DateTime<chrono::Utc>>,
    pub dry_run: bool,
}

/// The DTP part of what the job emits: the flat body of example 10.
#[derive(Debug, Clone, Deserialize)]
pub struct DtpPayload {
    pub body: Map<String, Value>,
}

struct DtpDelivery<'a> {
    dtp: &'a DtpClient,
    store: &'a dyn Store,
    /// An operator's replay: a referral left `sending` goes again.
    replaying: bool,
}

impl Deliver for DtpDelivery<'_> {
    type Payload = DtpPayload;

    async fn deliver(
        &self,
        item: &EmittedReferral<DtpPayload>,
        previous: Option<&Delivery>,
        sharing: &SharingCheck,
    ) -> RecordOutcome {
        if let Some(unknown) = left_sending(previous, self.replaying, "DTP") {
            return unknown;
        }
        if let Err(refused) = sharing.check(Destination::DtpIncomingReferral, &item.payload.body) {
            return refused;
        }
        // Recorded before it is sent: a process that stops before the
        // answer is recorded must not leave the next run to send it again.
        let record = |fingerprint| {
            self.store
                .record_delivery(FLOW, &item.service_id, fingerprint, None)
        };
        if let Err(e) = record(FP_SENDING).await {
            return RecordOutcome::Failed {
                code: "state".into(),
                reason: format!("not sent: {e}"),
            };
        }
        if let Err(e) = self
            .dtp
            .post(DtpEndpoint::ReceiveIncomingReferral, &item.payload.body)
            .await
        {
            // A refusal DTP surely did not apply is sent again next run.
            if !maybe_applied(&e) {
                if let Err(e) = record(FP_NOT_SENT).await {
                    tracing::warn!(error = %e, "state database: a referral DTP refused stays `sending`");
                }
            }
            return partner_failure(&e);
        }
        let target = correlation_id(item);
        if let Err(e) = self
            .store
            .record_delivery(FLOW, &item.service_id, FP_DELIVERED, target.as_deref())
            .await
        {
            return RecordOutcome::Failed {
                code: "state".into(),
                reason: format!("sent to DTP, but not recorded: {e}"),
            };
        }
        RecordOutcome::Sent { target_id: target }
    }

    fn planned(
        &self,
        item: &EmittedReferral<DtpPayload>,
        previous: Option<&Delivery>,
    ) -> RecordOutcome {
        if let Some(unknown) = left_sending(previous, self.replaying, "DTP") {
            return unknown;
        }
        would_write("post-referral", correlation_id(item))
    }
}

/// DTP's correlation id `<case_id>#<last 12 of the service id>`: system ids only.
fn correlation_id(item: &EmittedReferral<DtpPayload>) -> Option<String> {
    item.payload
        .body
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
}

impl Dtp21<'_> {
    /// Run the flow once.
    pub async fn run(&self, run_id: &str, today: &str) -> RunReport {
        let mappings = self.catalog.mappings();
        let Some(unhcr_user) = mappings.deployment.unhcr_user.clone() else {
            return RunReport::aborted(
                FLOW,
                run_id,
                format!(
                    "{}/deployment.toml [deployment] needs unhcr_user",
                    mappings.dir.display()
                ),
            );
        };
        OutboundRun {
            records: self.records.clone(),
            flow: FLOW,
            primero: self.primero,
            store: self.store,
            catalog: self.catalog,
            ledger: self.ledger,
            stop: self.stop,
            holding: self.holding,
            concurrency: self.concurrency,
            initial_cursor: self.initial_cursor,
            dry_run: self.dry_run,
            associated_user: Some(unhcr_user),
            deliver: DtpDelivery {
                dtp: self.dtp,
                store: self.store,
                replaying: self.ledger.replay().is_some(),
            },
        }
        .run(run_id, today)
        .await
    }
}
