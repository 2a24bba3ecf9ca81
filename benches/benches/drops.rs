//! Drops (issue 21, SPEC.md §24): what a subscriber spends accepting a version.
//!
//! - `drops_manifest/verify`: `DropManifest::verify` of one manifest (two parents, three
//!   secondary owners): its form, its drop id, its signed bytes built and its ed25519
//!   signature checked. Beside it, `ed25519_verify`: ed25519-dalek's `verify` alone of the
//!   same signed bytes (the part no implementation can skip).
//! - `drops_root_10000_files/root_hasher`: a `RootHasher` fed a 10,000-file list (paths
//!   `dir012/file01234.dat`, one to four blocks each) and compared with its manifest. Beside
//!   it, `blake3_encoded`: BLAKE3 of the same files already encoded, in one call.
//!
//! `cargo bench -p weft-benches --bench drops -- --warm-up-time 1 --measurement-time 3 --noplot`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ed25519_dalek::{SigningKey, Verifier};
use weft_protocol::{
    Block, DropFile, DropId, DropManifest, DropOwners, FileKind, ManifestFields, PublicKey,
    RootHasher, VersionId,
};

const FILES: usize = 10_000;

fn public(secret: u8) -> PublicKey {
    PublicKey(
        SigningKey::from_bytes(&[secret; 32])
            .verifying_key()
            .to_bytes(),
    )
}

fn manifest(root: [u8; 32], files: u32, bytes: u64) -> DropManifest {
    let primary = public(1);
    let nonce = [7; 16];
    let mut secondary = vec![public(2), public(3), public(4)];
    secondary.sort();
    let fields = ManifestFields {
        drop: DropId::derive(&primary, &nonce),
        nonce,
        counter: 12,
        parents: vec![VersionId([0x11; 32]), VersionId([0x22; 32])],
        owners: DropOwners { primary, secondary },
        root,
        files,
        bytes,
    };
    DropManifest::sign(fields, &[2; 32])
}

fn files() -> Vec<DropFile> {
    (0..FILES)
        .map(|i| {
            let blocks = 1 + i % 4;
            DropFile {
                path: format!("dir{:03}/file{i:05}.dat", i / 100),
                kind: FileKind::File,
                mode: 6,
                size: blocks as u64 * 65_536,
                target: None,
                blocks: (0..blocks as u64)
                    .map(|b| Block {
                        offset: b * 65_536,
                        len: 65_536,
                        hash: *blake3::hash(&[i as u8, b as u8]).as_bytes(),
                    })
                    .collect(),
            }
        })
        .collect()
}

fn manifest_verify(c: &mut Criterion) {
    let m = manifest([9; 32], 3, 300);
    assert!(m.verify().is_ok());
    let key = ed25519_dalek::VerifyingKey::from_bytes(&m.signer.0).expect("a key");
    let signature = ed25519_dalek::Signature::from_bytes(&m.signature.0);
    let signed = m.signed_bytes();
    let mut g = c.benchmark_group("drops_manifest");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify", |b| b.iter(|| black_box(&m).verify()));
    g.bench_function("ed25519_verify", |b| {
        b.iter(|| key.verify(black_box(&signed), &signature))
    });
    g.finish();
}

fn root_hash(c: &mut Criterion) {
    let files = files();
    let mut hasher = RootHasher::new();
    hasher.push_batch(&files).expect("files in order");
    let m = manifest(hasher.root(), hasher.files(), hasher.bytes());
    let mut encoded = b"weft drop root v1\0".to_vec();
    for f in &files {
        encoded.extend_from_slice(&postcard::to_allocvec(f).expect("a file encodes"));
    }
    assert_eq!(*blake3::hash(&encoded).as_bytes(), m.root);
    let mut g = c.benchmark_group("drops_root_10000_files");
    g.throughput(Throughput::Elements(FILES as u64));
    g.bench_function("root_hasher", |b| {
        b.iter(|| {
            let mut hasher = RootHasher::new();
            hasher
                .push_batch(black_box(&files))
                .expect("files in order");
            hasher.finish(&m).expect("the manifest's list")
        })
    });
    g.bench_function("blake3_encoded", |b| {
        b.iter(|| blake3::hash(black_box(&encoded)))
    });
    g.finish();
}

criterion_group!(benches, manifest_verify, root_hash);
criterion_main!(benches);
