//! The Noise transport under every native link (SPEC.md §21), sans-IO: bytes in, bytes out.
//!
//! `Noise_XXpsk0_25519_AESGCM_SHA256` (snow): the network key is mixed in from the first
//! message (`psk0`), so a node without the network's secret cannot produce or read one
//! handshake byte; both static keys are sent, each bound to its node's ed25519 identity key by
//! a signature in the handshake payload, as libp2p's Noise handshake binds its identity key.
//! Every message on the wire is a u16 big-endian length and that many bytes; transport
//! messages carry up to [`PLAINTEXT_BYTES_MAX`] bytes of weft's byte stream, so a frame larger
//! than that is split over several and joined by the frame decoder above. Each direction
//! rekeys after [`Rekey`]'s bound. The ephemeral key comes from a seeded generator, so the
//! simulator's runs stay byte-identical.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver, FallbackResolver, RingResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState, TransportState};
use weft_protocol::{PublicKey, Signature};

use crate::identity::{verify_signature, Identity};
use crate::link_key::NetworkKey;

/// The Noise protocol name: pattern, DH, cipher, hash.
pub const NOISE_PROTOCOL: &str = "Noise_XXpsk0_25519_AESGCM_SHA256";
/// The prologue both sides mix in: a peer of another version fails the handshake.
pub const PROLOGUE: &[u8] = b"weft noise v1";
/// What an identity key signs, before the Noise static public key, to bind it.
pub const STATIC_KEY_DOMAIN: &[u8] = b"weft noise static key v1\0";
/// The BLAKE3 `derive_key` context turning the ed25519 secret into the X25519 static secret.
pub const STATIC_SECRET_CONTEXT: &str = "weft noise static secret v1";
/// Largest Noise message (the length prefix's range), bytes.
pub const MESSAGE_BYTES_MAX: usize = 65_535;
/// The AEAD tag on every encrypted payload, bytes.
pub const TAG_BYTES: usize = 16;
/// Largest plaintext of one transport message, bytes.
pub const PLAINTEXT_BYTES_MAX: usize = MESSAGE_BYTES_MAX - TAG_BYTES;
/// Largest handshake message taken, bytes (the longest, the second, is 192).
pub const HANDSHAKE_MESSAGE_BYTES_MAX: usize = 256;
/// The identity payload of handshake messages 2 and 3: ed25519 public key ‖ signature.
pub const IDENTITY_PAYLOAD_BYTES: usize = 32 + 64;

/// Why a Noise link failed. The connection closes; nothing more is read from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoiseError {
    /// A handshake message did not decrypt or parse: another network secret, another
    /// version, or not weft at all.
    #[error("a Noise handshake message did not verify (another network secret?)")]
    Handshake,
    /// The peer's static key is not signed by the identity key it presented.
    #[error("the peer's Noise static key is not bound to its identity key")]
    UnboundStaticKey,
    /// The peer's HELLO names another identity key than the one its handshake bound.
    #[error("the HELLO's key is not the one the Noise handshake bound")]
    IdentityMismatch,
    /// A transport message did not decrypt: tampered, replayed, reordered or cut.
    #[error("a Noise transport message did not decrypt (tampered, replayed or reordered)")]
    Decrypt,
    /// A message length of zero, or a handshake message over
    /// [`HANDSHAKE_MESSAGE_BYTES_MAX`].
    #[error("a Noise message length out of range")]
    BadLength,
}

/// When each direction of a link rekeys (Noise's `REKEY`), whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rekey {
    /// Transport messages since the last rekey.
    pub messages_max: u64,
    /// Bytes of transport messages (length prefixes excluded) since the last rekey.
    pub bytes_max: u64,
}

impl Default for Rekey {
    fn default() -> Rekey {
        Rekey {
            messages_max: 1 << 20,
            bytes_max: 1 << 30,
        }
    }
}

/// A node's Noise keys: its static key pair, the payload binding it to the identity key, the
/// network key and the rekey bound.
#[derive(Clone)]
pub struct NoiseKeys {
    static_secret: [u8; 32],
    static_public: [u8; 32],
    identity_payload: [u8; IDENTITY_PAYLOAD_BYTES],
    network_key: NetworkKey,
    rekey: Rekey,
}

impl core::fmt::Debug for NoiseKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NoiseKeys")
            .field("static_public", &PublicKey(self.static_public))
            .finish_non_exhaustive()
    }
}

impl NoiseKeys {
    /// The keys of the node whose ed25519 secret is `secret_key`: the static secret derived
    /// from it (SPEC.md §21.2), signed by it.
    pub fn new(secret_key: &[u8; 32], network_key: NetworkKey, rekey: Rekey) -> NoiseKeys {
        let static_secret = blake3::derive_key(STATIC_SECRET_CONTEXT, secret_key);
        let static_public = x25519_public(&static_secret);
        let identity = Identity::from_secret(secret_key);
        let mut payload = [0u8; IDENTITY_PAYLOAD_BYTES];
        payload[..32].copy_from_slice(&identity.public_key().0);
        payload[32..].copy_from_slice(&identity.sign(&binding(&static_public)).0);
        NoiseKeys {
            static_secret,
            static_public,
            identity_payload: payload,
            network_key,
            rekey,
        }
    }

    /// The same keys presenting `payload` as their identity instead: for conformance tests
    /// that claim an identity they do not hold.
    pub fn with_identity_payload(mut self, payload: [u8; IDENTITY_PAYLOAD_BYTES]) -> NoiseKeys {
        self.identity_payload = payload;
        self
    }

    /// The identity payload sent in handshake messages 2 and 3.
    pub fn identity_payload(&self) -> [u8; IDENTITY_PAYLOAD_BYTES] {
        self.identity_payload
    }

    /// The X25519 static public key.
    pub fn static_public(&self) -> [u8; 32] {
        self.static_public
    }
}

/// The bytes an identity key signs to bind `static_public`.
fn binding(static_public: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(STATIC_KEY_DOMAIN.len() + 32);
    m.extend_from_slice(STATIC_KEY_DOMAIN);
    m.extend_from_slice(static_public);
    m
}

/// The X25519 public key of `secret`.
fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    let mut dh = DefaultResolver
        .resolve_dh(&DHChoice::Curve25519)
        // snow's default resolver always has Curve25519.
        .expect("Curve25519 in snow's default resolver");
    dh.set(secret);
    let mut public = [0u8; 32];
    public.copy_from_slice(dh.pubkey());
    public
}

/// The identity key `payload` proves for `static_public`, if its signature verifies.
fn bound_identity(payload: &[u8], static_public: &[u8]) -> Option<PublicKey> {
    let payload: &[u8; IDENTITY_PAYLOAD_BYTES] = payload.try_into().ok()?;
    let static_public: &[u8; 32] = static_public.try_into().ok()?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&payload[..32]);
    let mut sig = [0u8; 64];
    sig.copy_from_slice(&payload[32..]);
    let key = PublicKey(key);
    verify_signature(&key, &binding(static_public), &Signature(sig)).then_some(key)
}

/// Which end of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseRole {
    /// It dialed: it writes the first message.
    Initiator,
    /// It accepted.
    Responder,
}

/// snow's randomness, from a seed: the only thing it draws is the ephemeral key.
struct SeededRandom(ChaCha8Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// Resolves only the random generator, to [`SeededRandom`]; the rest falls through.
struct SeededResolver([u8; 32]);

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha8Rng::from_seed(self.0))))
    }
    fn resolve_dh(&self, _: &DHChoice) -> Option<Box<dyn Dh>> {
        None
    }
    fn resolve_hash(&self, _: &HashChoice) -> Option<Box<dyn Hash>> {
        None
    }
    fn resolve_cipher(&self, _: &CipherChoice) -> Option<Box<dyn Cipher>> {
        None
    }
}

/// The seeded generator, then ring's AES-GCM and SHA-256, then snow's own (Curve25519).
fn resolver(seed: [u8; 32]) -> Box<dyn CryptoResolver + Send> {
    let primitives = FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver));
    Box::new(FallbackResolver::new(
        Box::new(SeededResolver(seed)),
        Box::new(primitives),
    ))
}

/// A handshake state for `role`, its ephemeral key drawn from `seed`.
fn handshake_state(keys: &NoiseKeys, role: NoiseRole, seed: [u8; 32]) -> HandshakeState {
    let params = NOISE_PROTOCOL
        .parse()
        // A constant protocol name snow knows; a test builds it.
        .expect("a valid Noise protocol name");
    let builder = Builder::with_resolver(params, resolver(seed))
        .local_private_key(&keys.static_secret)
        .and_then(|b| b.psk(0, keys.network_key.as_bytes()))
        .and_then(|b| b.prologue(PROLOGUE))
        // Each is set once, with a key of the right length.
        .expect("Noise builder settings");
    match role {
        NoiseRole::Initiator => builder.build_initiator(),
        NoiseRole::Responder => builder.build_responder(),
    }
    // Every primitive of the protocol name resolves (ring, then snow's default).
    .expect("a Noise handshake state")
}

/// One direction's count towards its next rekey.
#[derive(Debug, Default, Clone, Copy)]
struct Since {
    messages: u64,
    bytes: u64,
}

impl Since {
    /// Counts a message of `len` bytes; true when the bound is reached (and restarts).
    fn count(&mut self, len: usize, rekey: &Rekey) -> bool {
        self.messages += 1;
        self.bytes += len as u64;
        let due = self.messages >= rekey.messages_max || self.bytes >= rekey.bytes_max;
        if due {
            *self = Since::default();
        }
        due
    }
}

enum Phase {
    Handshake(Box<HandshakeState>),
    Transport(Box<TransportState>),
    Failed(NoiseError),
}

/// One connection's Noise layer: handshake, then sealing and opening.
pub struct NoiseLink {
    phase: Phase,
    identity_payload: [u8; IDENTITY_PAYLOAD_BYTES],
    rekey: Rekey,
    /// Received bytes that do not yet make a whole message.
    inbound: BytesMut,
    /// Handshake messages to send, length-prefixed.
    outbound: VecDeque<Bytes>,
    /// What the transport messages of the current [`push`](Self::push) decrypted to, one
    /// after the other; handed out whole when the push ends.
    opened: BytesMut,
    /// Decrypted stretches of the stream not yet taken: one per push that opened a message.
    plaintext: VecDeque<Bytes>,
    peer_identity: Option<PublicKey>,
    sent: Since,
    received: Since,
}

impl core::fmt::Debug for NoiseLink {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let phase = match &self.phase {
            Phase::Handshake(_) => "handshake",
            Phase::Transport(_) => "transport",
            Phase::Failed(_) => "failed",
        };
        f.debug_struct("NoiseLink")
            .field("phase", &phase)
            .field("peer_identity", &self.peer_identity)
            .finish_non_exhaustive()
    }
}

impl NoiseLink {
    /// A link for `role`; an initiator's first message is ready at once
    /// ([`poll_transmit`](Self::poll_transmit)).
    pub fn new(keys: &NoiseKeys, role: NoiseRole, seed: [u8; 32]) -> NoiseLink {
        let mut link = NoiseLink {
            phase: Phase::Handshake(Box::new(handshake_state(keys, role, seed))),
            identity_payload: keys.identity_payload,
            rekey: keys.rekey,
            inbound: BytesMut::new(),
            outbound: VecDeque::new(),
            opened: BytesMut::new(),
            plaintext: VecDeque::new(),
            peer_identity: None,
            sent: Since::default(),
            received: Since::default(),
        };
        if role == NoiseRole::Initiator {
            link.write_handshake(&[]);
        }
        link
    }

    /// Whether the handshake is done: [`seal`](Self::seal) may be called.
    pub fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Transport(_))
    }

    /// The identity key the handshake proved for the peer, once it has.
    pub fn peer_identity(&self) -> Option<PublicKey> {
        self.peer_identity
    }

    /// What ended the link, if something did.
    pub fn error(&self) -> Option<NoiseError> {
        match self.phase {
            Phase::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Ends the link with `error` (a check above this layer failed): nothing more is read
    /// from it or written to it, not even a handshake answer already made.
    pub fn fail(&mut self, error: NoiseError) {
        self.phase = Phase::Failed(error);
        self.outbound.clear();
        self.inbound.clear();
        self.opened.clear();
        self.plaintext.clear();
    }

    /// Memory the bytes received and not yet taken hold (their buffers' capacity).
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.inbound.capacity() + self.opened.capacity()
    }

    /// Frees what was received and not taken (the connection is closing: nothing more is
    /// read from it).
    pub(crate) fn drop_received(&mut self) {
        self.inbound = BytesMut::new();
        self.opened = BytesMut::new();
        self.plaintext.clear();
    }

    /// The next handshake message to write, length prefix included.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.outbound.pop_front()
    }

    /// The next decrypted stretch of the peer's byte stream: everything one
    /// [`push`](Self::push) opened, in one piece however many messages it held (a frame
    /// decoder fed one piece per push joins no pieces).
    pub fn poll_plaintext(&mut self) -> Option<Bytes> {
        self.plaintext.pop_front()
    }

    /// Bytes received that do not yet make a whole message.
    pub fn buffered_len(&self) -> usize {
        self.inbound.len()
    }

    /// Takes bytes that arrived, in any chunking: handshake messages are answered (see
    /// [`poll_transmit`](Self::poll_transmit)), transport messages decrypted (see
    /// [`poll_plaintext`](Self::poll_plaintext)). After an error, bytes are dropped.
    pub fn push(&mut self, bytes: &[u8]) {
        if matches!(self.phase, Phase::Failed(_)) {
            return;
        }
        self.inbound.extend_from_slice(bytes);
        loop {
            match self.take_message() {
                Ok(()) => {}
                Err(Step::NeedMore) => break,
                Err(Step::Failed(e)) => return self.fail(e),
            }
        }
        if !self.opened.is_empty() {
            self.plaintext.push_back(self.opened.split().freeze());
        }
    }

    /// Handles the next whole message buffered.
    fn take_message(&mut self) -> Result<(), Step> {
        if self.inbound.len() < 2 {
            return Err(Step::NeedMore);
        }
        let len = usize::from(u16::from_be_bytes([self.inbound[0], self.inbound[1]]));
        let handshaking = matches!(self.phase, Phase::Handshake(_));
        // A transport message holds at least one byte and its tag (a sender never seals an
        // empty one).
        if len == 0
            || (handshaking && len > HANDSHAKE_MESSAGE_BYTES_MAX)
            || (!handshaking && len <= TAG_BYTES)
        {
            return Err(Step::Failed(NoiseError::BadLength));
        }
        if self.inbound.len() < 2 + len {
            return Err(Step::NeedMore);
        }
        match &mut self.phase {
            Phase::Handshake(_) => {
                self.inbound.advance(2);
                let message = self.inbound.split_to(len);
                self.read_handshake(&message)
            }
            Phase::Transport(t) => {
                if self.opened.is_empty() {
                    // Room for every message buffered: one allocation for the whole push.
                    self.opened.reserve(self.inbound.len());
                }
                // Room for the tag too: the cipher then opens the message in place there,
                // rather than in a copy of its own.
                let at = self.opened.len();
                self.opened.resize(at + len, 0);
                let n = t
                    .read_message(&self.inbound[2..2 + len], &mut self.opened[at..])
                    .map_err(|_| Step::Failed(NoiseError::Decrypt))?;
                self.opened.truncate(at + n);
                self.inbound.advance(2 + len);
                if self.received.count(len, &self.rekey) {
                    t.rekey_incoming();
                }
                Ok(())
            }
            Phase::Failed(e) => Err(Step::Failed(*e)),
        }
    }

    /// Reads handshake `message`; answers it, or enters transport mode.
    fn read_handshake(&mut self, message: &[u8]) -> Result<(), Step> {
        let Phase::Handshake(hs) = &mut self.phase else {
            return Ok(());
        };
        let mut payload = [0u8; HANDSHAKE_MESSAGE_BYTES_MAX];
        let n = hs
            .read_message(message, &mut payload)
            .map_err(|_| Step::Failed(NoiseError::Handshake))?;
        match hs.get_remote_static() {
            // Message 1 carries no payload.
            None if n != 0 => return Err(Step::Failed(NoiseError::Handshake)),
            None => {}
            Some(remote) => {
                let key = bound_identity(&payload[..n], remote)
                    .ok_or(Step::Failed(NoiseError::UnboundStaticKey))?;
                self.peer_identity = Some(key);
            }
        }
        if !hs.is_handshake_finished() && hs.is_my_turn() {
            let payload = self.identity_payload;
            self.write_handshake(&payload);
        }
        self.finish_if_done()
    }

    /// Writes the next handshake message with `payload`.
    fn write_handshake(&mut self, payload: &[u8]) {
        let Phase::Handshake(hs) = &mut self.phase else {
            return;
        };
        let mut out = BytesMut::zeroed(2 + HANDSHAKE_MESSAGE_BYTES_MAX);
        let n = hs
            .write_message(payload, &mut out[2..])
            // Our turn (checked by the callers), a payload of at most 96 bytes: the message
            // fits and the state allows it.
            .expect("a handshake message of ours");
        out.truncate(2 + n);
        // n ≤ HANDSHAKE_MESSAGE_BYTES_MAX < 65,536.
        out[..2].copy_from_slice(&(n as u16).to_be_bytes());
        self.outbound.push_back(out.freeze());
        // The initiator's third message finishes its handshake.
        let _ = self.finish_if_done();
    }

    /// Enters transport mode once the handshake is finished.
    fn finish_if_done(&mut self) -> Result<(), Step> {
        let finished = matches!(&self.phase, Phase::Handshake(hs) if hs.is_handshake_finished());
        if !finished {
            return Ok(());
        }
        let Phase::Handshake(hs) =
            core::mem::replace(&mut self.phase, Phase::Failed(NoiseError::Handshake))
        else {
            return Ok(());
        };
        let transport = hs
            .into_transport_mode()
            .map_err(|_| Step::Failed(NoiseError::Handshake))?;
        self.phase = Phase::Transport(Box::new(transport));
        Ok(())
    }

    /// `plain` as transport messages, split at [`PLAINTEXT_BYTES_MAX`], each with its
    /// length prefix. Empty before the handshake is done (the caller checks
    /// [`is_established`](Self::is_established)) or after an error.
    pub fn seal(&mut self, plain: &[u8]) -> Bytes {
        let Phase::Transport(t) = &mut self.phase else {
            return Bytes::new();
        };
        let messages = plain.len().div_ceil(PLAINTEXT_BYTES_MAX);
        let mut out = BytesMut::zeroed(plain.len() + messages * (2 + TAG_BYTES));
        let mut at = 0;
        for chunk in plain.chunks(PLAINTEXT_BYTES_MAX) {
            let n = t
                .write_message(chunk, &mut out[at + 2..])
                // The chunk is at most PLAINTEXT_BYTES_MAX and the room is there; the nonce
                // would take 2^64 messages to run out.
                .expect("a transport message of ours");
            // n ≤ MESSAGE_BYTES_MAX.
            out[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
            at += 2 + n;
            if self.sent.count(n, &self.rekey) {
                t.rekey_outgoing();
            }
        }
        out.truncate(at);
        out.freeze()
    }
}

/// Carries handshake messages between two links held in one process until neither has one
/// to send: for tests, benches, fuzzing, and a peer testing itself.
pub fn handshake_in_memory(a: &mut NoiseLink, b: &mut NoiseLink) {
    loop {
        let mut moved = false;
        while let Some(m) = a.poll_transmit() {
            b.push(&m);
            moved = true;
        }
        while let Some(m) = b.poll_transmit() {
            a.push(&m);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

/// Why [`NoiseLink::take_message`] stopped.
enum Step {
    NeedMore,
    Failed(NoiseError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two links of the open network with their handshake done: (initiator, responder).
    fn pair() -> (NoiseLink, NoiseLink) {
        let keys = |n| NoiseKeys::new(&[n; 32], NetworkKey::OPEN, Rekey::default());
        let mut a = NoiseLink::new(&keys(1), NoiseRole::Initiator, [1; 32]);
        let mut b = NoiseLink::new(&keys(2), NoiseRole::Responder, [2; 32]);
        while let Some(m) = a.poll_transmit() {
            b.push(&m);
            while let Some(m) = b.poll_transmit() {
                a.push(&m);
            }
        }
        assert!(a.is_established() && b.is_established());
        (a, b)
    }

    #[test]
    fn the_messages_one_push_opens_come_out_in_one_piece() {
        let (mut a, mut b) = pair();
        // 300 frames of 200 bytes, each sealed as its own message, as the session sends them.
        let frames: Vec<Vec<u8>> = (0..300u16).map(|n| vec![n as u8; 200]).collect();
        let wire: Vec<u8> = frames.iter().flat_map(|f| a.seal(f)).collect();
        assert_eq!(wire.len(), 300 * (2 + 200 + TAG_BYTES));
        // Two reads, the first ending inside a message: one piece each, the cut message in
        // the second.
        let cut = wire.len() / 2 + 7;
        b.push(&wire[..cut]);
        let first = b.poll_plaintext().expect("the first read's whole messages");
        assert_eq!(b.poll_plaintext(), None, "one piece for the first read");
        assert_eq!(first.len(), cut / (2 + 200 + TAG_BYTES) * 200);
        b.push(&wire[cut..]);
        let second = b.poll_plaintext().expect("the second read's messages");
        assert_eq!(b.poll_plaintext(), None, "one piece for the second read");
        assert_eq!(b.error(), None);
        assert!(
            [first, second].concat() == frames.concat(),
            "the stream in order"
        );
        // A read that completes no message hands out nothing; the next completes it.
        let m = a.seal(b"late");
        b.push(&m[..5]);
        assert_eq!(b.poll_plaintext(), None);
        b.push(&m[5..]);
        assert_eq!(b.poll_plaintext().as_deref(), Some(&b"late"[..]));
    }

    #[test]
    fn a_handshake_answer_is_not_sent_once_the_same_read_failed_the_link() {
        let keys = |n| NoiseKeys::new(&[n; 32], NetworkKey::OPEN, Rekey::default());
        // The responder: message 1 and a zero length in one read.
        let mut a = NoiseLink::new(&keys(1), NoiseRole::Initiator, [1; 32]);
        let mut b = NoiseLink::new(&keys(2), NoiseRole::Responder, [2; 32]);
        let mut wire = a.poll_transmit().expect("message 1").to_vec();
        wire.extend_from_slice(&[0, 0]);
        b.push(&wire);
        assert_eq!(b.error(), Some(NoiseError::BadLength));
        assert_eq!(b.poll_transmit(), None, "no message 2 after the failure");
        // The initiator: message 2 and a zero length in one read.
        let mut a = NoiseLink::new(&keys(1), NoiseRole::Initiator, [1; 32]);
        let mut b = NoiseLink::new(&keys(2), NoiseRole::Responder, [2; 32]);
        b.push(&a.poll_transmit().expect("message 1"));
        let mut wire = b.poll_transmit().expect("message 2").to_vec();
        wire.extend_from_slice(&[0, 0]);
        a.push(&wire);
        assert_eq!(a.error(), Some(NoiseError::BadLength));
        assert_eq!(a.poll_transmit(), None, "no message 3 after the failure");
    }

    #[test]
    fn a_transport_message_of_no_more_than_a_tag_is_refused() {
        for len in [1u16, 15, 16] {
            let (_, mut b) = pair();
            let mut wire = len.to_be_bytes().to_vec();
            wire.extend(std::iter::repeat_n(0u8, usize::from(len)));
            b.push(&wire);
            assert_eq!(b.error(), Some(NoiseError::BadLength), "length {len}");
        }
        // The smallest message a sender makes, one byte and its tag, is taken.
        let (mut a, mut b) = pair();
        let m = a.seal(b"x");
        assert_eq!(m.len(), 2 + 1 + TAG_BYTES);
        b.push(&m);
        assert_eq!(b.poll_plaintext().as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn a_bad_message_after_good_ones_in_one_push_hands_out_none_of_them() {
        let (mut a, mut b) = pair();
        let mut wire = a.seal(b"good").to_vec();
        let mut bad = a.seal(b"tampered").to_vec();
        bad[5] ^= 1;
        wire.extend_from_slice(&bad);
        b.push(&wire);
        assert_eq!(b.error(), Some(NoiseError::Decrypt));
        assert_eq!(b.poll_plaintext(), None, "the link failed: nothing is read");
    }
}
