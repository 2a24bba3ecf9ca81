//! Replays the committed frame-decoder fuzz corpus (`fuzz/corpus/frame_decoder/` and
//! `fuzz/regressions/frame_decoder/`) through the fuzz target's own logic, without libfuzzer.

#[path = "../../fuzz/src/decoder_drive.rs"]
mod decoder_drive;

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
