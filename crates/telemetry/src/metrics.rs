//! Process-wide metrics in the Prometheus / OpenMetrics text format.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `bridge_records_total` | counter | `flow`, `outcome` |
//! | `bridge_runs_total` | counter | `flow`, `outcome` |
//! | `bridge_run_duration_seconds` | histogram | `flow` |
//! | `bridge_partner_retries_total` | counter | `system` |
//! | `bridge_partner_slot_waits_total` | counter | `system` (calls that waited for a cluster-wide slot) |
//! | `bridge_partner_limits_local_only_total` | counter | `system` (calls started under this replica's limits only: the state database could not be used) |
//! | `bridge_dead_letter_size` | gauge | `flow` |
//! | `bridge_job_call_seconds` | histogram (10 µs … 2.6 s) | `job` |
//! | `bridge_job_log_lines_dropped_total` | counter | `job` |
//! | `bridge_component_load_seconds` | histogram | `job`, `source` (`cache` \| `compiled`) |
//! | `bridge_inbox_pending` | gauge | — |
//! | `bridge_store_errors_total` | counter | `code` (e.g. `store-full`, `store-replaced`) |
//! | `bridge_inbox_connections_closed_total` | counter | `reason` (`over-cap` \| `idle` \| `header`) |
//! | `bridge_alerts_pending` | gauge | — (alerts not yet delivered to the webhook) |
//! | `bridge_alert_deliveries_total` | counter | `flow`, `outcome` (`delivered` \| `retry`) |
//! | `bridge_job_info` | gauge, always 1 | `job`, `version`, `hash` (SHA-256 of the component serving) |
//! | `bridge_records_held` | gauge | `flow` (records held in the flow's last run: held now) |
//! | `bridge_last_success_timestamp_seconds` | gauge | `flow` (end of the last run that was not aborted) |
//! | `bridge_last_delivered_timestamp_seconds` | gauge | `flow` (end of the last run that delivered a record) |
//! | `bridge_replica_info` | gauge, always 1 | `replica` (this process's replica id) |
//! | `bridge_lease_held` | gauge | `lease` (1 while this replica holds it, e.g. `flow:ping-1.1`) |
//! | `bridge_leases_lost_total` | counter | `lease` (runs stopped because their lease was lost) |
//!
//! Label values are system ids and codes only (flow ids, job names, outcome
//! labels, partner system names), never record content.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabel {
    replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseLabel {
    lease: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowOutcome {
    flow: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabel {
    flow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SystemLabel {
    system: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobInfoLabels {
    job: String,
    version: String,
    hash: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoadLabels {
    job: String,
    source: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn run_duration_histogram() -> Histogram {
    Histogram::new([
        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    ])
}

fn job_call_histogram() -> Histogram {
    // 10 µs, 40 µs, 160 µs, … 2.6 s.
    Histogram::new(exponential_buckets(1e-5, 4.0, 10))
}

fn component_load_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// The bridge's metrics; get the process-wide instance with [`metrics()`].
pub struct Metrics {
    registry: Registry,
    records: Family<FlowOutcome, Counter>,
    runs: Family<FlowOutcome, Counter>,
    run_duration: HistogramFamily<FlowLabel>,
    retries: Family<SystemLabel, Counter>,
    slot_waits: Family<SystemLabel, Counter>,
    local_only: Family<SystemLabel, Counter>,
    dead_letter: Family<FlowLabel, Gauge>,
    job_call: HistogramFamily<JobLabel>,
    job_log_dropped: Family<JobLabel, Counter>,
    component_load: HistogramFamily<LoadLabels>,
    inbox_pending: Gauge,
    store_errors: Family<CodeLabel, Counter>,
    inbox_closed: Family<ReasonLabel, Counter>,
    alerts_pending: Gauge,
    alert_deliveries: Family<FlowOutcome, Counter>,
    job_info: Family<JobInfoLabels, Gauge>,
    held: Family<FlowLabel, Gauge>,
    last_success: Family<FlowLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    last_delivered: Family<FlowLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    replica_info: Family<ReplicaLabel, Gauge>,
    lease_held: Family<LeaseLabel, Gauge>,
    leases_lost: Family<LeaseLabel, Counter>,
    /// The label set of `bridge_job_info` each job has now, to drop it when
    /// another version is swapped in.
    job_info_current: std::sync::Mutex<std::collections::BTreeMap<String, JobInfoLabels>>,
}

/// The process-wide metrics, created on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let records = Family::<FlowOutcome, Counter>::default();
        let runs = Family::<FlowOutcome, Counter>::default();
        let run_duration: HistogramFamily<FlowLabel> =
            Family::new_with_constructor(run_duration_histogram);
        let retries = Family::<SystemLabel, Counter>::default();
        let slot_waits = Family::<SystemLabel, Counter>::default();
        let local_only = Family::<SystemLabel, Counter>::default();
        let dead_letter = Family::<FlowLabel, Gauge>::default();
        let job_call: HistogramFamily<JobLabel> = Family::new_with_constructor(job_call_histogram);
        let job_log_dropped = Family::<JobLabel, Counter>::default();
        let component_load: HistogramFamily<LoadLabels> =
            Family::new_with_constructor(component_load_histogram);
        let inbox_pending = Gauge::default();
        let store_errors = Family::<CodeLabel, Counter>::default();
        let inbox_closed = Family::<ReasonLabel, Counter>::default();
        let alerts_pending = Gauge::default();
        let alert_deliveries = Family::<FlowOutcome, Counter>::default();
        let job_info = Family::<JobInfoLabels, Gauge>::default();
        let held = Family::<FlowLabel, Gauge>::default();
        let last_success = Family::<FlowLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let last_delivered =
            Family::<FlowLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();

        let mut registry = Registry::default();
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "bridge_records",
            "Records handled, by flow and outcome",
            records.clone(),
        );
        registry.register(
            "bridge_runs",
            "Flow runs finished, by flow and outcome",
            runs.clone(),
        );
        registry.register(
            "bridge_run_duration_seconds",
            "Duration of a flow run",
            run_duration.clone(),
        );
        registry.register(
            "bridge_partner_retries",
            "Calls to a partner system retried after a transient failure",
            retries.clone(),
        );
        registry.register(
            "bridge_partner_slot_waits",
            "Partner calls that waited for a cluster-wide call slot (all slots taken by the replicas)",
            slot_waits.clone(),
        );
        registry.register(
            "bridge_partner_limits_local_only",
            "Partner calls started under this replica's limits only: the cluster-wide limits' state database could not be used",
            local_only.clone(),
        );
        registry.register(
            "bridge_dead_letter_size",
            "Records in the dead letter, by flow",
            dead_letter.clone(),
        );
        registry.register(
            "bridge_job_call_seconds",
            "Duration of one call into a job component",
            job_call.clone(),
        );
        registry.register(
            "bridge_job_log_lines_dropped",
            "Job log lines dropped beyond the per-record limit",
            job_log_dropped.clone(),
        );
        registry.register(
            "bridge_component_load_seconds",
            "Time to load a job component, from the precompile cache or compiled",
            component_load.clone(),
        );
        registry.register(
            "bridge_inbox_pending",
            "Inbox messages received and not yet processed",
            inbox_pending.clone(),
        );
        registry.register(
            "bridge_store_errors",
            "Failed uses of the state database, by reason code",
            store_errors.clone(),
        );
        registry.register(
            "bridge_inbox_connections_closed",
            "Inbox connections refused over the cap or closed at a deadline, by reason",
            inbox_closed.clone(),
        );
        registry.register(
            "bridge_alerts_pending",
            "Alerts (e.g. consent revoked after a share) not yet delivered to the operator webhook",
            alerts_pending.clone(),
        );
        registry.register(
            "bridge_alert_deliveries",
            "Webhook deliveries of alerts, by flow of the alert and outcome",
            alert_deliveries.clone(),
        );
        registry.register(
            "bridge_job_info",
            "The job version serving: 1 for the job's current version and component hash",
            job_info.clone(),
        );
        registry.register(
            "bridge_records_held",
            "Records held in the flow's last run (waiting for a fix in a partner system): held now",
            held.clone(),
        );
        registry.register(
            "bridge_last_success_timestamp_seconds",
            "Unix time the flow's last run that was not aborted ended",
            last_success.clone(),
        );
        registry.register(
            "bridge_last_delivered_timestamp_seconds",
            "Unix time the flow's last run that delivered a record ended",
            last_delivered.clone(),
        );
        let replica_info = Family::<ReplicaLabel, Gauge>::default();
        let lease_held = Family::<LeaseLabel, Gauge>::default();
        let leases_lost = Family::<LeaseLabel, Counter>::default();
        registry.register(
            "bridge_replica_info",
            "This process's replica id (always 1)",
            replica_info.clone(),
        );
        registry.register(
            "bridge_lease_held",
            "1 while this replica holds the lease (a flow's runs: flow:<flow>)",
            lease_held.clone(),
        );
        registry.register(
            "bridge_leases_lost",
            "Runs stopped because this replica lost their lease",
            leases_lost.clone(),
        );
        Self {
            replica_info,
            lease_held,
            leases_lost,
            held,
            last_success,
            last_delivered,
            alerts_pending,
            alert_deliveries,
            registry,
            records,
            runs,
            run_duration,
            retries,
            slot_waits,
            local_only,
            dead_letter,
            job_call,
            job_log_dropped,
            component_load,
            inbox_pending,
            store_errors,
            inbox_closed,
            job_info,
            job_info_current: Default::default(),
        }
    }

    /// `bridge_alerts_pending`.
    pub fn set_alerts_pending(&self, n: i64) {
        self.alerts_pending.set(n);
    }

    /// One webhook delivery of an alert: `bridge_alert_deliveries_total{flow,outcome}`.
    pub fn alert_delivery(&self, flow: &str, outcome: &str) {
        self.alert_deliveries
            .get_or_create(&FlowOutcome {
                flow: flow.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The version of `job` now serving: `bridge_job_info{job,version,hash} 1`,
    /// replacing the series of the version it had.
    pub fn job_serving(&self, job: &str, version: &str, hash: &str) {
        let labels = JobInfoLabels {
            job: job.to_string(),
            version: version.to_string(),
            hash: hash.to_string(),
        };
        let mut current = self
            .job_info_current
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(old) = current.insert(job.to_string(), labels.clone()) {
            if old != labels {
                self.job_info.remove(&old);
            }
        }
        self.job_info.get_or_create(&labels).set(1);
    }

    /// One record handled: `bridge_records_total{flow,outcome}`.
    pub fn record(&self, flow: &str, outcome: &str) {
        self.records
            .get_or_create(&FlowOutcome {
                flow: flow.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// One run finished: `bridge_runs_total{flow,outcome}` and
    /// `bridge_run_duration_seconds{flow}`.
    pub fn run_finished(&self, flow: &str, outcome: &str, secs: f64) {
        self.runs
            .get_or_create(&FlowOutcome {
                flow: flow.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.run_duration
            .get_or_create(&FlowLabel {
                flow: flow.to_string(),
            })
            .observe(secs);
    }

    /// One retried partner call: `bridge_partner_retries_total{system}`.
    pub fn retry(&self, system: &str) {
        self.retries
            .get_or_create(&SystemLabel {
                system: system.to_string(),
            })
            .inc();
    }

    /// A partner call waited for a cluster-wide slot:
    /// `bridge_partner_slot_waits_total{system}`.
    pub fn partner_slot_wait(&self, system: &str) {
        self.slot_waits
            .get_or_create(&SystemLabel {
                system: system.to_string(),
            })
            .inc();
    }

    /// A partner call started under the replica's own limits only, the
    /// cluster-wide ones being unavailable:
    /// `bridge_partner_limits_local_only_total{system}`.
    pub fn partner_limits_local_only(&self, system: &str) {
        self.local_only
            .get_or_create(&SystemLabel {
                system: system.to_string(),
            })
            .inc();
    }

    /// Start the series an alert rule watches at 0 (a partner's retries,
    /// the state database's error codes a running service can meet), so
    /// `increase()`/`rate()` see the first one and the family is exported
    /// before anything went wrong.
    pub fn start_at_zero(&self, systems: &[&str], store_codes: &[&str]) {
        for system in systems {
            self.retries
                .get_or_create(&SystemLabel {
                    system: system.to_string(),
                })
                .inc_by(0);
        }
        for code in store_codes {
            self.store_errors
                .get_or_create(&CodeLabel {
                    code: code.to_string(),
                })
                .inc_by(0);
        }
    }

    /// `bridge_replica_info{replica} 1`.
    pub fn set_replica(&self, replica: &str) {
        self.replica_info
            .get_or_create(&ReplicaLabel {
                replica: replica.to_string(),
            })
            .set(1);
    }

    /// `bridge_lease_held{lease}`: 1 while this replica holds it.
    pub fn set_lease_held(&self, lease: &str, held: bool) {
        self.lease_held
            .get_or_create(&LeaseLabel {
                lease: lease.to_string(),
            })
            .set(i64::from(held));
    }

    /// A run stopped because its lease was lost: `bridge_leases_lost_total{lease}`.
    pub fn lease_lost(&self, lease: &str) {
        self.leases_lost
            .get_or_create(&LeaseLabel {
                lease: lease.to_string(),
            })
            .inc();
        self.set_lease_held(lease, false);
    }

    /// Records held in the flow's last run: `bridge_records_held{flow}`.
    pub fn set_held(&self, flow: &str, held: i64) {
        self.held
            .get_or_create(&FlowLabel {
                flow: flow.to_string(),
            })
            .set(held);
    }

    /// When the flow's last run that was not aborted ended (Unix seconds).
    pub fn set_last_success(&self, flow: &str, unix_seconds: f64) {
        self.last_success
            .get_or_create(&FlowLabel {
                flow: flow.to_string(),
            })
            .set(unix_seconds);
    }

    /// When the flow's last run that delivered a record ended (Unix seconds).
    pub fn set_last_delivered(&self, flow: &str, unix_seconds: f64) {
        self.last_delivered
            .get_or_create(&FlowLabel {
                flow: flow.to_string(),
            })
            .set(unix_seconds);
    }

    /// Dead-letter size of a flow: `bridge_dead_letter_size{flow}`.
    pub fn set_dead_letter(&self, flow: &str, size: i64) {
        self.dead_letter
            .get_or_create(&FlowLabel {
                flow: flow.to_string(),
            })
            .set(size);
    }

    /// One call into a job: `bridge_job_call_seconds{job}`.
    pub fn job_call(&self, job: &str, secs: f64) {
        self.job_call
            .get_or_create(&JobLabel {
                job: job.to_string(),
            })
            .observe(secs);
    }

    /// `records` mapped in one call of `secs`: each observed as its share
    /// (one label lookup for the whole batch).
    pub fn job_batch_call(&self, job: &str, secs: f64, records: usize) {
        let histogram = self.job_call.get_or_create(&JobLabel {
            job: job.to_string(),
        });
        let each = secs / records.max(1) as f64;
        for _ in 0..records {
            histogram.observe(each);
        }
    }

    /// Job log lines dropped over the per-record limit:
    /// `bridge_job_log_lines_dropped_total{job}`.
    pub fn job_log_lines_dropped(&self, job: &str, n: u32) {
        self.job_log_dropped
            .get_or_create(&JobLabel {
                job: job.to_string(),
            })
            .inc_by(u64::from(n));
    }

    /// One component load: `bridge_component_load_seconds{job,source}`,
    /// `source` being `cache` or `compiled`.
    pub fn component_load(&self, job: &str, secs: f64, from_cache: bool) {
        self.component_load
            .get_or_create(&LoadLabels {
                job: job.to_string(),
                source: if from_cache { "cache" } else { "compiled" }.to_string(),
            })
            .observe(secs);
    }

    /// Inbox messages waiting: `bridge_inbox_pending`.
    pub fn set_inbox_pending(&self, n: i64) {
        self.inbox_pending.set(n);
    }

    /// One failed use of the state database: `bridge_store_errors_total{code}`.
    pub fn store_error(&self, code: &str) {
        self.store_errors
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    /// An inbox connection refused or cut off:
    /// `bridge_inbox_connections_closed_total{reason}`.
    pub fn inbox_connection_closed(&self, reason: &str) {
        self.inbox_closed
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The text exposition (OpenMetrics), ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_carry_their_labels() {
        let m = Metrics::new();
        m.record("ping-1.1", "created");
        m.record("ping-1.1", "created");
        m.run_finished("ping-1.1", "ok", 1.5);
        m.retry("primero");
        m.partner_slot_wait("ping");
        m.partner_limits_local_only("dtp");
        m.set_dead_letter("ping-1.1", 3);
        m.job_call("ping-1.1", 0.00002);
        m.component_load("ping-1.1", 0.2, true);
        m.set_inbox_pending(4);
        m.store_error("store-full");
        m.job_serving("ping-1.1", "0.1.0", "aaa");
        m.job_serving("ping-1.1", "0.2.0", "bbb");
        let text = m.encode();
        assert!(
            !text.contains("hash=\"aaa\""),
            "the replaced version is gone:\n{text}"
        );
        for needle in [
            "bridge_records_total{flow=\"ping-1.1\",outcome=\"created\"} 2",
            "bridge_runs_total{flow=\"ping-1.1\",outcome=\"ok\"} 1",
            "bridge_run_duration_seconds_count{flow=\"ping-1.1\"} 1",
            "bridge_partner_retries_total{system=\"primero\"} 1",
            "bridge_partner_slot_waits_total{system=\"ping\"} 1",
            "bridge_partner_limits_local_only_total{system=\"dtp\"} 1",
            "bridge_dead_letter_size{flow=\"ping-1.1\"} 3",
            "bridge_job_call_seconds_bucket{le=\"0.00004\",job=\"ping-1.1\"} 1",
            "bridge_component_load_seconds_count{job=\"ping-1.1\",source=\"cache\"} 1",
            "bridge_inbox_pending 4",
            "bridge_store_errors_total{code=\"store-full\"} 1",
            "bridge_job_info{job=\"ping-1.1\",version=\"0.2.0\",hash=\"bbb\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
