//! DTP flow 1-2: Primero caseworker decisions on proGres referrals → DTP
//! `ReceiveDecisionOutgoingReferral` (spec domain.md §1.A "Flow 1-2",
//! examples 06 → 07).
//!
//! Changed cases → job `dtp-1.2` per service → one POST per
//! decision. Paging, cursor and send-once are [`super::outgoing_decisions`]':
//! a decision is posted once, a changed one again, and a DTP error fails that
//! decision alone (the original aborted the run and re-sent everything).

use futures::future::BoxFuture;

use crate::app::App;
use crate::registry::{Design, FlowRun, FlowSpec, Intake, Partner};
use serde::{Deserialize, Serialize};

use super::outgoing_decisions::{DecisionRun, EmittedDecision, SendDecision, Sent};
use super::report::RunReport;
use super::sharing_check::{Destination, SharingCheck};
use bridge_partners::dtp::{DtpClient, DtpEndpoint};
use bridge_partners::primero::PrimeroClient;
use bridge_runtime::reload::Catalog;
use bridge_store::Store;

/// The flow's one name: its id (config, state, logs, metrics), its job and
/// the job's folder `jobs/<name>/`.
pub const FLOW: &str = "dtp-1.2";
pub const SPEC: FlowSpec = FlowSpec {
    name: FLOW,
    title: "Primero decision on a proGres referral → DTP (DTP flow 1-2)",
    design: Design::Dtp,
    intake: Intake::Cursor(run),
    partners: &[Partner::Primero, Partner::Dtp],
};

fn run<'a>(app: &'a App, run: FlowRun<'a>) -> BoxFuture<'a, anyhow::Result<RunReport>> {
    Box::pin(async move {
        let dtp = app.dtp_for(FLOW)?;
        Ok(Dtp12 {
            dtp,
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

/// The body posted to DTP (example 07); field order as on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionBody {
    pub case_id: String,
    pub primero_user: Option<String>,
    pub progres_interventionnumber: String,
    pub status: String,
    pub closure_reason: String,
    pub request_type: String,
}

/// The DTP part of what the job emits.
#[derive(Debug, Clone, Deserialize)]
pub struct DtpDecision {
    /// The proGres intervention number (the id DTP knows the referral by).
    pub intervention_number: String,
    pub body: DecisionBody,
}

/// Posts one decision to DTP.
pub struct DtpSender<'a> {
    pub dtp: &'a DtpClient,
}

impl SendDecision for DtpSender<'_> {
    type Payload = DtpDecision;
    const ACTION: &'static str = "post-decision";

    fn target_id(&self, item: &EmittedDecision<DtpDecision>) -> Option<String> {
        Some(item.payload.intervention_number.clone())
    }

    async fn send(&self, item: &EmittedDecision<DtpDecision>, sharing: &SharingCheck) -> Sent {
        if let Err(refused) = sharing.check(Destination::DtpDecision, &item.payload.body) {
            return Sent::NotShared(refused);
        }
        match self
            .dtp
            .post(
                DtpEndpoint::ReceiveDecisionOutgoingReferral,
                &item.payload.body,
            )
            .await
        {
            Ok(()) => Sent::Delivered {
                target_id: self.target_id(item),
            },
            Err(e) => Sent::Failed(e),
        }
    }
}

/// The clients and versions one run works with.
pub struct Dtp12<'a> {
    pub dtp: &'a DtpClient,
    pub primero: &'a PrimeroClient,
    pub store: &'a dyn Store,
    pub catalog: &'a Catalog,
    pub ledger: &'a crate::ledger::Ledger<'a>,
    pub stop: &'a tokio_util::sync::CancellationToken,
    pub initial_cursor: Option<chrono::DateTime<chrono::Utc>>,
    pub dry_run: bool,
}

impl Dtp12<'_> {
    /// Run the flow once; partner and record errors end up in the report.
    pub async fn run(&self, run_id: &str, today: &str) -> RunReport {
        DecisionRun {
            flow: FLOW,
            primero: self.primero,
            store: self.store,
            catalog: self.catalog,
            ledger: self.ledger,
            stop: self.stop,
            send: DtpSender { dtp: self.dtp },
            initial_cursor: self.initial_cursor,
            dry_run: self.dry_run,
        }
        .run(run_id, today)
        .await
    }
}
