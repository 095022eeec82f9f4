//! Stored == produced. The agent writes every reading it counts as taken into
//! `ledger(device, point, ts_ms, value)` in its buffer database, in the same
//! SQLite transaction as the buffer insert, and never deletes from it (the
//! `buffer` branch's contract, `[buffer] ledger = true`). The check: every
//! ledger row is stored by the server exactly once (same device key, point
//! key, `ts_ms` and value), and the server stores nothing for that agent that
//! the ledger lacks.

use std::{collections::BTreeMap, path::Path};

use anyhow::Context;
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter,
    sqlx::{self, Connection, Row},
};
use server::store::entities::{devices, points, readings};

/// `(device key, point key, ts_ms)`.
pub type Key = (String, String, i64);

/// What one agent's check found.
#[derive(Debug, Clone, Default)]
pub struct LedgerReport {
    /// Readings the agent took.
    pub produced: usize,
    /// Readings the server stored for the agent's devices.
    pub stored: usize,
    /// Taken but not stored (loss).
    pub missing: Vec<(Key, f64)>,
    /// Stored but never taken (a duplicate under another timestamp, or invented).
    pub extra: Vec<(Key, f64)>,
    /// Stored with another value than taken: `(key, taken, stored)`.
    pub changed: Vec<(Key, f64, f64)>,
}

impl LedgerReport {
    /// No loss, no duplicates, no changed values.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.changed.is_empty()
    }

    /// A few lines for a failure message.
    pub fn summary(&self) -> String {
        let first = |v: &[(Key, f64)]| {
            v.iter()
                .take(5)
                .map(|(k, val)| format!("{}/{}@{}={val}", k.0, k.1, k.2))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let span =
            |v: &[(Key, f64)]| match (v.iter().map(|x| x.0.2).min(), v.iter().map(|x| x.0.2).max())
            {
                (Some(a), Some(b)) => format!(" ts_ms {a}..={b}"),
                _ => String::new(),
            };
        format!(
            "produced {}, stored {}, missing {}{} [{}], extra {}{} [{}], changed {} {:?}",
            self.produced,
            self.stored,
            self.missing.len(),
            span(&self.missing),
            first(&self.missing),
            self.extra.len(),
            span(&self.extra),
            first(&self.extra),
            self.changed.len(),
            self.changed.iter().take(5).collect::<Vec<_>>()
        )
    }
}

/// Every ledger row of an agent's buffer database.
pub async fn read_ledger(buffer_db: &Path) -> anyhow::Result<BTreeMap<Key, f64>> {
    anyhow::ensure!(
        buffer_db.is_file(),
        "the agent wrote no buffer database at {} (does this agent build support \
         `[buffer] path`/`ledger = true`? the `buffer` branch provides it)",
        buffer_db.display()
    );
    let url = format!("sqlite://{}?mode=ro", buffer_db.display());
    // The agent may hold a write lock for a moment; retry briefly.
    let mut last = None;
    for _ in 0..50 {
        match read_once(&url).await {
            Ok(rows) => return Ok(rows),
            Err(e) if e.to_string().contains("no such table") => {
                return Err(e).context(format!(
                    "{} has no `ledger` table: the agent does not keep a ledger \
                     (`[buffer] ledger = true` from the `buffer` branch)",
                    buffer_db.display()
                ));
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("unreachable"))).context("reading the ledger")
}

async fn read_once(url: &str) -> anyhow::Result<BTreeMap<Key, f64>> {
    let mut conn = sqlx::sqlite::SqliteConnection::connect(url).await?;
    let rows = sqlx::query("SELECT device, point, ts_ms, value FROM ledger")
        .fetch_all(&mut conn)
        .await?;
    let _ = conn.close().await;
    let mut out = BTreeMap::new();
    for r in rows {
        let key: Key = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        out.insert(key, r.try_get::<f64, _>(3)?);
    }
    Ok(out)
}

/// Every reading the server stored for the devices of `agent`, with a count
/// per key (more than one would be a duplicate; the primary key forbids it,
/// but the check does not rely on that).
pub async fn read_stored(
    db: &DatabaseConnection,
    agent: uuid::Uuid,
) -> anyhow::Result<BTreeMap<Key, Vec<f64>>> {
    let devs = devices::Entity::find()
        .filter(devices::Column::AgentId.eq(agent))
        .all(db)
        .await?;
    let dev_keys: BTreeMap<uuid::Uuid, String> = devs.into_iter().map(|d| (d.id, d.key)).collect();
    let pts = points::Entity::find()
        .filter(points::Column::DeviceId.is_in(dev_keys.keys().copied().collect::<Vec<_>>()))
        .all(db)
        .await?;
    let mut out: BTreeMap<Key, Vec<f64>> = BTreeMap::new();
    for p in pts {
        let dev = dev_keys.get(&p.device_id).cloned().unwrap_or_default();
        let rows = readings::Entity::find()
            .filter(readings::Column::PointId.eq(p.id))
            .all(db)
            .await?;
        for r in rows {
            out.entry((dev.clone(), p.key.clone(), r.ts_ms))
                .or_default()
                .push(r.value);
        }
    }
    Ok(out)
}

/// How many readings the server stored for `agent`'s devices.
pub async fn stored_count(db: &DatabaseConnection, agent: uuid::Uuid) -> anyhow::Result<usize> {
    Ok(read_stored(db, agent).await?.values().map(Vec::len).sum())
}

/// Compare a ledger with what was stored.
pub fn compare(ledger: &BTreeMap<Key, f64>, stored: &BTreeMap<Key, Vec<f64>>) -> LedgerReport {
    let mut rep = LedgerReport {
        produced: ledger.len(),
        stored: stored.values().map(Vec::len).sum(),
        ..Default::default()
    };
    let same = |a: f64, b: f64| a == b || (a - b).abs() <= 1e-9 * a.abs().max(1.0);
    for (k, &v) in ledger {
        match stored.get(k).map(Vec::as_slice) {
            None | Some([]) => rep.missing.push((k.clone(), v)),
            Some([s]) => {
                if !same(v, *s) {
                    rep.changed.push((k.clone(), v, *s));
                }
            }
            Some([s, more @ ..]) => {
                if !same(v, *s) {
                    rep.changed.push((k.clone(), v, *s));
                }
                rep.extra.extend(more.iter().map(|m| (k.clone(), *m)));
            }
        }
    }
    for (k, vs) in stored {
        if !ledger.contains_key(k) {
            rep.extra.extend(vs.iter().map(|v| (k.clone(), *v)));
        }
    }
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(ts: i64) -> Key {
        ("hp".into(), "t".into(), ts)
    }

    #[test]
    fn loss_duplicates_and_changed_values_are_each_reported() {
        let ledger = BTreeMap::from([(k(1), 1.0), (k(2), 2.0), (k(3), 3.0)]);
        let stored = BTreeMap::from([(k(1), vec![1.0, 1.0]), (k(3), vec![3.5]), (k(4), vec![4.0])]);
        let r = compare(&ledger, &stored);
        assert_eq!(r.missing, vec![(k(2), 2.0)]);
        assert_eq!(r.extra, vec![(k(1), 1.0), (k(4), 4.0)]);
        assert_eq!(r.changed, vec![(k(3), 3.0, 3.5)]);
        assert!(!r.is_clean());
        let same = BTreeMap::from([(k(1), vec![1.0])]);
        assert!(compare(&BTreeMap::from([(k(1), 1.0)]), &same).is_clean());
    }
}
