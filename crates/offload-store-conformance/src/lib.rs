//! The one conformance suite every offload storage backend runs unchanged
//! (SQLite now, PostgreSQL next). It checks the storage contract written in
//! `docs/architecture.md` ("The storage contract"): batches, claims and their
//! order, leases and fencing, rescue, every finish outcome, management
//! calls, copying (export and import), leadership, notifications,
//! dependencies between tasks, unique keys, cron schedules, limits
//! (concurrency, per-key concurrency, rate), fairness and quotas, and a
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
pub mod dependencies;
pub mod events;
pub mod idempotency;
pub mod leader;
pub mod lease;
pub mod lifecycle;
pub mod limits;
pub mod notify;
pub mod schedules;
pub mod task_claim;
pub mod task_copy;
pub mod task_finish;
pub mod task_insert;
pub mod task_manage;
pub mod unique;
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
                import_keeps_flow_fields_and_blocked_waits_for_dependency,
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
            dependencies {
                deps_missing_dependency_refuses_batch,
                deps_on_failed_or_aborted_dependency_is_refused,
                deps_on_succeeded_dependency_is_not_blocked,
                deps_blocked_until_dependency_succeeds,
                deps_unblocked_with_future_run_at_is_scheduled,
                deps_diamond_in_one_batch_runs_in_order,
                deps_failure_cascades_transitively,
                deps_retry_finish_does_not_cascade,
                deps_abort_waiting_dependency_cascades,
                deps_abort_running_dependency_cascades_on_abort_finish,
                deps_rescue_to_failed_cascades,
                deps_delete_waiting_dependency_aborts_dependents,
                deps_after_waits_for_every_member_to_end,
                deps_retry_of_cascaded_task_waits_for_dependency,
                deps_update_run_at_of_blocked_task_keeps_it_blocked,
                deps_fields_read_back_and_filter_by_group_and_ids,
                deps_resolve_blocked_is_a_no_op_on_a_healthy_store,
                deps_many_dependents_unblock_in_one_finish,
                deps_insert_racing_a_finish_never_stays_blocked,
            }
            unique {
                unique_reject_returns_existing_until_holder_ends,
                unique_reject_window_holds_key_after_end,
                unique_replace_updates_waiting_holder,
                unique_replace_of_running_holder_creates_new_task,
                unique_debounce_pushes_start_up_to_max_wait,
                unique_throttle_waiting_holder_gets_new_input,
                unique_throttle_after_a_run_schedules_one_window_later,
                unique_same_key_twice_in_one_batch,
                unique_concurrent_inserts_create_one_task,
                unique_idempotent_insert_replays_outcomes,
                unique_key_reads_back,
                unique_different_keys_are_independent,
            }
            schedules {
                schedule_put_new_stores_definition_and_state,
                schedule_put_same_cron_keeps_next_run_at,
                schedule_put_changed_cron_or_zone_replaces_next_run_at,
                schedule_put_paused_state,
                schedule_put_after_a_fire_keeps_last_run,
                schedule_pause_and_resume,
                schedule_missing_name_is_none_or_false,
                schedule_list_by_name_and_delete_keeps_tasks,
                schedule_due_only_active_and_past_earliest_first,
                schedule_fire_inserts_task_and_moves_next_tick,
                schedule_fire_paused_stale_or_missing_is_lost,
                schedule_fire_without_task_skips_tick,
                schedule_fire_failed_insert_changes_nothing,
                schedule_fire_racing_calls_fire_once,
                schedule_fire_consecutive_ticks_one_task_each,
            }
            limits {
                limit_put_list_delete_round_trip,
                limit_none_claims_as_before,
                limit_concurrency_per_name,
                limit_concurrency_per_queue,
                limit_name_and_queue_limits_both_apply,
                limit_key_concurrency_per_input_value,
                limit_skipped_candidates_do_not_block_others,
                limit_rate_caps_starts_per_period,
                limit_concurrent_claimers_never_exceed_limits,
                limit_cache_other_handle_within_ttl_own_at_once,
                fairness_round_robin_across_keys,
                fairness_keyless_share_a_bucket_and_order_holds_within_a_key,
                fairness_with_a_limit_skips_blocked_keys,
                fairness_key_reads_back_and_survives_copy,
                quota_caps_waiting_tasks_per_fairness_key,
                quota_of_a_name_counts_across_queues,
                quota_set_applies_to_the_next_insert,
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
