//! Against a real swtpm: measurement fails closed and the log explains the PCRs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jek_measure::eventlog::EV_EVENT_TAG;
use jek_measure::{Event, Measured, PlannedEvent};
use jek_tpm::{measure, MeasureError, Swtpm, Tpm};
use jek_verifier::Sha256Digest;

fn event(pcr: u32, text: &str) -> PlannedEvent {
    PlannedEvent {
        what: Measured::PodConfig,
        event: Event {
            pcr,
            event_type: EV_EVENT_TAG,
            digest: Sha256Digest::of(text.as_bytes()),
            data: text.as_bytes().to_vec(),
        },
    }
}

#[test]
fn measure_extends_and_log_replays_to_tpm() {
    let dir = tempfile::tempdir().unwrap();
    let swtpm = Swtpm::start(dir.path()).unwrap();
    let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
    let events = [event(9, "a"), event(12, "b"), event(9, "c")];
    let log = measure(&mut tpm, &events).unwrap();
    assert_eq!(log.events.len(), 3);
    let read = tpm.read_pcrs(&[9, 12]).unwrap();
    assert_eq!(read, log.replay());

    // A second measurement into the same TPM could not be explained by its own log.
    let err = measure(&mut tpm, &events).unwrap_err();
    assert!(
        matches!(err, MeasureError::NotFresh { pcr: 9, .. }),
        "{err}"
    );
    drop(tpm);
    swtpm.stop().unwrap();
}

#[test]
fn two_tpms_do_not_share_pcrs() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ta, tb) = (
        Swtpm::start(a.path()).unwrap(),
        Swtpm::start(b.path()).unwrap(),
    );
    assert_ne!(ta.port(), tb.port());
    let mut ca = Tpm::connect(&ta.tcti()).unwrap();
    let mut cb = Tpm::connect(&tb.tcti()).unwrap();
    measure(&mut ca, &[event(12, "pod a")]).unwrap();
    measure(&mut cb, &[event(12, "pod b")]).unwrap();
    let (pa, pb) = (ca.read_pcrs(&[12]).unwrap(), cb.read_pcrs(&[12]).unwrap());
    assert_ne!(pa, pb);
    assert_eq!(
        pa[&12],
        jek_measure::eventlog::extend(&Sha256Digest([0; 32]), &Sha256Digest::of(b"pod a"))
    );
}

#[test]
fn killed_swtpm_fails_measurement_naming_the_pcr() {
    let dir = tempfile::tempdir().unwrap();
    let swtpm = Swtpm::start(dir.path()).unwrap();
    let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
    // Reachable for the freshness read, gone for the extend.
    tpm.read_pcrs(&[4]).unwrap();
    swtpm.stop().unwrap();
    let err = measure(&mut tpm, &[event(4, "kernel")]).unwrap_err();
    let text = format!("{err}");
    assert!(text.contains("PCR 4"), "{text}");
}

#[test]
fn missing_swtpm_program_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let err = Swtpm::start_program("/nonexistent/swtpm".as_ref(), dir.path()).unwrap_err();
    assert!(format!("{err}").contains("install swtpm"), "{err}");
}
