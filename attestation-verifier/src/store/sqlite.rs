//! The SQLite backend: one file in WAL mode, one connection behind a lock (SQLite has one
//! writer at a time anyway), each change in one transaction.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::{
    audit_row, change, i, json, removal, removal_event, stored_status, u, Backend, Columns,
    Delivery, PodRow, RoundOutcome, StoreError, COLUMNS, HISTORY,
};
use jek_service_client::wire::{AuditEvent, HistoryEntry, StatusChange};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pods (
  id TEXT PRIMARY KEY, pod TEXT NOT NULL, agent TEXT NOT NULL, bundle TEXT NOT NULL,
  pod_yaml TEXT, identity TEXT NOT NULL,
  reset_count INTEGER NOT NULL, restart_count INTEGER NOT NULL, clock INTEGER NOT NULL,
  last_clock INTEGER NOT NULL, status TEXT NOT NULL, result TEXT NOT NULL,
  owner TEXT, lease_until INTEGER NOT NULL, next_due INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS pods_due ON pods (next_due);
CREATE TABLE IF NOT EXISTS history (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, pod_id TEXT NOT NULL, at INTEGER NOT NULL,
  status TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS history_pod ON history (pod_id, seq);
CREATE TABLE IF NOT EXISTS outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL, attempts INTEGER NOT NULL,
  next_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS result_keys (kid TEXT PRIMARY KEY, jwk TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS replicas (id TEXT PRIMARY KEY, seen_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ak_names (ak_name TEXT PRIMARY KEY, pod_id TEXT NOT NULL UNIQUE);
INSERT OR IGNORE INTO ak_names (ak_name, pod_id)
  SELECT json_extract(identity, '$.akName'), id FROM pods;
CREATE TABLE IF NOT EXISTS ek_certs (ek_sha256 TEXT PRIMARY KEY, pod_id TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, pod_id TEXT, pod TEXT, detail TEXT);
";

/// A SQLite store.
pub struct Sqlite {
    conn: Mutex<Connection>,
}

fn db(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
        backend: "sqlite",
        reason: e.to_string(),
    }
}

impl Sqlite {
    /// Opens (creating) the store at `path`, mode 0600, in WAL mode.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(|e| db(format!("{}: {e}", path.display())))?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| db(format!("{}: {e}", path.display())))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        add_kubernetes_column(&conn)?;
        index_eks(&conn)?;
        Ok(Sqlite {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Adds `pods.kubernetes` (the registration's Kubernetes pod, JSON) to a store made by a
/// verifier before registrations carried it. SQLite has no `ADD COLUMN IF NOT EXISTS`.
fn add_kubernetes_column(conn: &Connection) -> Result<(), StoreError> {
    let has: bool = conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('pods') WHERE name = 'kubernetes'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(db)?
        > 0;
    if !has {
        conn.execute("ALTER TABLE pods ADD COLUMN kubernetes TEXT", [])
            .map_err(db)?;
    }
    Ok(())
}

/// Indexes the EK of every pod stored before EKs were (a store from an older verifier).
fn index_eks(conn: &Connection) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare("SELECT id, identity FROM pods WHERE id NOT IN (SELECT pod_id FROM ek_certs)")
        .map_err(db)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    for (id, identity) in rows {
        if let Some(ek) = super::ek_sha256_of(&identity) {
            conn.execute(
                "INSERT OR IGNORE INTO ek_certs (ek_sha256, pod_id) VALUES (?1, ?2)",
                params![ek, id],
            )
            .map_err(db)?;
        }
    }
    Ok(())
}

/// Writes `event` to the audit table, and with `notify` to the outbox.
fn insert_audit(
    tx: &rusqlite::Transaction<'_>,
    event: &AuditEvent,
    notify: bool,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, pod_id, pod, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            i(event.at),
            event.by,
            event.action.name(),
            event.id,
            event.pod,
            event.detail
        ],
    )
    .map_err(db)?;
    if notify {
        tx.execute(
            "INSERT INTO outbox (body, attempts, next_at) VALUES (?1, 0, 0)",
            params![json(event)],
        )
        .map_err(db)?;
    }
    Ok(())
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Columns> {
    Ok(Columns {
        id: r.get(0)?,
        pod: r.get(1)?,
        agent: r.get(2)?,
        bundle: r.get(3)?,
        pod_yaml: r.get(4)?,
        identity: r.get(5)?,
        reset_count: r.get(6)?,
        restart_count: r.get(7)?,
        clock: r.get(8)?,
        last_clock: r.get(9)?,
        result: r.get(10)?,
        owner: r.get(11)?,
        kubernetes: r.get(12)?,
    })
}

fn history(conn: &Connection, id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT at, status FROM history WHERE pod_id = ?1 ORDER BY seq DESC LIMIT ?2",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(params![id, i(HISTORY as u64)], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(db)?;
    let rows = rows.collect::<Result<Vec<_>, _>>().map_err(db)?;
    rows.into_iter()
        .map(|(at, status)| {
            Ok(HistoryEntry {
                at: u(at),
                status: stored_status(id, &status)?,
            })
        })
        .collect()
}

impl Backend for Sqlite {
    fn ping(&self) -> Result<(), StoreError> {
        self.conn()
            .query_row("SELECT 1", [], |_| Ok(()))
            .map_err(db)
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
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        let exists = tx
            .query_row("SELECT 1 FROM pods WHERE id = ?1", params![pod.id], |_| {
                Ok(())
            })
            .optional()
            .map_err(db)?;
        if exists.is_some() {
            return Err(StoreError::AlreadyRegistered { id: pod.id.clone() });
        }
        let holder: Option<String> = tx
            .query_row(
                "SELECT pod_id FROM ak_names WHERE ak_name = ?1",
                params![pod.identity.ak_name.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        if let Some(holder) = holder {
            return Err(StoreError::AkInUse {
                ak_name: pod.identity.ak_name.to_string(),
                holder,
            });
        }
        let ek = pod.identity.ek_sha256();
        let holder: Option<String> = tx
            .query_row(
                "SELECT pod_id FROM ek_certs WHERE ek_sha256 = ?1",
                params![ek],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        if let Some(holder) = holder {
            return Err(StoreError::EkInUse {
                ek_sha256: ek,
                holder,
            });
        }
        tx.execute("DELETE FROM history WHERE pod_id = ?1", params![pod.id])
            .map_err(db)?;
        tx.execute(
            "INSERT INTO ak_names (ak_name, pod_id) VALUES (?1, ?2)",
            params![pod.identity.ak_name.to_string(), pod.id],
        )
        .map_err(db)?;
        tx.execute(
            "INSERT INTO ek_certs (ek_sha256, pod_id) VALUES (?1, ?2)",
            params![ek, pod.id],
        )
        .map_err(db)?;
        insert_audit(&tx, event, notify)?;
        tx.execute(
            "INSERT INTO pods (id, pod, agent, bundle, pod_yaml, identity, reset_count, restart_count, clock, last_clock, status, result, owner, lease_until, next_due, kubernetes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            params![
                pod.id,
                pod.pod,
                pod.agent,
                pod.bundle,
                pod.pod_yaml,
                json(&pod.identity),
                i64::from(pod.epoch.reset_count),
                i64::from(pod.epoch.restart_count),
                i(pod.epoch.clock),
                i(pod.last_clock),
                pod.result.status.name(),
                json(&pod.result),
                owner,
                i(lease_until_ms),
                i(now_ms),
                pod.kubernetes.as_ref().map(json),
            ],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }

    fn remove(
        &self,
        id: &str,
        now_s: u64,
        notify: bool,
        by: &str,
    ) -> Result<Option<StatusChange>, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        let found: Option<(String, String)> = tx
            .query_row(
                "SELECT pod, status FROM pods WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db)?;
        let Some((pod, status)) = found else {
            return Ok(None);
        };
        tx.execute("DELETE FROM history WHERE pod_id = ?1", params![id])
            .map_err(db)?;
        tx.execute("DELETE FROM ak_names WHERE pod_id = ?1", params![id])
            .map_err(db)?;
        tx.execute("DELETE FROM ek_certs WHERE pod_id = ?1", params![id])
            .map_err(db)?;
        tx.execute("DELETE FROM pods WHERE id = ?1", params![id])
            .map_err(db)?;
        let change = removal(id, &pod, stored_status(id, &status)?, now_s, by);
        insert_audit(&tx, &removal_event(&change), false)?;
        if notify {
            tx.execute(
                "INSERT INTO outbox (body, attempts, next_at) VALUES (?1, 0, 0)",
                params![json(&change)],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(Some(change))
    }

    fn audit(&self, event: &AuditEvent, notify: bool) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        insert_audit(&tx, event, notify)?;
        tx.commit().map_err(db)
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT at, actor, action, pod_id, pod, detail FROM audit ORDER BY seq DESC LIMIT ?1",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![i(limit as u64)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        rows.into_iter()
            .map(|(at, by, action, id, pod, detail)| audit_row(at, by, &action, id, pod, detail))
            .collect()
    }

    fn get(&self, id: &str) -> Result<Option<PodRow>, StoreError> {
        let conn = self.conn();
        let found = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM pods WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()
            .map_err(db)?;
        match found {
            None => Ok(None),
            Some(r) => {
                let mut pod = r.decode()?;
                pod.history = history(&conn, id)?;
                Ok(Some(pod))
            }
        }
    }

    fn list(&self) -> Result<Vec<PodRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM pods ORDER BY pod, id"))
            .map_err(db)?;
        let rows = stmt
            .query_map([], row)
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        let mut out = Vec::new();
        for r in rows {
            let mut pod = r.decode()?;
            pod.history = history(&conn, &pod.id)?;
            out.push(pod);
        }
        Ok(out)
    }

    fn claim_due(
        &self,
        replica: &str,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<PodRow>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let (now, until) = (i(now_ms), i(now_ms.saturating_add(lease_ms)));
        tx.execute(
            "INSERT INTO replicas (id, seen_at) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
            params![replica, now],
        )
        .map_err(db)?;
        tx.execute(
            "UPDATE pods SET lease_until = ?2 WHERE owner = ?1",
            params![replica, until],
        )
        .map_err(db)?;
        tx.execute(
            "UPDATE pods SET owner = ?1, lease_until = ?2 WHERE id IN (
               SELECT id FROM pods WHERE (owner IS NULL OR lease_until < ?3) ORDER BY next_due LIMIT ?4)",
            params![replica, until, now, i(limit as u64)],
        )
        .map_err(db)?;
        let rows = {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM pods WHERE owner = ?1 AND next_due <= ?2 ORDER BY next_due LIMIT ?3"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(params![replica, now, i(limit as u64)], row)
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            rows
        };
        tx.commit().map_err(db)?;
        rows.into_iter().map(Columns::decode).collect()
    }

    fn record(
        &self,
        id: &str,
        replica: &str,
        outcome: &RoundOutcome,
    ) -> Result<Option<StatusChange>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let before: Option<(String, String)> = tx
            .query_row(
                "SELECT status, pod FROM pods WHERE id = ?1 AND owner = ?2",
                params![id, replica],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db)?;
        let Some((before, pod)) = before else {
            return Ok(None);
        };
        let clock = outcome.clock.map(i);
        tx.execute(
            "UPDATE pods SET status = ?3, result = ?4, next_due = ?5,
               last_clock = CASE WHEN ?6 IS NOT NULL AND ?6 > last_clock THEN ?6 ELSE last_clock END
             WHERE id = ?1 AND owner = ?2",
            params![
                id,
                replica,
                outcome.result.status.name(),
                json(&outcome.result),
                i(outcome.next_due_ms),
                clock
            ],
        )
        .map_err(db)?;
        let changed = change(id, &pod, stored_status(id, &before)?, outcome);
        if let Some(c) = &changed {
            let notify = outcome.notify;
            tx.execute(
                "INSERT INTO history (pod_id, at, status) VALUES (?1, ?2, ?3)",
                params![id, i(c.at), c.to.name()],
            )
            .map_err(db)?;
            tx.execute(
                "DELETE FROM history WHERE pod_id = ?1 AND seq NOT IN (SELECT seq FROM history WHERE pod_id = ?1 ORDER BY seq DESC LIMIT ?2)",
                params![id, i(HISTORY as u64)],
            )
            .map_err(db)?;
            if notify {
                tx.execute(
                    "INSERT INTO outbox (body, attempts, next_at) VALUES (?1, 0, 0)",
                    params![json(c)],
                )
                .map_err(db)?;
            }
        }
        tx.commit().map_err(db)?;
        Ok(changed)
    }

    fn release(&self, replica: &str) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE pods SET owner = NULL, lease_until = 0 WHERE owner = ?1",
            params![replica],
        )
        .map_err(db)?;
        conn.execute("DELETE FROM replicas WHERE id = ?1", params![replica])
            .map_err(db)?;
        Ok(())
    }

    fn defer(&self, replica: &str, ids: &[String], next_due_ms: u64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        {
            let mut stmt = tx
                .prepare_cached("UPDATE pods SET next_due = ?3 WHERE id = ?1 AND owner = ?2")
                .map_err(db)?;
            for id in ids {
                stmt.execute(params![id, replica, i(next_due_ms)])
                    .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    fn agent_pods(&self, agent: &str) -> Result<usize, StoreError> {
        let n: i64 = self
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM pods WHERE agent = ?1",
                params![agent],
                |r| r.get(0),
            )
            .map_err(db)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn put_key(&self, kid: &str, jwk: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO result_keys (kid, jwk) VALUES (?1, ?2) ON CONFLICT (kid) DO NOTHING",
                params![kid, jwk],
            )
            .map(|_| ())
            .map_err(db)
    }

    fn keys(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT jwk FROM result_keys ORDER BY kid")
            .map_err(db)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(db)?;
        rows.collect::<Result<Vec<String>, _>>().map_err(db)
    }

    fn due_deliveries(
        &self,
        now_ms: u64,
        hold_ms: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let rows = {
            let mut stmt = tx
                .prepare_cached("SELECT seq, body, attempts FROM outbox WHERE next_at <= ?1 ORDER BY seq LIMIT ?2")
                .map_err(db)?;
            let rows = stmt
                .query_map(params![i(now_ms), i(limit as u64)], |r| {
                    Ok(Delivery {
                        seq: r.get(0)?,
                        body: r.get(1)?,
                        attempts: u32::try_from(r.get::<_, i64>(2)?).unwrap_or(u32::MAX),
                    })
                })
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            rows
        };
        for d in &rows {
            tx.execute(
                "UPDATE outbox SET next_at = ?2 WHERE seq = ?1",
                params![d.seq, i(now_ms.saturating_add(hold_ms))],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(rows)
    }

    fn delivered(&self, seq: i64) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM outbox WHERE seq = ?1", params![seq])
            .map(|_| ())
            .map_err(db)
    }

    fn retry(&self, seq: i64, next_ms: u64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ?2 WHERE seq = ?1",
                params![seq, i(next_ms)],
            )
            .map(|_| ())
            .map_err(db)
    }
}
