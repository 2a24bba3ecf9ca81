//! The application's commands on a p2p.today network (SPEC.md §25.11, §25.12): broadcasts,
//! and writes to py2p's sync table under its lease rule.

use bytes::Bytes;
use weft_protocol::p2pt::rmpv::Value;
use weft_protocol::p2pt::{
    message_id, MainFlag, Message, SubFlag, P2PT_BODY_BYTES_MAX, P2PT_ID_BYTES,
};

use super::{app_value, msgpack, text, Configured, P2ptNode, P2PT_CONFIGURED_MAX};
use crate::connection::{CloseReason, ConnId};
use crate::io::{Command, InputError, Refusal};
use crate::mesh::MeshCommand;
use crate::p2pt::table::NotApplied;
use crate::p2pt::{P2ptEvent, P2ptRefusal};
use crate::table::TableCommand;

impl P2ptNode {
    // ----- commands -----------------------------------------------------------------------
    pub(super) fn command(&mut self, command: Command) -> Result<(), InputError> {
        let refuse = |r: P2ptRefusal| Err(InputError::Refused(Refusal::P2pt(r)));
        if self.shut_down {
            return refuse(P2ptRefusal::ShutDown);
        }
        match command {
            Command::Connect { addr } => {
                if !self.configured.contains_key(&addr) {
                    if self.configured.len() >= P2PT_CONFIGURED_MAX {
                        return refuse(P2ptRefusal::TooManyConfiguredPeers);
                    }
                    self.configured.insert(addr.clone(), Configured::default());
                }
                if self.configured.get(&addr).is_some_and(|c| c.conn.is_none()) {
                    self.dial_configured(&addr);
                }
                Ok(())
            }
            Command::Shutdown => {
                self.shut_down = true;
                self.configured.clear();
                let conns: Vec<ConnId> = self.links.keys().copied().collect();
                for conn in conns {
                    self.close(conn, CloseReason::Shutdown);
                }
                Ok(())
            }
            Command::Mesh(MeshCommand::Broadcast { payload }) => self
                .broadcast(SubFlag::BROADCAST, vec![app_value(&payload)])
                .map_err(|r| InputError::Refused(Refusal::P2pt(r))),
            Command::Table(TableCommand::Set { key, value, .. })
                if self.config.subnet.is_sync() =>
            {
                self.set(key, app_value(&value))
                    .map_err(|r| InputError::Refused(Refusal::P2pt(r)))
            }
            Command::Table(TableCommand::Delete { key }) if self.config.subnet.is_sync() => {
                if self.table.get(&key).is_none() {
                    return refuse(P2ptRefusal::NoSuchKey);
                }
                self.set(key, Value::Nil)
                    .map_err(|r| InputError::Refused(Refusal::P2pt(r)))
            }
            Command::Table(_) if self.config.subnet.is_sync() => refuse(P2ptRefusal::Unsupported(
                "lease release (a lease ends an hour after the last write)",
            )),
            Command::Table(_) => refuse(P2ptRefusal::Unsupported("table on the mesh subnet")),
            Command::Disconnect { .. } => refuse(P2ptRefusal::Unsupported("weft node ids")),
            Command::Chord(_) => refuse(P2ptRefusal::Unsupported("chord")),
            Command::Replicate(_) => refuse(P2ptRefusal::Unsupported("folders")),
            Command::Run(_) => refuse(P2ptRefusal::Unsupported("remote runs")),
            Command::Drops(_) => refuse(P2ptRefusal::Unsupported("drops")),
        }
    }

    /// Sends `broadcast/<sub> args` to every linked peer (one message: the same bytes, so the
    /// same id, on every link).
    pub(super) fn broadcast(&mut self, sub: SubFlag, args: Vec<Value>) -> Result<(), P2ptRefusal> {
        let (bytes, now_s) = self.broadcast_bytes(sub, args)?;
        self.send_broadcast(sub, &bytes, now_s);
        Ok(())
    }

    /// A broadcast of `args` under `sub` stamped now, encoded; refused if it cannot go.
    fn broadcast_bytes(
        &self,
        sub: SubFlag,
        args: Vec<Value>,
    ) -> Result<(Vec<u8>, u64), P2ptRefusal> {
        let now_s = self.now_s().ok_or(P2ptRefusal::NoWallClock)?;
        let m = Message::new(MainFlag::BROADCAST, self.me.clone(), now_s, sub, args);
        let bytes = m.to_msgpack();
        if P2PT_ID_BYTES + bytes.len() > P2PT_BODY_BYTES_MAX {
            return Err(P2ptRefusal::TooLarge {
                len: bytes.len(),
                max: P2PT_BODY_BYTES_MAX - P2PT_ID_BYTES,
            });
        }
        Ok((bytes, now_s))
    }

    /// Sends the broadcast `bytes` (from [`Self::broadcast_bytes`]) to every linked peer.
    fn send_broadcast(&mut self, sub: SubFlag, bytes: &[u8], now_s: u64) {
        let id = message_id(bytes);
        self.waterfalls.insert_own(id, now_s, now_s);
        if sub == SubFlag::BROADCAST {
            self.metrics.broadcasts_originated += 1;
        }
        let conns: Vec<ConnId> = self.routing.values().copied().collect();
        self.transmit_to(&conns, &Bytes::copy_from_slice(bytes), true, true);
    }

    /// `SyncSocket.__setitem__`: stores at once if the lease rules allow, then broadcasts
    /// `store [key, value]`.
    pub(super) fn set(&mut self, key: Vec<u8>, value: Value) -> Result<(), P2ptRefusal> {
        // Encoded first: a write too large to broadcast changes nothing here either.
        let store = vec![Value::Binary(key.clone()), value.clone()];
        let (bytes, now_s) = self.broadcast_bytes(SubFlag::STORE, store)?;
        let leasing = self.leasing();
        let delete = value.is_nil();
        match self.table.store(
            key.clone(),
            value.clone(),
            self.me.clone(),
            now_s,
            leasing,
            now_s,
        ) {
            Ok(()) => {}
            Err(NotApplied::Leased(owner, at)) => {
                return Err(P2ptRefusal::Leased {
                    owner: text(&owner),
                    until_s: at.saturating_add(crate::p2pt::P2PT_LEASE_S),
                })
            }
            Err(NotApplied::Nothing) => return Err(P2ptRefusal::NoSuchKey),
            Err(NotApplied::Full) => return Err(P2ptRefusal::Full),
        }
        self.changed(
            &key,
            if delete { None } else { Some(&value) },
            self.me.clone(),
            now_s,
        );
        self.send_broadcast(SubFlag::STORE, &bytes, now_s);
        Ok(())
    }

    pub(super) fn leasing(&self) -> bool {
        self.config.subnet == crate::p2pt::Subnet::SyncLeased
    }

    pub(super) fn changed(
        &mut self,
        key: &[u8],
        value: Option<&Value>,
        owner: Vec<u8>,
        timestamp: u64,
    ) {
        self.event(P2ptEvent::KeyChanged {
            key: key.to_vec(),
            value: value.map(msgpack),
            owner: text(&owner),
            timestamp,
        });
    }
}
