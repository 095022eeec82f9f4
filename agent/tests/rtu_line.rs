//! The RTU client's line discipline, seen from the other end of a socat pty
//! pair by a raw byte reader (no Modbus library on that side): broadcast
//! frames byte for byte with no reply awaited, the turnaround delay after a
//! broadcast, and t3.5 of silence after a reply before the next request.
//!
//! Time is only ever checked from below (something happened *no sooner*
//! than the spec requires): a slow machine can only make those gaps longer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use agent::{
    config::{BusConfig, DataBits, Parity, SerialSettings, StopBits, Transport},
    devices::{
        DeviceClient as _, ModbusClient, TURNAROUND_DELAY, TransportError,
        modbus::{port_builder, rtu_t35},
    },
};
use common::{PtyPair, socat_pair, within};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_serial::SerialStream;

fn settings(path: &std::path::Path) -> SerialSettings {
    SerialSettings {
        path: path.to_string_lossy().into_owned(),
        baud: 9600,
        parity: Parity::Even,
        data_bits: DataBits::Eight,
        stop_bits: StopBits::One,
    }
}

/// A client on end B with a timeout far longer than the test's own limit, so
/// a client that waited for a broadcast reply would fail the test.
fn client(pty: &PtyPair) -> ModbusClient {
    ModbusClient::new(&BusConfig {
        name: "rs485".into(),
        transport: Transport::Rtu(settings(&pty.b)),
        timeout: Duration::from_secs(120),
        max_gap: 8,
    })
}

/// Read exactly `n` bytes from the raw end; returns them and when the last arrived.
async fn read_n(port: &mut SerialStream, n: usize) -> (Vec<u8>, Instant) {
    let mut got = vec![0u8; n];
    within("bytes from the client", port.read_exact(&mut got))
        .await
        .unwrap();
    (got, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_is_one_frame_to_unit_0_and_nothing_is_awaited() {
    let pty = socat_pair().await;
    let mut raw = SerialStream::open(&port_builder(&settings(&pty.a))).unwrap();
    let mut c = client(&pty);

    // FC06 broadcast, register 1 = 3: 00 06 0001 0003, CRC 99 DA (§2.7)
    within(
        "a broadcast that awaits no reply",
        c.write_single_register(0, 1, 3),
    )
    .await
    .unwrap()
    .unwrap();
    let (frame, sent_at) = read_n(&mut raw, 8).await;
    assert_eq!(frame, [0x00, 0x06, 0x00, 0x01, 0x00, 0x03, 0x99, 0xDA]);

    // FC10 broadcast, registers 1..2 = 0x000A 0x0102 (CRC computed by the client)
    within(
        "a second broadcast",
        c.write_multiple_registers(0, 1, &[0x000A, 0x0102]),
    )
    .await
    .unwrap()
    .unwrap();
    let (frame, second_at) = read_n(&mut raw, 13).await;
    assert_eq!(
        &frame[..11],
        [
            0x00, 0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02
        ]
    );
    assert!(
        second_at - sent_at >= TURNAROUND_DELAY,
        "the next request came {:?} after a broadcast; the turnaround delay is {TURNAROUND_DELAY:?}",
        second_at - sent_at
    );

    // A read to unit 0 would never be answered: refused, and nothing is sent.
    assert!(matches!(
        c.read_holding_registers(0, 0, 1).await,
        Err(TransportError::InvalidRequest(_))
    ));
    // FC05 broadcast, coil 0x00AC ON
    within("a coil broadcast", c.write_single_coil(0, 0xAC, true))
        .await
        .unwrap()
        .unwrap();
    let (frame, _) = read_n(&mut raw, 8).await;
    assert_eq!(
        &frame[..6],
        [0x00, 0x05, 0x00, 0xAC, 0xFF, 0x00],
        "the refused read sent nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_request_waits_t35_after_the_last_byte_of_a_reply() {
    let pty = socat_pair().await;
    let mut raw = SerialStream::open(&port_builder(&settings(&pty.a))).unwrap();
    let mut c = client(&pty);
    let peer = tokio::spawn(async move {
        let mut gaps = Vec::new();
        let mut replied_at: Option<Instant> = None;
        for _ in 0..10 {
            // FC03 unit 1, 1 register from 0: 01 03 0000 0001, CRC 84 0A
            let (req, at) = read_n(&mut raw, 8).await;
            assert_eq!(req, [0x01, 0x03, 0x00, 0x00, 0x00, 0x01, 0x84, 0x0A]);
            if let Some(r) = replied_at {
                gaps.push(at - r);
            }
            // reply 0x002A: 01 03 02 002A, CRC 39 9B
            raw.write_all(&[0x01, 0x03, 0x02, 0x00, 0x2A, 0x39, 0x9B])
                .await
                .unwrap();
            raw.flush().await.unwrap();
            replied_at = Some(Instant::now());
        }
        gaps
    });
    for _ in 0..10 {
        let words = within("a read", c.read_holding_registers(1, 0, 1)).await;
        assert_eq!(words, Ok(Ok(vec![0x2A])));
    }
    let gaps = peer.await.unwrap();
    for g in gaps {
        assert!(
            g >= rtu_t35(9600),
            "a request followed a reply after only {g:?}"
        );
    }
}
