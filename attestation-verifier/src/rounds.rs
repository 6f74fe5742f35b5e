//! Continuous attestation: at every tick, this replica renews its leases, claims the pods
//! that are due and attests each with a fresh nonce, many at once; each result is signed
//! and written with its history row and webhook delivery in one transaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jek_attest::evidence::EkMaterial;
use jek_attest::registration::Registration;
use jek_attest::{Claim, Status};
use jek_measure::plan::PCRS;

use crate::service::{claims_of, now_ms, now_s, Service};
use crate::store::{PodRow, RoundOutcome, StoredResult};
use jek_service_client::wire::{
    AkRef, FailingClaim, FailingPart, PodStatus, QuoteRequest, RoundPart,
};

/// How often a replica looks for due pods, as a fraction of the interval.
const TICKS_PER_INTERVAL: u32 = 4;

/// The longest an agent that stopped answering is left alone, in intervals.
const MAX_QUIET_INTERVALS: u32 = 16;

/// What this replica knows of each agent: its rounds in flight, and how long to leave it
/// alone after it stopped answering. Pure: the loop asks it, and tells it how each round
/// went.
#[derive(Debug, Default)]
pub struct AgentBook {
    agents: std::collections::HashMap<String, AgentState>,
}

#[derive(Debug, Default)]
struct AgentState {
    in_flight: usize,
    /// Rounds in a row that got no answer.
    silent: u32,
    /// No round starts for this agent's pods before this (ms).
    quiet_until_ms: u64,
}

/// Whether a pod's round may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Yes.
    Go,
    /// Its agent has `cap` rounds in flight: at a later tick.
    Busy,
    /// Its agent stopped answering: not before this time (ms).
    Quiet(u64),
}

impl AgentBook {
    /// Whether a round for a pod behind `agent` may start at `now_ms`, with at most `cap`
    /// rounds in flight per agent; a started round is counted until [`Self::finished`].
    pub fn admit(&mut self, agent: &str, now_ms: u64, cap: usize) -> Admit {
        let state = self.agents.entry(agent.to_string()).or_default();
        if now_ms < state.quiet_until_ms {
            return Admit::Quiet(state.quiet_until_ms);
        }
        if state.in_flight >= cap.max(1) {
            return Admit::Busy;
        }
        state.in_flight += 1;
        Admit::Go
    }

    /// A round for `agent` ended at `now_ms`: the agent answered, or it did not (no
    /// connection, no answer in time). Each silence in a row doubles the time it is left
    /// alone, from one interval up to `MAX_QUIET_INTERVALS` (16); an answer ends it.
    pub fn finished(&mut self, agent: &str, answered: bool, now_ms: u64, interval_ms: u64) {
        let Some(state) = self.agents.get_mut(agent) else {
            return;
        };
        state.in_flight = state.in_flight.saturating_sub(1);
        if answered {
            state.silent = 0;
            state.quiet_until_ms = 0;
        } else {
            state.silent = state.silent.saturating_add(1);
            let intervals = 1u64
                << state
                    .silent
                    .saturating_sub(1)
                    .min(MAX_QUIET_INTERVALS.ilog2());
            let until = now_ms.saturating_add(interval_ms.saturating_mul(intervals));
            state.quiet_until_ms = state.quiet_until_ms.max(until);
        }
        if state.in_flight == 0 && state.silent == 0 {
            self.agents.remove(agent);
        }
    }
}

/// Runs rounds until `stop` resolves; then gives up this replica's leases.
pub async fn run(svc: Arc<Service>, stop: tokio::sync::watch::Receiver<bool>) {
    let interval = svc.config.interval;
    let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    let tick = (interval / TICKS_PER_INTERVAL).max(Duration::from_millis(50));
    // A lease outlives one interval; a dead replica's pods are claimed by another within
    // one more tick.
    let lease_ms = interval_ms;
    let permits = Arc::new(tokio::sync::Semaphore::new(svc.config.concurrency.max(1)));
    // A pod whose round is still running (a slow or silent agent) is not started again:
    // one round per pod at a time. And one agent has at most `agent_concurrency` rounds
    // in flight, and is left alone for a while once it stops answering, so a silent agent
    // with many pods cannot take the permits the others need.
    let in_flight: Arc<std::sync::Mutex<std::collections::HashSet<String>>> = Arc::default();
    let book: Arc<std::sync::Mutex<AgentBook>> = Arc::default();
    // Told when a round ends: a pod whose agent was at its limit starts then, not at the
    // next tick (else one agent's pods would get at most `agent_concurrency` rounds a tick).
    let done = Arc::new(tokio::sync::Notify::new());
    let starter = Starter {
        svc: svc.clone(),
        permits,
        in_flight: in_flight.clone(),
        book: book.clone(),
        done: done.clone(),
        interval_ms,
    };
    let mut stop = stop;
    loop {
        if *stop.borrow() {
            break;
        }
        let replica = svc.config.replica.clone();
        let limit = svc.config.concurrency.max(1) * 64;
        let claimed = svc
            .db(move |s| s.claim_due(&replica, now_ms(), lease_ms, limit))
            .await;
        // Pods behind a quiet agent: their next round is pushed to its end.
        let mut deferred: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
        // Pods turned unreachable without a round, at most `concurrency` a tick, so that a
        // dead agent's thousand pods do not queue a thousand writes ahead of a live pod's.
        let mut quieted = 0;
        // Pods whose agent had all its rounds in flight: started as rounds end, this tick.
        let mut waiting = Vec::new();
        if let Ok(due) = claimed {
            for row in due {
                if in_flight
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .contains(&row.id)
                {
                    continue;
                }
                let admitted = book
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .admit(&row.agent, now_ms(), svc.config.agent_concurrency);
                match admitted {
                    Admit::Go => {}
                    Admit::Busy => {
                        waiting.push(row);
                        continue;
                    }
                    Admit::Quiet(until) if row.result.status == PodStatus::Unreachable => {
                        deferred.entry(until).or_default().push(row.id.clone());
                        continue;
                    }
                    Admit::Quiet(_) if quieted >= svc.config.concurrency.max(1) => continue,
                    Admit::Quiet(until) => {
                        // Said once per pod: its agent is silent, so is its result.
                        quieted += 1;
                        in_flight
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(row.id.clone());
                        let (svc, in_flight) = (svc.clone(), in_flight.clone());
                        tokio::spawn(async move {
                            let outcome = quiet(&svc, &row, until);
                            record(&svc, &row, outcome).await;
                            in_flight
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .remove(&row.id);
                        });
                        continue;
                    }
                }
                if !starter.start(row).await {
                    break;
                }
            }
        }
        for (until, ids) in deferred {
            let replica = svc.config.replica.clone();
            let _ = svc.db(move |s| s.defer(&replica, &ids, until)).await;
        }
        let next_tick = tokio::time::Instant::now() + tick;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next_tick) => break,
                _ = stop.changed() => break,
                () = done.notified(), if !waiting.is_empty() => {
                    let mut still = Vec::with_capacity(waiting.len());
                    for row in waiting.drain(..) {
                        let admitted = book
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .admit(&row.agent, now_ms(), svc.config.agent_concurrency);
                        match admitted {
                            Admit::Go => {
                                if !starter.start(row).await {
                                    break;
                                }
                            }
                            Admit::Busy => still.push(row),
                            // Its agent went quiet meanwhile: the next tick decides.
                            Admit::Quiet(_) => {}
                        }
                    }
                    waiting = still;
                }
            }
        }
    }
    let replica = svc.config.replica.clone();
    let _ = svc.db(move |s| s.release(&replica)).await;
}

/// What starting a round needs: the replica's permits, the pods in flight, the agents'
/// book, and who to tell when a round ends.
struct Starter {
    svc: Arc<Service>,
    permits: Arc<tokio::sync::Semaphore>,
    in_flight: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    book: Arc<std::sync::Mutex<AgentBook>>,
    done: Arc<tokio::sync::Notify>,
    interval_ms: u64,
}

impl Starter {
    /// Marks `row` in flight, waits for a permit and runs its round on a task of its own
    /// (its agent admitted it already); when the round ends, the book and the pods in
    /// flight are updated and `done` is told. False when the permits are gone.
    async fn start(&self, row: PodRow) -> bool {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(row.id.clone());
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        let (svc, in_flight, book, done) = (
            self.svc.clone(),
            self.in_flight.clone(),
            self.book.clone(),
            self.done.clone(),
        );
        let interval_ms = self.interval_ms;
        tokio::spawn(async move {
            let (id, agent) = (row.id.clone(), row.agent.clone());
            let answered = round(&svc, row).await;
            book.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .finished(&agent, answered, now_ms(), interval_ms);
            in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id);
            drop(permit);
            done.notify_one();
        });
        true
    }
}

/// One round for one pod: quote through its agent, appraise, sign, record. Returns
/// whether the agent answered (a refusal or a bad quote is an answer; no connection or no
/// answer in time is not).
pub async fn round(svc: &Arc<Service>, row: PodRow) -> bool {
    let started = Instant::now();
    let (outcome, answered) = attest_once(svc, &row, started).await;
    record(svc, &row, outcome).await;
    answered
}

async fn record(svc: &Arc<Service>, row: &PodRow, outcome: RoundOutcome) {
    let (id, replica) = (row.id.clone(), svc.config.replica.clone());
    let recorded = svc.db(move |s| s.record(&id, &replica, &outcome)).await;
    if recorded.is_ok() {
        svc.rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    match recorded {
        Ok(Some(change)) => {
            tracing::info!(pod = %change.pod, from = %change.from, to = %change.to, "status changed");
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(pod = %row.pod, error = %e, "the round's result was not stored"),
    }
}

/// The outcome for a pod whose agent is left alone until `until_ms`: unreachable, due
/// again then.
fn quiet(svc: &Service, row: &PodRow, until_ms: u64) -> RoundOutcome {
    let mut outcome = unreachable(
        svc,
        row,
        format!(
            "agent {}: stopped answering; asked again in {} ms",
            row.agent,
            until_ms.saturating_sub(now_ms())
        ),
    );
    outcome.next_due_ms = until_ms;
    outcome
}

fn next_due(svc: &Service) -> u64 {
    now_ms().saturating_add(u64::try_from(svc.config.interval.as_millis()).unwrap_or(u64::MAX))
}

fn unreachable(svc: &Service, row: &PodRow, error: String) -> RoundOutcome {
    RoundOutcome {
        result: StoredResult {
            status: PodStatus::Unreachable,
            claims: row.result.claims.clone(),
            error: Some(error.clone()),
            // The last signed result is kept for the record, but not served while the pod
            // is unreachable (the API answers 502), and it expires at its `exp`.
            token: row.result.token.clone(),
            at: Some(now_s()),
        },
        clock: None,
        next_due_ms: next_due(svc),
        failing: vec![FailingClaim {
            claim: FailingPart::Round(RoundPart::Agent),
            status: PodStatus::Unreachable,
            reason: error,
        }],
        notify: svc.config.webhook.is_some(),
    }
}

/// A round's outcome, and whether the agent answered.
async fn attest_once(svc: &Arc<Service>, row: &PodRow, started: Instant) -> (RoundOutcome, bool) {
    let mut answered = true;
    let outcome = appraise_once(svc, row, started, &mut answered).await;
    (outcome, answered)
}

async fn appraise_once(
    svc: &Arc<Service>,
    row: &PodRow,
    started: Instant,
    answered: &mut bool,
) -> RoundOutcome {
    let judge = svc.judge();
    let Some(bundle) = judge.bundles.get(&row.bundle) else {
        return unreachable(
            svc,
            row,
            format!("bundle {} is no longer loaded", row.bundle),
        );
    };
    let reference = match svc.reference(row).await {
        Ok(r) => r,
        Err(e) => return unreachable(svc, row, format!("the pod file: {e}")),
    };
    let mut nonce = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let agent = match svc.agents.agent(&row.agent) {
        Ok(a) => a,
        Err(e) => return unreachable(svc, row, e.to_string()),
    };
    let req = QuoteRequest {
        ak: AkRef {
            public: row.identity.ak_public.clone(),
            private: row.identity.ak_private.clone(),
        },
        nonce: jek_service_client::wire::B64(nonce.to_vec()),
        pcrs: PCRS.to_vec(),
    };
    let quoted = tokio::time::timeout(svc.config.agent_timeout, agent.quote(&row.id, &req)).await;
    let resp = match quoted {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            *answered = !matches!(e, crate::remote::RemoteError::Unreachable { .. });
            return unreachable(svc, row, e.to_string());
        }
        Err(_) => {
            *answered = false;
            return unreachable(
                svc,
                row,
                format!(
                    "agent {}: no answer within {} ms",
                    row.agent,
                    svc.config.agent_timeout.as_millis()
                ),
            );
        }
    };
    let t_quoted = started.elapsed();
    let now = now_s();
    let ak_name = row.identity.ak_name.0.clone();
    let ek = EkMaterial {
        cert: row.identity.ek_cert.0.clone(),
        chain: row.identity.ek_chain_pem.clone(),
    };
    let identity = judge.chains.pin_identity(ak_name, &ek, now);
    let evidence = jek_attest::appraise::Evidence {
        attest: resp.attest.0,
        signature: resp.signature.0,
        ak_public: row.identity.ak_public.0.clone(),
        pcrs: resp.pcrs,
        event_log: resp.event_log.0,
    };
    let registration = Registration {
        id: row.id.clone(),
        pod: row.pod.clone(),
        ak_name: row.identity.ak_name.clone(),
        ek_cert_sha256: jek_verifier::Sha256Digest::of(&row.identity.ek_cert.0),
        epoch: row.epoch,
        last_clock: row.last_clock,
    };
    let base_dir = reference.base_dir.clone();
    let policy = judge.images.as_ref();
    let verdict = |e: &jek_measure::plan::ContainerEvent| {
        jek_image::policy::verdict(policy, &e.reference, &base_dir, &e.manifest)
            .map_err(|e| e.to_string())
    };
    let verifier = jek_attest::Verifier {
        bundle: bundle.verdict.as_ref(),
        ca: &judge.ca,
        policy_id: &judge.policy_id,
        now,
    };
    let reference = jek_attest::appraise::Reference {
        bundle: bundle.verdict.as_ref(),
        pod_segment: &reference.segment,
        images: reference.image_rules(&verdict),
        registration: Some(&registration),
    };
    let (appraisal, mut ear) = jek_attest::protocol::judge(
        &evidence, &row.pod, &reference, &nonce, &identity, &verifier,
    );
    if let Some(sub) = ear.submods.get_mut(&row.pod) {
        sub.kubernetes.clone_from(&row.kubernetes);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        sub.timings_ms = Some(jek_attest::ear::Timings {
            identity: 0.0,
            nonce_to_verdict: ms(started.elapsed()),
            appraise: ms(started.elapsed().saturating_sub(t_quoted)),
            total: ms(started.elapsed()),
        });
    }
    let clock = (appraisal.status(Claim::BootEpoch) == Status::Affirming)
        .then(|| {
            jek_attest::tpm2::Quote::parse(&evidence.attest)
                .ok()
                .map(|q| q.clock)
        })
        .flatten();
    let Some(sub) = ear.submods.get(&row.pod) else {
        return unreachable(svc, row, "the appraisal made no result for the pod".into());
    };
    let claims = claims_of(sub);
    let failing = sub
        .failing()
        .map(|(c, r)| FailingClaim {
            claim: FailingPart::Claim(c),
            status: r.status.into(),
            reason: r.reason.clone().unwrap_or_default(),
        })
        .collect();
    let status = sub.status.into();
    // Valid for the result's time to live, rounded up to whole seconds: a pod that stops
    // answering loses its result that soon.
    let ttl = svc.config.result_ttl.as_secs() + u64::from(svc.config.result_ttl.subsec_nanos() > 0);
    ear.exp = Some(now.saturating_add(ttl.max(1)));
    let token = match svc.key.sign(&ear) {
        Ok(t) => t,
        Err(e) => return unreachable(svc, row, format!("cannot sign the result: {e}")),
    };
    RoundOutcome {
        result: StoredResult {
            status,
            claims,
            error: None,
            token: Some(token),
            at: Some(now),
        },
        clock,
        next_due_ms: next_due(svc),
        failing,
        notify: svc.config.webhook.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_gets_at_most_its_cap_and_a_silent_one_is_left_alone_longer_each_time() {
        let mut book = AgentBook::default();
        let (a, b) = ("unix:/run/a.sock", "https://b:7070");
        // Two rounds in flight for a, then a is busy; b is not affected.
        assert_eq!(book.admit(a, 0, 2), Admit::Go);
        assert_eq!(book.admit(a, 0, 2), Admit::Go);
        assert_eq!(book.admit(a, 0, 2), Admit::Busy);
        assert_eq!(book.admit(b, 0, 2), Admit::Go);
        // a answers: a slot frees.
        book.finished(a, true, 100, 1000);
        assert_eq!(book.admit(a, 100, 2), Admit::Go);
        // a stops answering: left alone one interval, then two, four... up to 16.
        book.finished(a, false, 1000, 1000);
        assert_eq!(book.admit(a, 1500, 2), Admit::Quiet(2000));
        assert_eq!(book.admit(a, 2000, 2), Admit::Go);
        book.finished(a, false, 2000, 1000);
        assert_eq!(book.admit(a, 2000, 2), Admit::Quiet(4000));
        for _ in 0..10 {
            assert_eq!(book.admit(a, u64::MAX / 2, 2), Admit::Go);
            book.finished(a, false, 10_000, 1000);
        }
        assert_eq!(book.admit(a, 10_000, 2), Admit::Quiet(26_000));
        // An answer ends it at once.
        book.finished(a, true, 10_000, 1000);
        assert_eq!(book.admit(a, 10_000, 2), Admit::Go);
        // A cap of 0 is read as 1.
        assert_eq!(book.admit("c", 0, 0), Admit::Go);
        assert_eq!(book.admit("c", 0, 0), Admit::Busy);
    }
}
