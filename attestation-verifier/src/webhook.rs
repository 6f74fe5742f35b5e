//! Webhook delivery: every status change is written to the store's outbox in the same
//! transaction as the result that made it, and this loop POSTs each (JSON, oldest first)
//! until the receiver answers 2xx, with exponential backoff between tries. A verifier that
//! restarts, or another replica, picks up what is left: no change is lost, and a receiver
//! may see one twice (each carries its registration, status pair and time).

use std::sync::Arc;
use std::time::Duration;

use crate::service::{now_ms, Service};

/// The first retry comes after this; each next one after twice as long.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// After this many failed tries a delivery is dropped, with a warning.
pub const MAX_ATTEMPTS: u32 = 12;

/// The wait after `attempts` failed tries.
pub fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32.checked_shl(attempts.min(16)).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF)
}

/// Delivers the outbox to `url` until `stop` resolves.
pub async fn run(svc: Arc<Service>, url: String, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let due = svc
            .db(|s| s.due_deliveries(now_ms(), 60_000, 32))
            .await
            .unwrap_or_default();
        for d in due {
            let sent = svc
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(d.body.clone())
                .send()
                .await;
            let ok = matches!(&sent, Ok(r) if r.status().is_success());
            let seq = d.seq;
            if ok || d.attempts + 1 >= MAX_ATTEMPTS {
                if !ok {
                    tracing::warn!(seq, attempts = d.attempts + 1, "webhook delivery given up");
                }
                let _ = svc.db(move |s| s.delivered(seq)).await;
            } else {
                let wait = backoff(d.attempts);
                tracing::debug!(
                    seq,
                    attempt = d.attempts + 1,
                    ?wait,
                    "webhook delivery failed; retrying"
                );
                let next =
                    now_ms().saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
                let _ = svc.db(move |s| s.retry(seq, next)).await;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
