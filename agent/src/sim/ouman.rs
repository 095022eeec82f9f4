//! [`OumanSim`]: the simulated EH-203 answering its native serial protocol
//! (shared/reference/device-protocols.md §1.3) over a serial port or TCP.
//!
//! It serves the same plant as the Modbus simulator: it wraps an
//! [`Eh203Sim`] and encodes that model's state into data blocks laid out by
//! the built-in `ouman_eh203` profile (through [`crate::registers::ouman`],
//! so agent and simulator agree by construction while the agent's decode path
//! stays separate code). One plant can be served over both protocols at once.
//!
//! Like a real controller it stays silent on anything it does not take: bad
//! checksums, impossible lengths, unknown data IDs, writes to blocks that are
//! not settings (what a real EH-203 does there is not documented; silence is
//! the cautious guess). Choices that are the simulator's own, not the
//! controller's documented behaviour: the ID 45 bits mirror the plant's
//! alarm, compressor and heater lamps (dig1 = alarm A, dig2 = alarm B,
//! relay1 = compressor, relay2 = electric heater); a write is answered with a
//! reply (`06`) echoing the new block; the device-information block (ID 1)
//! carries serial 1, model `203G`.

use std::{
    collections::BTreeMap,
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpListener,
    task::{JoinHandle, JoinSet},
};
use tracing::{debug, warn};

use super::{Eh203Sim, PlantState, lock, value_of};
use crate::{
    devices::ouman::codec::{Command, DEVICE_INFO_ID, DeviceInfo, Frame, FrameDecoder},
    registers::{
        Point, load_builtin,
        ouman::{DataId, OumanSpec, encode_value},
    },
};

/// The L1 heating-curve block (ID 12) the simulator starts with: atoid's
/// EH-201L capture (32 °C at -20, 25 at 0, 20 at +20, min 20, max 35, ...).
const CURVE_BLOCK: [u8; 31] = [
    0x20, 0x19, 0x14, 0x14, 0x23, 0x00, 0x00, 0x28, 0x0A, 0x1E, 0x05, 0x0F, 0x46, 0xFA, 0x00, 0x00,
    0x64, 0x00, 0x64, 0x02, 0x05, 0x02, 0x01, 0x00, 0x00, 0x00, 0x4B, 0x00, 0x00, 0x00, 0x00,
];
/// Blocks that take writes (`82`): settings, not measurements.
const SETTINGS_ID: DataId = DataId(12);

/// A simulated EH-203 on its native serial port. Cheap to clone; clones share
/// one device (and one plant).
#[derive(Debug, Clone)]
pub struct OumanSim {
    plant: Eh203Sim,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    points: Vec<Point>,
    settings: Mutex<BTreeMap<DataId, Vec<u8>>>,
    requests: Mutex<BTreeMap<DataId, u64>>,
    corrupt_next: AtomicU32,
    noise: Mutex<Vec<u8>>,
}

impl OumanSim {
    /// Serve `plant` over the native protocol. Fault hooks of the plant
    /// ([`Eh203Sim::set_silent`], [`Eh203Sim::set_response_delay`]) apply here too.
    pub fn new(plant: Eh203Sim) -> Self {
        // The profile is compiled in and covered by unit tests.
        let profile = load_builtin("ouman_eh203")
            .expect("built-in ouman_eh203 profile exists")
            .expect("built-in ouman_eh203 profile is valid");
        let info = DeviceInfo {
            serial: 1,
            model: "203G".into(),
            version_hundredths: 145,
            build_date: "Jan  1 26".into(),
        };
        let settings = BTreeMap::from([
            (DEVICE_INFO_ID, info.encode(31)),
            (SETTINGS_ID, CURVE_BLOCK.to_vec()),
        ]);
        OumanSim {
            plant,
            inner: Arc::new(Inner {
                points: profile.points,
                settings: Mutex::new(settings),
                requests: Mutex::new(BTreeMap::new()),
                corrupt_next: AtomicU32::new(0),
                noise: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The plant behind it (step it, raise alarms, make it silent).
    pub fn plant(&self) -> &Eh203Sim {
        &self.plant
    }

    /// The data of block `id` as it would be sent now; `None` for an ID the
    /// simulator does not serve.
    pub fn block(&self, id: DataId) -> Option<Vec<u8>> {
        if let Some(block) = lock(&self.inner.settings).get(&id) {
            return Some(block.clone());
        }
        let state = self.plant.snapshot();
        let mut block: Option<Vec<u8>> = None;
        for p in &self.inner.points {
            let Some(spec) = p.spec.ouman().filter(|s| s.id == id) else {
                continue;
            };
            let data = block.get_or_insert_with(Vec::new);
            if data.len() < spec.bytes().end {
                data.resize(spec.bytes().end, 0);
            }
            if let Some(value) = sim_value(&p.key, &state) {
                put(spec, value, data);
            }
        }
        block
    }

    /// How many read or write requests for `id` were answered or ignored.
    pub fn requests(&self, id: DataId) -> u64 {
        lock(&self.inner.requests).get(&id).copied().unwrap_or(0)
    }

    /// Requests received for every ID together.
    pub fn total_requests(&self) -> u64 {
        lock(&self.inner.requests).values().sum()
    }

    /// Fault hook: the next `n` replies go out with a wrong checksum.
    pub fn corrupt_next_replies(&self, n: u32) {
        self.inner.corrupt_next.store(n, Ordering::SeqCst);
    }

    /// Fault hook: send `bytes` of line noise in front of every reply
    /// (empty to stop).
    pub fn set_noise_before_replies(&self, bytes: Vec<u8>) {
        *lock(&self.inner.noise) = bytes;
    }

    /// The reply to one request frame, or `None` when the controller would
    /// stay silent.
    pub fn answer(&self, req: &Frame) -> Option<Frame> {
        *lock(&self.inner.requests).entry(req.id).or_default() += 1;
        if self.plant.inner.silent.load(Ordering::SeqCst) {
            return None;
        }
        let data = match req.command {
            Command::Read => self.block(req.id)?,
            Command::Write if req.id == SETTINGS_ID => {
                let mut settings = lock(&self.inner.settings);
                let block = settings.get_mut(&req.id)?;
                // A block of another size is not this controller's layout.
                if req.data.len() != block.len() {
                    return None;
                }
                block.clone_from(&req.data);
                block.clone()
            }
            Command::Write | Command::Reply => return None,
        };
        Some(Frame {
            command: Command::Reply,
            id: req.id,
            data,
        })
    }

    /// The bytes to send for `reply`, with the fault hooks applied.
    fn wire(&self, reply: &Frame) -> Option<Vec<u8>> {
        let mut wire = lock(&self.inner.noise).clone();
        let mut frame = reply.encode().ok()?;
        let corrupt = self
            .inner
            .corrupt_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if corrupt && let Some(ck) = frame.last_mut() {
            *ck = ck.wrapping_add(1);
        }
        wire.append(&mut frame);
        Some(wire)
    }

    /// Answer requests on one byte stream until it closes or fails.
    pub async fn serve_stream<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut io: T,
    ) -> io::Result<()> {
        let mut decoder = FrameDecoder::new();
        let mut buf = [0u8; 256];
        loop {
            let n = io.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            decoder.extend(&buf[..n]);
            loop {
                let req = match decoder.next_frame() {
                    Ok(Some(req)) => req,
                    Ok(None) => break,
                    Err(e) => {
                        debug!(error = %e, "simulator ignores a malformed frame");
                        continue;
                    }
                };
                let Some(reply) = self.answer(&req) else {
                    continue;
                };
                let delay = self.plant.inner.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                if let Some(wire) = self.wire(&reply) {
                    io.write_all(&wire).await?;
                    io.flush().await?;
                }
            }
        }
    }

    /// Serve on an opened serial port (and start the plant's ticker). The
    /// task ends when the port fails; aborting it closes the port (a power cut).
    pub fn serve_serial(&self, port: tokio_serial::SerialStream) -> JoinHandle<io::Result<()>> {
        self.plant.start_ticker();
        let sim = self.clone();
        tokio::spawn(async move { sim.serve_stream(port).await })
    }

    /// Serve raw TCP on `listener`, as a controller behind an RS-232 serial
    /// server (and start the ticker). Aborting the task closes the listener
    /// and every connection (a power cut).
    pub fn serve_tcp(&self, listener: TcpListener) -> JoinHandle<io::Result<()>> {
        self.plant.start_ticker();
        let sim = self.clone();
        tokio::spawn(async move {
            // Owned by this task: dropped with it, which ends every connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let (stream, peer) = accepted?;
                        let _ = stream.set_nodelay(true);
                        let sim = sim.clone();
                        connections.spawn(async move {
                            if let Err(e) = sim.serve_stream(stream).await {
                                warn!(%peer, error = %e, "simulator connection failed");
                            }
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        })
    }
}

/// The value the simulated controller shows for a profile point.
fn sim_value(key: &str, s: &PlantState) -> Option<f64> {
    let b = |v: bool| if v { 1.0 } else { 0.0 };
    // The simulator's own choice of what the ID 45 bits show (module docs).
    Some(match key {
        "dig1" => b(s.alarm_a),
        "dig2" => b(s.alarm_b),
        "dig3" => 0.0,
        "relay1" => b(s.compressor_running),
        "relay2" => b(s.electric_heater_on),
        "meas_6" => s.l1_room_temp - 1.0,
        other => return value_of(other, s),
    })
}

fn put(spec: &OumanSpec, value: f64, data: &mut Vec<u8>) {
    if let Err(e) = encode_value(spec, value, data) {
        debug!(id = %spec.id, error = %e, "simulated value not encodable");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        registers::ouman::decode_value,
        sim::{Alarm, SimOptions},
    };

    fn sim() -> OumanSim {
        OumanSim::new(Eh203Sim::new(SimOptions::default()))
    }

    #[test]
    fn every_profile_point_reads_back_close_to_the_model() {
        let s = sim();
        s.plant().set_alarm(Alarm::B, true);
        let state = s.plant().snapshot();
        for p in &s.inner.points {
            let spec = p.spec.ouman().unwrap();
            let block = s.block(spec.id).unwrap();
            let v = decode_value(spec, &block).unwrap();
            let expected = match spec.id {
                SETTINGS_ID => f64::from(CURVE_BLOCK[usize::from(spec.byte)]),
                _ => sim_value(&p.key, &state).unwrap(),
            };
            assert!((v - expected).abs() < 0.006, "{}: {v} vs {expected}", p.key);
        }
        assert_eq!(
            s.block(DataId(45)).unwrap(),
            [0, 0b0000_1010],
            "alarm B and the compressor"
        );
    }

    #[test]
    fn reads_are_answered_and_unknown_ids_get_silence() {
        let s = sim();
        let reply = s.answer(&Frame::read(DataId(20))).unwrap();
        assert_eq!(
            (reply.command, reply.id, reply.data.len()),
            (Command::Reply, DataId(20), 2)
        );
        assert_eq!(s.answer(&Frame::read(DataId(99))), None);
        let info = s.answer(&Frame::read(DEVICE_INFO_ID)).unwrap();
        assert_eq!(DeviceInfo::decode(&info.data).unwrap().model, "203G");
        assert_eq!((s.requests(DataId(20)), s.total_requests()), (1, 3));
    }

    #[test]
    fn only_the_settings_block_takes_writes_of_its_own_size() {
        let s = sim();
        let write = |id, data: Vec<u8>| Frame {
            command: Command::Write,
            id: DataId(id),
            data,
        };
        let mut block = CURVE_BLOCK.to_vec();
        block[1] = 30;
        let reply = s.answer(&write(12, block.clone())).unwrap();
        assert_eq!(reply.data, block);
        assert_eq!(s.block(SETTINGS_ID).unwrap()[1], 30);
        assert_eq!(s.answer(&write(12, vec![1, 2])), None, "wrong size");
        assert_eq!(s.answer(&write(20, vec![0, 0])), None, "a measurement");
        assert_eq!(s.block(SETTINGS_ID).unwrap(), block);
    }

    #[test]
    fn a_silent_plant_answers_nothing() {
        let s = sim();
        s.plant().set_silent(true);
        assert_eq!(s.answer(&Frame::read(DataId(20))), None);
        s.plant().set_silent(false);
        assert!(s.answer(&Frame::read(DataId(20))).is_some());
    }

    #[tokio::test]
    async fn malformed_frames_get_no_reply_and_a_good_one_after_them_does() {
        let s = sim();
        let (mut ours, theirs) = tokio::io::duplex(1024);
        let server = tokio::spawn({
            let s = s.clone();
            async move { s.serve_stream(theirs).await }
        });
        // bad checksum, impossible length, noise, then a good request for ID 18
        ours.write_all(&[0x02, 0x81, 0x02, 0x00, 0x14, 0x98])
            .await
            .unwrap();
        ours.write_all(&[0x02, 0x81, 0x05, 0x00, 0x14])
            .await
            .unwrap();
        ours.write_all(&[0xFF, 0x13, 0x37]).await.unwrap();
        ours.write_all(&Frame::read(DataId(18)).encode().unwrap())
            .await
            .unwrap();
        let mut d = FrameDecoder::new();
        let mut buf = [0u8; 64];
        let reply = loop {
            if let Some(f) = d.next_frame().unwrap() {
                break f;
            }
            let n = ours.read(&mut buf).await.unwrap();
            d.extend(&buf[..n]);
        };
        assert_eq!(
            reply.id,
            DataId(18),
            "the first reply is for the good request"
        );
        assert_eq!(
            s.requests(DataId(20)),
            0,
            "the malformed ID 20 frames never counted"
        );
        drop(ours);
        server.await.unwrap().unwrap();
    }

    #[test]
    fn corrupted_replies_carry_a_wrong_checksum_for_the_count_asked() {
        let s = sim();
        let reply = s.answer(&Frame::read(DataId(20))).unwrap();
        let good = reply.encode().unwrap();
        s.corrupt_next_replies(1);
        s.set_noise_before_replies(vec![0xAA]);
        let bad = s.wire(&reply).unwrap();
        assert_eq!(bad[0], 0xAA);
        assert_ne!(bad[1..], good[..]);
        s.set_noise_before_replies(Vec::new());
        assert_eq!(s.wire(&reply).unwrap(), good);
    }
}
