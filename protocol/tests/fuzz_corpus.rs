//! Replays the committed frame-decoder and replica-message fuzz corpora
//! (`fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`) through the fuzz targets' own
//! logic, without libfuzzer.

#[path = "../../fuzz/src/decoder_drive.rs"]
mod decoder_drive;
#[path = "../../fuzz/src/replica_drive.rs"]
mod replica_drive;

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn frame_decoder_corpus_replays() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = files(&fuzz.join("corpus/frame_decoder"));
    assert!(!corpus.is_empty(), "fuzz/corpus/frame_decoder/ is empty");
    let regressions = files(&fuzz.join("regressions/frame_decoder"));
    let n = corpus.len() + regressions.len();
    for path in corpus.iter().chain(&regressions) {
        eprintln!("{}", path.display());
        decoder_drive::run_frame_decoder(&std::fs::read(path).expect("a readable corpus file"));
    }
    eprintln!("replayed {n} frame_decoder inputs");
}

#[test]
fn replica_message_corpus_replays() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = files(&fuzz.join("corpus/replica_message"));
    let regressions = files(&fuzz.join("regressions/replica_message"));
    let mut decoded = [0usize; 8];
    for path in corpus.iter().chain(&regressions) {
        eprintln!("{}", path.display());
        let data = std::fs::read(path).expect("a readable corpus file");
        replica_drive::run_replica_message(&data);
        for (low, n) in decoded.iter_mut().enumerate() {
            let code = weft_protocol::Code(0x0400 + low as u16);
            *n += usize::from(weft_protocol::Message::decode(code, &data).is_ok());
        }
    }
    eprintln!(
        "replayed {} replica_message inputs; decoded per code 0x0400..0x0407: {decoded:?}",
        corpus.len() + regressions.len()
    );
    // The corpus must keep reaching every replication decoder's success path.
    assert!(
        decoded.iter().all(|&n| n > 0),
        "a replication code no corpus input decodes: {decoded:?}"
    );
}

#[test]
fn replica_driver_survives_empty_and_tiny_inputs() {
    for data in [&[][..], &[0], &[0xff; 3], &[7; 64], &[0; 49]] {
        replica_drive::run_replica_message(data);
    }
}
