//! The PostgreSQL backend, for several verifier replicas sharing one fleet. Leases decide
//! which replica attests a pod: a replica renews its own at every tick and claims only
//! pods whose lease is free or has run out (`FOR UPDATE SKIP LOCKED`, so two replicas
//! never claim the same pod). A connection that fails is dropped and made again at the
//! next call, so the verifier resumes when the database returns.

use std::sync::Mutex;

use postgres::{Client, NoTls};

use super::{
    audit_row, change, i, json, removal, removal_event, stored_status, u, Backend, Columns,
    Delivery, PodRow, RoundOutcome, StoreError, COLUMNS, HISTORY,
};
use jek_service_client::wire::{AuditEvent, HistoryEntry, StatusChange};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pods (
  id TEXT PRIMARY KEY, pod TEXT NOT NULL, agent TEXT NOT NULL, bundle TEXT NOT NULL,
  pod_yaml TEXT, identity TEXT NOT NULL,
  reset_count BIGINT NOT NULL, restart_count BIGINT NOT NULL, clock BIGINT NOT NULL,
  last_clock BIGINT NOT NULL, status TEXT NOT NULL, result TEXT NOT NULL,
  owner TEXT, lease_until BIGINT NOT NULL, next_due BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS pods_due ON pods (next_due);
CREATE TABLE IF NOT EXISTS history (
  seq BIGSERIAL PRIMARY KEY, pod_id TEXT NOT NULL, at BIGINT NOT NULL, status TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS history_pod ON history (pod_id, seq);
CREATE TABLE IF NOT EXISTS outbox (
  seq BIGSERIAL PRIMARY KEY, body TEXT NOT NULL, attempts BIGINT NOT NULL, next_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS result_keys (kid TEXT PRIMARY KEY, jwk TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS replicas (id TEXT PRIMARY KEY, seen_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS ak_names (ak_name TEXT PRIMARY KEY, pod_id TEXT NOT NULL UNIQUE);
INSERT INTO ak_names (ak_name, pod_id)
  SELECT identity::json->>'akName', id FROM pods ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS ek_certs (ek_sha256 TEXT PRIMARY KEY, pod_id TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS audit (
  seq BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  pod_id TEXT, pod TEXT, detail TEXT);
ALTER TABLE pods ADD COLUMN IF NOT EXISTS kubernetes TEXT;
";

/// A PostgreSQL store.
pub struct Postgres {
    url: String,
    client: Mutex<Option<Client>>,
}

fn db(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
        backend: "postgresql",
        reason: e.to_string(),
    }
}

fn row(r: &postgres::Row) -> Result<Columns, postgres::Error> {
    Ok(Columns {
        id: r.try_get(0)?,
        pod: r.try_get(1)?,
        agent: r.try_get(2)?,
        bundle: r.try_get(3)?,
        pod_yaml: r.try_get(4)?,
        identity: r.try_get(5)?,
        reset_count: r.try_get(6)?,
        restart_count: r.try_get(7)?,
        clock: r.try_get(8)?,
        last_clock: r.try_get(9)?,
        result: r.try_get(10)?,
        owner: r.try_get(11)?,
        kubernetes: r.try_get(12)?,
    })
}

fn history(
    c: &mut impl postgres::GenericClient,
    id: &str,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let rows = c
        .query(
            "SELECT at, status FROM history WHERE pod_id = $1 ORDER BY seq DESC LIMIT $2",
            &[&id, &i(HISTORY as u64)],
        )
        .map_err(db)?;
    rows.iter()
        .map(|r| {
            let status: String = r.try_get(1).map_err(db)?;
            Ok(HistoryEntry {
                at: u(r.try_get(0).map_err(db)?),
                status: stored_status(id, &status)?,
            })
        })
        .collect()
}

/// Indexes the EK of every pod stored before EKs were (a store from an older verifier).
fn index_eks(c: &mut Client) -> Result<(), StoreError> {
    let rows = c
        .query(
            "SELECT id, identity FROM pods WHERE id NOT IN (SELECT pod_id FROM ek_certs)",
            &[],
        )
        .map_err(db)?;
    for r in rows {
        let (id, identity): (String, String) =
            (r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?);
        if let Some(ek) = super::ek_sha256_of(&identity) {
            c.execute(
                "INSERT INTO ek_certs (ek_sha256, pod_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&ek, &id],
            )
            .map_err(db)?;
        }
    }
    Ok(())
}

/// Writes `event` to the audit table, and with `notify` to the outbox.
fn insert_audit(
    tx: &mut postgres::Transaction<'_>,
    event: &AuditEvent,
    notify: bool,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, pod_id, pod, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &i(event.at),
            &event.by,
            &event.action.name(),
            &event.id,
            &event.pod,
            &event.detail,
        ],
    )
    .map_err(db)?;
    if notify {
        tx.execute(
            "INSERT INTO outbox (body, attempts, next_at) VALUES ($1, 0, 0)",
            &[&json(event)],
        )
        .map_err(db)?;
    }
    Ok(())
}

impl Postgres {
    /// Connects to `url` (a libpq URL or key=value string) and creates the tables.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let store = Postgres {
            url: url.to_string(),
            client: Mutex::new(None),
        };
        store.with(|c| {
            c.batch_execute(SCHEMA).map_err(db)?;
            index_eks(c)
        })?;
        Ok(store)
    }

    /// Runs `f` with a connection, made on first use and again after one failed.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.as_ref().is_none_or(Client::is_closed) {
            let mut config: postgres::Config = self.url.parse().map_err(db)?;
            config.connect_timeout(std::time::Duration::from_secs(3));
            *slot = Some(config.connect(NoTls).map_err(db)?);
        }
        let Some(client) = slot.as_mut() else {
            return Err(db("no connection"));
        };
        let result = f(client);
        if result.is_err() && client.is_valid(std::time::Duration::from_secs(1)).is_err() {
            *slot = None;
        }
        result
    }
}

impl Backend for Postgres {
    fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| c.simple_query("SELECT 1").map(|_| ()).map_err(db))
    }

    fn register(
        &self,
        pod: &PodRow,
        owner: &str,
        now_ms: u64,
        lease_until_ms: u64,
        event: &AuditEvent,
        notify: bool,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let mut tx = c.transaction().map_err(db)?;
            // Two replicas registering at once: the loser's INSERT below fails on the
            // primary keys (an error, never a replacement); these checks name the reason.
            if tx
                .query_opt("SELECT 1 FROM pods WHERE id = $1", &[&pod.id])
                .map_err(db)?
                .is_some()
            {
                return Err(StoreError::AlreadyRegistered { id: pod.id.clone() });
            }
            if let Some(r) = tx
                .query_opt(
                    "SELECT pod_id FROM ak_names WHERE ak_name = $1",
                    &[&pod.identity.ak_name.to_string()],
                )
                .map_err(db)?
            {
                return Err(StoreError::AkInUse {
                    ak_name: pod.identity.ak_name.to_string(),
                    holder: r.try_get(0).map_err(db)?,
                });
            }
            let ek = pod.identity.ek_sha256();
            if let Some(r) = tx
                .query_opt("SELECT pod_id FROM ek_certs WHERE ek_sha256 = $1", &[&ek])
                .map_err(db)?
            {
                return Err(StoreError::EkInUse {
                    ek_sha256: ek,
                    holder: r.try_get(0).map_err(db)?,
                });
            }
            tx.execute("DELETE FROM history WHERE pod_id = $1", &[&pod.id])
                .map_err(db)?;
            tx.execute(
                "INSERT INTO ak_names (ak_name, pod_id) VALUES ($1, $2)",
                &[&pod.identity.ak_name.to_string(), &pod.id],
            )
            .map_err(db)?;
            tx.execute(
                "INSERT INTO ek_certs (ek_sha256, pod_id) VALUES ($1, $2)",
                &[&ek, &pod.id],
            )
            .map_err(db)?;
            insert_audit(&mut tx, event, notify)?;
            tx.execute(
                "INSERT INTO pods (id, pod, agent, bundle, pod_yaml, identity, reset_count, restart_count, clock, last_clock, status, result, owner, lease_until, next_due, kubernetes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $15, $14, $16)",
                &[
                    &pod.id,
                    &pod.pod,
                    &pod.agent,
                    &pod.bundle,
                    &pod.pod_yaml,
                    &json(&pod.identity),
                    &i64::from(pod.epoch.reset_count),
                    &i64::from(pod.epoch.restart_count),
                    &i(pod.epoch.clock),
                    &i(pod.last_clock),
                    &pod.result.status.name(),
                    &json(&pod.result),
                    &owner,
                    &i(now_ms),
                    &i(lease_until_ms),
                    &pod.kubernetes.as_ref().map(json),
                ],
            )
            .map_err(db)?;
            tx.commit().map_err(db)
        })
    }

    fn remove(
        &self,
        id: &str,
        now_s: u64,
        notify: bool,
        by: &str,
    ) -> Result<Option<StatusChange>, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction().map_err(db)?;
            let Some(r) = tx
                .query_opt(
                    "SELECT pod, status FROM pods WHERE id = $1 FOR UPDATE",
                    &[&id],
                )
                .map_err(db)?
            else {
                return Ok(None);
            };
            let (pod, status): (String, String) =
                (r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?);
            tx.execute("DELETE FROM history WHERE pod_id = $1", &[&id])
                .map_err(db)?;
            tx.execute("DELETE FROM ak_names WHERE pod_id = $1", &[&id])
                .map_err(db)?;
            tx.execute("DELETE FROM ek_certs WHERE pod_id = $1", &[&id])
                .map_err(db)?;
            tx.execute("DELETE FROM pods WHERE id = $1", &[&id])
                .map_err(db)?;
            let change = removal(id, &pod, stored_status(id, &status)?, now_s, by);
            insert_audit(&mut tx, &removal_event(&change), false)?;
            if notify {
                tx.execute(
                    "INSERT INTO outbox (body, attempts, next_at) VALUES ($1, 0, 0)",
                    &[&json(&change)],
                )
                .map_err(db)?;
            }
            tx.commit().map_err(db)?;
            Ok(Some(change))
        })
    }

    fn audit(&self, event: &AuditEvent, notify: bool) -> Result<(), StoreError> {
        self.with(|c| {
            let mut tx = c.transaction().map_err(db)?;
            insert_audit(&mut tx, event, notify)?;
            tx.commit().map_err(db)
        })
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.with(|c| {
            let rows = c
                .query(
                    "SELECT at, actor, action, pod_id, pod, detail FROM audit ORDER BY seq DESC LIMIT $1",
                    &[&i(limit as u64)],
                )
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    audit_row(
                        r.try_get(0).map_err(db)?,
                        r.try_get(1).map_err(db)?,
                        r.try_get::<_, String>(2).map_err(db)?.as_str(),
                        r.try_get(3).map_err(db)?,
                        r.try_get(4).map_err(db)?,
                        r.try_get(5).map_err(db)?,
                    )
                })
                .collect()
        })
    }

    fn get(&self, id: &str) -> Result<Option<PodRow>, StoreError> {
        self.with(|c| {
            let found = c
                .query_opt(&format!("SELECT {COLUMNS} FROM pods WHERE id = $1"), &[&id])
                .map_err(db)?;
            match found {
                None => Ok(None),
                Some(r) => {
                    let mut pod = row(&r).map_err(db)?.decode()?;
                    pod.history = history(c, id)?;
                    Ok(Some(pod))
                }
            }
        })
    }

    fn list(&self) -> Result<Vec<PodRow>, StoreError> {
        self.with(|c| {
            let rows = c
                .query(&format!("SELECT {COLUMNS} FROM pods ORDER BY pod, id"), &[])
                .map_err(db)?;
            let mut out = Vec::new();
            for r in &rows {
                let mut pod = row(r).map_err(db)?.decode()?;
                pod.history = history(c, &pod.id)?;
                out.push(pod);
            }
            Ok(out)
        })
    }

    fn claim_due(
        &self,
        replica: &str,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<PodRow>, StoreError> {
        let (now, until, limit) = (
            i(now_ms),
            i(now_ms.saturating_add(lease_ms)),
            i(limit as u64),
        );
        self.with(|c| {
            let mut tx = c.transaction().map_err(db)?;
            tx.execute(
                "INSERT INTO replicas (id, seen_at) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
                &[&replica, &now],
            )
            .map_err(db)?;
            tx.execute(
                "UPDATE pods SET lease_until = $2 WHERE owner = $1",
                &[&replica, &until],
            )
            .map_err(db)?;
            tx.execute(
                "UPDATE pods SET owner = $1, lease_until = $2 WHERE id IN (
                   SELECT id FROM pods WHERE (owner IS NULL OR lease_until < $3)
                   ORDER BY next_due LIMIT $4 FOR UPDATE SKIP LOCKED)",
                &[&replica, &until, &now, &limit],
            )
            .map_err(db)?;
            let rows = tx
                .query(
                    &format!("SELECT {COLUMNS} FROM pods WHERE owner = $1 AND next_due <= $2 ORDER BY next_due LIMIT $3"),
                    &[&replica, &now, &limit],
                )
                .map_err(db)?;
            let rows = rows
                .iter()
                .map(|r| row(r).map_err(db))
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit().map_err(db)?;
            rows.into_iter().map(Columns::decode).collect()
        })
    }

    fn record(
        &self,
        id: &str,
        replica: &str,
        outcome: &RoundOutcome,
    ) -> Result<Option<StatusChange>, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction().map_err(db)?;
            let before = tx
                .query_opt(
                    "SELECT status, pod FROM pods WHERE id = $1 AND owner = $2 FOR UPDATE",
                    &[&id, &replica],
                )
                .map_err(db)?;
            let Some(before) = before else {
                return Ok(None);
            };
            let (before, pod): (String, String) =
                (before.try_get(0).map_err(db)?, before.try_get(1).map_err(db)?);
            let clock = outcome.clock.map(i);
            tx.execute(
                "UPDATE pods SET status = $3, result = $4, next_due = $5,
                   last_clock = GREATEST(last_clock, COALESCE($6, last_clock))
                 WHERE id = $1 AND owner = $2",
                &[
                    &id,
                    &replica,
                    &outcome.result.status.name(),
                    &json(&outcome.result),
                    &i(outcome.next_due_ms),
                    &clock,
                ],
            )
            .map_err(db)?;
            let changed = change(id, &pod, stored_status(id, &before)?, outcome);
            if let Some(ch) = &changed {
                let notify = outcome.notify;
                tx.execute(
                    "INSERT INTO history (pod_id, at, status) VALUES ($1, $2, $3)",
                    &[&id, &i(ch.at), &ch.to.name()],
                )
                .map_err(db)?;
                tx.execute(
                    "DELETE FROM history WHERE pod_id = $1 AND seq NOT IN (SELECT seq FROM history WHERE pod_id = $1 ORDER BY seq DESC LIMIT $2)",
                    &[&id, &i(HISTORY as u64)],
                )
                .map_err(db)?;
                if notify {
                    tx.execute(
                        "INSERT INTO outbox (body, attempts, next_at) VALUES ($1, 0, 0)",
                        &[&json(ch)],
                    )
                    .map_err(db)?;
                }
            }
            tx.commit().map_err(db)?;
            Ok(changed)
        })
    }

    fn release(&self, replica: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE pods SET owner = NULL, lease_until = 0 WHERE owner = $1",
                &[&replica],
            )
            .map_err(db)?;
            c.execute("DELETE FROM replicas WHERE id = $1", &[&replica])
                .map_err(db)?;
            Ok(())
        })
    }

    fn defer(&self, replica: &str, ids: &[String], next_due_ms: u64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE pods SET next_due = $3 WHERE id = ANY($1) AND owner = $2",
                &[&ids, &replica, &i(next_due_ms)],
            )
            .map_err(db)?;
            Ok(())
        })
    }

    fn agent_pods(&self, agent: &str) -> Result<usize, StoreError> {
        self.with(|c| {
            let n: i64 = c
                .query_one("SELECT COUNT(*) FROM pods WHERE agent = $1", &[&agent])
                .map_err(db)?
                .get(0);
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    fn put_key(&self, kid: &str, jwk: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO result_keys (kid, jwk) VALUES ($1, $2) ON CONFLICT (kid) DO NOTHING",
                &[&kid, &jwk],
            )
            .map(|_| ())
            .map_err(db)
        })
    }

    fn keys(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let rows = c
                .query("SELECT jwk FROM result_keys ORDER BY kid", &[])
                .map_err(db)?;
            rows.iter().map(|r| r.try_get(0).map_err(db)).collect()
        })
    }

    fn due_deliveries(
        &self,
        now_ms: u64,
        hold_ms: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.with(|c| {
            let rows = c
                .query(
                    "UPDATE outbox SET next_at = $2 WHERE seq IN (
                       SELECT seq FROM outbox WHERE next_at <= $1 ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED)
                     RETURNING seq, body, attempts",
                    &[&i(now_ms), &i(now_ms.saturating_add(hold_ms)), &i(limit as u64)],
                )
                .map_err(db)?;
            let mut out = rows
                .iter()
                .map(|r| {
                    Ok(Delivery {
                        seq: r.try_get(0).map_err(db)?,
                        body: r.try_get(1).map_err(db)?,
                        attempts: u32::try_from(r.try_get::<_, i64>(2).map_err(db)?).unwrap_or(u32::MAX),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            out.sort_by_key(|d| d.seq);
            Ok(out)
        })
    }

    fn delivered(&self, seq: i64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute("DELETE FROM outbox WHERE seq = $1", &[&seq])
                .map(|_| ())
                .map_err(db)
        })
    }

    fn retry(&self, seq: i64, next_ms: u64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = $2 WHERE seq = $1",
                &[&seq, &i(next_ms)],
            )
            .map(|_| ())
            .map_err(db)
        })
    }
}
