//! Sigstore checks against a private, offline trust root (jek-sigstore-testroot): a good
//! bundle is accepted, and each defect is rejected at the step that owns it.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use jek_sigstore_testroot::{Faults, Identity as TestIdentity, TestRoot};
use jek_verifier::sigstore::{Identity, SigstorePolicy, Step};

const ARTIFACT: &[u8] = b"a jek bundle, as far as Sigstore is concerned";

fn policy(root: &TestRoot, id: &TestIdentity) -> SigstorePolicy {
    SigstorePolicy::keyless(
        &root.trusted_root_json(),
        vec![Identity {
            issuer: id.issuer.clone(),
            subject: id.subject.clone(),
        }],
    )
    .expect("policy")
}

fn failed_step(policy: &SigstorePolicy, artifact: &[u8], bundle: &str) -> Step {
    match policy.check(artifact, bundle.as_bytes()) {
        Ok(a) => panic!("accepted: {a:?}"),
        Err(e) => {
            assert!(e.to_string().contains(e.step.name()), "{e}");
            e.step
        }
    }
}

#[test]
fn a_correct_bundle_is_accepted_and_names_its_signer() {
    let root = TestRoot::new("good");
    let id = TestIdentity::default();
    let bundle = root.sign(ARTIFACT, &id, Faults::None);
    let approval = policy(&root, &id)
        .check(ARTIFACT, bundle.as_bytes())
        .expect("a correct bundle verifies");
    assert_eq!(approval.digest(), jek_verifier::Sha256Digest::of(ARTIFACT));
    assert!(
        approval.signer().contains(&id.subject),
        "{}",
        approval.signer()
    );
    assert!(
        approval.signer().contains(&id.issuer),
        "{}",
        approval.signer()
    );
}

#[test]
fn each_defect_fails_at_its_own_step() {
    let root = TestRoot::new("matrix");
    let id = TestIdentity::default();
    let good = policy(&root, &id);

    let wrong_subject = TestIdentity {
        subject: "https://ci.example.invalid/someone-else/.github/workflows/x.yml@refs/heads/main"
            .into(),
        ..id.clone()
    };
    let bundle = root.sign(ARTIFACT, &wrong_subject, Faults::None);
    assert_eq!(failed_step(&good, ARTIFACT, &bundle), Step::IdentitySubject);

    let wrong_issuer = TestIdentity {
        issuer: "https://accounts.example.invalid".into(),
        ..id.clone()
    };
    let bundle = root.sign(ARTIFACT, &wrong_issuer, Faults::None);
    assert_eq!(failed_step(&good, ARTIFACT, &bundle), Step::IdentityIssuer);

    let bundle = root.sign(ARTIFACT, &id, Faults::SignedAfterExpiry);
    assert_eq!(
        failed_step(&good, ARTIFACT, &bundle),
        Step::CertificateValidity
    );

    let bundle = root.sign(ARTIFACT, &id, Faults::EntryNotInTree);
    assert_eq!(
        failed_step(&good, ARTIFACT, &bundle),
        Step::TlogInclusionProof
    );

    let bundle = root.sign(ARTIFACT, &id, Faults::BadCheckpointSignature);
    assert_eq!(failed_step(&good, ARTIFACT, &bundle), Step::TlogCheckpoint);

    let bundle = root.sign(ARTIFACT, &id, Faults::BadSet);
    assert_eq!(failed_step(&good, ARTIFACT, &bundle), Step::TlogSet);

    let bundle = root.sign(ARTIFACT, &id, Faults::BadSct);
    assert_eq!(failed_step(&good, ARTIFACT, &bundle), Step::Sct);

    let bundle = root.sign(ARTIFACT, &id, Faults::NoInclusionProof);
    assert_eq!(
        failed_step(&good, ARTIFACT, &bundle),
        Step::TlogInclusionProof
    );

    let bundle = root.sign(ARTIFACT, &id, Faults::None);
    assert_eq!(
        failed_step(&good, b"another artifact", &bundle),
        Step::Artifact
    );

    // Same logs, another CA: only the chain is wrong.
    let rogue = TestRoot::with_ca_seed("matrix", "rogue CA");
    let bundle = rogue.sign(ARTIFACT, &id, Faults::None);
    assert_eq!(
        failed_step(&good, ARTIFACT, &bundle),
        Step::CertificateChain
    );

    // An entirely different Sigstore: its log is unknown too, and the first check to run
    // (the SET that authenticates the signing time) rejects it.
    let other = TestRoot::new("someone else's sigstore");
    let bundle = other.sign(ARTIFACT, &id, Faults::None);
    let step = failed_step(&good, ARTIFACT, &bundle);
    assert!(
        matches!(
            step,
            Step::TlogSet | Step::TlogUnknownLog | Step::CertificateChain
        ),
        "{step}"
    );

    assert_eq!(
        failed_step(&good, ARTIFACT, "{not a bundle"),
        Step::BundleFormat
    );
}

#[test]
fn a_policy_with_several_identities_accepts_any_of_them() {
    let root = TestRoot::new("several");
    let a = TestIdentity::default();
    let b = TestIdentity {
        issuer: "https://gitlab.example.invalid".into(),
        subject: "project_path:jek/kernel:ref_type:branch:ref:main".into(),
    };
    let policy = SigstorePolicy::keyless(
        &root.trusted_root_json(),
        [&a, &b]
            .iter()
            .map(|i| Identity {
                issuer: i.issuer.clone(),
                subject: i.subject.clone(),
            })
            .collect(),
    )
    .expect("policy");
    for id in [&a, &b] {
        let bundle = root.sign(ARTIFACT, id, Faults::None);
        policy.check(ARTIFACT, bundle.as_bytes()).expect("accepted");
    }
    // a's subject under b's issuer is not an accepted pair.
    let mixed = TestIdentity {
        issuer: b.issuer.clone(),
        subject: a.subject.clone(),
    };
    let bundle = root.sign(ARTIFACT, &mixed, Faults::None);
    assert_eq!(
        failed_step(&policy, ARTIFACT, &bundle),
        Step::IdentitySubject
    );
}

#[test]
fn bad_trusted_roots_and_empty_identity_lists_are_refused() {
    let e = SigstorePolicy::keyless("{}", vec![]).expect_err("no identities");
    assert_eq!(e.step, Step::TrustedRoot);
    let e = SigstorePolicy::keyless(
        "not json",
        vec![Identity {
            issuer: "i".into(),
            subject: "s".into(),
        }],
    )
    .expect_err("bad root");
    assert_eq!(e.step, Step::TrustedRoot);
}
