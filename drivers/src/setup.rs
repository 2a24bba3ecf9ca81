//! What a driver starts from: the node's configuration, its bound listener, the peers to dial,
//! its store if it has one, and whether it handles SIGINT/SIGTERM.

use std::io;
use std::net::{SocketAddr, TcpListener};

use rand_core::{OsRng, RngCore};
use weft_engine::Config;

use crate::folder::run::FolderSpec;
use crate::host::FirstContact;
use crate::storage::Store;

/// Everything a driver needs to run one node.
#[derive(Debug)]
pub struct Setup {
    /// The node's configuration; `listen_addr` is the listener's actual address.
    pub config: Config,
    /// The bound, non-blocking listener.
    pub listener: TcpListener,
    /// Addresses (`IP:PORT`) to dial at start.
    pub peers: Vec<String>,
    /// Whether the driver shuts down on SIGINT/SIGTERM (only one driver per process should).
    pub signals: bool,
    /// The node's store, where the engine's state blobs go (see [`crate::storage`]). `None`
    /// (an embedded node, a benchmark): the node keeps no state, and its requests to load or
    /// store any are answered `Failed("no state folder")`.
    pub store: Option<Store>,
    /// The shared folders the node replicates (see [`crate::folder`]).
    pub folders: Vec<FolderSpec>,
    /// A joining node's first contact: the run ends in an error unless the node links to the
    /// network through this peer in time (`weft join`). `None`: no such check.
    pub first_contact: Option<FirstContact>,
}

impl Setup {
    /// Binds `addr` and announces the bound address (with the port the OS picked for port 0)
    /// as the node's `listen_addr`. No peers, no signals, no store. Eight bytes of the OS's
    /// randomness are mixed into `config.rng_seed`: a node run again with the same key,
    /// incarnation and seed (an embedder's `Config::new`, whose incarnation is always 1) would
    /// make the same Noise ephemeral keys and HELLO nonces as before, and a recorded session
    /// could be replayed to it.
    pub fn bind(mut config: Config, addr: SocketAddr) -> io::Result<Setup> {
        let mut fresh = [0u8; 8];
        OsRng
            .try_fill_bytes(&mut fresh)
            .map_err(|e| io::Error::other(e.to_string()))?;
        config.rng_seed ^= u64::from_le_bytes(fresh);
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        config.listen_addr = Some(listener.local_addr()?.to_string());
        Ok(Setup {
            config,
            listener,
            peers: Vec::new(),
            signals: false,
            store: None,
            folders: Vec::new(),
            first_contact: None,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One config set up twice (a node started again): each run seeds its random stream
    /// anew, so its Noise ephemeral keys and HELLO nonces never repeat a recorded run's.
    #[test]
    fn each_set_up_seeds_the_node_anew() {
        let config = Config::new("net", [7; 32]);
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let a = Setup::bind(config.clone(), any).expect("bind");
        let b = Setup::bind(config, any).expect("bind");
        assert_ne!(a.config.rng_seed, b.config.rng_seed);
    }
}
