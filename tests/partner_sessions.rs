//! Partner sessions opened ahead (issue 18): a run logs in to the partner it
//! needs second while it works with the first, so its first records do not
//! all wait for that login; a run with nothing to do logs in to no partner
//! it does not need.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_demo::scenario::Simulators;
use bridge_flows::app::App;
use bridge_sim::people::{PeopleGenerator, Person};
use bridge_store::{SqliteStore, Trigger};

use super::durable::{app_with, project, seed};

const FLOW: &str = "ping-1.1";
const TODAY: &str = "2025-06-01";
/// Every call to either partner takes this long.
const LATENCY: Duration = Duration::from_millis(150);

/// An app on the simulators with Primero in v2.10 token mode.
async fn app_with_primero_tokens(sims: &Simulators) -> App {
    let store = Arc::new(SqliteStore::in_memory().await.unwrap());
    app_with(sims, &project(), store, sims.primero_token_client_config()).await
}

/// `later - earlier`, negative when `later` came first.
fn signed_ms(later: Instant, earlier: Instant) -> i128 {
    match later.checked_duration_since(earlier) {
        Some(d) => d.as_millis() as i128,
        None => -(earlier.duration_since(later).as_millis() as i128),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workflow_1_1_logs_in_to_primero_while_it_reads_the_first_details() {
    let sims = Simulators::start_loopback().await.unwrap();
    let app = app_with_primero_tokens(&sims).await;
    let people: Vec<Person> = {
        let mut g = PeopleGenerator::new(91);
        vec![g.person()]
    };
    seed(&sims, &people, 0, 7600);
    sims.ping_sim().set_latency(LATENCY);
    sims.primero_sim().set_latency(LATENCY);

    let report = app
        .run_recorded_on(FLOW, Trigger::Manual, TODAY)
        .await
        .unwrap();
    assert_eq!(report.count("created"), 1, "{report}");
    assert_eq!(report.acknowledged(), 1, "{report}");

    // PING: the token, the listing, the details, the transfer status.
    // Primero: the login, the search, the create.
    let calls = sims.ping_sim().calls_in_order();
    assert_eq!(
        calls[..3],
        ["token", "retrieve SHP-2747", "retrieve SHP-2358"],
        "{calls:?}"
    );
    assert_eq!(sims.primero_sim().request_count("POST /api/v2/tokens"), 1);
    let ping = sims.ping_sim().arrival_times();
    let primero = sims.primero_sim().arrival_times();
    assert_eq!(
        primero.len(),
        3,
        "{:?}",
        sims.primero_sim().request_counts()
    );
    // The login went with the details read (both once the listing was
    // back), not one round trip after it, when the search needed it.
    let login_after_details = signed_ms(primero[0], ping[2]);
    assert!(
        login_after_details.abs() < (LATENCY / 2).as_millis() as i128,
        "the Primero login arrived {login_after_details} ms after the details read ({LATENCY:?} a call)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_with_nothing_pending_does_not_log_in_to_primero() {
    let sims = Simulators::start_loopback().await.unwrap();
    let app = app_with_primero_tokens(&sims).await;

    let report = app
        .run_recorded_on(FLOW, Trigger::Manual, TODAY)
        .await
        .unwrap();
    assert_eq!(report.fetched, 0, "{report}");
    assert_eq!(
        sims.ping_sim().calls_in_order(),
        ["token", "retrieve SHP-2747"]
    );
    assert_eq!(
        sims.primero_sim().request_counts().values().sum::<u64>(),
        0,
        "{:?}",
        sims.primero_sim().request_counts()
    );
}
