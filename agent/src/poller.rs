//! When to read what: one task per bus, one request at a time on it, each
//! device on its own poll interval.
//!
//! The task owns the bus's [`BusDriver`], the protocol-specific half: for
//! Modbus, [`ModbusDriver`] runs the device's read plan over a
//! [`DeviceClient`] and decodes the words and bits. The task sleeps until the
//! earliest due device, has the driver poll it and sends the
//! [`protocol::Reading`]s to the uplink as [`PollEvent`]s. Each
//! device's communication state lives in a [`CommState`], a small pure state
//! machine (tested without I/O) that decides when the device is offline, when
//! to poll it again (back-off while it is silent) and when a
//! [`protocol::DeviceStatus`] must be announced.

use std::time::Duration;

use protocol::{DeviceStatus, Quality, Reading};
use time::OffsetDateTime;
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    config::DeviceConfig,
    devices::{DeviceClient, RawData, execute},
    registers::{PlannedRead, Point, decode_bits, decode_registers, plan_reads},
};

/// The protocol half of a bus's poller: talks to the devices, decodes values.
/// [`run_bus`] owns scheduling, online/offline state and events.
pub trait BusDriver: Send {
    /// What the driver works out once per device (for Modbus, the read plan).
    type Plan: Send;

    /// Prepare polling `points` (the device's enabled points) of `device`.
    fn plan(&self, device: &DeviceConfig, points: &[Point]) -> Self::Plan;

    /// Read `device` once. A transport failure ends the poll early
    /// ([`PollOutcome::Failed`]); values read before it are still returned.
    fn poll(
        &mut self,
        device: &PolledDevice<Self::Plan>,
    ) -> impl std::future::Future<Output = (Vec<Reading>, PollOutcome)> + Send;

    /// Write `value` (engineering units) to `point` of `device`. Safety
    /// limits are not the driver's business (the caller checked them); the
    /// driver encodes, sends and reports what the device said. Protocols
    /// without writes keep this default, which refuses.
    fn write(
        &mut self,
        device: &PolledDevice<Self::Plan>,
        point: &Point,
        value: f64,
    ) -> impl std::future::Future<Output = Result<(), WriteError>> + Send {
        let _ = (value, device);
        std::future::ready(Err(WriteError::Unsupported(format!(
            "the {} protocol has no writes (point `{}`)",
            point.spec.protocol(),
            point.key
        ))))
    }
}

/// Why a write did not happen (or did not take).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// The protocol or driver cannot write this kind of point.
    #[error("{0}")]
    Unsupported(String),
    /// The value cannot be encoded for the point (range, type).
    #[error("cannot encode {value} for `{point}`: {reason}")]
    Encode {
        /// Point key.
        point: String,
        /// Requested value.
        value: f64,
        /// Why.
        reason: String,
    },
    /// The device answered and refused (e.g. a Modbus exception): a
    /// configuration matter, not retried.
    #[error("the device refused: {0}")]
    Refused(String),
    /// The link failed; the write may or may not have reached the device.
    #[error("transport error: {0}")]
    Transport(String),
}

/// Modbus (TCP, RTU or ASCII) through a [`DeviceClient`].
#[derive(Debug)]
pub struct ModbusDriver<C> {
    client: C,
    max_gap: u16,
}

impl<C: DeviceClient> ModbusDriver<C> {
    /// Read through `client`, bridging holes of up to `max_gap` registers.
    pub fn new(client: C, max_gap: u16) -> Self {
        ModbusDriver { client, max_gap }
    }
}

impl<C: DeviceClient> BusDriver for ModbusDriver<C> {
    type Plan = Vec<PlannedRead>;

    fn plan(&self, _device: &DeviceConfig, points: &[Point]) -> Vec<PlannedRead> {
        // Non-Modbus points cannot reach a Modbus bus (config checks), so the
        // indices of `specs` are those of `points`.
        let specs: Vec<_> = points
            .iter()
            .filter_map(|p| p.spec.modbus().cloned())
            .collect();
        debug_assert_eq!(specs.len(), points.len());
        plan_reads(&specs, self.max_gap)
    }

    async fn poll(&mut self, dev: &PolledDevice<Vec<PlannedRead>>) -> (Vec<Reading>, PollOutcome) {
        let mut readings = Vec::new();
        let mut exceptions = Vec::new();
        for read in &dev.plan {
            match execute(&mut self.client, dev.unit_id, read).await {
                Ok(Ok(data)) => {
                    let ts = OffsetDateTime::now_utc();
                    readings.extend(decode_response(&dev.key, &dev.points, read, &data, ts));
                }
                Ok(Err(exc)) => exceptions.push(format!(
                    "{} {}+{}: {exc}",
                    read.function, read.address, read.count
                )),
                // The rest of the plan would fail the same way; stop here.
                Err(e) => return (readings, PollOutcome::Failed(e.to_string())),
            }
        }
        (readings, PollOutcome::Answered { exceptions })
    }
}

/// Consecutive failed polls after which a device is reported offline. One
/// lost frame on a noisy RS-485 line should not flap the dashboard.
pub const OFFLINE_AFTER_FAILURES: u32 = 2;
/// Longest wait between polls of an offline device.
pub const MAX_OFFLINE_RETRY: Duration = Duration::from_secs(60);

/// What the poller reports to the uplink.
#[derive(Debug, Clone, PartialEq)]
pub enum PollEvent {
    /// Values of one poll of one device (all with the same timestamp).
    Readings(Vec<Reading>),
    /// A device's communication state changed.
    Status(DeviceStatus),
}

/// Outcome of one poll, as far as communication goes.
#[derive(Debug, Clone, PartialEq)]
pub enum PollOutcome {
    /// Every request was answered (possibly with Modbus exceptions, listed).
    Answered {
        /// Exceptions met, e.g. "holding 18+28: Modbus exception 0x02 ...".
        exceptions: Vec<String>,
    },
    /// The device did not answer or the link failed.
    Failed(String),
}

/// Communication state of one device: a pure state machine.
#[derive(Debug, Clone, PartialEq)]
pub struct CommState {
    device: String,
    interval: Duration,
    online: Option<bool>,
    failures: u32,
    last_ok: Option<OffsetDateTime>,
    last_error: Option<String>,
}

impl CommState {
    /// A device never polled yet (neither online nor offline).
    pub fn new(device: &str, interval: Duration) -> Self {
        CommState {
            device: device.into(),
            interval,
            online: None,
            failures: 0,
            last_ok: None,
            last_error: None,
        }
    }

    /// True when the last verdict was "online".
    pub fn is_online(&self) -> bool {
        self.online == Some(true)
    }

    /// Feed one poll's outcome at wall time `now`. Returns the delay until the
    /// next poll and a status to announce when the state changed.
    pub fn record(
        &mut self,
        outcome: PollOutcome,
        now: OffsetDateTime,
    ) -> (Duration, Option<DeviceStatus>) {
        let before = (self.online, self.last_error.clone());
        let delay = match outcome {
            PollOutcome::Answered { exceptions } => {
                self.online = Some(true);
                self.failures = 0;
                self.last_ok = Some(now);
                self.last_error = if exceptions.is_empty() {
                    None
                } else {
                    Some(exceptions.join("; "))
                };
                self.interval
            }
            PollOutcome::Failed(err) => {
                self.failures = self.failures.saturating_add(1);
                self.last_error = Some(err);
                if self.failures >= OFFLINE_AFTER_FAILURES {
                    self.online = Some(false);
                }
                self.retry_delay()
            }
        };
        let changed = (self.online, self.last_error.clone()) != before;
        // Before the first verdict there is nothing to announce.
        let status = (changed && self.online.is_some()).then(|| self.status());
        (delay, status)
    }

    /// Polls of a silent device back off: interval × 2^(failures − threshold),
    /// capped by [`MAX_OFFLINE_RETRY`] (or the interval, when that is longer).
    fn retry_delay(&self) -> Duration {
        if self.failures < OFFLINE_AFTER_FAILURES {
            return self.interval;
        }
        let exp = (self.failures - OFFLINE_AFTER_FAILURES).min(16);
        let cap = MAX_OFFLINE_RETRY.max(self.interval);
        self.interval.saturating_mul(1u32 << exp).min(cap)
    }

    /// The current state as a protocol message.
    pub fn status(&self) -> DeviceStatus {
        DeviceStatus {
            device: self.device.clone(),
            online: self.is_online(),
            last_ok: self.last_ok,
            last_error: self.last_error.clone(),
            consecutive_failures: self.failures,
        }
    }
}

/// Decode one response into readings for the points it serves.
pub fn decode_response(
    device: &str,
    points: &[Point],
    read: &PlannedRead,
    data: &RawData,
    ts: OffsetDateTime,
) -> Vec<Reading> {
    let mut out = Vec::with_capacity(read.slots.len());
    for slot in &read.slots {
        let point = &points[slot.point];
        let Some(spec) = point.spec.modbus() else {
            continue;
        };
        let off = usize::from(slot.offset);
        let value = match data {
            RawData::Words(w) => w.get(off..).map(|w| decode_registers(spec, w)),
            RawData::Bits(b) => b.get(off..).map(|b| decode_bits(spec, b)),
        };
        match value {
            Some(Ok(value)) => out.push(Reading {
                device: device.to_owned(),
                point: point.key.clone(),
                ts,
                value,
                unit: point.unit.clone(),
                quality: Quality::Good,
            }),
            Some(Err(e)) => debug!(device, point = %point.key, error = %e, "value not decodable"),
            None => debug!(device, point = %point.key, "short response"),
        }
    }
    out
}

/// One device as the poller keeps it.
#[derive(Debug)]
pub struct PolledDevice<P> {
    /// Device key.
    pub key: String,
    /// Bus address (Modbus unit id, POP board number, ...).
    pub unit_id: u8,
    /// Enabled points, in profile order.
    pub points: Vec<Point>,
    /// What the driver prepared for it.
    pub plan: P,
    next_due: Instant,
    comm: CommState,
}

impl<P> PolledDevice<P> {
    /// `device` as [`run_bus`] keeps it, with `driver`'s plan for its enabled
    /// points: for driving a [`BusDriver`] directly (tests, one-off reads
    /// and writes) outside the poll loop.
    pub fn new<D: BusDriver<Plan = P>>(driver: &D, device: &DeviceConfig) -> Self {
        let points: Vec<Point> = device.enabled_points().cloned().collect();
        PolledDevice {
            plan: driver.plan(device, &points),
            comm: CommState::new(&device.key, device.poll_interval),
            key: device.key.clone(),
            unit_id: device.unit_id,
            points,
            next_due: Instant::now(),
        }
    }
}

/// Poll every device of one bus until `cancel` fires. Events go to `tx`; if
/// the receiver is gone the task ends.
pub async fn run_bus<D: BusDriver>(
    bus: String,
    mut driver: D,
    devices: Vec<DeviceConfig>,
    tx: mpsc::Sender<PollEvent>,
    cancel: CancellationToken,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) {
    let start = Instant::now();
    let mut devices: Vec<PolledDevice<D::Plan>> = devices
        .into_iter()
        .map(|d| {
            let points: Vec<Point> = d.enabled_points().cloned().collect();
            let plan = driver.plan(&d, &points);
            info!(%bus, device = %d.key, points = points.len(), "polling device");
            PolledDevice {
                comm: CommState::new(&d.key, d.poll_interval),
                key: d.key,
                unit_id: d.unit_id,
                points,
                plan,
                next_due: start,
            }
        })
        .collect();
    if devices.is_empty() {
        return;
    }
    loop {
        let Some(dev) = devices.iter_mut().min_by_key(|d| d.next_due) else {
            return;
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(dev.next_due) => {}
        }
        let span = info_span!("poll", device = %dev.key, unit_id = dev.unit_id);
        let events = poll_once(&mut driver, dev).instrument(span).await;
        // `failures` is reset by every answered poll, so 0 means this one answered.
        metrics.record_poll(&dev.key, dev.comm.status().consecutive_failures == 0);
        for ev in events {
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    }
}

async fn poll_once<D: BusDriver>(
    driver: &mut D,
    dev: &mut PolledDevice<D::Plan>,
) -> Vec<PollEvent> {
    let (mut readings, outcome) = driver.poll(dev).await;
    // One timestamp per poll keeps a device's values aligned on the server.
    if let Some(first) = readings.first().map(|r| r.ts) {
        for r in &mut readings {
            r.ts = first;
        }
    }
    debug!(readings = readings.len(), ?outcome, "polled");
    let (delay, status) = dev.comm.record(outcome, OffsetDateTime::now_utc());
    dev.next_due = Instant::now() + delay;
    let mut events = Vec::new();
    if let Some(status) = status {
        if status.online {
            match &status.last_error {
                None => info!("device online"),
                Some(e) => {
                    warn!(error = %e, "device answers with exceptions (check the profile addresses)")
                }
            }
        } else {
            warn!(error = status.last_error.as_deref().unwrap_or(""), retry_in = ?delay, "device offline");
        }
        events.push(PollEvent::Status(status));
    }
    if !readings.is_empty() {
        events.push(PollEvent::Readings(readings));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::load_builtin;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-21 12:00 UTC);
    const SEC: Duration = Duration::from_secs(1);

    fn ok() -> PollOutcome {
        PollOutcome::Answered { exceptions: vec![] }
    }

    #[test]
    fn the_first_good_poll_announces_the_device_online() {
        let mut s = CommState::new("hp", SEC);
        let (delay, status) = s.record(ok(), NOW);
        assert_eq!(delay, SEC);
        let status = status.unwrap();
        assert!(status.online && status.last_error.is_none());
        assert_eq!(status.last_ok, Some(NOW));
        assert_eq!(s.record(ok(), NOW).1, None, "no change, no announcement");
    }

    #[test]
    fn one_lost_reply_does_not_mark_the_device_offline() {
        let mut s = CommState::new("hp", SEC);
        s.record(ok(), NOW);
        let (delay, status) = s.record(PollOutcome::Failed("timeout".into()), NOW);
        assert_eq!(delay, SEC);
        let status = status.expect("the error is news");
        assert!(status.online);
    }

    #[test]
    fn a_silent_device_goes_offline_and_is_polled_with_growing_back_off() {
        let mut s = CommState::new("hp", SEC);
        s.record(ok(), NOW);
        let fail = || PollOutcome::Failed("no reply within 1s".into());
        s.record(fail(), NOW);
        let (d2, st) = s.record(fail(), NOW);
        let st = st.unwrap();
        assert!(!st.online);
        assert_eq!(st.consecutive_failures, 2);
        let delays: Vec<_> = std::iter::once(d2)
            .chain((0..8).map(|_| s.record(fail(), NOW).0))
            .collect();
        assert_eq!(
            delays.iter().map(|d| d.as_secs()).collect::<Vec<_>>(),
            vec![1, 2, 4, 8, 16, 32, 60, 60, 60]
        );
    }

    #[test]
    fn a_device_that_answers_again_is_back_online_at_its_normal_interval() {
        let mut s = CommState::new("hp", SEC);
        for _ in 0..5 {
            s.record(PollOutcome::Failed("x".into()), NOW);
        }
        let (delay, status) = s.record(ok(), NOW);
        assert_eq!(delay, SEC);
        assert!(status.unwrap().online);
    }

    #[test]
    fn a_modbus_exception_keeps_the_device_online_but_reports_the_error() {
        let mut s = CommState::new("hp", SEC);
        let (delay, status) = s.record(
            PollOutcome::Answered {
                exceptions: vec!["holding 18+28: exception 0x02".into()],
            },
            NOW,
        );
        assert_eq!(delay, SEC, "exceptions are not retried as link faults");
        let status = status.unwrap();
        assert!(status.online);
        assert!(status.last_error.unwrap().contains("0x02"));
    }

    #[test]
    fn eh203_registers_decode_into_readings_with_units() {
        let profile = load_builtin("ouman_eh203_modbus200").unwrap().unwrap();
        let points: Vec<Point> = profile.points.into_iter().filter(|p| p.enabled).collect();
        let specs: Vec<_> = points
            .iter()
            .map(|p| p.spec.modbus().unwrap().clone())
            .collect();
        let plan = plan_reads(&specs, 8);
        assert_eq!(plan.len(), 1, "18..=45 fits one request with gaps up to 8");
        assert_eq!((plan[0].address, plan[0].count), (18, 28));
        let mut words = vec![0u16; 28];
        words[0] = (-512i16) as u16; // outdoor 18: -5.12
        words[2] = 3550; // L1 supply 20
        words[45 - 18] = 0b0101; // compressor on, heater off, alarm A on
        let r = decode_response("hp", &points, &plan[0], &RawData::Words(words), NOW);
        let get = |k: &str| r.iter().find(|r| r.point == k).unwrap();
        assert_eq!(get("outdoor_temp").value, -5.12);
        assert_eq!(get("outdoor_temp").unit, "degC");
        assert_eq!(get("l1_supply_temp").value, 35.5);
        assert_eq!(
            (
                get("compressor_running").value,
                get("electric_heater_on").value
            ),
            (1.0, 0.0)
        );
        assert_eq!((get("alarm_a").value, get("alarm_b").value), (1.0, 0.0));
        assert_eq!(r.len(), 10);
    }
}
