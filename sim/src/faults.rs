//! Fault parameters: each fault switchable with its parameters, or all derived from the seed
//! ("swarm" mode). Times are in milliseconds of simulated time unless a name says otherwise.

use std::fmt;

use crate::rng::SimRng;

/// Every fault source and its parameters. `None` switches a source off.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultConfig {
    /// One-way latency: a fixed minimum plus an exponential part with this mean (µs).
    pub latency: Latency,
    /// Per-direction link bandwidth, bytes per second, with its socket buffer.
    pub bandwidth: Option<Bandwidth>,
    /// Probability that a dial fails.
    pub connect_fail_probability: f64,
    /// Links reset (both ends see `Closed`) as a Poisson process over the network.
    pub resets: Option<Occurrence>,
    /// Link directions held (nothing delivered) for a while.
    pub clogs: Option<Occurrence>,
    /// Partitions of the network into two sides.
    pub partitions: Option<Occurrence>,
    /// Node crashes: memory lost, key and incarnation kept; restart after the duration.
    pub crashes: Option<Occurrence>,
    /// Node pauses: nothing processed for the duration, then everything at once.
    pub pauses: Option<Occurrence>,
    /// Slow readers: a node reads at `slow_reader_bytes_per_sec` for the duration.
    pub slow_readers: Option<Occurrence>,
    /// Read rate of a slow reader, bytes per second.
    pub slow_reader_bytes_per_sec: u64,
    /// Deliver bytes in random chunk sizes (exercises every decoder path).
    pub random_chunks: bool,
}

/// Latency model: `min_us + Exp(mean_extra_us)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// Fixed part, microseconds.
    pub min_us: u64,
    /// Mean of the exponential part, microseconds.
    pub mean_extra_us: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            min_us: 1_000,
            mean_extra_us: 500,
        }
    }
}

/// Link bandwidth and the bytes a sending socket buffers before it stops taking more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth {
    /// Bytes per second per direction.
    pub bytes_per_sec: u64,
    /// Socket buffer per direction; beyond it the driver withholds `Writable`.
    pub buffer_bytes: usize,
}

/// A fault that strikes as a Poisson process and lasts a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    /// Mean time between occurrences over the whole network, ms.
    pub mean_interval_ms: u64,
    /// Minimum duration, ms (the actual one is uniform in [min, 2·min]).
    pub duration_min_ms: u64,
}

/// The fault names `--faults` accepts in a list.
pub const FAULT_NAMES: [&str; 10] = [
    "latency",
    "bandwidth",
    "connect",
    "resets",
    "clogs",
    "partitions",
    "crashes",
    "pauses",
    "slow",
    "chunks",
];

impl FaultConfig {
    /// No faults at all: a fixed 1 ms latency and nothing else.
    pub fn none() -> FaultConfig {
        FaultConfig {
            latency: Latency {
                min_us: 1_000,
                mean_extra_us: 0,
            },
            ..FaultConfig::default()
        }
    }

    /// Whether any source that loses, holds or reorders work is on (latency alone is not a
    /// fault for the exact flood-count check).
    pub fn any(&self) -> bool {
        self.bandwidth.is_some()
            || self.connect_fail_probability > 0.0
            || self.resets.is_some()
            || self.clogs.is_some()
            || self.partitions.is_some()
            || self.crashes.is_some()
            || self.pauses.is_some()
            || self.slow_readers.is_some()
    }

    /// Swarm mode: every source on or off, and every parameter, drawn from `rng`.
    pub fn swarm(rng: &mut SimRng) -> FaultConfig {
        let occurrence = |rng: &mut SimRng, interval: (u64, u64), duration: (u64, u64)| {
            rng.chance(0.5).then(|| Occurrence {
                mean_interval_ms: rng.between(interval.0, interval.1),
                duration_min_ms: rng.between(duration.0, duration.1),
            })
        };
        let latency = Latency {
            min_us: rng.between(100, 20_000),
            mean_extra_us: rng.between(0, 20_000),
        };
        let bandwidth = rng.chance(0.5).then(|| Bandwidth {
            bytes_per_sec: rng.between(100_000, 50_000_000),
            buffer_bytes: rng.between(4 * 1024, 256 * 1024) as usize,
        });
        let connect_fail_probability = if rng.chance(0.5) {
            rng.between(1, 30) as f64 / 100.0
        } else {
            0.0
        };
        FaultConfig {
            latency,
            bandwidth,
            connect_fail_probability,
            resets: occurrence(rng, (500, 5_000), (0, 0)),
            clogs: occurrence(rng, (500, 5_000), (100, 3_000)),
            partitions: occurrence(rng, (2_000, 10_000), (500, 20_000)),
            crashes: occurrence(rng, (2_000, 10_000), (200, 5_000)),
            pauses: occurrence(rng, (2_000, 10_000), (100, 20_000)),
            slow_readers: occurrence(rng, (2_000, 10_000), (500, 5_000)),
            slow_reader_bytes_per_sec: rng.between(1_000, 100_000),
            random_chunks: rng.chance(0.5),
        }
    }

    /// Faults named in a comma-separated list, with moderate fixed parameters.
    pub fn from_list(list: &str) -> Result<FaultConfig, String> {
        let mut f = FaultConfig::none();
        let every = |ms| {
            Some(Occurrence {
                mean_interval_ms: ms,
                duration_min_ms: 1_000,
            })
        };
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "latency" => f.latency = Latency::default(),
                "bandwidth" => {
                    f.bandwidth = Some(Bandwidth {
                        bytes_per_sec: 1_000_000,
                        buffer_bytes: 64 * 1024,
                    })
                }
                "connect" => f.connect_fail_probability = 0.2,
                "resets" => f.resets = every(2_000),
                "clogs" => f.clogs = every(2_000),
                "partitions" => f.partitions = every(5_000),
                "crashes" => f.crashes = every(5_000),
                "pauses" => f.pauses = every(5_000),
                "slow" => {
                    f.slow_readers = every(5_000);
                    f.slow_reader_bytes_per_sec = 10_000;
                }
                "chunks" => f.random_chunks = true,
                other => {
                    return Err(format!(
                        "unknown fault '{other}' (known: {})",
                        FAULT_NAMES.join(", ")
                    ))
                }
            }
        }
        Ok(f)
    }
}

impl fmt::Display for FaultConfig {
    /// One line naming every source that is on, with its parameters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "latency={}us+exp({}us)",
            self.latency.min_us, self.latency.mean_extra_us
        )?;
        if let Some(b) = self.bandwidth {
            write!(
                f,
                " bandwidth={}B/s buffer={}B",
                b.bytes_per_sec, b.buffer_bytes
            )?;
        }
        if self.connect_fail_probability > 0.0 {
            write!(f, " connect_fail={:.2}", self.connect_fail_probability)?;
        }
        let named = [
            ("resets", self.resets),
            ("clogs", self.clogs),
            ("partitions", self.partitions),
            ("crashes", self.crashes),
            ("pauses", self.pauses),
            ("slow_readers", self.slow_readers),
        ];
        for (name, o) in named {
            if let Some(o) = o {
                write!(
                    f,
                    " {name}=every~{}ms/{}ms",
                    o.mean_interval_ms, o.duration_min_ms
                )?;
            }
        }
        if self.slow_readers.is_some() {
            write!(f, " slow_rate={}B/s", self.slow_reader_bytes_per_sec)?;
        }
        if self.random_chunks {
            write!(f, " chunks=random")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_is_a_function_of_the_seed() {
        let a = FaultConfig::swarm(&mut SimRng::new(5));
        assert_eq!(a, FaultConfig::swarm(&mut SimRng::new(5)));
        let differs = (0..20).any(|s| FaultConfig::swarm(&mut SimRng::new(s)) != a);
        assert!(differs);
    }

    #[test]
    fn lists_parse_and_unknown_names_are_refused() {
        let f = FaultConfig::from_list("partitions, crashes").unwrap();
        assert!(f.partitions.is_some() && f.crashes.is_some() && f.clogs.is_none());
        assert!(f.any());
        assert!(!FaultConfig::none().any());
        assert!(FaultConfig::from_list("meteor")
            .unwrap_err()
            .contains("meteor"));
    }
}

/// What a `--faults` argument names: nothing, swarm, or a list of fault names (not yet
/// checked against a scenario's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultArg<'a> {
    /// `none`.
    None,
    /// `swarm`.
    Swarm,
    /// Fault names, spaces trimmed, empty ones dropped.
    List(Vec<&'a str>),
}

/// Splits a `--faults` argument: `none`, `swarm`, or a comma-separated list of names (spaces
/// around a name are allowed). An empty list is refused, and so are `none` and `swarm` in a
/// list: swarm draws every fault from the seed and cannot be combined with named ones.
/// `known` names the scenario's faults, for the message.
pub fn parse_fault_arg<'a>(s: &'a str, known: &[&str]) -> Result<FaultArg<'a>, String> {
    let names: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    match names[..] {
        [] => Err(format!(
            "no faults named in '{s}': give none, swarm, or a comma-separated list of {}",
            known.join(", ")
        )),
        ["none"] => Ok(FaultArg::None),
        ["swarm"] => Ok(FaultArg::Swarm),
        _ if names.contains(&"swarm") => Err(
            "swarm draws every fault from the seed and cannot be combined with named faults: \
             give swarm alone, or a list of fault names"
                .into(),
        ),
        _ if names.contains(&"none") => Err("none cannot be combined with named faults".into()),
        _ => Ok(FaultArg::List(names)),
    }
}
