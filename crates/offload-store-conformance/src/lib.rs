//! The one conformance suite every offload storage backend runs unchanged
//! (SQLite now, PostgreSQL next). It checks the storage contract written in
//! `docs/architecture.md` ("The storage contract"): batches, claims and their
//! order, leases and fencing, rescue, every finish outcome, management
//! calls, copying (export and import), leadership, notifications, and a
//! property test that no sequence of public operations reaches an illegal
//! transition.
//!
//! A backend hands the suite a [`Fixture`] (a fresh empty store, a second
//! handle onto the same data, and whatever keeps them alive); the suite
//! wraps it in a [`Harness`] with a [`ManualClock`](offload_store::ManualClock)
//! and runs each case against it. The [`suite!`] macro is the only list of
//! cases; a backend's `tests/conformance.rs` is its fixture function plus
//! one macro call:
//!
//! ```no_run
//! use offload_store_conformance::Fixture;
//!
//! async fn fresh_fixture() -> Fixture {
//!     // open a store on a fresh temporary file or schema, and a second
//!     // handle onto the same data
//!     # unimplemented!()
//! }
//!
//! offload_store_conformance::suite!(fresh_fixture);
//! # fn main() {}
//! ```
//!
//! Cases are plain `pub async fn case(h: &Harness)` grouped by noun, one
//! module per noun. They panic (through `assert!` and the harness helpers)
//! when the store breaks the contract: that is how a test fails. Time in
//! every case comes from the harness clock; waits for events use deadlines,
//! never sleeps.

mod harness;

pub mod access;
pub mod events;
pub mod idempotency;
pub mod leader;
pub mod lease;
pub mod lifecycle;
pub mod notify;
pub mod task_claim;
pub mod task_copy;
pub mod task_finish;
pub mod task_insert;
pub mod task_manage;
pub mod webhooks;

pub use harness::{Fixture, Harness, LEASE, WORKER, lease_of};

#[doc(hidden)]
pub mod __private {
    //! Re-exports the [`suite!`](crate::suite) expansion needs, so a backend
    //! does not have to name them in its own dev-dependencies.
    pub use tokio;
}

/// Expands to one `#[tokio::test]` per conformance case, each on a fresh
/// fixture from `$fixture` (an `async fn() -> Fixture`). This is the only
/// list of cases. Tests are named `noun::case`, e.g. `lease::stale_finish_is_fenced`.
///
/// Call it once, at the top level of a backend's `tests/conformance.rs`:
///
/// ```no_run
/// # use offload_store_conformance::Fixture;
/// # async fn fresh_fixture() -> Fixture { unimplemented!() }
/// offload_store_conformance::suite!(fresh_fixture);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! suite {
    ($fixture:path) => {
        #[doc(hidden)]
        async fn __offload_conformance_fixture() -> $crate::Fixture {
            $fixture().await
        }

        $crate::__suite_cases! {
            task_insert {
                insert_many_returns_ids_in_order,
                insert_applies_defaults,
                insert_future_run_at_is_scheduled,
                insert_invalid_task_inserts_nothing,
                insert_duplicate_id_inserts_nothing,
                insert_round_trips_fields,
                insert_empty_batch,
                insert_large_batch,
            }
            task_claim {
                claim_orders_by_priority_then_run_at_then_id,
                claim_respects_limit,
                claim_only_from_named_queue,
                claim_names_filter,
                claim_waits_for_run_at,
                claim_sets_lease_and_opens_attempt,
                claim_never_hands_out_a_task_twice,
                claim_concurrent_claimers_share_without_duplicates,
                claim_across_handles,
                next_run_at_is_earliest_scheduled,
            }
            lease {
                heartbeat_renews_lease,
                stale_lease_is_fenced_after_rescue,
                heartbeating_task_is_never_rescued,
                rescue_only_after_expiry,
                rescue_with_attempts_left_returns_to_pending,
                rescue_without_attempts_left_fails,
                rescue_with_abort_requested_aborts,
                rescue_respects_limit,
                heartbeat_reports_abort_requested,
                heartbeat_of_finished_or_unknown_task_is_not_live,
                progress_needs_live_lease,
            }
            task_finish {
                finish_success,
                finish_retry_schedules_next_attempt,
                finish_retry_due_now_is_pending,
                finish_fail,
                finish_abort,
                finish_snooze_does_not_count_attempt,
                finish_release_does_not_count_attempt,
                finish_batch_fences_stale_items,
                finish_twice_is_refused,
                finish_large_batch_in_order,
            }
            task_manage {
                get_unknown_is_none,
                list_newest_first_with_filters,
                list_pages_visit_every_task_once,
                list_bad_cursor_is_invalid,
                count_groups_by_name_queue_status,
                update_changes_waiting_task,
                update_run_at_moves_between_pending_and_scheduled,
                update_refused_for_started_tasks,
                update_invalid_values_change_nothing,
                delete_waiting_and_terminal_tasks,
                delete_running_or_unknown_is_refused,
                abort_waiting_task_at_once,
                abort_running_task_requests_stop,
                abort_terminal_or_unknown_is_refused,
                retry_failed_and_aborted_tasks,
                retry_other_statuses_is_refused,
                purge_terminal_tasks_by_filter,
                purge_respects_limit,
                attempts_history_in_order,
            }
            task_copy {
                export_pages_visit_every_task_once_in_id_order,
                export_limit_out_of_range_is_invalid,
                export_records_match_get_and_attempts,
                import_reproduces_every_status,
                import_after_delete_restores_same_ids,
                import_again_skips_and_changes_nothing,
                import_invalid_record_imports_nothing,
                import_running_task_gets_fresh_lease_and_keeps_expiry,
                imported_tasks_continue_their_history,
                import_notifies_available,
            }
            leader {
                leader_first_elect_wins,
                leader_expires_after_ttl,
                leader_renew_extends,
                leader_resign_frees,
                leader_names_are_independent,
            }
            notify {
                insert_notifies_available,
                finish_notifies_changed,
                abort_running_notifies_abort_requested,
                management_notifies,
                notifications_cross_handles,
            }
            lifecycle {
                lifecycle_has_no_illegal_transition,
            }
            events {
                events_insert_writes_created,
                events_claim_and_progress_write_started_and_progress,
                events_finish_outcomes_write_their_events,
                events_stale_finish_writes_nothing,
                events_abort_waiting_and_running,
                events_rescue_writes_retrying_failed_aborted,
                events_management_calls_write_none,
                events_filters_select_kinds_names_queues_tasks,
                events_pages_return_every_event_once_in_order,
                events_cursor_moves_past_filtered_out_rows,
                events_cursor_latest_then_only_later_events,
                events_bad_cursor_or_limit_is_invalid,
                events_purge_deletes_older_events_up_to_limit,
                events_end_events_carry_the_task_webhook,
                events_idempotent_insert_writes_created_once,
            }
            idempotency {
                idempotent_first_insert_inserts,
                idempotent_same_request_replays_first_ids,
                idempotent_other_request_conflicts,
                idempotent_keys_are_independent,
                idempotent_expired_key_inserts_again,
                idempotent_concurrent_requests_insert_once,
                idempotent_failed_insert_stores_no_key,
                idempotent_invalid_key_is_refused,
                idempotent_insert_notifies_available,
                idempotency_purge_respects_expiry_and_limit,
            }
            access {
                token_round_trip,
                token_every_role_round_trips,
                token_duplicate_id_conflicts,
                token_invalid_fields_are_refused,
                token_delete_reports_existence,
                token_list_oldest_first,
                audit_insert_and_list_newest_first,
                audit_pages_with_before,
                audit_filters_by_actions_and_target,
                audit_list_bad_limit_is_invalid,
                audit_invalid_records_are_refused,
            }
            webhooks {
                webhook_round_trip_and_list_oldest_first,
                webhook_duplicate_id_conflicts,
                webhook_invalid_fields_are_refused,
                webhook_delete_cascades_to_deliveries,
                webhook_enqueue_moves_cursor_compare_and_set,
                webhook_enqueue_stale_cursor_stores_nothing,
                webhook_enqueue_concurrent_only_one_wins,
                webhook_enqueue_duplicate_delivery_conflicts,
                webhook_enqueue_invalid_delivery_is_refused,
                webhook_claim_only_due_oldest_first,
                webhook_claim_lease_hides_until_it_lapses,
                webhook_claim_concurrent_claimers_never_share,
                webhook_record_attempts_and_return_them,
                webhook_record_stale_attempt_conflicts,
                webhook_record_pending_needs_retry_at,
                webhook_record_unknown_or_finished_conflicts,
                webhook_delivery_list_filters_and_order,
                webhook_delivery_limits_are_checked,
                webhook_delivery_purge_only_finished_and_old,
                webhook_task_secret_first_writer_wins,
                task_webhook_option_round_trips,
            }
        }
    };
}

/// Implementation detail of [`suite!`]: one module per noun, one test per case.
#[doc(hidden)]
#[macro_export]
macro_rules! __suite_cases {
    ($($module:ident { $($case:ident),* $(,)? })*) => {
        $(
            mod $module {
                $(
                    #[$crate::__private::tokio::test(
                        flavor = "multi_thread",
                        worker_threads = 2,
                        crate = "offload_store_conformance::__private::tokio"
                    )]
                    async fn $case() {
                        let harness = $crate::Harness::new(super::__offload_conformance_fixture().await);
                        $crate::$module::$case(&harness).await;
                    }
                )*
            }
        )*
    };
}
