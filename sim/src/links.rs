//! How a world's links are protected (SPEC.md §21): Noise with the open network key or a
//! secret's, some nodes possibly given another secret (wrong-secret nodes, which must never
//! link with the others), or plaintext for speed runs of the simulator only.
//!
//! A network key costs an argon2id derivation (about 30 ms and 19 MiB): it is derived once
//! per distinct secret per process and shared by every node and every run that uses it,
//! never per node.

use std::collections::BTreeMap;
use std::sync::Mutex;

use weft_engine::{LinkEncryption, NetworkKey};

/// The secret of the private networks that sweeps run: a word a replay line carries as it is.
pub const SWEEP_SECRET: &str = "weft-sim-sweep";

/// The secret of wrong-secret nodes in an open network.
const OPEN_NETWORK_WRONG_SECRET: &str = "weft-sim-wrong-secret";

/// Longest secret a run takes, bytes: room for the wrong secret's suffix within the engine's
/// bound.
pub const SIM_SECRET_BYTES_MAX: usize = 256;

/// Distinct secrets remembered with their keys; past it the memory starts afresh.
const DERIVED_KEYS_MAX: usize = 64;

/// How a world's links are protected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkSetup {
    /// Plaintext links (`LinkEncryption::PlaintextSimulationOnly`) instead of Noise: faster,
    /// and for the simulator only (no driver offers it).
    pub plaintext: bool,
    /// The network's secret; `None`: an open network (`NetworkKey::OPEN`).
    pub secret: Option<String>,
    /// Nodes added to the network with another secret: they dial it and are dialed, and must
    /// never link with it.
    pub wrong_secret_nodes: u32,
}

/// The network keys of a world's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    /// The network's.
    pub network: NetworkKey,
    /// The wrong-secret nodes'.
    pub wrong: NetworkKey,
}

impl LinkSetup {
    /// An open network, Noise on every link (the engine's default).
    pub const OPEN: LinkSetup = LinkSetup {
        plaintext: false,
        secret: None,
        wrong_secret_nodes: 0,
    };

    /// A private network of `secret`, with `wrong_secret_nodes` nodes of another secret.
    pub fn private(secret: &str, wrong_secret_nodes: u32) -> LinkSetup {
        LinkSetup {
            plaintext: false,
            secret: Some(secret.into()),
            wrong_secret_nodes,
        }
    }

    /// Plaintext links, no secret (`--plaintext-sim-only`).
    pub fn plaintext() -> LinkSetup {
        LinkSetup {
            plaintext: true,
            ..LinkSetup::OPEN
        }
    }

    /// What a sweep's seed runs with: seeds alternate between an open network, a private one
    /// ([`SWEEP_SECRET`]) and a private one with one wrong-secret node; all plaintext (no
    /// secret) if `plaintext`.
    pub fn for_sweep_seed(seed: u64, plaintext: bool) -> LinkSetup {
        if plaintext {
            return LinkSetup::plaintext();
        }
        match seed % 3 {
            0 => LinkSetup::OPEN,
            1 => LinkSetup::private(SWEEP_SECRET, 0),
            _ => LinkSetup::private(SWEEP_SECRET, 1),
        }
    }

    /// Whether a run can take this setup, and replay it from its replay line: plaintext
    /// links have no key, so neither a secret nor a wrong-secret node; a secret must be a
    /// word a shell passes as printed (letters, digits and `-_.:/+=,@`), of 1 to
    /// [`SIM_SECRET_BYTES_MAX`] bytes.
    pub fn check(&self) -> Result<(), String> {
        if self.plaintext && (self.secret.is_some() || self.wrong_secret_nodes > 0) {
            return Err(
                "--plaintext-sim-only links have no network key: it cannot be combined with \
                 --secret or --wrong-secret-nodes"
                    .into(),
            );
        }
        if let Some(s) = &self.secret {
            let replayable = |c: char| c.is_ascii_alphanumeric() || "-_.:/+=,@".contains(c);
            if s.is_empty() || s.len() > SIM_SECRET_BYTES_MAX || !s.chars().all(replayable) {
                return Err(format!(
                    "--secret takes 1 to {SIM_SECRET_BYTES_MAX} letters, digits or -_.:/+=,@ \
                     (a word the replay line carries as it is)"
                ));
            }
        }
        Ok(())
    }

    /// The engine setting of every node.
    pub fn encryption(&self) -> LinkEncryption {
        if self.plaintext {
            LinkEncryption::PlaintextSimulationOnly
        } else {
            LinkEncryption::Noise
        }
    }

    /// The wrong-secret nodes' secret: never the network's.
    fn wrong_secret(&self) -> String {
        match &self.secret {
            Some(s) => format!("{s}-wrong"),
            None => OPEN_NETWORK_WRONG_SECRET.into(),
        }
    }

    /// The network's key and the wrong-secret nodes' (derived only if there are some), or
    /// why a secret cannot be used.
    pub fn keys(&self) -> Result<Keys, String> {
        let network = match &self.secret {
            Some(s) => derive(s)?,
            None => NetworkKey::OPEN,
        };
        let wrong = if self.wrong_secret_nodes > 0 {
            derive(&self.wrong_secret())?
        } else {
            network
        };
        Ok(Keys { network, wrong })
    }

    /// The options that give this setup on a replay line, each after a space (none for the
    /// default, an open network).
    pub fn replay_args(&self) -> String {
        let mut s = String::new();
        if self.plaintext {
            s.push_str(" --plaintext-sim-only");
        }
        if let Some(secret) = &self.secret {
            s.push_str(&format!(" --secret {secret}"));
        }
        if self.wrong_secret_nodes > 0 {
            s.push_str(&format!(
                " --wrong-secret-nodes {}",
                self.wrong_secret_nodes
            ));
        }
        s
    }

    /// As a report shows it: `noise, open network`, `noise, private network, 1 wrong-secret
    /// node`, `PLAINTEXT (simulation only)`, ...
    pub fn describe(&self) -> String {
        if self.plaintext {
            return "PLAINTEXT (simulation only)".into();
        }
        let mut s = String::from(if self.secret.is_some() {
            "noise, private network"
        } else {
            "noise, open network"
        });
        match self.wrong_secret_nodes {
            0 => {}
            1 => s.push_str(", 1 wrong-secret node"),
            k => s.push_str(&format!(", {k} wrong-secret nodes")),
        }
        s
    }
}

/// `NetworkKey::derive(secret)`, derived once per distinct secret in this process: every
/// node, run and sweep thread with the secret shares the key (the lock is held while a key
/// is derived, so that two threads never derive the same one).
fn derive(secret: &str) -> Result<NetworkKey, String> {
    static DERIVED: Mutex<BTreeMap<String, NetworkKey>> = Mutex::new(BTreeMap::new());
    // A panic while the lock was held left at worst a missing entry.
    let mut derived = DERIVED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(key) = derived.get(secret) {
        return Ok(*key);
    }
    let key = NetworkKey::derive(secret.as_bytes()).map_err(|e| e.to_string())?;
    if derived.len() >= DERIVED_KEYS_MAX {
        derived.clear();
    }
    derived.insert(secret.into(), key);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_seeds_alternate_open_private_and_a_wrong_secret_node() {
        let setups: Vec<LinkSetup> = (1..=6)
            .map(|s| LinkSetup::for_sweep_seed(s, false))
            .collect();
        assert_eq!(setups[0], LinkSetup::private(SWEEP_SECRET, 0));
        assert_eq!(setups[1], LinkSetup::private(SWEEP_SECRET, 1));
        assert_eq!(setups[2], LinkSetup::OPEN);
        assert_eq!(setups[3..], setups[..3]);
        assert!((1..=6).all(|s| LinkSetup::for_sweep_seed(s, true) == LinkSetup::plaintext()));
    }

    #[test]
    fn keys_differ_between_the_network_and_its_wrong_secret_nodes() {
        for setup in [
            LinkSetup::private("s", 1),
            LinkSetup {
                wrong_secret_nodes: 2,
                ..LinkSetup::OPEN
            },
        ] {
            let keys = setup.keys().unwrap();
            assert_ne!(keys.network, keys.wrong, "{setup:?}");
        }
        let private = LinkSetup::private("s", 0).keys().unwrap();
        assert_eq!(private.network, NetworkKey::derive(b"s").unwrap());
        assert_eq!(private.network, private.wrong, "no wrong-secret node");
        let open = LinkSetup::OPEN.keys().unwrap();
        assert_eq!(
            (open.network, open.wrong),
            (NetworkKey::OPEN, NetworkKey::OPEN)
        );
    }

    #[test]
    fn plaintext_takes_no_secret_and_a_secret_must_be_one_plain_word() {
        assert!(LinkSetup::plaintext().check().is_ok());
        for bad in [
            LinkSetup {
                secret: Some("s".into()),
                ..LinkSetup::plaintext()
            },
            LinkSetup {
                wrong_secret_nodes: 1,
                ..LinkSetup::plaintext()
            },
        ] {
            assert!(bad.check().unwrap_err().contains("no network key"));
        }
        let long = "x".repeat(SIM_SECRET_BYTES_MAX + 1);
        for bad in ["", "two words", "quote'", "é", &long[..]] {
            let e = LinkSetup::private(bad, 0).check().unwrap_err();
            assert!(e.contains("--secret takes"), "{bad:?}: {e}");
        }
        assert!(LinkSetup::private("a-Z_0.9:/+=,@", 1).check().is_ok());
        assert!(LinkSetup::private(&long[1..], 1).keys().is_ok());
    }
}
