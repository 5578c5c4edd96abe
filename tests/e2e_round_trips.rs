//! Both designs' full round trips through the simulators: a referral goes one
//! way, a person decides on the other side, the decision comes back. Each step
//! is checked against what the partner simulators hold.

use std::sync::Arc;

use bridge_demo::round_trip::{design_a, design_b, DtpSide, InboxSide};
use bridge_demo::scenario::Simulators;
use bridge_flows::app::App;
use bridge_partners::dtp::DtpClient;
use bridge_runtime::toolchain::ProjectDirs;
use bridge_runtime::{JobRuntime, RuntimeConfig};
use bridge_store::SqliteStore;

async fn app_for(project: &ProjectDirs, sims: &Simulators, country: &str) -> App {
    let runtime = Arc::new(JobRuntime::new(RuntimeConfig::default()).unwrap());
    let store = Arc::new(SqliteStore::in_memory().await.unwrap());
    sims.app(
        store,
        runtime,
        &project.jobs_dist(),
        &project.mappings(country),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn design_b_round_trips_complete() {
    let project = ProjectDirs::locate().unwrap();
    project.build_jobs(&[]).unwrap();
    let sims = Simulators::start_loopback().await.unwrap();
    let app = app_for(&project, &sims, "kenya-dadaab").await;
    let rt = design_b(&app, &sims, "2025-06-01").await.unwrap();
    assert!(rt.ok(), "{rt}");
    assert_eq!(rt.steps.len(), 16, "{rt}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn design_a_round_trips_complete() {
    let project = ProjectDirs::locate().unwrap();
    project.build_jobs(&[]).unwrap();
    let sims = Simulators::start_loopback().await.unwrap();
    let mut app = app_for(&project, &sims, "ethiopia-gambella").await;
    let dtp = DtpSide::start().await.unwrap();
    app.dtp = Some(DtpClient::new(dtp.client_config()).unwrap());
    let inbox = InboxSide::start(&app).await.unwrap();
    let rt = design_a(&app, &sims, &dtp, &inbox, "2025-06-01")
        .await
        .unwrap();
    assert!(rt.ok(), "{rt}");
    assert_eq!(rt.steps.len(), 17, "{rt}");
}
