//! The registry of flows: what each flow is, declared once by the flow's own
//! module as a [`FlowSpec`], listed once in `lib.rs` (`flows!`). Everything
//! that used to keep a list of flows asks here: `bridge flow run`, the
//! scheduler and `[schedule]` check, the cursor flows and `initial_cursor`
//! check, the inbox's dispatch by message kind, the design check of jobs and
//! mapping folders, and which partner sections a flow needs.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::app::App;
use crate::ledger::Ledger;
use crate::pushed::{InboxHandler, InboxKind};
use crate::RunReport;

/// Which of the two designs a flow belongs to; a deployment uses one
/// (`design` in the mapping folder's `deployment.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// Design B: proGres through UNHCR's PING middleware.
    Ping,
    /// Design A: proGres through DTP (mutual TLS, and an inbox DTP pushes to).
    Dtp,
}

impl Design {
    /// As `deployment.toml` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Design::Ping => "ping",
            Design::Dtp => "dtp",
        }
    }
}

/// A partner system a flow talks to; each is one config section and one
/// client (crate `bridge-partners`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partner {
    Primero,
    Ping,
    Dtp,
}

impl Partner {
    /// The config section that configures it.
    pub fn section(self) -> &'static str {
        match self {
            Partner::Primero => "[primero]",
            Partner::Ping => "[ping]",
            Partner::Dtp => "[dtp]",
        }
    }
}

/// One run of a scheduled flow: what it is given besides the [`App`].
pub struct FlowRun<'a> {
    pub run_id: &'a str,
    /// The jobs' date, `YYYY-MM-DD`.
    pub today: &'a str,
    /// Attempts so far and the dead letter, for this flow.
    pub ledger: &'a Ledger<'a>,
    /// The state as this run may write it: cursor commits and delivery
    /// records fenced by the flow's lease.
    pub store: &'a dyn bridge_store::Store,
    /// Cancelled on shutdown or when the lease is lost: finish the records
    /// in flight, start no more.
    pub stop: &'a tokio_util::sync::CancellationToken,
    /// Whether the flow's lease can still be counted on: checked before a
    /// partner write that rests on an earlier answer (a case created after a
    /// search), since the run may have been suspended in between.
    pub holding: &'a crate::lease::Holding,
    /// A recorded run's: where its report streams the records
    /// ([`crate::report::RunReport::stream_to`]).
    pub records: Option<crate::record_stream::RecordStream>,
}

/// Runs a scheduled flow once.
pub type RunFn = for<'a> fn(&'a App, FlowRun<'a>) -> BoxFuture<'a, anyhow::Result<RunReport>>;

/// Gives the handler of a pushed flow's messages.
pub type HandlerFn = fn(&App) -> anyhow::Result<Arc<dyn InboxHandler>>;

/// How a flow gets its records.
#[derive(Clone, Copy)]
pub enum Intake {
    /// Reads Primero from a stored cursor (an `initial_cursor` applies); run
    /// on a schedule.
    Cursor(RunFn),
    /// Pulls what a partner holds pending (the partner's queue is the
    /// cursor); run on a schedule.
    Pull(RunFn),
    /// Handles the messages of one kind a partner pushes to the inbox.
    Pushed(InboxKind, HandlerFn),
}

/// A flow, as its module declares it.
pub struct FlowSpec {
    /// The flow's one name: its id in config, state, logs and metrics, its
    /// job's name and `jobs/` folder; its module is this with `_` for `-`
    /// and `.`.
    pub name: &'static str,
    /// What it moves, for people.
    pub title: &'static str,
    pub design: Design,
    pub intake: Intake,
    /// The partners it talks to; a deployment that runs it configures each.
    pub partners: &'static [Partner],
}

impl std::fmt::Debug for FlowSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowSpec")
            .field("name", &self.name)
            .finish()
    }
}

impl FlowSpec {
    /// The name of the flow's own job, which transforms its records unless
    /// the deployment names a variant in its place (`[jobs]` in
    /// `deployment.toml`; `Catalog::job_for` gives the one serving).
    pub fn job(&self) -> &'static str {
        self.name
    }

    /// Run by the scheduler or `bridge flow run` (not pushed).
    pub fn is_scheduled(&self) -> bool {
        !matches!(self.intake, Intake::Pushed(..))
    }

    pub fn reads_cursor(&self) -> bool {
        matches!(self.intake, Intake::Cursor(_))
    }

    pub fn needs(&self, partner: Partner) -> bool {
        self.partners.contains(&partner)
    }
}

/// Every flow.
pub fn all() -> &'static [&'static FlowSpec] {
    crate::FLOWS
}

/// The flow of this name.
pub fn get(name: &str) -> Option<&'static FlowSpec> {
    all().iter().copied().find(|f| f.name == name)
}

/// The names of the flows that run on a schedule (and `bridge flow run`).
pub fn scheduled_names() -> Vec<&'static str> {
    names(FlowSpec::is_scheduled)
}

/// The names of the flows that read Primero from a cursor.
pub fn cursor_names() -> Vec<&'static str> {
    names(FlowSpec::reads_cursor)
}

/// The names of the flows fed by the inbox: their dead letters are inbox
/// messages.
pub fn pushed_names() -> Vec<&'static str> {
    names(|f| !f.is_scheduled())
}

fn names(keep: impl Fn(&FlowSpec) -> bool) -> Vec<&'static str> {
    all().iter().filter(|f| keep(f)).map(|f| f.name).collect()
}

/// Why a flow's cursor may not be moved by an operator in a deployment of
/// `design` (`deployment.toml`), or `None` when it may. One check for
/// `bridge cursor set` and the console: a cursor of a flow that reads none
/// would be stored and never read, and one of the other design's flows
/// would start that flow's history the day the design changes.
pub fn cursor_move_refusal(flow: &str, design: &str) -> Option<String> {
    let Some(spec) = get(flow) else {
        return Some(format!(
            "unknown flow `{flow}`; flows with a cursor: {}",
            cursor_names().join(", ")
        ));
    };
    if spec.design.as_str() != design {
        return Some(format!(
            "flow {flow} belongs to the {} design; this deployment uses the {design} design",
            spec.design.as_str()
        ));
    }
    if !spec.reads_cursor() {
        let why = if spec.is_scheduled() {
            "it pulls what the partner holds pending (the partner's queue is its cursor)"
        } else {
            "it handles messages pushed to the inbox"
        };
        return Some(format!(
            "flow {flow} has no cursor: {why}; flows with a cursor: {}",
            names(|f| f.reads_cursor() && f.design.as_str() == design).join(", ")
        ));
    }
    None
}

/// The flow that handles pushed messages of this kind.
pub fn handling(kind: InboxKind) -> Option<&'static FlowSpec> {
    all()
        .iter()
        .copied()
        .find(|f| matches!(f.intake, Intake::Pushed(k, _) if k == kind))
}

/// A flow's config needs: the error for the first partner it needs that
/// the App has no client for.
pub fn missing_partner(spec: &FlowSpec, app: &App) -> Option<String> {
    spec.partners
        .iter()
        .find(|p| match p {
            Partner::Primero => false,
            Partner::Ping => app.ping.is_none(),
            Partner::Dtp => app.dtp.is_none(),
        })
        .map(|p| {
            format!(
                "flow {} needs a {} section in the config",
                spec.name,
                p.section()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_moves_only_for_cursor_flows_of_the_design() {
        assert_eq!(cursor_move_refusal("ping-2.1", "ping"), None);
        assert_eq!(cursor_move_refusal("dtp-1.2", "dtp"), None);
        let other = cursor_move_refusal("dtp-2.1", "ping").unwrap();
        assert!(other.contains("dtp design"), "{other}");
        let pull = cursor_move_refusal("ping-1.1", "ping").unwrap();
        assert!(
            pull.contains("has no cursor") && pull.contains("ping-2.1"),
            "{pull}"
        );
        let pushed = cursor_move_refusal("dtp-1.1", "dtp").unwrap();
        assert!(pushed.contains("inbox"), "{pushed}");
        assert!(cursor_move_refusal("ping-9", "ping")
            .unwrap()
            .contains("unknown flow"));
    }

    #[test]
    fn names_are_unique_and_name_their_module() {
        let mut seen = std::collections::BTreeSet::new();
        for f in all() {
            assert!(seen.insert(f.name), "{} twice", f.name);
            // The runtime tells a job's design by this prefix
            // (`bridge_runtime::reload::serves_other_design`).
            assert!(
                f.name.starts_with(&format!("{}-", f.design.as_str())),
                "{} is not named for its design",
                f.name
            );
        }
    }

    #[test]
    fn every_message_kind_has_one_flow() {
        for kind in [
            InboxKind::PrimeroOutgoingReferral,
            InboxKind::PrimeroIncomingReferralDecision,
        ] {
            let handling: Vec<_> = all()
                .iter()
                .filter(|f| matches!(f.intake, Intake::Pushed(k, _) if k == kind))
                .collect();
            assert_eq!(handling.len(), 1, "{kind:?}");
        }
    }

    #[test]
    fn the_lists_are_derived() {
        assert_eq!(
            scheduled_names(),
            ["ping-1.1", "ping-2.1", "dtp-2.1", "ping-1.2", "ping-2.2", "dtp-1.2"]
        );
        assert_eq!(
            cursor_names(),
            ["ping-2.1", "dtp-2.1", "ping-1.2", "dtp-1.2"]
        );
        assert_eq!(pushed_names(), ["dtp-1.1", "dtp-2.3"]);
    }
}
