//! Cases for API tokens (`token_insert`, `token_get`, `token_list`,
//! `token_delete`) and the audit log (`audit_insert`, `audit_list`):
//! round trips, conflicts and refused values, list order, paging with the
//! `before` cursor, and filters.

use std::time::Duration;

use offload_store::{
    AuditListParams, AuditPage, AuditRecord, NewAuditRecord, StoreError, StoreResult, TokenRecord,
};
use offload_types::Role;
use serde_json::json;

use crate::Harness;
use crate::harness::ok;

#[track_caller]
fn expect_invalid<T: std::fmt::Debug>(result: StoreResult<T>, field: &str) {
    match result {
        Err(StoreError::Invalid(e)) => assert_eq!(e.field, field, "the error names {field}: {e}"),
        other => panic!("a bad {field} must be Invalid, got {other:?}"),
    }
}

/// A token created at the harness time.
fn token(h: &Harness, id: &str, role: Role) -> TokenRecord {
    TokenRecord {
        id: id.to_owned(),
        role,
        label: Some(format!("label of {id}")),
        secret_sha256: (0u8..32).collect(),
        created_at: h.now(),
    }
}

async fn add_token(h: &Harness, t: &TokenRecord) {
    ok("token_insert", h.store.token_insert(t).await);
}

async fn tokens(h: &Harness) -> Vec<TokenRecord> {
    ok("token_list", h.store.token_list().await)
}

// ---------------------------------------------------------------- tokens

/// A stored token reads back exactly, through either handle; an unknown id
/// is `None`.
pub async fn token_round_trip(h: &Harness) {
    let with_label = token(h, "tok_a", Role::Producer);
    let without = TokenRecord {
        label: None,
        secret_sha256: vec![0xff; 32],
        ..token(h, "tok_b", Role::Read)
    };
    add_token(h, &with_label).await;
    add_token(h, &without).await;
    assert_eq!(
        ok("token_get", h.store.token_get("tok_a").await),
        Some(with_label.clone())
    );
    assert_eq!(
        ok("token_get", h.second.token_get("tok_b").await),
        Some(without)
    );
    assert_eq!(ok("token_get", h.store.token_get("tok_x").await), None);
    assert_eq!(ok("token_get", h.store.token_get("").await), None);
}

/// Every role is stored under its name and reads back.
pub async fn token_every_role_round_trips(h: &Harness) {
    for role in Role::ALL {
        let t = token(h, &format!("tok_{role}"), role);
        add_token(h, &t).await;
        let back = ok("token_get", h.store.token_get(&t.id).await);
        assert_eq!(back.map(|b| b.role), Some(role));
    }
}

/// A second token with a taken id is a conflict and changes nothing.
pub async fn token_duplicate_id_conflicts(h: &Harness) {
    let first = token(h, "tok_dup", Role::Admin);
    add_token(h, &first).await;
    let second = TokenRecord {
        secret_sha256: vec![7; 32],
        ..token(h, "tok_dup", Role::Read)
    };
    match h.store.token_insert(&second).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("tok_dup"), "names the id: {m}"),
        other => panic!("a taken token id must be Conflict, got {other:?}"),
    }
    assert_eq!(tokens(h).await, vec![first]);
}

/// A digest that is not 32 bytes, an empty or over-long id and an
/// over-long label are refused and nothing is stored; the limits
/// themselves are fine.
pub async fn token_invalid_fields_are_refused(h: &Harness) {
    let base = token(h, "tok_v", Role::Worker);
    for len in [0, 16, 31, 33, 64] {
        let bad = TokenRecord {
            secret_sha256: vec![1; len],
            ..base.clone()
        };
        expect_invalid(h.store.token_insert(&bad).await, "secret_sha256");
    }
    for id in [String::new(), "t".repeat(65)] {
        let bad = TokenRecord { id, ..base.clone() };
        expect_invalid(h.store.token_insert(&bad).await, "id");
    }
    let bad = TokenRecord {
        label: Some("l".repeat(201)),
        ..base.clone()
    };
    expect_invalid(h.store.token_insert(&bad).await, "label");
    assert!(tokens(h).await.is_empty(), "nothing stored");

    let longest = TokenRecord {
        id: "t".repeat(64),
        label: Some("é".repeat(200)),
        ..base
    };
    add_token(h, &longest).await;
    assert_eq!(tokens(h).await, vec![longest]);
}

/// Deleting answers whether there was such a token.
pub async fn token_delete_reports_existence(h: &Harness) {
    let keep = token(h, "tok_keep", Role::Read);
    add_token(h, &keep).await;
    add_token(h, &token(h, "tok_gone", Role::Admin)).await;
    assert!(ok("token_delete", h.store.token_delete("tok_gone").await));
    assert!(!ok("token_delete", h.store.token_delete("tok_gone").await));
    assert!(!ok(
        "token_delete",
        h.second.token_delete("tok_never").await
    ));
    assert_eq!(ok("token_get", h.store.token_get("tok_gone").await), None);
    assert_eq!(tokens(h).await, vec![keep]);
    // The id is free again.
    add_token(h, &token(h, "tok_gone", Role::Worker)).await;
}

/// The list is oldest first, ties in id order.
pub async fn token_list_oldest_first(h: &Harness) {
    assert!(tokens(h).await.is_empty());
    let at = |secs: i64| h.now() + chrono::Duration::seconds(secs);
    let given = [
        ("tok_c", at(20)),
        ("tok_z", at(0)),
        ("tok_b", at(10)),
        ("tok_a", at(10)),
        ("tok_y", at(-5)),
    ];
    for (id, created_at) in given {
        add_token(
            h,
            &TokenRecord {
                created_at,
                ..token(h, id, Role::Read)
            },
        )
        .await;
    }
    let ids: Vec<String> = tokens(h).await.into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["tok_y", "tok_z", "tok_a", "tok_b", "tok_c"]);
}

// ---------------------------------------------------------------- audit

/// A record at the harness time.
fn record(h: &Harness, action: &str, target: Option<&str>) -> NewAuditRecord {
    NewAuditRecord {
        at: h.now(),
        actor: "tok_admin".to_owned(),
        action: action.to_owned(),
        target: target.map(str::to_owned),
        reason: Some(format!("because of {action}")),
        details: json!({ "action": action }),
    }
}

async fn append(h: &Harness, r: &NewAuditRecord) -> i64 {
    ok("audit_insert", h.store.audit_insert(r).await)
}

async fn list(h: &Harness, params: AuditListParams) -> AuditPage {
    ok("audit_list", h.store.audit_list(&params).await)
}

fn page(limit: u32) -> AuditListParams {
    AuditListParams {
        limit,
        ..AuditListParams::default()
    }
}

fn seqs(records: &[AuditRecord]) -> Vec<i64> {
    records.iter().map(|r| r.seq).collect()
}

/// Inserts return increasing numbers; the list is newest first and every
/// field reads back.
pub async fn audit_insert_and_list_newest_first(h: &Harness) {
    assert_eq!(list(h, page(10)).await, AuditPage::default());
    let first = record(h, "task.abort", Some("task-1"));
    let s1 = append(h, &first).await;
    h.advance(Duration::from_secs(1));
    let second = NewAuditRecord {
        target: None,
        reason: None,
        details: json!({ "filter": { "status": ["failed"] }, "count": 3 }),
        ..record(h, "task.purge", None)
    };
    let s2 = append(h, &second).await;
    let s3 = ok(
        "audit_insert (second handle)",
        h.second
            .audit_insert(&record(h, "token.create", Some("tok_x")))
            .await,
    );
    assert!(s1 < s2 && s2 < s3, "seq increases: {s1} {s2} {s3}");
    let listed = list(h, page(10)).await;
    assert_eq!(listed.next_cursor, None, "one page holds all");
    assert_eq!(seqs(&listed.records), vec![s3, s2, s1]);
    let as_stored = |seq: i64, r: &NewAuditRecord| AuditRecord {
        seq,
        at: r.at,
        actor: r.actor.clone(),
        action: r.action.clone(),
        target: r.target.clone(),
        reason: r.reason.clone(),
        details: r.details.clone(),
    };
    assert_eq!(listed.records[2], as_stored(s1, &first));
    assert_eq!(listed.records[1], as_stored(s2, &second));
}

/// Following `next_cursor` as `before` visits every record once, newest
/// first; the last page has no cursor, even when it is exactly full.
pub async fn audit_pages_with_before(h: &Harness) {
    let mut all = Vec::new();
    for i in 0..6 {
        all.push(append(h, &record(h, "task.retry", Some(&format!("task-{i}")))).await);
    }
    all.reverse();
    for limit in [1, 2, 4, 6, 7] {
        let mut seen = Vec::new();
        let mut before = None;
        let mut pages = 0;
        loop {
            let p = list(
                h,
                AuditListParams {
                    before,
                    ..page(limit)
                },
            )
            .await;
            pages += 1;
            assert!(p.records.len() <= limit as usize);
            seen.extend(seqs(&p.records));
            match p.next_cursor {
                Some(cursor) => {
                    assert_eq!(Some(cursor), p.records.last().map(|r| r.seq));
                    before = Some(cursor);
                }
                None => break,
            }
            assert!(pages <= 6, "paging must end");
        }
        assert_eq!(seen, all, "limit {limit}: every record once, newest first");
        assert_eq!(
            pages,
            6usize.div_ceil(limit as usize),
            "limit {limit}: no empty last page"
        );
    }
    // A cursor below every record gives an empty last page.
    let empty = list(
        h,
        AuditListParams {
            before: all.last().copied(),
            ..page(10)
        },
    )
    .await;
    assert_eq!(empty, AuditPage::default());
}

/// `actions` keeps records with any of them, `target` those about it;
/// together (and with `before`) both apply.
pub async fn audit_filters_by_actions_and_target(h: &Harness) {
    let a1 = append(h, &record(h, "task.abort", Some("t1"))).await;
    let r1 = append(h, &record(h, "task.retry", Some("t1"))).await;
    let d2 = append(h, &record(h, "task.delete", Some("t2"))).await;
    let p = append(h, &record(h, "task.purge", None)).await;
    let a2 = append(h, &record(h, "task.abort", Some("t2"))).await;
    let filtered = |actions: &[&str], target: Option<&str>, before: Option<i64>| AuditListParams {
        before,
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        target: target.map(str::to_owned),
        limit: 100,
    };
    let cases = [
        (filtered(&["task.abort"], None, None), vec![a2, a1]),
        (
            filtered(&["task.abort", "task.purge"], None, None),
            vec![a2, p, a1],
        ),
        (filtered(&[], Some("t1"), None), vec![r1, a1]),
        (filtered(&[], Some("t2"), None), vec![a2, d2]),
        (filtered(&["task.abort"], Some("t2"), None), vec![a2]),
        (filtered(&["task.delete"], Some("t1"), None), vec![]),
        (filtered(&["task.abort"], None, Some(a2)), vec![a1]),
        (filtered(&[], Some("t2"), Some(a2)), vec![d2]),
        (filtered(&["no.such"], None, None), vec![]),
        (filtered(&[], Some("nobody"), None), vec![]),
    ];
    for (params, want) in cases {
        let got = list(h, params.clone()).await;
        assert_eq!(seqs(&got.records), want, "filter {params:?}");
        assert_eq!(got.next_cursor, None);
    }
    // Filters and paging together.
    let first = list(
        h,
        AuditListParams {
            limit: 1,
            ..filtered(&["task.abort", "task.retry"], Some("t1"), None)
        },
    )
    .await;
    assert_eq!(seqs(&first.records), vec![r1]);
    assert_eq!(first.next_cursor, Some(r1));
    let next = list(
        h,
        AuditListParams {
            limit: 1,
            ..filtered(&["task.abort", "task.retry"], Some("t1"), Some(r1))
        },
    )
    .await;
    assert_eq!(seqs(&next.records), vec![a1]);
    assert_eq!(next.next_cursor, None);
}

/// A page size outside 1..=1000 is refused.
pub async fn audit_list_bad_limit_is_invalid(h: &Harness) {
    append(h, &record(h, "task.abort", Some("t"))).await;
    for limit in [0, 1001, u32::MAX] {
        expect_invalid(h.store.audit_list(&page(limit)).await, "limit");
    }
    assert_eq!(list(h, page(1000)).await.records.len(), 1);
    assert_eq!(list(h, page(1)).await.records.len(), 1);
}

/// Details that are not a JSON object, an empty or over-long action or
/// actor, and an over-long reason are refused; nothing is recorded.
pub async fn audit_invalid_records_are_refused(h: &Harness) {
    let base = record(h, "task.update", Some("t"));
    for details in [
        json!(null),
        json!([1, 2]),
        json!("text"),
        json!(3),
        json!(true),
    ] {
        let bad = NewAuditRecord {
            details,
            ..base.clone()
        };
        expect_invalid(h.store.audit_insert(&bad).await, "details");
    }
    for action in [String::new(), "a".repeat(101)] {
        let bad = NewAuditRecord {
            action,
            ..base.clone()
        };
        expect_invalid(h.store.audit_insert(&bad).await, "action");
    }
    for actor in [String::new(), "a".repeat(101)] {
        let bad = NewAuditRecord {
            actor,
            ..base.clone()
        };
        expect_invalid(h.store.audit_insert(&bad).await, "actor");
    }
    let bad = NewAuditRecord {
        reason: Some("r".repeat(1001)),
        ..base.clone()
    };
    expect_invalid(h.store.audit_insert(&bad).await, "reason");
    assert_eq!(
        list(h, page(10)).await,
        AuditPage::default(),
        "nothing recorded"
    );

    let longest = NewAuditRecord {
        action: "a".repeat(100),
        actor: "é".repeat(100),
        reason: Some("r".repeat(1000)),
        details: json!({}),
        ..base
    };
    let seq = append(h, &longest).await;
    let listed = list(h, page(10)).await;
    assert_eq!(seqs(&listed.records), vec![seq]);
    assert_eq!(listed.records[0].actor, longest.actor);
}
