//! A simulated PLC master for a `modbus_slave` bus: what a cottage PLC's
//! program does every round, for demos and manual tests of slave mode.
//!
//! The request list is fixed at start from an exchange-area profile (by
//! default the built-in `plc_cottage_exchange`): first it reads every block of
//! `to_plc` points (coils FC01, discrete inputs FC02, holding FC03, input
//! FC04), then writes every block of `from_plc` points (FC05 or FC0F for
//! coils, FC06 or FC10 for registers, by block size). The values written are
//! a slow synthetic plant (a wave inside each point's display range, a
//! counter for points without one); an `echo` point gets the value the PLC
//! just read from its `to_plc` point ("applied"), kept within that point's
//! display range as a real PLC keeps a setpoint within its own limits (so a
//! value outside it comes back as another value: a mismatch), or until one is
//! known, the middle of that range (the PLC's own default).
//!
//! It talks through tokio-modbus's RTU client, an implementation independent
//! of the agent's slave code, over any `AsyncRead + AsyncWrite` (a serial port
//! from `agent simulate plc-master`, a pty or a `tokio::io::duplex` in tests).

use std::{collections::BTreeMap, fmt, time::Duration};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_modbus::{
    Request, Response, Slave,
    client::{Client as _, Context},
};

use crate::{
    devices::slave::{UNKNOWN_WORD, check_points},
    registers::{
        DataType, Direction, Function, PlannedRead, Point, PointSpec, Profile, decode_bits,
        decode_registers,
        encode::{Encoded, encode_registers, merge_bit},
        plan_reads,
    },
};

/// One request of the fixed list.
#[derive(Debug, Clone)]
struct Step {
    write: bool,
    read: PlannedRead,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.write { "write" } else { "read" };
        write!(
            f,
            "{verb} {} {}+{}",
            self.read.function, self.read.address, self.read.count
        )
    }
}

/// What one round did.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundReport {
    /// 1-based round number.
    pub round: u64,
    /// Requests answered normally.
    pub ok: usize,
    /// Requests that failed: exception or no reply, with the request.
    pub failed: Vec<String>,
    /// Every `to_plc` point and what it read (`None`: unknown, 0xFFFF).
    pub read: Vec<(String, Option<f64>)>,
}

impl fmt::Display for RoundReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "round {}: {} ok, {} failed;",
            self.round,
            self.ok,
            self.failed.len()
        )?;
        for (k, v) in &self.read {
            match v {
                Some(v) => write!(f, " {k}={v}")?,
                None => write!(f, " {k}=unknown")?,
            }
        }
        for e in &self.failed {
            write!(f, " [{e}]")?;
        }
        Ok(())
    }
}

/// The simulated master: its fixed request list and what it has read.
#[derive(Debug)]
pub struct PlcMaster {
    points: Vec<Point>,
    directions: Vec<Direction>,
    /// Index of the `to_plc` point each point echoes.
    echo_of: Vec<Option<usize>>,
    steps: Vec<Step>,
    last_read: BTreeMap<usize, f64>,
    round: u64,
    timeout: Duration,
}

impl PlcMaster {
    /// The master for `profile`'s exchange area, each request given
    /// `timeout` to be answered. Fails when the profile is not a valid
    /// exchange area (see [`check_points`]).
    pub fn new(profile: &Profile, timeout: Duration) -> Result<Self, String> {
        let points: Vec<Point> = profile
            .points
            .iter()
            .filter(|p| p.enabled)
            .cloned()
            .collect();
        check_points(&profile.id, true, &points, Duration::from_secs(1))?;
        let mut specs: Vec<PointSpec> = Vec::new();
        let mut directions = Vec::new();
        for p in &points {
            let Some(spec) = p.spec.modbus() else {
                return Err(format!("point `{}` is not a Modbus point", p.key));
            };
            specs.push(spec.clone());
            directions.push(p.direction.unwrap_or(Direction::ToPlc));
        }
        let echo_of = points
            .iter()
            .map(|p| {
                points
                    .iter()
                    .position(|q| q.echo.as_deref() == Some(&p.key))
            })
            .collect();
        // Plan each direction separately so a block never mixes them; map the
        // plan's indices back to `points`.
        let mut steps = Vec::new();
        for (direction, write) in [(Direction::ToPlc, false), (Direction::FromPlc, true)] {
            let idx: Vec<usize> = (0..points.len())
                .filter(|&i| directions[i] == direction)
                .collect();
            let subset: Vec<PointSpec> = idx.iter().map(|&i| specs[i].clone()).collect();
            for mut read in plan_reads(&subset, 0) {
                for slot in &mut read.slots {
                    slot.point = idx[slot.point];
                }
                steps.push(Step { write, read });
            }
        }
        Ok(PlcMaster {
            points,
            directions,
            echo_of,
            steps,
            last_read: BTreeMap::new(),
            round: 0,
            timeout,
        })
    }

    /// Requests sent every round.
    pub fn requests_per_round(&self) -> usize {
        self.steps.len()
    }

    /// Attach to the line `io` and address unit `unit`.
    pub fn connect<T>(io: T, unit: u8) -> Context
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        tokio_modbus::client::rtu::attach_slave(io, Slave(unit))
    }

    /// Run one round of the request list on `ctx`.
    pub async fn round(&mut self, ctx: &mut Context) -> RoundReport {
        self.round += 1;
        let mut report = RoundReport {
            round: self.round,
            ok: 0,
            failed: Vec::new(),
            read: Vec::new(),
        };
        for i in 0..self.steps.len() {
            let step = self.steps[i].clone();
            let request = if step.write {
                self.write_request(&step.read)
            } else {
                read_request(&step.read)
            };
            match tokio::time::timeout(self.timeout, ctx.call(request)).await {
                Ok(Ok(Ok(rsp))) => {
                    report.ok += 1;
                    if !step.write {
                        self.take(&step.read, &rsp);
                    }
                }
                Ok(Ok(Err(code))) => report.failed.push(format!("{step}: exception {code}")),
                Ok(Err(e)) => report.failed.push(format!("{step}: {e}")),
                Err(_) => report
                    .failed
                    .push(format!("{step}: no reply within {:?}", self.timeout)),
            }
        }
        report.read = (0..self.points.len())
            .filter(|&i| self.directions[i] == Direction::ToPlc)
            .map(|i| (self.points[i].key.clone(), self.last_read.get(&i).copied()))
            .collect();
        report
    }

    /// Remember the values of a read's points (unknown ones are forgotten).
    fn take(&mut self, read: &PlannedRead, rsp: &Response) {
        for slot in &read.slots {
            let Some(spec) = self.points[slot.point].spec.modbus() else {
                continue;
            };
            let off = usize::from(slot.offset);
            let width = usize::from(spec.width());
            let value = match rsp {
                Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w) => {
                    match w.get(off..off + width) {
                        Some(words) if words.iter().all(|&x| x == UNKNOWN_WORD) => None,
                        Some(words) => decode_registers(spec, words).ok(),
                        None => None,
                    }
                }
                Response::ReadCoils(b) | Response::ReadDiscreteInputs(b) => {
                    b.get(off..).and_then(|b| decode_bits(spec, b).ok())
                }
                _ => None,
            };
            match value {
                Some(v) => self.last_read.insert(slot.point, v),
                None => self.last_read.remove(&slot.point),
            };
        }
    }

    /// What the PLC writes to point `i` this round.
    fn value_of(&self, i: usize) -> f64 {
        let p = &self.points[i];
        let Some(spec) = p.spec.modbus() else {
            return 0.0;
        };
        if let Some(src) = self.echo_of[i] {
            let s = &self.points[src];
            let limits = s.display_min.zip(s.display_max).filter(|(lo, hi)| lo <= hi);
            return match (self.last_read.get(&src).copied(), limits) {
                // The PLC applies what it read, within its own limits.
                (Some(v), Some((lo, hi))) => v.clamp(lo, hi),
                (Some(v), None) => v,
                (None, Some((lo, hi))) => ((lo + hi) / 2.0).round(),
                (None, None) => 0.0,
            };
        }
        let r = self.round as f64;
        if spec.data_type == DataType::Bool {
            // Alarms stay quiet; other states toggle every five rounds.
            return if !p.alarm && (self.round / 5 + i as u64) % 2 == 1 {
                1.0
            } else {
                0.0
            };
        }
        match (p.display_min, p.display_max) {
            (Some(lo), Some(hi)) => {
                let mid = (lo + hi) / 2.0;
                let amp = (hi - lo) / 10.0;
                mid + amp * (r / 10.0 + i as f64).sin()
            }
            // A counter: one scale step per round.
            _ => r * spec.scale + spec.offset,
        }
    }

    fn write_request(&self, block: &PlannedRead) -> Request<'static> {
        let mut words = vec![0u16; usize::from(block.count)];
        for slot in &block.slots {
            let Some(spec) = self.points[slot.point].spec.modbus() else {
                continue;
            };
            let off = usize::from(slot.offset);
            match encode_registers(spec, self.value_of(slot.point)) {
                Ok(Encoded::Words(w)) => {
                    for (k, x) in w.into_iter().enumerate() {
                        if let Some(dst) = words.get_mut(off + k) {
                            *dst = x;
                        }
                    }
                }
                Ok(Encoded::Bit { bit, on }) => {
                    if let Some(dst) = words.get_mut(off) {
                        *dst = if block.function.is_register() {
                            merge_bit(*dst, bit, on)
                        } else {
                            u16::from(on)
                        };
                    }
                }
                // The synthetic value does not fit: send zero rather than nothing.
                Err(_) => {}
            }
        }
        let addr = block.address;
        match (block.function, words.as_slice()) {
            (Function::Coil, [one]) => Request::WriteSingleCoil(addr, *one != 0),
            (Function::Coil, _) => {
                Request::WriteMultipleCoils(addr, words.iter().map(|&w| w != 0).collect())
            }
            (_, [one]) => Request::WriteSingleRegister(addr, *one),
            _ => Request::WriteMultipleRegisters(addr, words.into()),
        }
    }
}

fn read_request(block: &PlannedRead) -> Request<'static> {
    let (a, n) = (block.address, block.count);
    match block.function {
        Function::Coil => Request::ReadCoils(a, n),
        Function::Discrete => Request::ReadDiscreteInputs(a, n),
        Function::Holding => Request::ReadHoldingRegisters(a, n),
        Function::Input => Request::ReadInputRegisters(a, n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::load_builtin;

    fn master() -> PlcMaster {
        let profile = load_builtin("plc_cottage_exchange").unwrap().unwrap();
        PlcMaster::new(&profile, Duration::from_millis(500)).unwrap()
    }

    #[test]
    fn the_cottage_request_list_reads_the_to_plc_blocks_then_writes_the_from_plc_ones() {
        let m = master();
        let list: Vec<String> = m.steps.iter().map(ToString::to_string).collect();
        assert_eq!(
            list,
            vec![
                "read holding 10+2",
                "read input 0+1",
                "read coil 10+2",
                "read discrete 0+1",
                "write holding 0+6",
                "write coil 0+4",
            ]
        );
        assert_eq!(m.requests_per_round(), 6);
    }

    #[test]
    fn writes_are_fc10_and_fc0f_for_blocks_and_echo_what_was_read_within_the_plcs_limits() {
        let mut m = master();
        m.round = 1;
        let holding = m.steps[4].read.clone();
        let Request::WriteMultipleRegisters(0, words) = m.write_request(&holding) else {
            panic!("FC10 for six registers");
        };
        // Nothing read yet: the echo (holding 5) is the PLC's own default, the
        // middle of room_setpoint's 5..25 range.
        assert_eq!(words[5], 150);
        m.last_read.insert(m.echo_of[4].unwrap(), 21.5);
        let Request::WriteMultipleRegisters(0, words) = m.write_request(&holding) else {
            panic!("FC10");
        };
        assert_eq!(words[5], 215, "room_setpoint_applied echoes room_setpoint");
        m.last_read.insert(m.echo_of[4].unwrap(), 28.0);
        let Request::WriteMultipleRegisters(0, words) = m.write_request(&holding) else {
            panic!("FC10");
        };
        assert_eq!(words[5], 250, "applied within the PLC's own 5..25 limits");
        let coils = m.steps[5].read.clone();
        assert!(matches!(
            m.write_request(&coils),
            Request::WriteMultipleCoils(0, c) if c.len() == 4 && !c[1]
        ));
    }

    #[test]
    fn the_report_line_names_unknown_values() {
        let r = RoundReport {
            round: 3,
            ok: 5,
            failed: vec!["read holding 10+2: no reply within 500ms".into()],
            read: vec![
                ("room_setpoint".into(), Some(21.5)),
                ("heating_mode".into(), None),
            ],
        };
        assert_eq!(
            r.to_string(),
            "round 3: 5 ok, 1 failed; room_setpoint=21.5 heating_mode=unknown [read holding 10+2: no reply within 500ms]"
        );
    }
}
