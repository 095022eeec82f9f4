//! RTU frame tests with spec vectors: raw request bytes go into our
//! simulator's tokio-modbus RTU server and the exact response bytes, CRC
//! included, come back out.
//!
//! tokio-modbus's `rtu::Server` only accepts a `tokio_serial::SerialStream`
//! (not any `AsyncRead + AsyncWrite`), so instead of `tokio::io::duplex` the
//! two ends are a pseudo-terminal pair from `SerialStream::pair()`: still no
//! hardware and no external process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agent::sim::{Eh203Sim, SimOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_serial::SerialStream;

/// CRC-16/MODBUS (Serial Line V1.02 §2.5.1.2, Appendix B), written here
/// independently of tokio-modbus so the test checks its frames.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Append the CRC, low byte first.
fn with_crc(pdu: &[u8]) -> Vec<u8> {
    let crc = crc16(pdu);
    let mut v = pdu.to_vec();
    v.extend_from_slice(&[(crc & 0xFF) as u8, (crc >> 8) as u8]);
    v
}

struct Line {
    master: SerialStream,
    sim: Eh203Sim,
}

fn line() -> Line {
    let (master, slave) = SerialStream::pair().expect("a pty pair");
    // A sim that does not tick, so register contents are stable during a test.
    let sim = Eh203Sim::new(SimOptions::default());
    let svc = sim.service();
    tokio::spawn(async move {
        tokio_modbus::server::rtu::Server::new(slave)
            .serve_forever(svc)
            .await
    });
    Line { master, sim }
}

impl Line {
    /// Send `request`, then read until `expected_len` bytes arrived (or 2 s passed).
    async fn exchange(&mut self, request: &[u8], expected_len: usize) -> Vec<u8> {
        self.master.write_all(request).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while got.len() < expected_len {
                let n = self.master.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        got
    }

    /// Send `request` and check that nothing comes back within 300 ms.
    async fn silence(&mut self, request: &[u8]) {
        self.master.write_all(request).await.unwrap();
        let mut buf = [0u8; 256];
        let r = tokio::time::timeout(Duration::from_millis(300), self.master.read(&mut buf)).await;
        assert!(
            r.is_err(),
            "expected no reply, got {:02X?}",
            r.map(|n| buf[..n.unwrap()].to_vec())
        );
    }
}

#[test]
fn the_test_crc_matches_the_catalogue_check_value_and_spec_frames() {
    assert_eq!(crc16(b"123456789"), 0x4B37);
    assert_eq!(
        with_crc(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A]),
        [0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD]
    );
    assert_eq!(
        with_crc(&[0x01, 0x83, 0x02]),
        [0x01, 0x83, 0x02, 0xC0, 0xF1]
    );
    assert_eq!(
        with_crc(&[0x01, 0x03, 0x04, 0x00, 0xFA, 0xFF, 0x9C]),
        [0x01, 0x03, 0x04, 0x00, 0xFA, 0xFF, 0x9C, 0x9B, 0x9B]
    );
    // A whole frame including its CRC checks to zero.
    assert_eq!(crc16(&[0x01, 0x04, 0x02, 0x00, 0x0A, 0x39, 0x37]), 0);
}

#[tokio::test]
async fn reading_unmapped_registers_returns_the_spec_illegal_address_exception() {
    let mut l = line();
    let request = [
        0x01, // slave 1
        0x03, // FC03 read holding registers
        0x00, 0x00, // from address 0 (below the card's bank)
        0x00, 0x0A, // 10 registers
        0xC5, 0xCD, // CRC lo, hi
    ];
    let expected = [
        0x01, // slave 1
        0x83, // FC03 | 0x80: exception
        0x02, // ILLEGAL DATA ADDRESS
        0xC0, 0xF1, // CRC lo, hi
    ];
    assert_eq!(l.exchange(&request, expected.len()).await, expected);
}

#[tokio::test]
async fn reading_the_outdoor_temperature_returns_the_bank_word_with_a_valid_crc() {
    let mut l = line();
    let request = with_crc(&[
        0x01, // slave 1
        0x03, // FC03
        0x00, 0x12, // address 18: outdoor temperature
        0x00, 0x01, // one register
    ]);
    let word = l.sim.read_holding(18, 1).unwrap()[0];
    let expected = with_crc(&[0x01, 0x03, 0x02, (word >> 8) as u8, word as u8]);
    let got = l.exchange(&request, expected.len()).await;
    assert_eq!(got, expected);
    assert_eq!(crc16(&got), 0, "the reply's CRC checks");
    let celsius = f64::from(word as i16) / 100.0;
    assert!((celsius - l.sim.snapshot().outdoor_temp).abs() < 0.01);
}

#[tokio::test]
async fn a_request_for_another_unit_gets_no_reply() {
    let mut l = line();
    // RKC MA900 manual example: slave 2, read 3 holding registers from 0.
    l.silence(&[0x02, 0x03, 0x00, 0x00, 0x00, 0x03, 0x05, 0xF8])
        .await;
}

#[tokio::test]
async fn a_broadcast_write_gets_no_reply() {
    let mut l = line();
    // Serial Line V1.02 §2.1: no response to broadcast (address 0).
    l.silence(&[0x00, 0x06, 0x00, 0x01, 0x00, 0x03, 0x99, 0xDA])
        .await;
}

#[tokio::test]
async fn input_registers_are_an_illegal_function_on_this_card() {
    let mut l = line();
    let request = [
        0x01, // slave 1
        0x04, // FC04 read input registers
        0x00, 0x08, // address 8
        0x00, 0x01, // 1 register
        0xB0, 0x08, // CRC
    ];
    let expected = with_crc(&[0x01, 0x84, 0x01]); // ILLEGAL FUNCTION
    assert_eq!(l.exchange(&request, expected.len()).await, expected);
}

#[tokio::test]
async fn a_single_register_write_inside_the_bank_is_echoed() {
    let mut l = line();
    let request = with_crc(&[
        0x01, // slave 1
        0x06, // FC06 write single register
        0x00, 0x0D, // address 13: L1 room setpoint
        0x08, 0x66, // 2150 = 21.50 °C
    ]);
    assert_eq!(
        l.exchange(&request, request.len()).await,
        request,
        "FC06 reply echoes the request"
    );
    assert_eq!(l.sim.read_holding(13, 1).unwrap(), vec![0x0866]);
}

#[tokio::test]
async fn a_write_outside_the_bank_is_an_illegal_address() {
    let mut l = line();
    let request = [
        0x01, // slave 1
        0x06, // FC06
        0x00, 0x01, // address 1
        0x00, 0x03, // value 3
        0x98, 0x0B, // CRC
    ];
    let expected = with_crc(&[0x01, 0x86, 0x02]);
    assert_eq!(l.exchange(&request, expected.len()).await, expected);
}

#[tokio::test]
async fn a_silent_device_stops_answering_and_resumes() {
    let mut l = line();
    let request = with_crc(&[0x01, 0x03, 0x00, 0x12, 0x00, 0x01]);
    l.sim.set_silent(true);
    l.silence(&request).await;
    l.sim.set_silent(false);
    assert_eq!(l.exchange(&request, 7).await.len(), 7);
}
