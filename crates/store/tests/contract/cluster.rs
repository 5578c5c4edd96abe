//! What replicas coordinate with: leases and fencing tokens, inbox claims,
//! partner slots and rate. On PostgreSQL several pools stand for several
//! replicas; on SQLite they share one file (one writer at a time).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bridge_store::{Fence, OpenMode, Store, StoreError};

use crate::Backend;

const LONG: Duration = Duration::from_secs(60);

/// `n` stores (pools) on the backend's database, as `n` replicas.
async fn replicas(b: &Backend, n: usize) -> Vec<Arc<dyn Store>> {
    let mut all = vec![b.store().await];
    for _ in 1..n {
        all.push(b.open(OpenMode::Existing).await.unwrap());
    }
    all
}

pub async fn a_lease_has_one_owner_until_it_expires_and_a_stale_fence_is_refused(b: Backend) {
    let store = b.store().await;
    let a = store
        .lease_acquire("flow:x", "a", LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.token, 1);
    assert!(a.expires_at > a.acquired_at, "{a:?}");
    assert!(store
        .lease_acquire("flow:x", "b", LONG)
        .await
        .unwrap()
        .is_none());
    // The owner renews and keeps its token.
    let again = store
        .lease_acquire("flow:x", "a", LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.token, 1);
    // Expired: another owner takes it with the next token.
    let short = store
        .lease_renew(&a, Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b2 = store
        .lease_acquire("flow:x", "b", LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b2.owner.as_str(), b2.token), ("b", 2));
    // The first owner's renewal and fenced writes are refused.
    assert!(store.lease_renew(&short, LONG).await.unwrap().is_none());
    let err = store
        .set_cursor_fenced(&a.fence(), "x", "2025-01-01T00:00:00Z")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err}");
    assert_eq!(err.code(), "store-fenced");
    assert!(err.to_string().contains("token is now 2"), "{err}");
    let err = store
        .record_delivery_fenced(&a.fence(), "x", "k", "fp", None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)));
    assert_eq!(store.cursor("x").await.unwrap(), None);
    assert_eq!(store.delivery("x", "k").await.unwrap(), None);
    // The new owner's go through.
    store
        .set_cursor_fenced(&b2.fence(), "x", "2025-01-01T00:00:00Z")
        .await
        .unwrap();
    store
        .record_delivery_fenced(&b2.fence(), "x", "k", "fp", Some("t"))
        .await
        .unwrap();
    assert_eq!(
        store.cursor("x").await.unwrap().as_deref(),
        Some("2025-01-01T00:00:00Z")
    );
    assert_eq!(
        store
            .delivery("x", "k")
            .await
            .unwrap()
            .unwrap()
            .target_id
            .as_deref(),
        Some("t")
    );
    // Released: free for anyone at once; the token moves on.
    store.lease_release(&b2).await.unwrap();
    let c = store
        .lease_acquire("flow:x", "c", LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.token, 3);
    // A release by a former owner changes nothing.
    store.lease_release(&b2).await.unwrap();
    assert!(store
        .lease_acquire("flow:x", "d", LONG)
        .await
        .unwrap()
        .is_none());
    let all = store.leases().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].owner, "c");
    // A fence on a lease that never existed holds nothing.
    let ghost = Fence::Lease {
        name: "flow:none".into(),
        token: 1,
    };
    let err = store.set_cursor_fenced(&ghost, "y", "v").await.unwrap_err();
    assert!(err.to_string().contains("gone"), "{err}");
}

pub async fn inbox_claims_give_each_message_once_until_the_claim_expires(b: Backend) {
    let store = b.store().await;
    for id in ["m1", "m2", "m3"] {
        store.inbox_put(id, "k", "key-1", b"sealed").await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let first = store.inbox_claim("a", LONG, 2).await.unwrap();
    let ids: Vec<_> = first.iter().map(|c| c.message.id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2"]);
    assert_eq!(first[0].message.claimed_by.as_deref(), Some("a"));
    let second = store.inbox_claim("b", LONG, 10).await.unwrap();
    let ids: Vec<_> = second.iter().map(|c| c.message.id.as_str()).collect();
    assert_eq!(ids, ["m3"]);
    assert!(store.inbox_claim("b", LONG, 10).await.unwrap().is_empty());
    // Claims show in the listings; pending ignores them.
    assert_eq!(store.inbox_pending().await.unwrap().len(), 3);
    assert_eq!(
        store.inbox_all().await.unwrap()[2].claimed_by.as_deref(),
        Some("b")
    );
    // A failed attempt frees the message for the next claim.
    store
        .inbox_failed("m1", "partner-unavailable", Duration::ZERO)
        .await
        .unwrap();
    let again = store
        .inbox_claim("b", Duration::from_millis(1), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message.attempts, 1);
    // b "crashes": its claim expires and c takes the message over; b's
    // fence no longer holds, c's does.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = store.inbox_claim("c", LONG, 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_ne!(taken[0].fence, again[0].fence);
    assert!(store
        .record_delivery_fenced(&again[0].fence, "dtp-1.1", "k", "fp", None)
        .await
        .is_err());
    store
        .record_delivery_fenced(&taken[0].fence, "dtp-1.1", "k", "fp", None)
        .await
        .unwrap();
    // Processed and deleted: its fence is gone with it.
    store.inbox_delete("m1").await.unwrap();
    let err = store
        .record_delivery_fenced(&taken[0].fence, "dtp-1.1", "k", "fp2", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "store-fenced");
    assert_eq!(
        store
            .delivery("dtp-1.1", "k")
            .await
            .unwrap()
            .unwrap()
            .fingerprint,
        "fp"
    );
    // Dead and revived messages carry no claim.
    store.inbox_set_dead("m2", "failed").await.unwrap();
    assert!(store.inbox_claim("d", LONG, 10).await.unwrap().is_empty());
    assert!(store.inbox_revive("m2").await.unwrap());
    let revived = store.inbox_claim("d", LONG, 10).await.unwrap();
    assert_eq!(revived.len(), 1);
    assert_eq!(revived[0].message.id, "m2");
    // A failed attempt waits out its backoff, for every claimant; a live
    // claim is renewed by its holder only, and a zero renewal gives it back.
    store
        .inbox_failed("m2", "partner-unavailable", Duration::from_millis(300))
        .await
        .unwrap();
    assert!(store.inbox_claim("e", LONG, 10).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let due = store.inbox_claim("e", LONG, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].message.id, "m2");
    assert!(store.inbox_renew(&due[0].fence, LONG).await.unwrap());
    assert!(!store.inbox_renew(&revived[0].fence, LONG).await.unwrap());
    assert!(store.inbox_claim("f", LONG, 10).await.unwrap().is_empty());
    assert!(store
        .inbox_renew(&due[0].fence, Duration::ZERO)
        .await
        .unwrap());
    assert_eq!(store.inbox_claim("f", LONG, 10).await.unwrap().len(), 1);
}

pub async fn partner_slots_and_rate_hold_for_every_owner(b: Backend) {
    let store = b.store().await;
    let s0 = store.slot_acquire("ping", 2, "a", LONG).await.unwrap();
    let s1 = store.slot_acquire("ping", 2, "b", LONG).await.unwrap();
    assert_eq!((s0, s1), (Some(0), Some(1)));
    assert_eq!(
        store.slot_acquire("ping", 2, "c", LONG).await.unwrap(),
        None
    );
    // Another partner has its own slots.
    assert_eq!(
        store.slot_acquire("primero", 1, "c", LONG).await.unwrap(),
        Some(0)
    );
    // Only the holder releases a slot.
    store.slot_release("ping", 0, "c").await.unwrap();
    assert_eq!(
        store.slot_acquire("ping", 2, "c", LONG).await.unwrap(),
        None
    );
    store.slot_release("ping", 0, "a").await.unwrap();
    assert_eq!(
        store.slot_acquire("ping", 2, "c", LONG).await.unwrap(),
        Some(0)
    );
    // More slots configured: the new one is free.
    assert_eq!(
        store.slot_acquire("ping", 3, "f", LONG).await.unwrap(),
        Some(2)
    );
    // A holder that died frees its slot when its time runs out.
    store.slot_release("ping", 1, "b").await.unwrap();
    assert_eq!(
        store
            .slot_acquire("ping", 2, "dies", Duration::from_millis(1))
            .await
            .unwrap(),
        Some(1)
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store.slot_acquire("ping", 2, "e", LONG).await.unwrap(),
        Some(1)
    );

    // One call an hour: the first may go now, each next one an hour after
    // the one before (computed send times, not measured ones).
    let hour = Duration::from_secs(3600);
    let mut waits = Vec::new();
    for _ in 0..4 {
        waits.push(store.rate_reserve("ping", hour).await.unwrap());
    }
    assert!(waits[0] < Duration::from_secs(60), "{waits:?}");
    for (k, w) in waits.iter().enumerate() {
        let due = hour * k as u32;
        assert!(*w <= due && *w + Duration::from_secs(60) > due, "{waits:?}");
    }
    // Another scope has its own rate.
    assert!(store.rate_reserve("primero", hour).await.unwrap() < Duration::from_secs(60));
}

/// Eight claimers on four pools drain 120 messages at once: every message
/// is claimed exactly once.
pub async fn concurrent_claimers_never_get_the_same_message(b: Backend) {
    let stores = replicas(&b, 4).await;
    for i in 0..120 {
        stores[0]
            .inbox_put(&format!("m{i:03}"), "k", "key", b"sealed")
            .await
            .unwrap();
    }
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let s = stores[n % 4].clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = s.inbox_claim(&format!("r{n}"), LONG, 3).await.unwrap();
                    if got.is_empty() {
                        break;
                    }
                    mine.extend(got.into_iter().map(|c| c.message.id));
                    tokio::task::yield_now().await;
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), 120, "claimed more than once: {}", all.len());
    assert_eq!(distinct.len(), 120);
}

/// Six replicas ask for the same free lease at once, ten times over:
/// exactly one gets it each time.
pub async fn owners_racing_for_a_lease_exactly_one_wins(b: Backend) {
    let stores = replicas(&b, 3).await;
    for round in 0..10 {
        let name = format!("flow:race-{round}");
        let tasks: Vec<_> = (0..6)
            .map(|n| {
                let s = stores[n % 3].clone();
                let name = name.clone();
                tokio::spawn(async move {
                    s.lease_acquire(&name, &format!("owner-{n}"), LONG)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            winners.extend(t.await.unwrap());
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(winners[0].token, 1);
        let held = stores[0].leases().await.unwrap();
        let held = held.iter().find(|l| l.name == name).unwrap();
        assert_eq!(held.owner, winners[0].owner);
    }
    // An expired lease raced for: one new owner, one token step.
    let first = stores[0]
        .lease_acquire("flow:again", "first", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let tasks: Vec<_> = (0..6)
        .map(|n| {
            let s = stores[n % 3].clone();
            tokio::spawn(async move {
                s.lease_acquire("flow:again", &format!("next-{n}"), LONG)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        winners.extend(t.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(winners[0].token, first.token + 1);
}

/// Eight takers race for three slots: three distinct slots are given.
pub async fn concurrent_slot_takers_share_the_slots(b: Backend) {
    let stores = replicas(&b, 4).await;
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let s = stores[n % 4].clone();
            tokio::spawn(async move {
                s.slot_acquire("ping", 3, &format!("r{n}"), LONG)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.extend(t.await.unwrap());
    }
    got.sort();
    assert_eq!(got, [0, 1, 2]);
}

/// Reservations from several replicas at once get send times one interval
/// apart: none shares a send time.
pub async fn concurrent_rate_reservations_are_spaced(b: Backend) {
    let stores = replicas(&b, 3).await;
    let hour = Duration::from_secs(3600);
    let tasks: Vec<_> = (0..9)
        .map(|n| {
            let s = stores[n % 3].clone();
            tokio::spawn(async move { s.rate_reserve("ping", hour).await.unwrap() })
        })
        .collect();
    let mut waits = Vec::new();
    for t in tasks {
        waits.push(t.await.unwrap());
    }
    waits.sort();
    // Each within a minute of its slot (a caller that read the clock a
    // little before the one committed ahead of it waits a little longer).
    for (k, w) in waits.iter().enumerate() {
        let due = hour * k as u32;
        assert!(w.abs_diff(due) < Duration::from_secs(60), "{waits:?}");
    }
}

/// A fenced writer keeps writing while another replica takes its expired
/// lease over: once the takeover has committed, nothing the old owner
/// writes lands (the cursor read right after the takeover is the one left
/// when the old owner stops, refused).
pub async fn a_write_under_a_lost_lease_never_lands_after_the_takeover(b: Backend) {
    // SQLite has one writing process (its writer lock): both owners share
    // its one connection there. (Two pools on one file would also work, but
    // the fenced writes' deferred transactions then meet SQLITE_BUSY.)
    let stores = if b.is_postgres() {
        replicas(&b, 2).await
    } else {
        let one = b.store().await;
        vec![one.clone(), one]
    };
    for round in 0..10 {
        let name = format!("flow:f{round}");
        let flow = format!("f{round}");
        let old = stores[0]
            .lease_acquire(&name, "old", Duration::from_millis(1))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let s0 = stores[0].clone();
        let writer = {
            let flow = flow.clone();
            let fence = old.fence();
            tokio::spawn(async move {
                let mut written = 0;
                loop {
                    let done = s0
                        .set_cursor_fenced(&fence, &flow, &format!("old-{written:05}"))
                        .await;
                    match done {
                        Ok(()) => written += 1,
                        Err(e) => {
                            assert_eq!(e.code(), "store-fenced", "{e}");
                            return written;
                        }
                    }
                }
            })
        };
        // Let the writer get going, then take over.
        while stores[1].cursor(&flow).await.unwrap().is_none() {
            tokio::task::yield_now().await;
        }
        let new = stores[1]
            .lease_acquire(&name, "new", LONG)
            .await
            .unwrap()
            .expect("the expired lease is taken");
        let at_takeover = stores[1].cursor(&flow).await.unwrap();
        let written = writer.await.unwrap();
        assert!(written > 0);
        assert_eq!(
            stores[1].cursor(&flow).await.unwrap(),
            at_takeover,
            "round {round}: a write under the old lease landed after the takeover"
        );
        stores[1]
            .set_cursor_fenced(&new.fence(), &flow, "new")
            .await
            .unwrap();
        assert!(stores[0]
            .set_cursor_fenced(&old.fence(), &flow, "old-late")
            .await
            .is_err());
        assert_eq!(
            stores[0].cursor(&flow).await.unwrap().as_deref(),
            Some("new")
        );
    }
}

/// A failed attempt waits out its backoff for every claimant; zero means
/// claimable again at once.
pub async fn a_failed_message_waits_out_its_backoff_for_every_claimant(b: Backend) {
    let stores = replicas(&b, 2).await;
    for id in ["m1", "m2"] {
        stores[0]
            .inbox_put(id, "k", "key", b"sealed")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let claimed = stores[0].inbox_claim("a", LONG, 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    stores[0]
        .inbox_failed("m1", "partner-unavailable", Duration::from_secs(3600))
        .await
        .unwrap();
    stores[0]
        .inbox_failed("m2", "partner-unavailable", Duration::ZERO)
        .await
        .unwrap();
    // m1 waits an hour, for this replica and the other; m2 comes back now.
    for s in &stores {
        let ids: Vec<String> = s
            .inbox_claim("b", Duration::from_millis(1), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.message.id)
            .collect();
        assert!(!ids.contains(&"m1".to_string()), "{ids:?}");
    }
    let all = stores[1].inbox_all().await.unwrap();
    assert!(all.iter().all(|m| m.attempts == 1), "{all:?}");
    // Cleared claims: the failed message names no claimant.
    assert_eq!(all[0].claimed_by, None);
    // A short backoff runs out.
    stores[0]
        .inbox_failed("m1", "partner-unavailable", Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = stores[1].inbox_claim("c", LONG, 10).await.unwrap();
    assert!(again.iter().any(|c| c.message.id == "m1"), "{again:?}");
}

/// Only the live claim's holder renews it; a zero time to live gives the
/// message back at once.
pub async fn a_claim_is_renewed_by_its_holder_only_and_given_back_with_zero(b: Backend) {
    let store = b.store().await;
    store.inbox_put("m1", "k", "key", b"sealed").await.unwrap();
    let first = store
        .inbox_claim("a", Duration::from_millis(1), 1)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = store.inbox_claim("b", LONG, 1).await.unwrap();
    assert_eq!(second.len(), 1);
    assert!(!store.inbox_renew(&first[0].fence, LONG).await.unwrap());
    assert!(store.inbox_renew(&second[0].fence, LONG).await.unwrap());
    assert!(store.inbox_claim("c", LONG, 1).await.unwrap().is_empty());
    // Given back: claimable at once, and the old fence is gone with the next claim.
    assert!(store
        .inbox_renew(&second[0].fence, Duration::ZERO)
        .await
        .unwrap());
    let third = store.inbox_claim("c", LONG, 1).await.unwrap();
    assert_eq!(third.len(), 1);
    assert!(!store.inbox_renew(&second[0].fence, LONG).await.unwrap());
    // A lease fence renews no claim.
    let lease = store
        .lease_acquire("flow:x", "a", LONG)
        .await
        .unwrap()
        .unwrap();
    assert!(!store.inbox_renew(&lease.fence(), LONG).await.unwrap());
}

/// A replica starting interrupts the runs nobody runs any more, not the
/// run a live replica holds the flow's lease for; told apart by the lease's
/// token, whatever the replicas' clocks say.
pub async fn only_runs_without_a_live_lease_are_interrupted(b: Backend) {
    let store = b.store().await;
    // A run of `flow` stamped `started_at` by its replica's clock, under
    // `lease_token`.
    let start = |id: &'static str, flow: &'static str, started_at: String, lease_token| {
        let store = store.clone();
        async move {
            let run = bridge_store::RunRow {
                id: id.into(),
                flow: flow.into(),
                trigger: "schedule".into(),
                started_at,
                outcome: "running".into(),
                lease_token,
                ..Default::default()
            };
            store.run_started(&run).await.unwrap();
        }
    };
    let acquire = |name: &'static str, owner: &'static str, ttl: Duration| {
        let store = store.clone();
        async move {
            store
                .lease_acquire(name, owner, ttl)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let now = bridge_store::now;
    // ping-1.1: a live replica holds its lease, then started its run.
    let alive = acquire("flow:ping-1.1", "alive", LONG).await;
    start("live", "ping-1.1", now(), Some(alive.token)).await;
    // dtp-1.1: the same, by a replica whose clock runs far behind the
    // database's: its run's start reads before the lease was taken.
    let behind = acquire("flow:dtp-1.1", "behind", LONG).await;
    let long_ago = "2000-01-01T00:00:00.000Z".to_string();
    start("live-behind", "dtp-1.1", long_ago, Some(behind.token)).await;
    // dtp-1.2: a replica whose clock runs ahead lost the lease (it stalled
    // past the ttl) to another, which holds it now: its run started "after"
    // the new holder took the lease, but under the old token.
    let stalled = acquire("flow:dtp-1.2", "stalled", Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taker = acquire("flow:dtp-1.2", "taker", LONG).await;
    assert!(taker.token > stalled.token);
    let far_ahead = "2999-01-01T00:00:00.000Z".to_string();
    start("superseded", "dtp-1.2", far_ahead, Some(stalled.token)).await;
    // ping-1.2: its replica's lease ran out (it died).
    let dead = acquire("flow:ping-1.2", "dead", Duration::from_millis(1)).await;
    start("orphan", "ping-1.2", now(), Some(dead.token)).await;
    // ping-2.1: no lease at all (a single process that died); ping-2.2: a
    // run stored before runs kept their lease's token.
    start("lone", "ping-2.1", now(), None).await;
    acquire("flow:ping-2.2", "upgraded", LONG).await;
    start("before-upgrade", "ping-2.2", now(), None).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.interrupt_running().await.unwrap(), 4);
    let outcome = |id: &'static str| {
        let store = store.clone();
        async move { store.run(id).await.unwrap().unwrap().outcome }
    };
    assert_eq!(outcome("live").await, "running");
    assert_eq!(outcome("live-behind").await, "running");
    assert_eq!(outcome("superseded").await, "interrupted");
    assert_eq!(outcome("orphan").await, "interrupted");
    assert_eq!(outcome("lone").await, "interrupted");
    assert_eq!(outcome("before-upgrade").await, "interrupted");
    assert_eq!(
        store.run("live").await.unwrap().unwrap().lease_token,
        Some(alive.token)
    );
}

/// A page's deliveries under a lease another owner took: refused whole,
/// nothing written; the new owner's go through.
pub async fn a_batch_under_a_lost_lease_is_refused_whole(b: Backend) {
    let store = b.store().await;
    let a = store
        .lease_acquire("flow:x", "a", LONG)
        .await
        .unwrap()
        .unwrap();
    store
        .lease_renew(&a, Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b2 = store
        .lease_acquire("flow:x", "b", LONG)
        .await
        .unwrap()
        .unwrap();
    let batch: Vec<(String, String, Option<String>)> = (0..600)
        .map(|i| (format!("k{i}"), "delivered".to_string(), None))
        .collect();
    let err = store
        .record_deliveries_fenced(&a.fence(), "x", &batch)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err}");
    assert!(err.to_string().contains("token is now 2"), "{err}");
    assert!(store
        .delivery_keys("x", "delivered")
        .await
        .unwrap()
        .is_empty());
    store
        .record_deliveries_fenced(&b2.fence(), "x", &batch)
        .await
        .unwrap();
    assert_eq!(
        store.delivery_keys("x", "delivered").await.unwrap().len(),
        600
    );
}
