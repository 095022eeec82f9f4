//! [`OumanDriver`]: the poller's half for an `ouman` bus.
//!
//! A poll reads each data block the device's points need exactly once, in ID
//! order, and decodes every point of that block from the one reply (the
//! protocol has no multi-ID request, so this is the fewest transactions).

use std::collections::BTreeMap;

use protocol::{Quality, Reading};
use time::OffsetDateTime;
use tracing::{debug, warn};

use super::{OumanClient, OumanError};
use crate::{
    config::DeviceConfig,
    devices::TransportError,
    poller::{BusDriver, PollOutcome, PolledDevice, WriteError},
    registers::{
        Point,
        ouman::{DataId, OumanSpec, decode_value, encode_value},
    },
};

/// One block to read and the points decoded from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRead {
    /// The data ID requested.
    pub id: DataId,
    /// Indices into the device's polled points.
    pub points: Vec<usize>,
}

/// Group `points` by data ID: one read per distinct ID, in ID order.
/// Points of other protocols (which config validation keeps off ouman buses)
/// are left out.
pub fn plan_blocks(points: &[Point]) -> Vec<BlockRead> {
    let mut by_id: BTreeMap<DataId, Vec<usize>> = BTreeMap::new();
    for (i, p) in points.iter().enumerate() {
        if let Some(spec) = p.spec.ouman() {
            by_id.entry(spec.id).or_default().push(i);
        }
    }
    by_id
        .into_iter()
        .map(|(id, points)| BlockRead { id, points })
        .collect()
}

/// Byte ranges whose write layout is documented, per data ID. atoid/ouman
/// reads a block, patches bytes and sends it back with `82`; its README and
/// `ouman.py` give the layout of ID 12 (L1 curve: supply at -20/0/+20 °C, min,
/// max in bytes 0..=4; motor type in byte 21, the documented write example).
/// That capture is from an EH-201L. Nothing else is documented as writable:
/// every other ID keeps the refusal (never invent write addresses).
pub const DOCUMENTED_WRITES: &[(DataId, std::ops::RangeInclusive<usize>)] =
    &[(DataId(12), 0..=4), (DataId(12), 21..=21)];

/// Whether `spec`'s bytes lie inside a documented write layout.
pub fn write_documented(spec: &OumanSpec) -> bool {
    let bytes = spec.bytes();
    DOCUMENTED_WRITES
        .iter()
        .any(|(id, r)| *id == spec.id && r.contains(&bytes.start) && r.contains(&(bytes.end - 1)))
}

/// Consecutive silent blocks after which a poll stops: the controller has
/// gone, not merely skipped an ID it does not serve.
const SILENT_BLOCKS_TO_GIVE_UP: u32 = 2;

/// Ouman native serial through an [`OumanClient`].
#[derive(Debug)]
pub struct OumanDriver {
    client: OumanClient,
}

impl OumanDriver {
    /// Poll through `client`.
    pub fn new(client: OumanClient) -> Self {
        OumanDriver { client }
    }
}

impl BusDriver for OumanDriver {
    type Plan = Vec<BlockRead>;

    fn plan(&self, _device: &DeviceConfig, points: &[Point]) -> Vec<BlockRead> {
        plan_blocks(points)
    }

    async fn poll(&mut self, dev: &PolledDevice<Vec<BlockRead>>) -> (Vec<Reading>, PollOutcome) {
        let mut readings = Vec::new();
        let mut problems = Vec::new();
        let mut answered = false;
        let mut silent_in_a_row = 0;
        for block in &dev.plan {
            let data = match self.client.read(block.id).await {
                Ok(data) => data,
                // Once the controller has answered in this poll, a block that
                // gets no intact reply is most likely an ID this controller
                // does not serve: report it with the points and go on.
                Err(
                    e @ (OumanError::BadReply { .. }
                    | OumanError::Transport(TransportError::Timeout(_))),
                ) if answered && silent_in_a_row + 1 < SILENT_BLOCKS_TO_GIVE_UP => {
                    silent_in_a_row += 1;
                    problems.push(format!("data ID {}: {e}", block.id));
                    continue;
                }
                Err(e) => return (readings, PollOutcome::Failed(e.to_string())),
            };
            answered = true;
            silent_in_a_row = 0;
            let ts = OffsetDateTime::now_utc();
            for &i in &block.points {
                let Some(point) = dev.points.get(i) else {
                    continue;
                };
                let Some(spec) = point.spec.ouman() else {
                    continue;
                };
                match decode_value(spec, &data) {
                    Ok(value) => readings.push(Reading {
                        device: dev.key.clone(),
                        point: point.key.clone(),
                        ts,
                        value,
                        unit: point.unit.clone(),
                        quality: Quality::Good,
                    }),
                    Err(e) => problems.push(format!("`{}`: {e}", point.key)),
                }
            }
        }
        (
            readings,
            PollOutcome::Answered {
                exceptions: problems,
            },
        )
    }

    /// Read the block, patch the point's bytes, send it back with `82`, read
    /// it back and compare. Only points inside [`DOCUMENTED_WRITES`] are
    /// written. The block is read and written whole, so a change the
    /// controller makes to another byte of it between our read and our write
    /// would be undone; the settings blocks this allows are changed only by
    /// people at the controller's keypad.
    async fn write(
        &mut self,
        dev: &PolledDevice<Vec<BlockRead>>,
        point: &Point,
        value: f64,
    ) -> Result<(), WriteError> {
        let Some(spec) = point.spec.ouman() else {
            return Err(WriteError::Unsupported(format!(
                "`{}` is not an ouman_serial point",
                point.key
            )));
        };
        if !point.writable {
            return Err(WriteError::Unsupported(format!(
                "`{}` is not writable in its profile",
                point.key
            )));
        }
        if !write_documented(spec) {
            return Err(WriteError::Unsupported(format!(
                "no public source documents writing data ID {} bytes {:?} (point `{}`)",
                spec.id,
                spec.bytes(),
                point.key
            )));
        }
        let encode = |block: &mut Vec<u8>| {
            encode_value(spec, value, block).map_err(|e| WriteError::Encode {
                point: point.key.clone(),
                value,
                reason: e.to_string(),
            })
        };
        // Refuse a value the bytes cannot hold before anything is sent.
        encode(&mut Vec::new())?;
        let transport = |e: OumanError| WriteError::Transport(e.to_string());
        let before = self.client.read(spec.id).await.map_err(transport)?;
        let mut block = before.clone();
        encode(&mut block)?;
        if block.len() != before.len() {
            return Err(WriteError::Encode {
                point: point.key.clone(),
                value,
                reason: format!(
                    "data ID {} has {} bytes; the point lies outside it",
                    spec.id,
                    before.len()
                ),
            });
        }
        let acknowledged = self
            .client
            .write_block(spec.id, &block)
            .await
            .map_err(transport)?;
        let after = self.client.read(spec.id).await.map_err(transport)?;
        let range = spec.bytes();
        if after.get(range.clone()) != block.get(range.clone()) {
            return Err(WriteError::Refused(format!(
                "data ID {} reads back {:02X?} at bytes {range:?}, not the {:02X?} written",
                spec.id,
                after.get(range.clone()).unwrap_or_default(),
                block.get(range.clone()).unwrap_or_default()
            )));
        }
        if acknowledged {
            debug!(device = %dev.key, point = %point.key, value, "written and read back");
        } else {
            warn!(device = %dev.key, point = %point.key, value, "written without a reply; the read-back confirms it");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::load_builtin;

    fn profile_points(enabled_only: bool) -> Vec<Point> {
        load_builtin("ouman_eh203")
            .unwrap()
            .unwrap()
            .points
            .into_iter()
            .filter(|p| p.enabled || !enabled_only)
            .collect()
    }

    #[test]
    fn the_default_profile_needs_one_read_per_distinct_data_id() {
        let points = profile_points(true);
        let plan = plan_blocks(&points);
        let ids: Vec<u16> = plan.iter().map(|b| b.id.0).collect();
        assert_eq!(ids, [18, 20, 21, 23, 26, 33, 34, 41, 49, 50, 51]);
        assert_eq!(
            plan.iter().map(|b| b.points.len()).sum::<usize>(),
            points.len()
        );
    }

    #[test]
    fn points_sharing_a_block_are_read_together() {
        let points = profile_points(false);
        let plan = plan_blocks(&points);
        let bits = plan.iter().find(|b| b.id == DataId(45)).unwrap();
        assert_eq!(
            bits.points.len(),
            5,
            "Dig1-3 and Rele 1-2 come from one read of ID 45"
        );
        let curve = plan.iter().find(|b| b.id == DataId(12)).unwrap();
        assert_eq!(curve.points.len(), 5);
    }

    #[test]
    fn only_the_documented_bytes_of_id_12_are_writable() {
        let spec = |id, byte| {
            OumanSpec::new(
                DataId(id),
                byte,
                Some(crate::registers::ouman::OumanType::U8),
                None,
                (1.0, 0.0),
            )
            .unwrap()
        };
        assert!(write_documented(&spec(12, 0)));
        assert!(write_documented(&spec(12, 4)));
        assert!(write_documented(&spec(12, 21)));
        assert!(!write_documented(&spec(12, 5)));
        assert!(
            !write_documented(&spec(20, 0)),
            "a measurement is never written"
        );
        let wide = OumanSpec::new(
            DataId(12),
            4,
            Some(crate::registers::ouman::OumanType::U16),
            None,
            (1.0, 0.0),
        )
        .unwrap();
        assert!(
            !write_documented(&wide),
            "bytes 4..6 reach past the documented range"
        );
    }
}
