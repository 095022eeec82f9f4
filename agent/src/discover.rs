//! `agent discover`: find what hangs on the serial adapters, so an installer
//! starts from a config snippet instead of a blank file.
//!
//! Per port, least intrusive first:
//! 1. **Listen** to the line. POP frames (valid XOR checksums: wall keypads
//!    poll the room-heating boards all the time) make it a POP bus, and the
//!    boards they address are the devices. CRC-valid Modbus RTU frames mean
//!    someone else (a PLC master) runs the line: it must not be probed — our
//!    requests would collide with its — so the port is reported as a
//!    slave-mode candidate and left alone.
//! 2. **Ask an Ouman controller** (EH-203 native protocol, RS-232, 4800 8N1)
//!    for its device-information block (data ID 1): model, firmware, serial.
//!    That link is point to point, so an answer ends the port's scan.
//! 3. **Ask for POP boards** (a quiet POP bus has no keypad): read the
//!    outputs of each board number in the unit range, one attempt each, with
//!    the POP client's bus manners.
//! 4. **Probe** Modbus RTU at common speeds and parities: read one holding
//!    register of each unit in the range. Any answer, even a Modbus exception,
//!    proves a device at that address; silence does not disprove one (a
//!    device may only answer its own registers), hence the wide unit range
//!    option.
//!
//! Progress is reported as it goes (a scan can take a while on a real bus);
//! the result renders as `[[bus]]` / `[[device]]` TOML to paste into
//! `agent.toml`.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    ops::RangeInclusive,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::io::AsyncReadExt as _;
use tokio_util::bytes::BytesMut;

use crate::{
    config::{BusConfig, DataBits, OumanLink, Parity, SerialSettings, StopBits, Transport},
    devices::{
        DeviceClient, ModbusClient, TransportError,
        modbus::port_builder,
        ouman::{
            OumanClient,
            codec::{DEVICE_INFO_ID, DeviceInfo},
        },
        pop::{self, PopClient, PopTiming, codec::PopCodec},
        slave::rtu::crc_ok,
    },
};

/// Where to look and how hard.
#[derive(Debug, Clone)]
pub struct Options {
    /// Ports to scan; empty means every serial adapter found.
    pub ports: Vec<String>,
    /// How long to listen for a master's traffic per port.
    pub listen: Duration,
    /// Baud rates to try, most likely first.
    pub bauds: Vec<u32>,
    /// Unit ids to probe.
    pub units: RangeInclusive<u8>,
    /// Reply timeout of one probe.
    pub probe_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ports: Vec::new(),
            listen: Duration::from_secs(3),
            bauds: vec![9600, 19200, 38400, 4800, 115_200],
            units: 1..=10,
            probe_timeout: Duration::from_millis(200),
        }
    }
}

/// A serial adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The path to use in the config: the stable `/dev/serial/by-id/...` name
    /// when there is one, else the kernel name.
    pub path: String,
    /// The kernel name it points to (e.g. `/dev/ttyUSB0`).
    pub device: String,
}

/// Baud rate of the Ouman EH-200 series' RS-232 port (device-protocols §1.3).
const OUMAN_BAUD: u32 = 4800;

/// What was found.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// An Ouman EH-200 series controller answered its native protocol.
    Ouman {
        /// Port path.
        port: String,
        /// What it says it is.
        info: DeviceInfo,
    },
    /// A Modbus RTU device answered.
    ModbusDevice {
        /// Port path.
        port: String,
        /// Line settings it answered at.
        baud: u32,
        /// See `baud`.
        parity: Parity,
        /// Its unit id.
        unit: u8,
        /// "register 0 = 1234" or the exception it gave.
        answer: String,
    },
    /// POP room-heating boards.
    PopBus {
        /// Port path.
        port: String,
        /// Board numbers seen in keypad traffic or answering our probe.
        boards: BTreeSet<u8>,
        /// How they were found: "keypad traffic" or "probe".
        how: &'static str,
    },
    /// Someone is already mastering this bus.
    ModbusMaster {
        /// Port path.
        port: String,
        /// Line settings the traffic was valid at.
        baud: u32,
        /// See `baud`.
        parity: Parity,
        /// CRC-valid frames seen.
        frames: usize,
        /// Unit ids addressed.
        units: BTreeSet<u8>,
    },
}

/// Serial adapters on this machine, stable names first. `by_id` is the
/// `/dev/serial/by-id` directory (a parameter for tests).
pub fn list_ports(by_id: &Path) -> Vec<Port> {
    let mut out: Vec<Port> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(by_id) {
        let mut links: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        links.sort();
        for link in links {
            if let Ok(target) = std::fs::canonicalize(&link) {
                out.push(Port {
                    path: link.display().to_string(),
                    device: target.display().to_string(),
                });
            }
        }
    }
    if let Ok(ports) = tokio_serial::available_ports() {
        for p in ports {
            if !out.iter().any(|o| o.device == p.port_name) {
                out.push(Port {
                    path: p.port_name.clone(),
                    device: p.port_name,
                });
            }
        }
    }
    out
}

/// Split raw captured chunks (each the bytes that arrived between silences)
/// into CRC-valid RTU frames. A chunk holding several back-to-back frames is
/// split at the first prefix whose CRC checks.
pub fn rtu_frames(chunks: &[Vec<u8>]) -> (Vec<Vec<u8>>, usize) {
    let mut good = Vec::new();
    let mut bad = 0;
    for chunk in chunks {
        let mut rest = chunk.as_slice();
        while !rest.is_empty() {
            match (4..=rest.len().min(256)).find(|&n| crc_ok(&rest[..n])) {
                Some(n) => {
                    good.push(rest[..n].to_vec());
                    rest = &rest[n..];
                }
                None => {
                    bad += 1;
                    break;
                }
            }
        }
    }
    (good, bad)
}

fn settings(path: &str, baud: u32, parity: Parity) -> SerialSettings {
    SerialSettings {
        path: path.to_owned(),
        baud,
        parity,
        data_bits: DataBits::Eight,
        stop_bits: if parity == Parity::None {
            StopBits::Two
        } else {
            StopBits::One
        },
    }
}

/// Capture the line for `listen`: chunks of bytes separated by silences of
/// at least `gap`.
async fn capture(
    s: &SerialSettings,
    listen: Duration,
    gap: Duration,
) -> std::io::Result<Vec<Vec<u8>>> {
    let mut port = tokio_serial::SerialStream::open(&port_builder(s))?;
    let end = tokio::time::Instant::now() + listen;
    let mut chunks = Vec::new();
    let mut cur = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let now = tokio::time::Instant::now();
        if now >= end {
            break;
        }
        match tokio::time::timeout(gap.min(end - now), port.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => cur.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Err(e),
            Err(_) if !cur.is_empty() => chunks.push(std::mem::take(&mut cur)),
            Err(_) => {}
        }
    }
    if !cur.is_empty() {
        chunks.push(cur);
    }
    Ok(chunks)
}

/// Silence that ends a frame: 3.5 characters, never under 2 ms (USB
/// adapters deliver in bursts).
fn frame_gap(baud: u32) -> Duration {
    Duration::from_secs_f64(3.5 * 11.0 / f64::from(baud.max(1))).max(Duration::from_millis(2))
}

/// Scan every port of `opts`, reporting progress lines to `progress`.
pub async fn discover(opts: &Options, mut progress: impl FnMut(&str)) -> Vec<Finding> {
    let ports: Vec<String> = if opts.ports.is_empty() {
        list_ports(Path::new("/dev/serial/by-id"))
            .into_iter()
            .map(|p| p.path)
            .collect()
    } else {
        opts.ports.clone()
    };
    if ports.is_empty() {
        progress("no serial adapters found (plug one in, or name a port with --port)");
    }
    let mut found = Vec::new();
    for port in ports {
        progress(&format!(
            "{port}: listening {:?} for POP keypads and Modbus traffic",
            opts.listen
        ));
        match listen(&port, opts).await {
            Ok(Some(Finding::PopBus { port, boards, how })) => {
                progress(&format!("{port}: POP keypad traffic to boards {boards:?}"));
                found.push(Finding::PopBus { port, boards, how });
                continue;
            }
            Ok(Some(master)) => {
                progress(&format!(
                    "{port}: a Modbus master is active; not probing this bus"
                ));
                found.push(master);
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                progress(&format!("{port}: cannot open: {e}"));
                continue;
            }
        }
        progress(&format!(
            "{port}: asking for an Ouman controller at {OUMAN_BAUD} 8N1"
        ));
        if let Some(info) = probe_ouman(&port, opts).await {
            progress(&format!(
                "{port}: Ouman EH-{} firmware {:.2} serial {} answers",
                info.model,
                info.version(),
                info.serial
            ));
            found.push(Finding::Ouman { port, info });
            continue;
        }
        progress(&format!(
            "{port}: asking for POP boards 0, {}..={}",
            opts.units.start(),
            opts.units.end()
        ));
        let boards = probe_pop(&port, opts).await;
        if !boards.is_empty() {
            progress(&format!("{port}: POP boards {boards:?} answer"));
            found.push(Finding::PopBus {
                port,
                boards,
                how: "probe",
            });
            continue;
        }
        found.extend(probe_rtu(&port, opts, &mut progress).await);
    }
    found
}

async fn probe_ouman(port: &str, opts: &Options) -> Option<DeviceInfo> {
    let mut s = settings(port, OUMAN_BAUD, Parity::None);
    s.stop_bits = StopBits::One;
    let bus = BusConfig {
        name: "discover".into(),
        transport: Transport::Ouman(OumanLink::Serial(s)),
        // A 37-byte reply takes 77 ms at 4800 baud.
        timeout: opts.probe_timeout.max(Duration::from_millis(300)),
        max_gap: 0,
    };
    let data = OumanClient::new(&bus).read(DEVICE_INFO_ID).await.ok()?;
    DeviceInfo::decode(&data)
}

/// POP frames with valid checksums in the captured chunks: the board
/// numbers they carry and how many there were.
pub fn pop_frames(chunks: &[Vec<u8>]) -> (BTreeSet<u8>, usize) {
    let mut boards = BTreeSet::new();
    let mut n = 0;
    for chunk in chunks {
        let mut buf = BytesMut::from(chunk.as_slice());
        while !buf.is_empty() {
            match PopCodec.decode_idle(&mut buf) {
                Ok(Some(frame)) => {
                    boards.insert(frame.device);
                    n += 1;
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
    }
    (boards, n)
}

/// Listen to the line: a POP bus, a Modbus master, or nothing heard.
async fn listen(port: &str, opts: &Options) -> std::io::Result<Option<Finding>> {
    if opts.listen.is_zero() {
        return Ok(None);
    }
    // POP's line (9600 8N1) first; then the Modbus settings. A silent line
    // has no master. Traffic at a wrong speed or parity fails the checks, so
    // when bytes come but no valid frame, try the next setting.
    let mut settings_to_try = vec![(pop::DEFAULT_BAUD, Parity::None)];
    for &baud in &opts.bauds {
        for parity in [Parity::Even, Parity::None] {
            if !settings_to_try.contains(&(baud, parity)) {
                settings_to_try.push((baud, parity));
            }
        }
    }
    for (baud, parity) in settings_to_try {
        let mut s = settings(port, baud, parity);
        s.stop_bits = StopBits::One;
        let chunks = capture(&s, opts.listen, frame_gap(baud)).await?;
        if chunks.is_empty() {
            return Ok(None);
        }
        let (frames, _bad) = rtu_frames(&chunks);
        let (boards, pop_n) = pop_frames(&chunks);
        // A few POP frames could pass a CRC by chance and vice versa; the
        // protocol with more valid frames wins.
        if pop_n > 0 && pop_n >= frames.len() {
            return Ok(Some(Finding::PopBus {
                port: port.to_owned(),
                boards,
                how: "keypad traffic",
            }));
        }
        if !frames.is_empty() {
            let units = frames.iter().filter_map(|f| f.first().copied()).collect();
            return Ok(Some(Finding::ModbusMaster {
                port: port.to_owned(),
                baud,
                parity,
                frames: frames.len(),
                units,
            }));
        }
    }
    Ok(None)
}

/// Ask each board number of the unit range (and 0) for its outputs.
async fn probe_pop(port: &str, opts: &Options) -> BTreeSet<u8> {
    let mut s = settings(port, pop::DEFAULT_BAUD, Parity::None);
    s.stop_bits = StopBits::One;
    let bus = BusConfig {
        name: "discover".into(),
        transport: Transport::Pop(s),
        timeout: pop::REPLY_TIMEOUT,
        max_gap: 0,
    };
    let mut client = PopClient::new(&bus).with_timing(PopTiming {
        attempts: 1,
        reply_timeout: opts.probe_timeout.max(pop::REPLY_TIMEOUT),
        ..PopTiming::default()
    });
    let mut boards = BTreeSet::new();
    for board in std::iter::once(0).chain(opts.units.clone()) {
        if client.read_outputs(board).await.is_ok() {
            boards.insert(board);
        }
    }
    boards
}

async fn probe_rtu(port: &str, opts: &Options, progress: &mut impl FnMut(&str)) -> Vec<Finding> {
    let mut found = Vec::new();
    for &baud in &opts.bauds {
        for parity in [Parity::Even, Parity::None] {
            progress(&format!(
                "{port}: trying Modbus RTU {baud} 8{}{} units {}..={}",
                parity_letter(parity),
                if parity == Parity::None { 2 } else { 1 },
                opts.units.start(),
                opts.units.end()
            ));
            let bus = BusConfig {
                name: "discover".into(),
                transport: Transport::Rtu(settings(port, baud, parity)),
                timeout: opts.probe_timeout,
                max_gap: 0,
            };
            let mut client = ModbusClient::new(&bus);
            for unit in opts.units.clone() {
                let answer = match client.read_holding_registers(unit, 0, 1).await {
                    Ok(Ok(w)) => {
                        format!("holding register 0 = {}", w.first().copied().unwrap_or(0))
                    }
                    Ok(Err(exc)) => format!("answered with {exc}"),
                    Err(TransportError::Timeout(_)) => continue,
                    Err(e) => {
                        progress(&format!("{port}: {e}"));
                        return found;
                    }
                };
                progress(&format!(
                    "{port}: unit {unit} answers at {baud} baud ({answer})"
                ));
                found.push(Finding::ModbusDevice {
                    port: port.to_owned(),
                    baud,
                    parity,
                    unit,
                    answer,
                });
            }
            // The first setting that gets answers is the bus's setting.
            if !found.is_empty() {
                return found;
            }
        }
    }
    progress(&format!("{port}: no Modbus RTU device answered"));
    found
}

fn parity_letter(p: Parity) -> &'static str {
    match p {
        Parity::None => "N",
        Parity::Even => "E",
        Parity::Odd => "O",
    }
}

fn parity_word(p: Parity) -> &'static str {
    match p {
        Parity::None => "none",
        Parity::Even => "even",
        Parity::Odd => "odd",
    }
}

/// The findings as config TOML to paste into `agent.toml`.
pub fn config_snippet(found: &[Finding]) -> String {
    let mut s = String::new();
    let mut buses: Vec<(String, String)> = Vec::new(); // (port, bus name)
    let mut bus_name = |port: &str, s: &mut String, header: &dyn Fn(&str) -> String| {
        if let Some((_, n)) = buses.iter().find(|(p, _)| p == port) {
            return n.clone();
        }
        let name = format!("bus{}", buses.len() + 1);
        s.push_str(&header(&name));
        buses.push((port.to_owned(), name.clone()));
        name
    };
    for f in found {
        match f {
            Finding::PopBus { port, boards, how } => {
                let bus = bus_name(port, &mut s, &|name| {
                    format!("[[bus]]\nname = \"{name}\"\nkind = \"pop\"\npath = \"{port}\"\n\n")
                });
                for board in boards {
                    let _ = write!(
                        s,
                        "# POP board {board} (found by {how}). Trim the profile's rooms and outputs to the board's.\n[[device]]\nkey = \"pop{board}\"\nbus = \"{bus}\"\nunit_id = {board}\nprofile = \"pop_board\"\n\n"
                    );
                }
            }
            Finding::Ouman { port, info } => {
                let bus = bus_name(port, &mut s, &|name| {
                    format!("[[bus]]\nname = \"{name}\"\nkind = \"ouman\"\npath = \"{port}\"\n\n")
                });
                let _ = write!(
                    s,
                    "# Ouman EH-{} firmware {:.2}, serial {}.\n[[device]]\nkey = \"heatpump\"\nbus = \"{bus}\"\nprofile = \"ouman_eh203\"\n\n",
                    info.model,
                    info.version(),
                    info.serial
                );
            }
            Finding::ModbusDevice {
                port,
                baud,
                parity,
                unit,
                answer,
            } => {
                let bus = bus_name(port, &mut s, &|name| {
                    format!(
                        "[[bus]]\nname = \"{name}\"\nkind = \"rtu\"\npath = \"{port}\"\nbaud = {baud}\nparity = \"{}\"\nstop_bits = {}\n\n",
                        parity_word(*parity),
                        if *parity == Parity::None { 2 } else { 1 }
                    )
                });
                let _ = write!(
                    s,
                    "# unit {unit}: {answer}. Pick the profile that matches the device.\n[[device]]\nkey = \"device_{unit}\"\nbus = \"{bus}\"\nunit_id = {unit}\nprofile = \"generic_modbus\"\n\n"
                );
            }
            Finding::ModbusMaster {
                port,
                baud,
                parity,
                frames,
                units,
            } => {
                let polled: Vec<String> = units.iter().map(u8::to_string).collect();
                let _ = write!(
                    s,
                    "# {port}: a Modbus master (PLC) is running this bus at {baud} baud, parity {}: \
                     {frames} valid frames to units {}.\n# Join it as a slave: pick the unit id the PLC \
                     program polls for us (ask its programmer) and an exchange-area profile.\n\
                     # [[bus]]\n# name = \"plc\"\n# kind = \"modbus_slave\"\n# path = \"{port}\"\n\
                     # baud = {baud}\n# parity = \"{}\"\n#\n# [[device]]\n# key = \"plc\"\n\
                     # bus = \"plc\"\n# unit_id = 10\n# profile = \"plc_cottage_exchange\"\n\n",
                    parity_word(*parity),
                    polled.join(", "),
                    parity_word(*parity),
                );
            }
        }
    }
    if s.is_empty() {
        s.push_str("# nothing found\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serial Line V1.02 §2.7 / device-protocols §2.7: read 2 holding
    /// registers from unit 1 at 0: `01 03 00 00 00 02 C4 0B`.
    const READ_REQ: [u8; 8] = [0x01, 0x03, 0x00, 0x00, 0x00, 0x02, 0xC4, 0x0B];

    #[test]
    fn a_spec_frame_passes_the_crc_and_a_flipped_bit_does_not() {
        assert!(crc_ok(&READ_REQ));
        let mut bad = READ_REQ;
        bad[3] ^= 1;
        assert!(!crc_ok(&bad));
        assert!(!crc_ok(&READ_REQ[..3]));
    }

    #[test]
    fn back_to_back_frames_in_one_chunk_are_split_and_noise_is_counted() {
        let mut two = READ_REQ.to_vec();
        two.extend_from_slice(&READ_REQ);
        let (good, bad) = rtu_frames(&[two, vec![0x55, 0xAA, 0x00]]);
        assert_eq!(good.len(), 2);
        assert_eq!(bad, 1);
    }

    #[test]
    fn the_snippet_names_one_bus_per_port_and_a_device_per_unit() {
        let dev = |unit| Finding::ModbusDevice {
            port: "/dev/serial/by-id/usb-FTDI-if00".into(),
            baud: 19200,
            parity: Parity::Even,
            unit,
            answer: "holding register 0 = 7".into(),
        };
        let snippet = config_snippet(&[dev(1), dev(5)]);
        assert_eq!(snippet.matches("[[bus]]").count(), 1, "{snippet}");
        assert_eq!(snippet.matches("[[device]]").count(), 2, "{snippet}");
        assert!(snippet.contains("unit_id = 5"));
        assert!(snippet.contains("baud = 19200"));
    }

    #[test]
    fn by_id_links_are_listed_with_what_they_point_to() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ttyFAKE0");
        std::fs::write(&target, b"").unwrap();
        let by_id = dir.path().join("by-id");
        std::fs::create_dir(&by_id).unwrap();
        std::os::unix::fs::symlink(&target, by_id.join("usb-Acme_RS485-if00-port0")).unwrap();
        let ports = list_ports(&by_id);
        let p = &ports[0];
        assert!(p.path.ends_with("usb-Acme_RS485-if00-port0"));
        assert_eq!(
            p.device,
            std::fs::canonicalize(&target)
                .unwrap()
                .display()
                .to_string()
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_captures_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..5)) {
            let (good, _) = rtu_frames(&chunks);
            for f in good {
                proptest::prop_assert!(crc_ok(&f));
            }
        }
    }
}
