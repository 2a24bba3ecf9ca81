//! Broadcast throughput between two nodes over loopback TCP, for each driver: node A floods
//! 64-byte payloads to node B, which delivers them to a subscriber. One element is one message,
//! timed from A's first broadcast to B's last delivery; at most `WINDOW` messages are
//! outstanding, as an application pacing itself on deliveries would.
//!
//! Two configurations: the engine's defaults (lz4 offered, so every frame over 64 bytes is
//! tried), and compression off. The payload is pseudo-random, as hashes or ids would be.
//!
//! Each runs with broadcast origin signatures on (the default: A signs, B verifies every
//! broadcast) and off; `WEFT_BENCH_SIGNATURES=on` or `off` runs only one, and the bench id
//! names the mode. The per-peer broadcast rate limit (SPEC.md §11.9) is raised out of the way:
//! the bench measures throughput, not the limit.
//!
//! Each runs with the links encrypted (`noise`: `LinkEncryption::Noise`, the default and the
//! only mode a deployed node has) and, as the baseline to read it against, with weft frames
//! in the clear (`plaintext_baseline`: `LinkEncryption::PlaintextSimulationOnly`, which only
//! the simulator and this bench set); `WEFT_BENCH_ENCRYPTION=noise` or `plaintext` runs only
//! one.
//!
//! Beside them, in the same group and run, the floor: `raw_tcp_floor`, the same 64-byte
//! payloads as raw length-prefixed messages (a u32 length, then the bytes) over a loopback TCP
//! connection of std's sockets, written in batches of up to 64 KiB and read in 64 KiB reads
//! by a thread that parses every prefix and counts; one element is one message, timed from the
//! first write to the last message counted. It is what the sockets allow for this message size
//! with no engine, no driver and no application hand-off.
//!
//! `cargo bench -p weft-benches --bench loopback`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weft_drivers::{Delivery, Handle, Setup};
use weft_engine::rate::RateLimit;
use weft_engine::{Config, LinkEncryption};

const WINDOW: u64 = 16 * 1024;
/// How often the application looks for deliveries while the window is full.
const POLL: Duration = Duration::from_micros(200);

/// 64 pseudo-random bytes (xorshift), fixed across runs.
fn payload() -> Bytes {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..64)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Bytes::from(bytes)
}

#[derive(Clone, Copy)]
enum Driver {
    Mio,
    Tokio,
}

/// The signature modes to run: `WEFT_BENCH_SIGNATURES` = `on`, `off`, or unset for both.
fn signature_modes() -> Vec<bool> {
    match std::env::var("WEFT_BENCH_SIGNATURES").as_deref() {
        Ok("on") => vec![true],
        Ok("off") => vec![false],
        _ => vec![true, false],
    }
}

/// The link encryptions to run, each with the name its bench id carries:
/// `WEFT_BENCH_ENCRYPTION` = `noise`, `plaintext`, or unset for both.
fn encryptions() -> Vec<(&'static str, LinkEncryption)> {
    let noise = ("noise", LinkEncryption::Noise);
    let plaintext = (
        "plaintext_baseline",
        LinkEncryption::PlaintextSimulationOnly,
    );
    match std::env::var("WEFT_BENCH_ENCRYPTION").as_deref() {
        Ok("noise") => vec![noise],
        Ok("plaintext") => vec![plaintext],
        _ => vec![noise, plaintext],
    }
}

/// How a pair of nodes is configured.
#[derive(Clone, Copy)]
struct Mode {
    compression: bool,
    signatures: bool,
    encryption: LinkEncryption,
}

fn setup(seed: u64, mode: Mode, peers: Vec<String>) -> Setup {
    let mut config = Config::from_seed("bench", seed);
    config.discovery = false;
    config.link_encryption = mode.encryption;
    config.compression = mode.compression;
    config.broadcast_signatures = mode.signatures;
    let unlimited = RateLimit {
        per_second: u32::MAX,
        burst: u32::MAX,
    };
    config.limits.broadcast_rate_per_peer = unlimited;
    config.limits.broadcast_excess_per_peer = unlimited;
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut setup = Setup::bind(config, addr).unwrap();
    setup.peers = peers;
    setup
}

/// Runs a node on its own thread and returns its handle.
fn spawn(driver: Driver, setup: Setup) -> Handle {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || match driver {
        Driver::Mio => {
            let (node, handle) = weft_drivers::mio_driver::MioDriver::new(setup).unwrap();
            tx.send(handle).unwrap();
            node.run().unwrap();
        }
        Driver::Tokio => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _entered = rt.enter();
            let (node, handle) = weft_drivers::tokio_driver::TokioDriver::new(setup).unwrap();
            tx.send(handle).unwrap();
            rt.block_on(node.run()).unwrap();
        }
    });
    rx.recv().unwrap()
}

struct Pair {
    a: Handle,
    b: Handle,
    deliveries: Receiver<Delivery>,
}

impl Pair {
    fn new(driver: Driver, mode: Mode) -> Pair {
        let b_setup = setup(2, mode, Vec::new());
        let b_addr = b_setup.local_addr().unwrap().to_string();
        let b = spawn(driver, b_setup);
        let a = spawn(driver, setup(1, mode, vec![b_addr]));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !a.hosts().unwrap().iter().any(|h| h.direct) {
            assert!(Instant::now() < deadline, "the nodes did not link");
            std::thread::sleep(Duration::from_millis(10));
        }
        let deliveries = b.subscribe(2 * WINDOW as usize).unwrap();
        Pair { a, b, deliveries }
    }

    /// Sends `n` broadcasts from A and waits until B delivered them all. The application
    /// refills the window once half of it has been delivered, and polls for deliveries rather
    /// than have B wake it for each.
    fn run(&self, n: u64) -> Duration {
        let payload = payload();
        let start = Instant::now();
        let (mut sent, mut delivered) = (0u64, 0u64);
        while delivered < n {
            while sent < n && sent - delivered < WINDOW {
                self.a.broadcast_nowait(payload.clone()).unwrap();
                sent += 1;
            }
            let stalled_at = Instant::now();
            while delivered < n && (sent - delivered > WINDOW / 2 || sent == n) {
                std::thread::sleep(POLL);
                delivered += self.deliveries.try_iter().count() as u64;
                assert!(
                    stalled_at.elapsed() < Duration::from_secs(10),
                    "B stopped delivering"
                );
            }
        }
        start.elapsed()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = self.a.shutdown();
        let _ = self.b.shutdown();
    }
}

/// The floor: a loopback TCP connection carrying raw length-prefixed messages to a thread
/// that counts them.
struct RawTcp {
    sender: TcpStream,
    counted: Arc<AtomicU64>,
    /// 64 KiB of whole messages, written as many times as a run needs.
    batch: Vec<u8>,
    per_batch: u64,
    record_len: usize,
}

impl RawTcp {
    fn new() -> RawTcp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sender = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        sender.set_nodelay(true).unwrap();
        let (mut receiver, _) = listener.accept().unwrap();
        let counted = Arc::new(AtomicU64::new(0));
        let count = counted.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut filled = 0;
            loop {
                let n = match receiver.read(&mut buf[filled..]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                filled += n;
                let (mut at, mut messages) = (0, 0);
                while let Some(prefix) = buf[at..filled].first_chunk::<4>() {
                    let len = u32::from_be_bytes(*prefix) as usize;
                    if filled - at < 4 + len {
                        break;
                    }
                    at += 4 + len;
                    messages += 1;
                }
                buf.copy_within(at..filled, 0);
                filled -= at;
                count.fetch_add(messages, Ordering::Release);
            }
        });
        let payload = payload();
        let record_len = 4 + payload.len();
        let per_batch = (64 * 1024 / record_len) as u64;
        let mut batch = Vec::with_capacity(64 * 1024);
        for _ in 0..per_batch {
            batch.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            batch.extend_from_slice(&payload);
        }
        RawTcp {
            sender,
            counted,
            batch,
            per_batch,
            record_len,
        }
    }

    /// Sends `n` messages and waits until the reader counted them all.
    fn run(&mut self, n: u64) -> Duration {
        let target = self.counted.load(Ordering::Acquire) + n;
        let start = Instant::now();
        let mut left = n;
        while left > 0 {
            let k = left.min(self.per_batch);
            self.sender
                .write_all(&self.batch[..k as usize * self.record_len])
                .unwrap();
            left -= k;
        }
        let stalled_at = Instant::now();
        while self.counted.load(Ordering::Acquire) < target {
            std::thread::sleep(Duration::from_micros(50));
            assert!(
                stalled_at.elapsed() < Duration::from_secs(10),
                "the reader stopped counting"
            );
        }
        start.elapsed()
    }
}

fn loopback(c: &mut Criterion) {
    let mut group = c.benchmark_group("loopback_broadcast_64B");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    for signatures in signature_modes() {
        let mode = if signatures { "on" } else { "off" };
        eprintln!("loopback bench: broadcast origin signatures {mode}");
        for (name, driver) in [("mio", Driver::Mio), ("tokio", Driver::Tokio)] {
            for (variant, compression) in [("defaults", true), ("no_lz4", false)] {
                for (links, encryption) in encryptions() {
                    let pair = Pair::new(
                        driver,
                        Mode {
                            compression,
                            signatures,
                            encryption,
                        },
                    );
                    let id = format!("{name}/{variant}/signatures_{mode}/{links}");
                    group.bench_function(id, |b| b.iter_custom(|n| pair.run(n)));
                }
            }
        }
    }
    let mut raw = RawTcp::new();
    group.bench_function("raw_tcp_floor", |b| b.iter_custom(|n| raw.run(n)));
    group.finish();
}

criterion_group!(benches, loopback);
criterion_main!(benches);
