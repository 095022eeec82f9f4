//! Read plan and bus time (`scripts/bench-bus`).
//!
//! (a) Transactions per poll: the read plan (adjacent points in one request,
//! holes of up to `max_gap` = 8 read over) against one request per point, for
//! the EH-203 profile's polled points and a realistic 30-point PLC map
//! (`benches/plc30.toml`), with the RTU bytes and wire time each costs.
//!
//! (b) Bus time on a real-speed line: the agent's own [`ModbusDriver`] polls a
//! tokio-modbus RTU server ([`BankSim`], answering t3.5 after each request as
//! a slave that times frames must) through two socat pty pairs joined by a
//! relay in this file that forwards every byte, in both directions, no sooner
//! than an 11-bit character takes at 9600 baud (8E1). So the link behaves like
//! a 9600-baud RS-485 line and the figures include the agent's own t3.5
//! waits, pty hops and scheduling. Ceiling per poll = Σ over transactions of
//! (request + response bytes) × 11 / 9600 s + 2 × t3.5 (the silence that ends
//! the request and the one that ends the response); efficiency = ceiling /
//! measured wall time per poll (goal ≥ 90 %); line utilisation = wire time /
//! measured. Medians over `BENCH_POLLS` polls (default 100; a quarter of that
//! for one-request-per-point, which is far slower).
//!
//! A plain binary, not criterion: the line paces everything, so what matters
//! is the median of many identical polls. Never used as an assertion.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::{
    fs::OpenOptions,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use agent::{
    config::{BusConfig, DataBits, DeviceConfig, Parity, SerialSettings, StopBits, Transport},
    devices::{
        ModbusClient,
        modbus::{RTU_CHAR_BITS, port_builder, rtu_t35, rtu_wire_time},
    },
    poller::{BusDriver as _, ModbusDriver, PollOutcome, PolledDevice},
    registers::{Function, PlannedRead, Point, PointSlot, load_builtin, parse_profile, plan_reads},
    sim::bank::{BankSim, Tables},
};

const BAUD: u32 = 9600;
const MAX_GAP: u16 = 8;

/// RTU bytes of one read: request (address, function, start, quantity, CRC)
/// and response (address, function, byte count, data, CRC).
fn rtu_bytes(read: &PlannedRead) -> usize {
    let n = usize::from(read.count);
    let data = if read.function.is_register() {
        2 * n
    } else {
        n.div_ceil(8)
    };
    8 + 5 + data
}

fn wire(plan: &[PlannedRead]) -> Duration {
    rtu_wire_time(plan.iter().map(rtu_bytes).sum(), BAUD)
}

fn ceiling(plan: &[PlannedRead]) -> Duration {
    let gaps = u32::try_from(2 * plan.len()).unwrap();
    wire(plan) + rtu_t35(BAUD) * gaps
}

/// One read per point, in point order: what a naive poller sends.
fn per_point(points: &[Point]) -> Vec<PlannedRead> {
    points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let s = p.spec.modbus().unwrap();
            PlannedRead {
                function: s.function,
                address: s.address.0,
                count: s.width(),
                slots: vec![PointSlot {
                    point: i,
                    offset: 0,
                }],
            }
        })
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

struct Map {
    name: &'static str,
    points: Vec<Point>,
}

fn maps() -> Vec<Map> {
    let eh203 = load_builtin("ouman_eh203_modbus200").unwrap().unwrap();
    let plc = parse_profile("plc30.toml", include_str!("plc30.toml"))
        .unwrap()
        .remove(0);
    vec![
        Map {
            name: "EH-203 (polled points)",
            points: eh203.points.into_iter().filter(|p| p.enabled).collect(),
        },
        Map {
            name: "PLC, 30 points",
            points: plc.points,
        },
    ]
}

fn plan(points: &[Point]) -> Vec<PlannedRead> {
    let specs: Vec<_> = points
        .iter()
        .map(|p| p.spec.modbus().unwrap().clone())
        .collect();
    plan_reads(&specs, MAX_GAP)
}

fn part_a(maps: &[Map]) {
    println!("### (a) Transactions per poll (max_gap = {MAX_GAP})\n");
    println!(
        "| map | points | planned requests | one per point | ratio | RTU bytes planned / per point | wire time at 9600 8E1, ms: planned / per point |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for m in maps {
        let planned = plan(&m.points);
        let naive = per_point(&m.points);
        let bytes = |p: &[PlannedRead]| p.iter().map(rtu_bytes).sum::<usize>();
        println!(
            "| {} | {} | {} | {} | {:.3} (1/{:.1}) | {} / {} | {} / {} |",
            m.name,
            m.points.len(),
            planned.len(),
            naive.len(),
            planned.len() as f64 / naive.len() as f64,
            naive.len() as f64 / planned.len() as f64,
            bytes(&planned),
            bytes(&naive),
            ms(wire(&planned)),
            ms(wire(&naive)),
        );
        for r in &planned {
            println!(
                "<!-- {}: {} {}+{} -->",
                m.name, r.function, r.address, r.count
            );
        }
    }
    println!();
}

/// A socat pty pair; killed on drop.
struct Pair {
    a: PathBuf,
    b: PathBuf,
    child: Child,
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn socat_pair(dir: &Path, name: &str) -> Pair {
    let (a, b) = (dir.join(format!("{name}-a")), dir.join(format!("{name}-b")));
    let child = Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat is needed (apt-get install socat)");
    let start = Instant::now();
    while !(a.exists() && b.exists()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "socat made no ptys"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Pair { a, b, child }
}

/// Forward bytes from `from` to `to` as a 9600-baud line would deliver them:
/// each byte arrives one character time after the line was free for it
/// (after it arrived here, and after the previous byte was delivered).
fn pace(from: &Path, to: &Path) {
    let mut rx = OpenOptions::new().read(true).open(from).unwrap();
    let mut tx = OpenOptions::new().write(true).open(to).unwrap();
    let char_time = rtu_wire_time(1, BAUD);
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let mut line_free = Instant::now();
        loop {
            let n = match rx.read(&mut buf) {
                Ok(0) | Err(_) => return, // the pair was torn down
                Ok(n) => n,
            };
            let arrived = Instant::now();
            for &byte in &buf[..n] {
                let delivered = line_free.max(arrived) + char_time;
                let now = Instant::now();
                if delivered > now {
                    std::thread::sleep(delivered - now);
                }
                if tx.write_all(&[byte]).is_err() {
                    return;
                }
                line_free = delivered;
            }
        }
    });
}

fn serial(path: &Path) -> SerialSettings {
    SerialSettings {
        path: path.to_string_lossy().into_owned(),
        baud: BAUD,
        parity: Parity::Even,
        data_bits: DataBits::Eight,
        stop_bits: StopBits::One,
    }
}

/// A device that answers for every address the plan reads, holes included
/// (what `max_gap` > 0 assumes of it), with plausible raw contents.
fn tables_for(plan: &[PlannedRead]) -> Tables {
    let mut t = Tables::default();
    for r in plan {
        for a in r.address..r.address + r.count {
            match r.function {
                Function::Holding => t.holding.insert(a, 0).map(|_| ()),
                Function::Input => t.input.insert(a, 0).map(|_| ()),
                Function::Coil => t.coils.insert(a, false).map(|_| ()),
                Function::Discrete => t.discrete.insert(a, false).map(|_| ()),
            };
        }
    }
    fill(&mut t);
    t
}

fn fill(t: &mut Tables) {
    for (i, v) in t.holding.values_mut().enumerate() {
        *v = 200 + i as u16;
    }
    for (i, v) in t.input.values_mut().enumerate() {
        *v = 100 + i as u16;
    }
    for (i, v) in t.coils.values_mut().enumerate() {
        *v = i % 2 == 0;
    }
    for (i, v) in t.discrete.values_mut().enumerate() {
        *v = i % 3 == 0;
    }
}

struct Timing {
    median: Duration,
    p90: Duration,
}

async fn time_polls(
    driver: &mut ModbusDriver<ModbusClient>,
    dev: &PolledDevice<Vec<PlannedRead>>,
    expected_readings: usize,
    polls: usize,
) -> Timing {
    let mut took = Vec::with_capacity(polls);
    for i in 0..polls + 3 {
        let start = Instant::now();
        let (readings, outcome) = driver.poll(dev).await;
        let elapsed = start.elapsed();
        assert_eq!(
            outcome,
            PollOutcome::Answered { exceptions: vec![] },
            "poll failed"
        );
        assert_eq!(readings.len(), expected_readings, "a point was not read");
        if i >= 3 {
            took.push(elapsed); // the first three warm the line up
        }
    }
    took.sort();
    Timing {
        median: took[took.len() / 2],
        p90: took[took.len() * 9 / 10],
    }
}

async fn part_b(maps: &[Map], polls: usize) {
    println!(
        "### (b) Bus time through a relay paced at {BAUD} baud, {RTU_CHAR_BITS}-bit characters (8E1)\n"
    );
    println!(
        "| map | plan | transactions | bytes | wire ms | ceiling ms | median ms (p90) | efficiency = ceiling / median | line utilisation = wire / median | polls |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let dir = tempfile::tempdir().unwrap();
    for (mi, m) in maps.iter().enumerate() {
        // agent ↔ [pair 1] ↔ relay ↔ [pair 2] ↔ simulator
        let agent_side = socat_pair(dir.path(), &format!("m{mi}-agent"));
        let sim_side = socat_pair(dir.path(), &format!("m{mi}-sim"));
        pace(&agent_side.b, &sim_side.a);
        pace(&sim_side.a, &agent_side.b);

        let sim = BankSim::new();
        sim.add_unit(1, tables_for(&plan(&m.points)));
        // A slave that times frames answers t3.5 after the request ends.
        sim.set_response_delay(rtu_t35(BAUD));
        let port = tokio_serial::SerialStream::open(&port_builder(&serial(&sim_side.b))).unwrap();
        let serving = sim.serve_rtu(port);

        let bus = BusConfig {
            name: "rs485".into(),
            transport: Transport::Rtu(serial(&agent_side.a)),
            timeout: Duration::from_secs(2),
            max_gap: MAX_GAP,
        };
        let cfg = DeviceConfig {
            key: "dev".into(),
            label: None,
            bus: "rs485".into(),
            unit_id: 1,
            profile_id: "bench".into(),
            poll_interval: Duration::from_secs(1),
            points: m.points.clone(),
        };
        let mut driver = ModbusDriver::new(ModbusClient::new(&bus), MAX_GAP);
        let mut dev = PolledDevice::for_driver(&driver, &cfg);
        for (label, reads, n) in [
            ("planned", plan(&m.points), polls),
            ("one per point", per_point(&m.points), (polls / 4).max(10)),
        ] {
            dev.plan = reads.clone();
            let t = time_polls(&mut driver, &dev, m.points.len(), n).await;
            let bytes: usize = reads.iter().map(rtu_bytes).sum();
            let (w, c) = (wire(&reads), ceiling(&reads));
            println!(
                "| {} | {label} | {} | {bytes} | {} | {} | {} ({}) | {:.1} % | {:.1} % | {n} |",
                m.name,
                reads.len(),
                ms(w),
                ms(c),
                ms(t.median),
                ms(t.p90),
                100.0 * c.as_secs_f64() / t.median.as_secs_f64(),
                100.0 * w.as_secs_f64() / t.median.as_secs_f64(),
            );
        }
        serving.abort();
        drop(driver);
        drop((agent_side, sim_side));
    }
    println!();
}

fn main() {
    let polls: usize = std::env::var("BENCH_POLLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .max(10);
    let maps = maps();
    part_a(&maps);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(part_b(&maps, polls));
}
