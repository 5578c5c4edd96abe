//! PING workflow 1.2: Primero caseworker decisions on proGres referrals →
//! proGres transfer status (SHP-2748), one ingestion record per decision
//! (spec domain.md §1.B "Workflow 1.2", example 17).
//!
//! Changed cases → job `ping-1.2` per service → SHP-2748.
//! Paging, cursor and send-once are [`super::outgoing_decisions`]'. One POST
//! per decision (the original sent one for all) so PING's answer is per
//! decision: a record proGres refuses fails alone and is retried next run.

use futures::future::BoxFuture;

use crate::app::App;
use crate::registry::{Design, FlowRun, FlowSpec, Intake, Partner};
use serde::Deserialize;

use super::outgoing_decisions::{DecisionRun, EmittedDecision, SendDecision, Sent};
use super::report::RunReport;
use super::sharing_check::{Destination, SharingCheck};
use bridge_partners::ping::{IngestionRecord, PingClient};
use bridge_partners::primero::PrimeroClient;
use bridge_runtime::reload::Catalog;
use bridge_store::Store;

/// The flow's one name: its id (config, state, logs, metrics), its job and
/// the job's folder `jobs/<name>/`.
pub const FLOW: &str = "ping-1.2";
pub const SPEC: FlowSpec = FlowSpec {
    name: FLOW,
    title: "Primero decision on a proGres referral → proGres (PING workflow 1.2)",
    design: Design::Ping,
    intake: Intake::Cursor(run),
    partners: &[Partner::Primero, Partner::Ping],
};

fn run<'a>(app: &'a App, run: FlowRun<'a>) -> BoxFuture<'a, anyhow::Result<RunReport>> {
    Box::pin(async move {
        let ping = app.ping_for(FLOW)?;
        Ok(Ping12 {
            ping,
            primero: &app.primero,
            store: run.store,
            catalog: &app.catalog,
            ledger: run.ledger,
            stop: run.stop,
            initial_cursor: app.initial_cursors.get(FLOW).copied(),
            dry_run: app.dry_run,
        }
        .run(run.run_id, run.today)
        .await)
    })
}

/// The PING part of what the job emits.
#[derive(Debug, Clone, Deserialize)]
pub struct ProgresDecision {
    /// `progres_lpinterventionid` the decision is written to.
    pub intervention_id: String,
    /// The SHP-2748 ingestion record.
    pub record: IngestionRecord,
}

/// Sends one decision with SHP-2748.
pub struct PingSender<'a> {
    pub ping: &'a PingClient,
    pub shipping_process: String,
}

impl SendDecision for PingSender<'_> {
    type Payload = ProgresDecision;
    const ACTION: &'static str = "ingest-transfer-status";

    fn target_id(&self, item: &EmittedDecision<ProgresDecision>) -> Option<String> {
        Some(item.payload.intervention_id.clone())
    }

    async fn send(&self, item: &EmittedDecision<ProgresDecision>, sharing: &SharingCheck) -> Sent {
        // A field without a value is left out: `null` would blank it in proGres.
        let record = item.payload.record.without_empty_fields();
        if let Err(refused) = sharing.check(Destination::PingTransferStatus, &record) {
            return Sent::NotShared(refused);
        }
        match self
            .ping
            .ingest(&self.shipping_process, std::slice::from_ref(&record))
            .await
        {
            Ok(resp) if resp.failures().is_empty() => Sent::Delivered {
                target_id: self.target_id(item),
            },
            Ok(resp) => Sent::Refused(format!(
                "PING refused the transfer status ({}; transaction {})",
                resp.failures()
                    .iter()
                    .filter_map(|f| f.status.as_deref())
                    .collect::<Vec<_>>()
                    .join(", "),
                resp.sph_transaction_id.as_deref().unwrap_or("none")
            )),
            Err(e) => Sent::Failed(e),
        }
    }
}

/// The clients and versions one run works with.
pub struct Ping12<'a> {
    pub ping: &'a PingClient,
    pub primero: &'a PrimeroClient,
    pub store: &'a dyn Store,
    pub catalog: &'a Catalog,
    pub ledger: &'a crate::ledger::Ledger<'a>,
    pub stop: &'a tokio_util::sync::CancellationToken,
    pub initial_cursor: Option<chrono::DateTime<chrono::Utc>>,
    pub dry_run: bool,
}

impl Ping12<'_> {
    /// Run the workflow once. Never panics on partner or record errors: they
    /// end up in the report.
    pub async fn run(&self, run_id: &str, today: &str) -> RunReport {
        let mappings = self.catalog.mappings();
        let Some(sp) = mappings.shipping_processes.transfer_status.clone() else {
            return RunReport::aborted(
                FLOW,
                run_id,
                format!(
                    "{}/deployment.toml [shipping_processes] needs transfer_status",
                    mappings.dir.display()
                ),
            );
        };
        DecisionRun {
            flow: FLOW,
            primero: self.primero,
            store: self.store,
            catalog: self.catalog,
            ledger: self.ledger,
            stop: self.stop,
            send: PingSender {
                ping: self.ping,
                shipping_process: sp,
            },
            initial_cursor: self.initial_cursor,
            dry_run: self.dry_run,
        }
        .run(run_id, today)
        .await
    }
}
