//! The store's contract on SQLite (PostgreSQL runs the same scenario in tests/service.rs):
//! leases decide who attests a pod, a round's writes land only for the owner, status
//! changes go to history and (with a webhook) the outbox in the same transaction; and the
//! binaries refuse unsafe or unusable configurations by name.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use jek_attestation_verifier::store::sqlite::Sqlite;
use jek_attestation_verifier::store::{
    Backend, PodRow, RoundOutcome, StoredIdentity, StoredResult, HISTORY,
};
use jek_service_client::wire::{AuditAction, AuditEvent, PodStatus, B64};

fn pod(id: &str) -> PodRow {
    PodRow {
        id: id.into(),
        pod: format!("pod-{id}"),
        agent: "http://127.0.0.1:1".into(),
        bundle: "sha256:00".into(),
        pod_yaml: None,
        kubernetes: None,
        identity: StoredIdentity {
            ak_name: jek_attest::AkName(format!("000b{id}").into_bytes()),
            ak_public: B64(vec![1]),
            ak_private: B64(vec![2]),
            ek_cert: B64(format!("ek-{id}").into_bytes()),
            ek_chain_pem: String::new(),
        },
        epoch: jek_attest::Epoch {
            reset_count: 1,
            restart_count: 0,
            clock: 10,
        },
        last_clock: 10,
        result: StoredResult {
            status: PodStatus::None,
            ..StoredResult::default()
        },
        owner: None,
        history: Vec::new(),
    }
}

/// The audit record of `p`'s registration by the client `ops`.
fn registered(p: &PodRow) -> AuditEvent {
    AuditEvent {
        at: 5,
        by: "ops (token)".into(),
        action: AuditAction::Registered,
        id: Some(p.id.clone()),
        pod: Some(p.pod.clone()),
        detail: None,
    }
}

fn outcome(status: PodStatus, at: u64, notify: bool) -> RoundOutcome {
    RoundOutcome {
        result: StoredResult {
            status,
            at: Some(at),
            token: Some(format!("token-{at}")),
            ..StoredResult::default()
        },
        clock: Some(at * 100),
        next_due_ms: at * 1000 + 1000,
        failing: Vec::new(),
        notify,
    }
}

#[test]
fn leases_owners_history_and_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(&dir.path().join("v.db")).unwrap();
    // Registered by replica a with a lease until t=1000 ms, due now.
    store
        .register(&pod("p1"), "a", 0, 1000, &registered(&pod("p1")), false)
        .unwrap();
    store
        .register(&pod("p2"), "a", 0, 1000, &registered(&pod("p2")), false)
        .unwrap();
    // b claims nothing while a's leases hold; a, renewing, owns both.
    assert!(store.claim_due("b", 500, 1000, 10).unwrap().is_empty());
    assert_eq!(store.claim_due("a", 600, 1000, 10).unwrap().len(), 2);
    // A round by a lands; one by b (not the owner) does not.
    let change = store
        .record("p1", "a", &outcome(PodStatus::Affirming, 1, true))
        .unwrap();
    assert_eq!(change.as_ref().map(|c| c.to), Some(PodStatus::Affirming));
    assert!(store
        .record("p1", "b", &outcome(PodStatus::Contraindicated, 2, true))
        .unwrap()
        .is_none());
    assert_eq!(
        store.get("p1").unwrap().unwrap().result.status,
        PodStatus::Affirming
    );
    assert_eq!(store.get("p1").unwrap().unwrap().last_clock, 100);
    // The same status again is no change: no history row, no delivery.
    assert!(store
        .record("p1", "a", &outcome(PodStatus::Affirming, 3, true))
        .unwrap()
        .is_none());
    assert_eq!(store.due_deliveries(u64::MAX / 2, 0, 100).unwrap().len(), 1);
    // a dies: once its leases run out, b claims its pods.
    let claimed = store.claim_due("b", 1_700 + 5_000, 1000, 10).unwrap();
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    assert!(store
        .list()
        .unwrap()
        .iter()
        .all(|p| p.owner.as_deref() == Some("b")));
    // History keeps the last HISTORY changes, newest first; without a webhook, no outbox.
    for i in 0..(HISTORY as u64 + 5) {
        let status = if i % 2 == 0 {
            PodStatus::Contraindicated
        } else {
            PodStatus::Affirming
        };
        store
            .record("p2", "b", &outcome(status, 10 + i, false))
            .unwrap();
    }
    let p2 = store.get("p2").unwrap().unwrap();
    assert_eq!(p2.history.len(), HISTORY);
    assert!(p2.history[0].at > p2.history[1].at);
    assert_eq!(store.due_deliveries(u64::MAX / 2, 0, 100).unwrap().len(), 1);
    // A clean shutdown hands everything back at once.
    store.release("b").unwrap();
    assert_eq!(store.claim_due("c", 100_000, 1000, 10).unwrap().len(), 2);
    assert!(store
        .remove("p1", 7, false, "ops (token)")
        .unwrap()
        .is_some());
    assert!(store
        .remove("p1", 8, false, "ops (token)")
        .unwrap()
        .is_none());
}

/// Issue 39's registration attacks: a registration is never replaced (a reset TPM cannot
/// make its new epoch the baseline by registering its pod again), one AK speaks for one pod
/// (a fake agent cannot register good pod G's TPM as pod E), one EK is one pod (nor with
/// an AK G's TPM made anew), and a removal is announced: the webhook hears `removed` with
/// the last status and who removed it, in the same transaction, and the audit keeps who
/// registered and removed what.
#[test]
fn registrations_are_never_replaced_one_ak_is_one_pod_and_removals_are_announced() {
    use jek_attestation_verifier::store::StoreError;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    let store = Sqlite::open(&path).unwrap();
    store
        .register(&pod("g"), "a", 0, 1000, &registered(&pod("g")), false)
        .unwrap();
    store
        .record("g", "a", &outcome(PodStatus::Contraindicated, 1, false))
        .unwrap();
    // The same identifier again, with a new epoch: refused, the stored one untouched.
    let mut reset = pod("g");
    reset.epoch.reset_count = 2;
    let err = store
        .register(&reset, "a", 0, 1000, &registered(&reset), false)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyRegistered { id } if id == "g"),
        "{err}"
    );
    let kept = store.get("g").unwrap().unwrap();
    assert_eq!(kept.epoch.reset_count, 1);
    assert_eq!(kept.result.status, PodStatus::Contraindicated);
    // G's AK under another identifier: refused, naming the holder.
    let mut hijack = pod("e");
    hijack.identity.ak_name = pod("g").identity.ak_name;
    let err = store
        .register(&hijack, "a", 0, 1000, &registered(&hijack), false)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::AkInUse { holder, .. } if holder == "g"),
        "{err}"
    );
    assert!(store.get("e").unwrap().is_none());
    // G's TPM with a new AK (its EK made another one) under another identifier: refused
    // by the EK, naming the holder.
    let mut new_ak = pod("f");
    new_ak.identity.ek_cert = pod("g").identity.ek_cert;
    let err = store
        .register(&new_ak, "a", 0, 1000, &registered(&new_ak), false)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::EkInUse { holder, .. } if holder == "g"),
        "{err}"
    );
    assert!(store.get("f").unwrap().is_none());
    // Both rules hold after the store is opened again (the AK index is kept on disk).
    drop(store);
    let store = Sqlite::open(&path).unwrap();
    assert!(store
        .register(&hijack, "a", 0, 1000, &registered(&hijack), false)
        .is_err());
    // Removal: announced with the last status, and it frees the identifier and the AK.
    let change = store.remove("g", 42, true, "ops (token)").unwrap().unwrap();
    assert_eq!(
        (change.from, change.to, change.at),
        (PodStatus::Contraindicated, PodStatus::Removed, 42)
    );
    let due = store.due_deliveries(u64::MAX / 2, 0, 10).unwrap();
    assert_eq!(due.len(), 1);
    let body: jek_service_client::wire::StatusChange = serde_json::from_str(&due[0].body).unwrap();
    assert_eq!(body, change);
    assert_eq!(body.by.as_deref(), Some("ops (token)"));
    // The audit: who registered and who removed, newest first, with the last status.
    let log = store.audit_log(10).unwrap();
    let seen: Vec<(AuditAction, Option<&str>, &str)> = log
        .iter()
        .map(|e| (e.action, e.id.as_deref(), e.by.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (AuditAction::Removed, Some("g"), "ops (token)"),
            (AuditAction::Registered, Some("g"), "ops (token)"),
        ]
    );
    assert_eq!(
        log[0].detail.as_deref(),
        Some("last status contraindicated")
    );
    // The EK is free again with the removal: G's TPM may come back under f.
    store
        .register(&new_ak, "a", 0, 1000, &registered(&new_ak), true)
        .unwrap();
    let due = store.due_deliveries(u64::MAX / 2, 0, 10).unwrap();
    let announced: AuditEvent = serde_json::from_str(&due.last().unwrap().body).unwrap();
    assert_eq!(announced, registered(&new_ak));
    store.remove("f", 43, false, "ops (token)").unwrap();
    store
        .register(&hijack, "a", 0, 1000, &registered(&hijack), false)
        .unwrap();
    // e holds that AK now, so g cannot come back with it.
    let err = store
        .register(&reset, "a", 0, 1000, &registered(&reset), false)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::AkInUse { holder, .. } if holder == "e"),
        "{err}"
    );
}

/// A store made before registrations carried a Kubernetes pod opens with the column
/// added, its pods read back without one, and a new registration keeps its own.
#[test]
fn a_store_from_before_kubernetes_identities_opens_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let old = rusqlite::Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE pods (
               id TEXT PRIMARY KEY, pod TEXT NOT NULL, agent TEXT NOT NULL, bundle TEXT NOT NULL,
               pod_yaml TEXT, identity TEXT NOT NULL,
               reset_count INTEGER NOT NULL, restart_count INTEGER NOT NULL, clock INTEGER NOT NULL,
               last_clock INTEGER NOT NULL, status TEXT NOT NULL, result TEXT NOT NULL,
               owner TEXT, lease_until INTEGER NOT NULL, next_due INTEGER NOT NULL);
             INSERT INTO pods VALUES ('o', 'pod-o', 'http://127.0.0.1:1', 'sha256:00', NULL,
               '{\"akName\":\"000b0f\",\"akPublic\":\"AQ==\",\"akPrivate\":\"Ag==\",\"ekCert\":\"AA==\",\"ekChainPem\":\"\"}',
               1, 0, 10, 10, 'none', '{\"status\":\"none\",\"claims\":{}}', NULL, 0, 0);",
        )
        .unwrap();
    }
    let store = Sqlite::open(&path).unwrap();
    let old = store.get("o").unwrap().unwrap();
    assert_eq!((old.pod.as_str(), old.kubernetes), ("pod-o", None));
    let mut k = pod("k");
    k.kubernetes = Some(jek_service_client::wire::KubernetesPod {
        namespace: "shop".into(),
        name: "web-0".into(),
        uid: "3f1c6a2e-9b7d-4c55-8e21-0a4b6c8d9e0f".into(),
    });
    store
        .register(&k, "a", 0, 1000, &registered(&k), false)
        .unwrap();
    drop(store);
    let store = Sqlite::open(&path).unwrap();
    assert_eq!(store.get("k").unwrap().unwrap().kubernetes, k.kubernetes);
}

#[test]
fn delivery_retries_are_held_and_rescheduled() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(&dir.path().join("v.db")).unwrap();
    store
        .register(&pod("p1"), "a", 0, 10_000, &registered(&pod("p1")), false)
        .unwrap();
    store
        .record("p1", "a", &outcome(PodStatus::Affirming, 1, true))
        .unwrap();
    let due = store.due_deliveries(100, 60_000, 10).unwrap();
    assert_eq!(due.len(), 1);
    // Held while one deliverer works on it.
    assert!(store.due_deliveries(200, 60_000, 10).unwrap().is_empty());
    store.retry(due[0].seq, 300).unwrap();
    let again = store.due_deliveries(300, 60_000, 10).unwrap();
    assert_eq!(again[0].attempts, 1);
    store.delivered(again[0].seq).unwrap();
    assert!(store
        .due_deliveries(u64::MAX / 2, 0, 10)
        .unwrap()
        .is_empty());
}

#[test]
fn the_verifier_refuses_plain_http_off_loopback_and_a_missing_policy() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    jek_service_server::auth::add_token(&tokens, jek_service_server::auth::Role::Admin, "ops")
        .unwrap();
    // Under its name and under its earlier name, the same program.
    for program in [
        env!("CARGO_BIN_EXE_jek-attestation-verifier"),
        env!("CARGO_BIN_EXE_jek-verifier"),
    ] {
        let out = std::process::Command::new(program)
            .args([
                "--listen",
                "0.0.0.0:0",
                "--policy",
                "/nonexistent/policy.yaml",
                "--bundle",
                "b.jek",
            ])
            .arg("--tokens")
            .arg(&tokens)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{program}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("jek-attestation-verifier: ")
                && err.contains("/nonexistent/policy.yaml"),
            "{program}: {err}"
        );
    }
}
