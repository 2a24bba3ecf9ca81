//! Protocol ids and node ids as py2p derives them (`py2p/base.py`).

use sha2::{Digest, Sha256, Sha384};

use super::base58::encode_int;

/// py2p's `protocol_version`, hashed into every protocol id.
pub const PROTOCOL_VERSION: &str = "0.7";

/// Subnet of a plain mesh (`MeshSocket`'s default).
pub const SUBNET_MESH: &str = "mesh";
/// Subnet of a sync table with leases (`SyncSocket(leasing=True)`, the default).
pub const SUBNET_SYNC_LEASED: &str = "sync1";
/// Subnet of a sync table without leases.
pub const SUBNET_SYNC: &str = "sync0";
/// Subnet of py2p's chord table.
pub const SUBNET_CHORD: &str = "chord";
/// Encryption name of plain TCP links.
pub const ENCRYPTION_PLAINTEXT: &str = "Plaintext";
/// Encryption name of TLS links.
pub const ENCRYPTION_SSL: &str = "SSL";

/// `Protocol(subnet, encryption).id`: base58 integer of `sha256(subnet + encryption + "0.7")`.
/// Sent as msgpack bin (the ASCII of this string) in handshakes.
pub fn protocol_id(subnet: &str, encryption: &str) -> String {
    let mut h = Sha256::new();
    h.update(subnet.as_bytes());
    h.update(encryption.as_bytes());
    h.update(PROTOCOL_VERSION.as_bytes());
    encode_int(&h.finalize())
}

/// A node id as `BaseSocket.__init__` makes it: base58 integer of
/// `sha384(str(out_addr) + protocol_id + salt)`, where `out_addr_repr` is Python's `str` of the
/// `(host, port)` tuple (for example `('127.0.0.1', 4444)`) and py2p's salt is
/// `str(uuid4())`, drawn once per process. Opaque to peers; chord reads it as an integer.
pub fn node_id(out_addr_repr: &str, protocol_id: &str, salt: &[u8]) -> String {
    let mut h = Sha384::new();
    h.update(out_addr_repr.as_bytes());
    h.update(protocol_id.as_bytes());
    h.update(salt);
    encode_int(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_plaintext_id_is_py2ps() {
        assert_eq!(
            protocol_id(SUBNET_MESH, ENCRYPTION_PLAINTEXT),
            "EpAmyZWv9rZUKmjQgU3FTUD4GrJHvVEXizmghVBc8eGD"
        );
    }
}
