//! The notices replicas exchange over PostgreSQL `NOTIFY`, and how a batch of
//! pending changes becomes payloads that each fit in one notice.
//!
//! A payload is a JSON array `[replica, notice]`: the sending replica's id
//! (so a replica can skip its own notices) and one [`Notice`], tagged by
//! `"k"`. PostgreSQL refuses a payload of 8000 bytes or more ("NOTIFY",
//! PostgreSQL 15 manual, "the payload string … must be shorter than 8000
//! bytes"), so lists (readings, a replica's agent sessions) are split into
//! as many notices as needed, each under [`MAX_PAYLOAD`], and a control event
//! too large for one notice is replaced by a [`Notice::Resync`] of its site.
//! Nothing here does I/O.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    domain::{AgentId, SiteId},
    store::readings::NewReading,
};

/// The `LISTEN`/`NOTIFY` channel. Channels are per database, so replicas of
/// different installations on one PostgreSQL server never hear each other.
pub const CHANNEL: &str = "homecontrol_relay";

/// Largest payload this module produces, in bytes: under PostgreSQL's 8000
/// with room to spare.
pub const MAX_PAYLOAD: usize = 7_900;

/// One server process; a new id every start, so a restarted replica is a new
/// peer and never inherits what its previous life announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReplicaId(pub Uuid);

impl ReplicaId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for ReplicaId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One reading as carried in a notice: `[point_id, ts_ms, value, quality]`.
pub type WireReading = (i64, i64, f64, i16);

/// What one replica tells the others. Field names are short because every
/// byte counts against the payload limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Notice {
    /// The newest values of some points of site `s`, just committed.
    Readings {
        /// Site.
        s: SiteId,
        /// Values, at most one per point.
        v: Vec<WireReading>,
    },
    /// A control message (`control_state`, `command`) for site `s`'s viewers,
    /// exactly as the live feed sends it.
    Event {
        /// Site.
        s: SiteId,
        /// The message.
        m: serde_json::Value,
    },
    /// Something changed at site `s` that this notice cannot carry: viewers
    /// should get a fresh snapshot (the Controls page then re-reads itself).
    Resync {
        /// Site.
        s: SiteId,
    },
    /// Agent `a` (of site `s`) now has (`on`) or no longer has a session at
    /// the sending replica.
    Session {
        /// Agent.
        a: AgentId,
        /// Its site.
        s: SiteId,
        /// Whether the session is open.
        on: bool,
    },
    /// Heartbeat: part `i` of `of` of the sending replica's complete list of
    /// agent sessions, generation `g`. `ms` is its heartbeat interval; it
    /// counts as gone after three of those without a word.
    Alive {
        /// Heartbeat interval in milliseconds.
        ms: u64,
        /// Generation: all parts of one heartbeat share it.
        g: u64,
        /// This part, from 0.
        i: u32,
        /// How many parts.
        of: u32,
        /// `(agent, site)` of each open session in this part.
        a: Vec<(AgentId, SiteId)>,
    },
    /// A command for agent `a` may be waiting: its session should look.
    Poke {
        /// Agent.
        a: AgentId,
    },
    /// The sender (re)connected its listener and missed what was said
    /// meanwhile: everybody, send a heartbeat now.
    Sync,
    /// The sender is shutting down: forget its sessions now.
    Bye,
}

/// Why a payload was not understood.
#[derive(Debug, thiserror::Error)]
#[error("a relay notice could not be parsed ({len} bytes): {source}")]
pub struct NoticeError {
    /// Payload length.
    pub len: usize,
    /// The parse error.
    #[source]
    pub source: serde_json::Error,
}

/// Serialise one notice from `from`.
pub fn encode(from: ReplicaId, notice: &Notice) -> String {
    // Serialising these types cannot fail: every map key is a string and
    // non-finite floats are filtered out before they get here.
    serde_json::to_string(&(from, notice)).unwrap_or_default()
}

/// Parse a payload.
pub fn decode(payload: &str) -> Result<(ReplicaId, Notice), NoticeError> {
    serde_json::from_str(payload).map_err(|source| NoticeError {
        len: payload.len(),
        source,
    })
}

/// A reading in wire form, or `None` when its value is not finite (JSON has
/// no NaN; ingest never stores one anyway).
pub fn to_wire(r: &NewReading) -> Option<WireReading> {
    r.value
        .is_finite()
        .then(|| (r.point_id.0, r.ts_ms, r.value, r.quality.as_i16()))
}

/// A reading back from wire form.
pub fn from_wire((point, ts_ms, value, quality): WireReading) -> NewReading {
    NewReading {
        point_id: crate::domain::PointId(point),
        ts_ms,
        value,
        quality: protocol::Quality::from_i16(quality),
    }
}

/// Split `items` into notices built by `wrap(part, index, count)`, each
/// payload at most [`MAX_PAYLOAD`] bytes. Always at least one notice (an
/// empty heartbeat still says "alive"). An item too large for any notice on
/// its own is dropped; none of the item types here comes near that.
pub fn chunked<T: Serialize>(
    from: ReplicaId,
    items: Vec<T>,
    wrap: impl Fn(Vec<T>, u32, u32) -> Notice,
) -> Vec<String> {
    // The envelope with the widest possible part numbers, so the real
    // payload is never larger than what was measured.
    let overhead = encode(from, &wrap(Vec::new(), u32::MAX, u32::MAX)).len();
    let room = MAX_PAYLOAD.saturating_sub(overhead);
    let mut parts: Vec<Vec<T>> = vec![Vec::new()];
    let mut used = 0;
    for item in items {
        // Each item costs its own JSON plus a separating comma.
        let size = serde_json::to_string(&item).map_or(usize::MAX, |s| s.len() + 1);
        if size > room {
            tracing::warn!(size, "an item too large for a relay notice was dropped");
            continue;
        }
        if used + size > room
            && let Some(last) = parts.last()
            && !last.is_empty()
        {
            parts.push(Vec::new());
            used = 0;
        }
        used += size;
        if let Some(last) = parts.last_mut() {
            last.push(item);
        }
    }
    let of = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            encode(from, &wrap(part, i, of))
        })
        .collect()
}

/// Payloads for newly committed readings of one site (newest per point).
pub fn readings(from: ReplicaId, site: SiteId, values: &HashMap<i64, NewReading>) -> Vec<String> {
    let mut wire: Vec<WireReading> = values.values().filter_map(to_wire).collect();
    if wire.is_empty() {
        return Vec::new();
    }
    wire.sort_by_key(|w| w.0);
    chunked(from, wire, |v, _, _| Notice::Readings { s: site, v })
}

/// The payload for a control event, or a [`Notice::Resync`] of its site when
/// the event does not fit.
pub fn event(from: ReplicaId, site: SiteId, msg: &serde_json::Value) -> String {
    let payload = encode(
        from,
        &Notice::Event {
            s: site,
            m: msg.clone(),
        },
    );
    if payload.len() <= MAX_PAYLOAD {
        payload
    } else {
        encode(from, &Notice::Resync { s: site })
    }
}

/// The parts of one heartbeat carrying every local session.
pub fn heartbeat(
    from: ReplicaId,
    every: std::time::Duration,
    generation: u64,
    sessions: &HashMap<AgentId, SiteId>,
) -> Vec<String> {
    let mut list: Vec<(AgentId, SiteId)> = sessions.iter().map(|(a, s)| (*a, *s)).collect();
    list.sort();
    let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
    chunked(from, list, |a, i, of| Notice::Alive {
        ms,
        g: generation,
        i,
        of,
        a,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PointId;
    use proptest::prelude::*;
    use protocol::Quality;

    fn r(point: i64, ts_ms: i64, value: f64) -> NewReading {
        NewReading {
            point_id: PointId(point),
            ts_ms,
            value,
            quality: Quality::Stale,
        }
    }

    #[test]
    fn a_notice_round_trips_with_its_sender() {
        let me = ReplicaId::new();
        let n = Notice::Session {
            a: AgentId::new(),
            s: SiteId::new(),
            on: true,
        };
        let (from, back) = decode(&encode(me, &n)).unwrap();
        assert_eq!((from, back), (me, n));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "null",
            "[1,2]",
            r#"["x",{"k":"poke"}]"#,
            r#"{"k":"bye"}"#,
        ] {
            let err = decode(bad).unwrap_err();
            assert_eq!(err.len, bad.len());
            assert!(err.to_string().contains("could not be parsed"), "{err}");
        }
    }

    #[test]
    fn a_notice_kind_from_a_newer_replica_is_an_error() {
        let payload = format!(r#"["{}",{{"k":"something_new"}}]"#, Uuid::nil());
        assert!(decode(&payload).is_err());
    }

    #[test]
    fn non_finite_values_are_not_carried() {
        let mut values = HashMap::new();
        values.insert(1, r(1, 10, f64::NAN));
        values.insert(2, r(2, 10, f64::INFINITY));
        assert!(readings(ReplicaId::new(), SiteId::new(), &values).is_empty());
    }

    #[test]
    fn an_event_too_large_for_a_notice_becomes_a_resync_of_its_site() {
        let (me, site) = (ReplicaId::new(), SiteId::new());
        let small = serde_json::json!({"type": "command", "status": "sent"});
        assert!(matches!(
            decode(&event(me, site, &small)).unwrap().1,
            Notice::Event { s, .. } if s == site
        ));
        let huge = serde_json::json!({"type": "control_state", "action": "x".repeat(10_000)});
        let payload = event(me, site, &huge);
        assert!(payload.len() <= MAX_PAYLOAD);
        assert_eq!(decode(&payload).unwrap().1, Notice::Resync { s: site });
    }

    #[test]
    fn an_empty_heartbeat_is_still_one_notice() {
        let me = ReplicaId::new();
        let parts = heartbeat(me, std::time::Duration::from_secs(10), 7, &HashMap::new());
        assert_eq!(parts.len(), 1);
        assert_eq!(
            decode(&parts[0]).unwrap().1,
            Notice::Alive {
                ms: 10_000,
                g: 7,
                i: 0,
                of: 1,
                a: vec![]
            }
        );
    }

    #[test]
    fn a_large_heartbeat_is_split_into_numbered_parts_that_fit() {
        let me = ReplicaId::new();
        let sessions: HashMap<AgentId, SiteId> =
            (0..1000).map(|_| (AgentId::new(), SiteId::new())).collect();
        let parts = heartbeat(me, std::time::Duration::from_millis(500), 3, &sessions);
        assert!(parts.len() > 1);
        let mut seen = HashMap::new();
        for (n, p) in parts.iter().enumerate() {
            assert!(p.len() <= MAX_PAYLOAD, "part {n} is {} bytes", p.len());
            match decode(p).unwrap().1 {
                Notice::Alive { ms, g, i, of, a } => {
                    assert_eq!((ms, g, i as usize, of as usize), (500, 3, n, parts.len()));
                    seen.extend(a);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, sessions);
    }

    proptest! {
        #[test]
        fn every_reading_arrives_in_payloads_that_fit(
            raw in proptest::collection::vec((any::<i64>(), any::<i64>(), -1e300f64..1e300, 0i16..3), 0..3000)
        ) {
            let site = SiteId::new();
            let values: HashMap<i64, NewReading> = raw
                .iter()
                .map(|&(p, ts, v, q)| (p, NewReading { point_id: PointId(p), ts_ms: ts, value: v, quality: Quality::from_i16(q) }))
                .collect();
            let mut back = HashMap::new();
            for p in readings(ReplicaId::new(), site, &values) {
                prop_assert!(p.len() <= MAX_PAYLOAD, "{} bytes", p.len());
                match decode(&p).unwrap().1 {
                    Notice::Readings { s, v } => {
                        prop_assert_eq!(s, site);
                        for w in v { let r = from_wire(w); back.insert(r.point_id.0, r); }
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
            prop_assert_eq!(back, values);
        }
    }
}
