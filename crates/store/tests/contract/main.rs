//! The store's contract: every case runs against SQLite and against a real
//! PostgreSQL (`sqlite::…` and `postgres::…` tests), so both backends keep
//! the same behaviour. PostgreSQL comes from `bridge_testkit::postgres`: a
//! throwaway cluster, or the one `BRIDGE_TEST_POSTGRES_URL` names; without
//! one the `postgres::…` tests fail saying what to install (or, with
//! `BRIDGE_TEST_POSTGRES=skip`, say that they skipped).

mod audit;
mod backend;
mod cluster;
mod consent;
mod monitor;
mod open;
mod state;

pub use backend::Backend;

/// One `#[tokio::test]` per case and backend: `sqlite::<module>::<case>`
/// and `postgres::<module>::<case>`, each case an `async fn(Backend)`.
macro_rules! contract {
    ($($module:ident: [$($case:ident),* $(,)?]),* $(,)?) => {
        mod sqlite {
            $(mod $module {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::$module::$case(crate::Backend::sqlite().await).await
                })*
            })*
        }
        mod postgres {
            $(mod $module {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(backend) = crate::Backend::postgres().await {
                        crate::$module::$case(backend).await
                    }
                })*
            })*
        }
    };
}

contract! {
    state: [
        cursor_delivery_and_inbox_survive_reopen,
        deliveries_are_replaced_and_found_by_fingerprint,
        the_inbox_keeps_order_state_and_attempts,
        a_reseal_replaces_only_the_body_it_was_given,
        runs_keep_their_counts_records_and_order,
        running_runs_become_interrupted,
        a_flows_running_runs_become_interrupted_by_its_lease_holder,
        attempts_count_up_and_clear,
        the_dead_letter_holds_one_active_entry_per_record,
        a_released_entry_forgets_the_attempts_and_may_return,
        a_run_with_ten_thousand_records_is_kept_whole,
        a_batch_of_deliveries_is_recorded_whole_and_a_repeated_key_keeps_its_last_row,
    ],
    open: [
        an_existing_database_is_required_without_init,
        init_creates_and_a_second_open_finds_the_same_state,
        a_database_of_another_application_is_refused,
        the_writer_lease_matches_the_backend,
        a_dry_run_copy_holds_the_state_and_writes_nothing_back,
        a_dry_run_without_a_database_starts_empty_and_creates_nothing,
    ],
    audit: [
        appended_entries_verify_and_the_chain_continues_after_a_reopen,
        the_triggers_refuse_updates_and_deletes,
        a_changed_field_is_named_by_its_seq,
        a_changed_and_rehashed_entry_breaks_the_next_link,
        a_removed_entry_in_the_middle_is_detected,
        a_removed_last_entry_is_detected_through_the_head,
        swapped_entries_are_reported_as_reordered,
        pruning_keeps_the_rest_verifiable_and_records_the_anchor,
        prune_removes_only_an_unbroken_run_of_old_entries,
        prune_is_refused_while_the_chain_is_broken,
        appenders_in_several_connections_keep_one_chain,
        unknown_codes_and_bad_values_are_refused_and_nothing_is_stored,
        list_filters_by_time_flow_and_case,
        a_large_batch_is_appended_whole,
    ],
    consent: [
        a_shared_case_losing_consent_raises_one_alert_until_consent_returns,
        alerts_are_retried_when_due_and_kept_once_delivered,
        concurrent_scans_raise_one_alert,
        many_cases_shared_at_once_are_each_recorded_once,
    ],
    cluster: [
        a_lease_has_one_owner_until_it_expires_and_a_stale_fence_is_refused,
        inbox_claims_give_each_message_once_until_the_claim_expires,
        partner_slots_and_rate_hold_for_every_owner,
        concurrent_claimers_never_get_the_same_message,
        owners_racing_for_a_lease_exactly_one_wins,
        concurrent_slot_takers_share_the_slots,
        concurrent_rate_reservations_are_spaced,
        a_write_under_a_lost_lease_never_lands_after_the_takeover,
        a_failed_message_waits_out_its_backoff_for_every_claimant,
        a_claim_is_renewed_by_its_holder_only_and_given_back_with_zero,
        only_runs_without_a_live_lease_are_interrupted,
        a_batch_under_a_lost_lease_is_refused_whole,
    ],
    monitor: [
        a_failed_call_is_the_fault_until_a_success_clears_it,
        a_refused_audit_entry_is_not_a_store_fault,
    ],
}
