//! Building an [`App`] from a validated `bridge.toml`: the state database,
//! the job runtime and catalog, and each configured partner's client.

use std::path::PathBuf;
use std::sync::Arc;

use bridge_flows::app::{job_files, App, Mode};
use bridge_flows::ledger::DeliveryPolicy;
use bridge_inbox::InboxProcessor;
use bridge_mappings::MappingSet;
use bridge_partners::ping::PingClient;
use bridge_runtime::{JobRuntime, RuntimeConfig};
use bridge_store::{Holder, Monitored, OpenMode, PostgresStore, SqliteStore, Store};

use crate::config::{ping_ids, BridgeConfig, StateTarget};

/// The App of a deployment: opens its state database (`mode`: whether
/// it may be created) and becomes its only writer, refusing to start
/// while another process writes it.
pub async fn from_config(
    config: &BridgeConfig,
    cache_dir: Option<PathBuf>,
    open: OpenMode,
) -> anyhow::Result<App> {
    from_config_as(config, cache_dir, Mode::Live, open).await
}

/// [`from_config`] in a [`Mode`]. A dry run works on a scratch copy
/// of the state database and does not become its writer: it runs beside
/// the service.
pub async fn from_config_as(
    config: &BridgeConfig,
    cache_dir: Option<PathBuf>,
    mode: Mode,
    open: OpenMode,
) -> anyhow::Result<App> {
    let dry_run = mode == Mode::DryRun;
    let mappings_dir = config.resolve(&config.jobs.mappings);
    let mappings = MappingSet::load_dir(&mappings_dir)?;
    if let Some(refusal) = mappings.placeholder_refusal() {
        if dry_run {
            // Nothing is written: a dry run may show what they would send.
            tracing::warn!("{refusal}");
            eprintln!("warning: {refusal}");
        } else if !config.jobs.allow_placeholders {
            anyhow::bail!("{}: key `jobs.mappings`: {refusal}", config.file.display());
        }
    }
    // Each partner's section builds its client: secrets read, the retry
    // policy and its own call limits applied.
    let retry = config.retry_policy();
    let section = |e| config.section_error(e);
    let ping = config
        .ping
        .as_ref()
        .map(|s| s.build(config, ping_ids(&mappings.deployment), retry))
        .transpose()
        .map_err(section)?;
    let dtp = config
        .dtp
        .as_ref()
        .map(|s| s.build(config, retry))
        .transpose()
        .map_err(section)?;
    let primero = config.primero_client_config()?;
    let jobs = job_files(&config.resolve(&config.jobs.dir))?;
    let store: Arc<dyn Store> = if dry_run {
        scratch_state(config).await?
    } else {
        match open_state(config, open).await? {
            Some(store) => store,
            None => Arc::new(Monitored::new(SqliteStore::in_memory().await?)),
        }
    };
    // Before the slow part (compiling the jobs): a second process is
    // refused at once.
    let writer = if dry_run {
        None
    } else {
        Some(store.acquire_writer(&Holder::current()).await?)
    };
    let runtime = job_runtime(config, cache_dir)?;
    let mut app = App::new(store, runtime, primero, None, &jobs, &mappings_dir).await?;
    if let Some(lease) = writer {
        app.hold_writer(lease);
    }
    app.ping = ping;
    app.dtp = dtp;
    app.delivery = DeliveryPolicy {
        max_attempts: config.delivery.max_attempts.max(1),
        max_held_runs: config.delivery.max_held_runs.max(1),
    };
    app.record_concurrency = config.delivery.record_concurrency.max(1);
    app.replica = config.replica();
    app.initial_cursors = config.initial_cursors();
    if !config.jobs.allow_placeholders {
        // A hot reload that brings placeholders back is refused too.
        app.catalog.refuse_placeholders();
    }
    if dry_run {
        app.dry_run = true;
        app.primero = app.primero.read_only();
        app.ping = app.ping.take().map(PingClient::read_only);
        app.dtp = app
            .dtp
            .take()
            .map(bridge_partners::dtp::DtpClient::read_only);
        return Ok(app);
    }
    // Replicas share a PostgreSQL database: their partner limits are the
    // cluster's (before the inbox's dispatcher clones the clients).
    let shared = matches!(config.state_target()?, Some(StateTarget::Postgres(_)));
    let owner = app.replica.id.clone();
    crate::cluster_limits::share_partner_limits(&mut app, shared, &owner);
    if config.inbox.is_some() {
        let settings = config.inbox_settings()?;
        let dispatcher = bridge_inbox::Dispatcher::for_app(&app)?;
        app.inbox = Some(Arc::new(
            InboxProcessor::new(app.store.clone(), settings.sealer, Arc::new(dispatcher))
                .with_max_attempts(app.delivery.max_attempts)
                .with_replica(app.replica.clone())
                .with_retry_delay(settings.retry_delay),
        ));
    }
    Ok(app)
}

/// The deployment's state store (`[state]`: a SQLite file or a PostgreSQL
/// database), monitored as the service uses it; `None` without `[state]`.
/// `mode`: whether it may be created. Errors name the key; a PostgreSQL
/// URL's password is never shown.
pub async fn open_state(
    config: &BridgeConfig,
    mode: OpenMode,
) -> anyhow::Result<Option<Arc<dyn Store>>> {
    Ok(match config.state_target()? {
        Some(StateTarget::Sqlite(path)) => Some(Arc::new(Monitored::new(
            SqliteStore::open(&path, mode).await?,
        ))),
        Some(StateTarget::Postgres(url)) => Some(Arc::new(Monitored::new(
            PostgresStore::open(&url, mode).await?,
        ))),
        None => None,
    })
}

/// What a dry run works on: a private copy of the state, thrown away after
/// the run; the deployment's own database is only read. SQLite: a scratch
/// copy of the file. PostgreSQL: an in-memory SQLite store seeded, in one
/// read-only snapshot, with what a run reads (cursors, deliveries, attempts,
/// the dead letter, shared cases, run history); nothing on the server is
/// written, not even a migration. Without a database: an empty store.
pub async fn scratch_state(config: &BridgeConfig) -> anyhow::Result<Arc<dyn Store>> {
    let scratch = match config.state_target()? {
        Some(StateTarget::Sqlite(path)) => SqliteStore::scratch_copy_of(&path).await?,
        Some(StateTarget::Postgres(url)) => PostgresStore::snapshot_of(&url).await?,
        None => SqliteStore::in_memory().await?,
    };
    Ok(Arc::new(Monitored::new(scratch)))
}

/// The job runtime a config asks for: its `[jobs]` limits, the approvals
/// gate, and the precompile cache folder.
pub fn job_runtime(
    config: &BridgeConfig,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<Arc<JobRuntime>> {
    let mut rc = RuntimeConfig::default();
    if let Some(dir) = cache_dir {
        rc.cache_dir = dir;
    }
    if let Some(ms) = config.jobs.call_timeout_ms {
        rc.limits.call_timeout = std::time::Duration::from_millis(ms);
    }
    if let Some(mib) = config.jobs.memory_mib {
        rc.limits.memory_bytes = mib * 1024 * 1024;
    }
    if let Some(n) = config.jobs.recycle_after_records {
        rc.limits.recycle_after_calls = n;
    }
    if let Some(n) = config.jobs.pool_size {
        rc.limits.pool_size = n;
    }
    let mut runtime = JobRuntime::new(rc)?;
    if let Some(gate) = config.approval_gate()? {
        runtime = runtime.with_approvals(Arc::new(gate));
    }
    Ok(Arc::new(runtime))
}
