//! The audit log's entries, their hash chain and its verification.
//!
//! Each site has one chain. Entry `n` stores `prev_hash` (the hash of entry
//! `n - 1`, or [`GENESIS`] for the first) and `hash = SHA-256(canonical(entry)
//! ‖ prev_hash)`. Editing any field of a stored entry changes what its hash
//! should be; removing an entry leaves a gap in `seq` and a `prev_hash` that
//! names a hash no longer present; removing the newest entries leaves the
//! chain's recorded head pointing past the end. [`verify`] reports the first
//! such fault. (Someone able to rewrite the whole table and its head can
//! forge a consistent chain; exporting the CSV, which carries every hash,
//! preserves evidence outside the database.)
//!
//! The canonical encoding is a JSON array of the fields in a fixed order with
//! a version tag, so it is unambiguous (no field can bleed into another) and
//! stable across the two database backends: times are whole milliseconds in
//! UTC and values are text.

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::ids::SiteId;

/// The `prev_hash` of a chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Version tag inside every hashed encoding; a new layout gets a new tag.
const CANONICAL_VERSION: &str = "hc-audit-v1";

/// One audit entry as written (without its chain fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Position in the site's chain, from 1.
    pub seq: i64,
    /// When it happened, UTC, whole milliseconds (see [`truncate_to_ms`]).
    pub at: OffsetDateTime,
    /// The person who acted; `None` for the system (an expired command).
    pub actor_user_id: Option<uuid::Uuid>,
    /// Their name at the time (kept even if the account is removed later).
    pub actor_name: String,
    /// What was done, e.g. `set`, `confirm`, `result`, `comfort_band`.
    pub action: String,
    /// What it was done to, e.g. `pop1/room3_floor_setpoint`.
    pub target: String,
    /// The value before (as known then).
    pub before: Option<String>,
    /// The value after (read back by the agent, for results).
    pub after: Option<String>,
    /// The envelope's decision (the server's check or the agent's answer).
    pub decision: Option<String>,
    /// How it ended (`sent`, `held for confirmation`, `applied`, ...).
    pub result: String,
    /// The command this entry belongs to, if any.
    pub command_id: Option<uuid::Uuid>,
}

/// An entry with its chain fields, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainedEntry {
    /// The entry.
    pub entry: AuditEntry,
    /// Hash of the previous entry (or [`GENESIS`]).
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

/// The newest `seq` and hash of a chain, kept apart from the entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Newest sequence number.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
}

/// `t` without its sub-millisecond part (what both backends store exactly).
pub fn truncate_to_ms(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    let ms = t.millisecond();
    t.replace_millisecond(ms).unwrap_or(t)
}

fn unix_ms(t: OffsetDateTime) -> i128 {
    t.unix_timestamp_nanos() / 1_000_000
}

/// The exact bytes that are hashed for `entry` in `site`'s chain.
pub fn canonical(site: SiteId, entry: &AuditEntry) -> String {
    let fields = serde_json::json!([
        CANONICAL_VERSION,
        site.0.to_string(),
        entry.seq,
        unix_ms(entry.at).to_string(),
        entry.actor_user_id.map(|u| u.to_string()),
        entry.actor_name,
        entry.action,
        entry.target,
        entry.before,
        entry.after,
        entry.decision,
        entry.result,
        entry.command_id.map(|u| u.to_string()),
    ]);
    fields.to_string()
}

/// `hex(SHA-256(canonical(entry) ‖ prev_hash))`.
pub fn entry_hash(site: SiteId, entry: &AuditEntry, prev_hash: &str) -> String {
    let mut h = Sha256::new();
    h.update(canonical(site, entry).as_bytes());
    h.update(prev_hash.as_bytes());
    hex::encode(h.finalize())
}

/// Chain `entry` after `prev` (the head), giving the stored form.
pub fn chain(site: SiteId, entry: AuditEntry, prev: Option<&ChainHead>) -> ChainedEntry {
    let prev_hash = prev.map(|h| h.hash.clone()).unwrap_or(GENESIS.to_owned());
    let hash = entry_hash(site, &entry, &prev_hash);
    ChainedEntry {
        entry,
        prev_hash,
        hash,
    }
}

/// What is wrong with a chain; the first fault found, in `seq` order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainFault {
    /// An entry's content does not match its hash: it was edited.
    #[error("entry {seq} was changed after it was written (its hash does not match)")]
    Edited {
        /// The entry.
        seq: i64,
    },
    /// A sequence number is missing: an entry was removed.
    #[error("entry {expected} is missing (the next entry present is {found})")]
    Missing {
        /// The sequence number that should come next.
        expected: i64,
        /// The one found instead.
        found: i64,
    },
    /// An entry does not point at the hash of the one before it.
    #[error("entry {seq} does not follow the entry before it (the chain was re-linked)")]
    BrokenLink {
        /// The entry.
        seq: i64,
    },
    /// The chain ends before its recorded head: the newest entries were removed.
    #[error("the log ends at entry {last} but entry {head} was written")]
    Truncated {
        /// The recorded head.
        head: i64,
        /// The last entry present.
        last: i64,
    },
}

/// Check a whole chain (entries in `seq` order) against its head. Returns
/// the number of entries verified.
pub fn verify(
    site: SiteId,
    entries: &[ChainedEntry],
    head: Option<&ChainHead>,
) -> Result<usize, ChainFault> {
    let mut prev = GENESIS.to_owned();
    let mut expected = 1;
    for e in entries {
        if e.entry.seq != expected {
            return Err(ChainFault::Missing {
                expected,
                found: e.entry.seq,
            });
        }
        if entry_hash(site, &e.entry, &e.prev_hash) != e.hash {
            return Err(ChainFault::Edited { seq: e.entry.seq });
        }
        if e.prev_hash != prev {
            return Err(ChainFault::BrokenLink { seq: e.entry.seq });
        }
        prev = e.hash.clone();
        expected += 1;
    }
    let last = expected - 1;
    if let Some(head) = head {
        if head.seq > last {
            return Err(ChainFault::Truncated {
                head: head.seq,
                last,
            });
        }
        if head.seq == last && head.hash != prev {
            return Err(ChainFault::Edited { seq: last });
        }
    }
    Ok(entries.len())
}

/// One CSV cell: quoted when needed, and defused when a spreadsheet would
/// read it as a formula (a name such as `=HYPERLINK(...)`), except numbers.
fn csv_cell(v: &str) -> String {
    let risky = v.starts_with(['=', '+', '@', '\t', '\r'])
        || (v.starts_with('-') && v.parse::<f64>().is_err());
    let v = if risky { format!("'{v}") } else { v.to_owned() };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

/// Column names of [`to_csv`].
pub const CSV_HEADER: &str = "seq,at,actor_user_id,actor,action,target,before,after,decision,result,command_id,prev_hash,hash";

/// The chain as CSV (RFC 4180, CRLF line ends), hashes included so an export
/// can be verified later.
pub fn to_csv(entries: &[ChainedEntry]) -> String {
    let mut out = String::with_capacity(64 + entries.len() * 256);
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for c in entries {
        let e = &c.entry;
        let at =
            e.at.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
        let cells = [
            e.seq.to_string(),
            at,
            e.actor_user_id.map(|u| u.to_string()).unwrap_or_default(),
            e.actor_name.clone(),
            e.action.clone(),
            e.target.clone(),
            e.before.clone().unwrap_or_default(),
            e.after.clone().unwrap_or_default(),
            e.decision.clone().unwrap_or_default(),
            e.result.clone(),
            e.command_id.map(|u| u.to_string()).unwrap_or_default(),
            c.prev_hash.clone(),
            c.hash.clone(),
        ];
        let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn entry(seq: i64, action: &str) -> AuditEntry {
        AuditEntry {
            seq,
            at: datetime!(2026-11-21 06:40:00.123 UTC),
            actor_user_id: Some(uuid::Uuid::from_u128(7)),
            actor_name: "Maija".into(),
            action: action.into(),
            target: "pop1/room3_floor_setpoint".into(),
            before: Some("21.0".into()),
            after: Some("21.5".into()),
            decision: None,
            result: "sent".into(),
            command_id: None,
        }
    }

    fn build(site: SiteId, n: i64) -> (Vec<ChainedEntry>, ChainHead) {
        let mut out: Vec<ChainedEntry> = Vec::new();
        for seq in 1..=n {
            let head = out.last().map(|c| ChainHead {
                seq: c.entry.seq,
                hash: c.hash.clone(),
            });
            out.push(chain(site, entry(seq, &format!("a{seq}")), head.as_ref()));
        }
        let last = out.last().expect("n >= 1");
        let head = ChainHead {
            seq: last.entry.seq,
            hash: last.hash.clone(),
        };
        (out, head)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let site = SiteId::new();
        let (c, head) = build(site, 5);
        assert_eq!(verify(site, &c, Some(&head)), Ok(5));
        assert_eq!(verify(site, &[], None), Ok(0));
        assert_eq!(c[0].prev_hash, GENESIS);
        assert_eq!(c[1].prev_hash, c[0].hash);
    }

    #[test]
    fn an_edited_field_is_detected() {
        let site = SiteId::new();
        let (mut c, head) = build(site, 4);
        c[2].entry.after = Some("27.0".into());
        assert_eq!(
            verify(site, &c, Some(&head)),
            Err(ChainFault::Edited { seq: 3 })
        );
    }

    #[test]
    fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
        let site = SiteId::new();
        let (mut c, head) = build(site, 4);
        c[1].entry.actor_name = "Someone else".into();
        c[1].hash = entry_hash(site, &c[1].entry, &c[1].prev_hash);
        assert_eq!(
            verify(site, &c, Some(&head)),
            Err(ChainFault::BrokenLink { seq: 3 })
        );
    }

    #[test]
    fn a_removed_entry_is_detected() {
        let site = SiteId::new();
        let (mut c, head) = build(site, 4);
        c.remove(1);
        assert_eq!(
            verify(site, &c, Some(&head)),
            Err(ChainFault::Missing {
                expected: 2,
                found: 3
            })
        );
        let (mut c, head) = build(site, 4);
        c.remove(0);
        assert!(matches!(
            verify(site, &c, Some(&head)),
            Err(ChainFault::Missing { expected: 1, .. })
        ));
    }

    #[test]
    fn a_removed_newest_entry_is_detected_by_the_head() {
        let site = SiteId::new();
        let (mut c, head) = build(site, 4);
        c.pop();
        assert_eq!(
            verify(site, &c, Some(&head)),
            Err(ChainFault::Truncated { head: 4, last: 3 })
        );
    }

    #[test]
    fn a_chain_is_bound_to_its_site() {
        let site = SiteId::new();
        let (c, head) = build(site, 2);
        assert!(verify(SiteId::new(), &c, Some(&head)).is_err());
    }

    #[test]
    fn fields_cannot_bleed_into_each_other() {
        let site = SiteId::new();
        let mut a = entry(1, "x");
        a.actor_name = "ab".into();
        a.action = "c".into();
        let mut b = entry(1, "x");
        b.actor_name = "a".into();
        b.action = "bc".into();
        assert_ne!(canonical(site, &a), canonical(site, &b));
        let mut n = entry(1, "x");
        n.before = None;
        let mut e = entry(1, "x");
        e.before = Some(String::new());
        assert_ne!(canonical(site, &n), canonical(site, &e));
    }

    #[test]
    fn timestamps_are_hashed_in_whole_milliseconds() {
        let t = datetime!(2026-11-21 06:40:00.123456789 +02:00);
        let t = truncate_to_ms(t);
        assert_eq!(t, datetime!(2026-11-21 04:40:00.123 UTC));
        assert_eq!(t.offset(), time::UtcOffset::UTC);
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let site = SiteId::new();
        let mut e = entry(1, "set");
        e.actor_name = "=HYPERLINK(\"x\")".into();
        e.before = Some("-3.5".into());
        e.decision = Some("a, \"b\"\nc".into());
        e.target = "-x".into();
        let csv = to_csv(&[chain(site, e, None)]);
        let mut lines = csv.split("\r\n");
        assert_eq!(lines.next(), Some(CSV_HEADER));
        let row = lines.next().expect("a row");
        assert!(row.starts_with("1,2026-11-21T06:40:00.123Z,"), "{row}");
        assert!(row.contains(",\"'=HYPERLINK(\"\"x\"\")\","), "{row}");
        assert!(row.contains(",'-x,"), "{row}");
        assert!(row.contains(",-3.5,"), "{row}");
        assert!(csv.contains("\"a, \"\"b\"\"\nc\""), "{csv}");
    }

    proptest! {
        #[test]
        fn any_single_field_change_is_detected(
            name in ".{0,20}", action in "[a-z_]{1,12}", before in proptest::option::of(".{0,12}"),
            pick in 0usize..5, replacement in ".{1,12}",
        ) {
            let site = SiteId::new();
            let mut e = entry(1, &action);
            e.actor_name = name;
            e.before = before;
            let c = chain(site, e, None);
            let head = ChainHead { seq: 1, hash: c.hash.clone() };
            let mut bad = c.clone();
            match pick {
                0 => bad.entry.actor_name.push_str(&replacement),
                1 => bad.entry.action.push_str(&replacement),
                2 => bad.entry.before = Some(format!("{}{replacement}", bad.entry.before.clone().unwrap_or_default())),
                3 => bad.entry.result.push_str(&replacement),
                _ => bad.entry.at += time::Duration::milliseconds(1),
            }
            prop_assert_eq!(verify(site, std::slice::from_ref(&c), Some(&head)), Ok(1));
            prop_assert!(verify(site, &[bad], Some(&head)).is_err());
        }
    }
}
