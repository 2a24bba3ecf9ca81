//! A node's configuration: identity, network, limits, timers and the RNG seed.

use crate::link_key::{LinkEncryption, NetworkKey};
use crate::noise::Rekey;
use crate::rate::RateLimit;
use crate::time::Duration;

/// Everything a [`crate::Node`] is built from. Defaults are the values SPEC.md names. Its
/// `Debug` never prints the secret key.
#[derive(Clone)]
pub struct Config {
    /// The network's name; nodes of other networks are refused in the handshake.
    pub network: String,
    /// The ed25519 secret key (32 bytes). Tests and the simulator derive it from a seed.
    pub secret_key: [u8; 32],
    /// This run's incarnation: the driver persists it and raises it on every start.
    pub incarnation: u64,
    /// Mixed with the secret key and incarnation to seed the node's only random number
    /// generator (nonces, dial choices, each Noise handshake's ephemeral key). A host outside
    /// the simulator must draw it from the OS on every start (the weft drivers' `Setup` mixes
    /// OS randomness in): with the same key, incarnation and seed, a restarted node makes the
    /// same ephemeral keys and HELLO nonces in the same order, and a recorded session can be
    /// replayed to it (SPEC.md §21.8).
    pub rng_seed: u64,
    /// Where this node accepts connections, announced in HELLO and discovery.
    pub listen_addr: Option<String>,
    /// Whether to send and act on discovery cascades and dial heard-of peers.
    pub discovery: bool,
    /// Whether to offer lz4 compression in HELLO and use it where the peer offers it too.
    pub compression: bool,
    /// Whether broadcasts carry their origin's signature, checked by every receiver (SPEC.md
    /// §11). Every node of a network must agree; HELLO carries the setting. Off only in a
    /// network whose members trust each other, for raw speed.
    pub broadcast_signatures: bool,
    /// Bounds on queues, caches and counts.
    pub limits: Limits,
    /// Timer periods and timeouts.
    pub timers: Timers,
    /// Chord (SPEC.md §20): `Some` makes the node a ring member (it needs `listen_addr`).
    pub chord: Option<crate::chord::ChordConfig>,
    /// The network key mixed into every Noise handshake (SPEC.md §21.7): [`NetworkKey::OPEN`]
    /// for a network without a secret.
    pub network_key: NetworkKey,
    /// How links are protected: Noise, except in the simulator's plaintext speed runs.
    pub link_encryption: LinkEncryption,
    /// Who may ask this node to run programs (SPEC.md §23): no one by default.
    pub run: crate::run::RunConfig,
    /// `Some`: the node speaks the p2p.today dialect (py2p's protocol, SPEC.md §25) instead
    /// of weft's own: no Noise, no HELLO, none of weft's protocols, and no network secret
    /// (`network_key` is not used: py2p has none, so a dialect node is on an open network
    /// whatever it says; the `weft` CLI refuses a secret with `--dialect`, an embedder must
    /// not set both).
    pub p2pt: Option<crate::p2pt::P2ptConfig>,
}

impl core::fmt::Debug for Config {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Config")
            .field("network", &self.network)
            .field("secret_key", &"(redacted)")
            .field("incarnation", &self.incarnation)
            .field("rng_seed", &self.rng_seed)
            .field("listen_addr", &self.listen_addr)
            .field("discovery", &self.discovery)
            .field("compression", &self.compression)
            .field("broadcast_signatures", &self.broadcast_signatures)
            .field("limits", &self.limits)
            .field("timers", &self.timers)
            .field("chord", &self.chord)
            .field("network_key", &self.network_key)
            .field("link_encryption", &self.link_encryption)
            .field("run", &self.run)
            .field("p2pt", &self.p2pt)
            .finish()
    }
}

impl Config {
    /// A configuration with default limits and timers.
    pub fn new(network: impl Into<String>, secret_key: [u8; 32]) -> Config {
        Config {
            network: network.into(),
            secret_key,
            incarnation: 1,
            rng_seed: 0,
            listen_addr: None,
            discovery: true,
            compression: true,
            broadcast_signatures: true,
            limits: Limits::default(),
            timers: Timers::default(),
            chord: None,
            network_key: NetworkKey::OPEN,
            link_encryption: LinkEncryption::Noise,
            run: crate::run::RunConfig::default(),
            p2pt: None,
        }
    }

    /// A configuration whose key and RNG seed are derived from `seed` (tests, the simulator).
    pub fn from_seed(network: impl Into<String>, seed: u64) -> Config {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"weft secret key from seed v1\0");
        hasher.update(&seed.to_le_bytes());
        let mut config = Config::new(network, *hasher.finalize().as_bytes());
        config.rng_seed = seed;
        config
    }
}

/// Every bound the engine keeps. SPEC.md §Limits lists them with these defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Inbound (accepted) connections, handshaking or established.
    pub inbound_max: usize,
    /// Outbound (dialed) connections, pending, handshaking or established.
    pub outbound_max: usize,
    /// Discovery dials while fewer than this many outbound links exist.
    pub outbound_target: usize,
    /// Bytes queued for one connection above which relayed broadcasts are dropped and counted.
    pub relay_queue_bytes_max: usize,
    /// Bytes queued for one connection above which the peer is disconnected as too slow.
    pub send_queue_bytes_max: usize,
    /// Bytes handed to the driver for one connection before it must report `Writable`.
    pub transmit_window_bytes: usize,
    /// Largest broadcast payload the application may send.
    pub broadcast_payload_max: usize,
    /// Origins whose sequence window the mesh remembers (least recently used evicted).
    pub seen_origins_max: usize,
    /// Discovery cascade ids remembered (oldest evicted).
    pub cascade_seen_max: usize,
    /// Heard-of peers remembered (least recently seen evicted).
    pub heard_of_max: usize,
    /// Hops a discovery cascade travels beyond its origin's direct peers.
    pub cascade_hops: u8,
    /// Failed dials to a heard-of address before it is forgotten.
    pub dial_attempts_max: u8,
    /// Broadcasts held for repair (the recent window), oldest dropped first.
    pub repair_store_max: usize,
    /// Payload bytes held for repair, oldest dropped first.
    pub repair_store_bytes_max: usize,
    /// Longest sync-table key, bytes.
    pub table_key_bytes_max: usize,
    /// Longest sync-table value, bytes.
    pub table_value_bytes_max: usize,
    /// Keys (tombstones included) the application may create; peers' writes may take the
    /// table to twice this, past which writes for new keys are dropped and counted.
    pub table_entries_max: usize,
    /// Writes held per key to re-judge late arrivals; older ones are folded.
    pub table_key_writes_max: usize,
    /// Encoded bytes of every table write held; peers' writes may take it to twice this, past
    /// which they are dropped and counted. A delete of a live key is exempt (one per key).
    pub table_bytes_max: usize,
    /// Dedicated connections (SPEC.md §8.9) open at once; at the bound the idlest is closed.
    pub dedicated_conns_max: usize,
    /// Bytes held, all connections still in their handshake together, past which the
    /// connection whose bytes went over is closed (SPEC.md §8.4).
    pub handshake_buffered_bytes_max: usize,
    /// Bytes held, all connections together, of frames not yet whole (and undecrypted
    /// Noise messages), past which the connection holding the most is closed (SPEC.md §8.4).
    pub frames_buffered_bytes_max: usize,
    /// Inbound connections (handshaking, established or dedicated) from one remote address,
    /// its port ignored; more are refused (SPEC.md §8.4).
    pub inbound_per_address_max: usize,
    /// Discovery dials of one address not answered by the node they were for, after which
    /// the address is not dialed again while it is remembered (SPEC.md §10.7).
    pub dial_address_attempts_max: u8,
    /// Discovery dials of heard-of addresses in any 60 seconds, all addresses together
    /// (SPEC.md §10.7).
    pub discovery_dials_per_minute: usize,
    /// Discovery cascades one peer may make this node handle and relay (new ones; SPEC.md
    /// §10.8); the excess is dropped and counted.
    pub cascade_rate: RateLimit,
    /// Cascades dropped past `cascade_rate` within `Timers::cascade_drop_window` above which
    /// the peer is disconnected.
    pub cascade_drops_max: u32,
    /// New broadcasts (BROADCAST or MESH_REPAIR, not yet seen) one peer may make this node
    /// handle; the excess is dropped and counted (SPEC.md §11.9).
    pub broadcast_rate_per_peer: RateLimit,
    /// Broadcasts over `broadcast_rate_per_peer` one peer may send before it is disconnected
    /// as a repeat offender: each dropped one takes a token (SPEC.md §11.9).
    pub broadcast_excess_per_peer: RateLimit,
    /// Addresses `Command::Connect` may configure: each is redialed for as long as the node
    /// runs (SPEC.md §8.10); past the bound a new one is refused.
    pub configured_peers_max: usize,
    /// Nodes `Command::Disconnect` keeps away (SPEC.md §8.10): neither dialed by discovery
    /// nor accepted, until an outbound link to one is made on purpose; past the bound the
    /// oldest mark is forgotten.
    pub disconnected_nodes_max: usize,
    /// When each direction of a Noise link rekeys (SPEC.md §21.5). Both ends must agree:
    /// change it only in tests that configure every node.
    pub noise_rekey: Rekey,
    /// Peers linked with that the host stores and the next start dials (SPEC.md §8.11), most
    /// recently linked first; also the bound on saved and lost addresses redialed at once.
    pub known_peers_saved_max: usize,
    /// Dials of a saved peer, or of a peer whose link was lost without a BYE, before it is
    /// given up (SPEC.md §8.10).
    pub redial_attempts_max: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            inbound_max: 64,
            outbound_max: 16,
            outbound_target: 8,
            relay_queue_bytes_max: 1024 * 1024,
            send_queue_bytes_max: 64 * 1024 * 1024,
            transmit_window_bytes: 256 * 1024,
            broadcast_payload_max: 16 * 1024 * 1024,
            seen_origins_max: 65_536,
            cascade_seen_max: 4096,
            heard_of_max: 1024,
            cascade_hops: 2,
            dial_attempts_max: 5,
            repair_store_max: 4096,
            repair_store_bytes_max: 64 * 1024 * 1024,
            table_key_bytes_max: 256,
            table_value_bytes_max: 64 * 1024,
            table_entries_max: 100_000,
            table_key_writes_max: 32,
            table_bytes_max: 64 * 1024 * 1024,
            dedicated_conns_max: 64,
            handshake_buffered_bytes_max: 32 * 1024,
            frames_buffered_bytes_max: 256 * 1024 * 1024,
            inbound_per_address_max: 8,
            dial_address_attempts_max: 8,
            discovery_dials_per_minute: 20,
            cascade_rate: RateLimit {
                per_second: 100,
                burst: 1000,
            },
            cascade_drops_max: 1000,
            broadcast_rate_per_peer: RateLimit {
                per_second: 10_000,
                burst: 20_000,
            },
            broadcast_excess_per_peer: RateLimit {
                per_second: 1_000,
                burst: 10_000,
            },
            configured_peers_max: 64,
            disconnected_nodes_max: 64,
            noise_rekey: Rekey::default(),
            known_peers_saved_max: 32,
            redial_attempts_max: 8,
        }
    }
}

/// Timer periods and timeouts. SPEC.md §Timers lists them with these defaults.
#[derive(Debug, Clone)]
pub struct Timers {
    /// Period of the liveness tick that sends PINGs and enforces the timeouts below.
    pub tick: Duration,
    /// A link idle (nothing sent) this long gets a PING.
    pub ping_interval: Duration,
    /// A peer silent (nothing received) this long is dropped.
    pub peer_timeout: Duration,
    /// A connection that has not finished the handshake in this time is closed.
    pub handshake_timeout: Duration,
    /// At most one discovery dial per this period.
    pub dial_interval: Duration,
    /// Base wait before redialing a heard-of peer: `dial_backoff · 2^failures`.
    pub dial_backoff: Duration,
    /// Broadcasts older than this leave the repair window.
    pub repair_window: Duration,
    /// Period of the anti-entropy digest sent to one random link.
    pub repair_interval: Duration,
    /// Longest lease a table write may take.
    pub table_lease_max: Duration,
    /// Table writes older than this (by their stamp against the wall clock) are refused, and
    /// tombstones older than it reclaimed.
    pub table_reclaim_horizon: Duration,
    /// A changed table is handed to the host to store at most this often (and at shutdown).
    pub table_persist_interval: Duration,
    /// Table writes stamped more than this ahead of the receiver's wall clock are refused (not
    /// observed by its clock); a local write the clock would stamp past it is refused too.
    pub table_clock_skew_max: Duration,
    /// A peer whose cascades are dropped past its rate more than
    /// `Limits::cascade_drops_max` times within this window is disconnected.
    pub cascade_drop_window: Duration,
    /// Wait before the first redial of an address (SPEC.md §8.10); each failed dial doubles
    /// it, up to `redial_backoff_max`, less up to a quarter of jitter.
    pub redial_backoff_first: Duration,
    /// Longest wait between dials of a redialed address.
    pub redial_backoff_max: Duration,
    /// A changed list of known peers is handed to the host to store at most this often (and
    /// at shutdown; SPEC.md §8.11).
    pub peers_save_interval: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            tick: Duration::from_millis(1000),
            ping_interval: Duration::from_secs(5),
            peer_timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
            dial_interval: Duration::from_millis(1000),
            dial_backoff: Duration::from_secs(2),
            repair_window: Duration::from_secs(120),
            repair_interval: Duration::from_secs(10),
            table_lease_max: Duration::from_secs(3600),
            table_reclaim_horizon: Duration::from_secs(24 * 3600),
            table_persist_interval: Duration::from_secs(5),
            table_clock_skew_max: Duration::from_secs(60),
            cascade_drop_window: Duration::from_secs(10),
            redial_backoff_first: Duration::from_millis(500),
            redial_backoff_max: Duration::from_secs(60),
            peers_save_interval: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_no_key_bytes() {
        let mut c = Config::new("n", [0xab; 32]);
        c.network_key = NetworkKey::derive(b"s").unwrap();
        let text = format!("{c:?}");
        assert!(text.contains("(redacted)") && text.contains("NetworkKey(secret)"));
        assert!(!text.contains("171") && !text.contains("ab, ab") && !text.contains("abab"));
    }
}
