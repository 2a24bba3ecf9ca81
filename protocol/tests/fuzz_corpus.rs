//! Replays the committed corpora of the decoder fuzz targets (`frame_decoder`,
//! `session_message`, `mesh_message`, `table_message`, `chord_message`, `replica_message`,
//! `run_message`, `drop_message`, `p2pt_frame`;
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`) through the fuzz targets' own
//! logic, without libfuzzer. The node and Noise targets replay in `engine/tests/fuzz_corpus.rs`.

#[path = "../../fuzz/src/decoder_drive.rs"]
mod decoder_drive;
#[path = "../../fuzz/src/drop_drive.rs"]
mod drop_drive;
#[path = "../../fuzz/src/message_drive.rs"]
mod message_drive;
#[path = "../../fuzz/src/p2pt_drive.rs"]
mod p2pt_drive;
#[path = "../../fuzz/src/replica_drive.rs"]
mod replica_drive;
#[path = "../../fuzz/src/run_drive.rs"]
mod run_drive;

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

/// Replays `target`'s corpus through its target's `run` (`message_drive::run_family` for
/// `family`) and asserts that the corpus still decodes under every known code of the family.
fn replay_family(target: &str, family: weft_protocol::Family, run: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = files(&fuzz.join("corpus").join(target));
    assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ is empty");
    let regressions = files(&fuzz.join("regressions").join(target));
    let codes: Vec<weft_protocol::Code> = message_drive::family_codes(family)
        .into_iter()
        .filter(|c| c.is_known())
        .collect();
    let mut decoded = vec![0usize; codes.len()];
    // libFuzzer runs the empty input first and never keeps it in a corpus (CHORD_NOTIFY's
    // only valid payload): it is replayed here too.
    let inputs = corpus.iter().chain(&regressions).map(|path| {
        eprintln!("{}", path.display());
        std::fs::read(path).expect("a readable corpus file")
    });
    for data in inputs.chain(std::iter::once(Vec::new())) {
        run(&data);
        for (n, code) in decoded.iter_mut().zip(&codes) {
            *n += usize::from(weft_protocol::Message::decode(*code, &data).is_ok());
        }
    }
    eprintln!(
        "replayed {} {target} inputs; decoded per code: {decoded:?}",
        corpus.len() + regressions.len()
    );
    assert!(
        decoded.iter().all(|&n| n > 0),
        "a {target} code no corpus input decodes: {:?}",
        codes.iter().zip(&decoded).collect::<Vec<_>>()
    );
}

#[test]
fn session_message_corpus_replays() {
    replay_family(
        "session_message",
        weft_protocol::Family::Session,
        message_drive::run_session_message,
    );
}

#[test]
fn mesh_message_corpus_replays() {
    replay_family(
        "mesh_message",
        weft_protocol::Family::Mesh,
        message_drive::run_mesh_message,
    );
}

#[test]
fn table_message_corpus_replays() {
    replay_family(
        "table_message",
        weft_protocol::Family::Table,
        message_drive::run_table_message,
    );
}

#[test]
fn chord_message_corpus_replays() {
    replay_family(
        "chord_message",
        weft_protocol::Family::Chord,
        message_drive::run_chord_message,
    );
}

#[test]
fn family_drivers_survive_empty_and_tiny_inputs() {
    for family in weft_protocol::Family::ALL.into_iter().take(4) {
        for data in [&[][..], &[0], &[0xff; 3], &[7; 64], &[0; 49], &[1; 200]] {
            message_drive::run_family(family, data);
        }
    }
}

#[test]
fn replica_driver_survives_empty_and_tiny_inputs() {
    for data in [&[][..], &[0], &[0xff; 3], &[7; 64], &[0; 49]] {
        replica_drive::run_replica_message(data);
    }
}

#[test]
fn run_message_corpus_replays() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = files(&fuzz.join("corpus/run_message"));
    assert!(!corpus.is_empty(), "fuzz/corpus/run_message/ is empty");
    let regressions = files(&fuzz.join("regressions/run_message"));
    let codes: Vec<weft_protocol::Code> = run_drive::RUN_CODES
        .map(weft_protocol::Code)
        .filter(|c| c.is_known())
        .collect();
    let mut decoded = vec![0usize; codes.len()];
    for path in corpus.iter().chain(&regressions) {
        eprintln!("{}", path.display());
        let data = std::fs::read(path).expect("a readable corpus file");
        run_drive::run_run_message(&data);
        for (n, code) in decoded.iter_mut().zip(&codes) {
            *n += usize::from(weft_protocol::Message::decode(*code, &data).is_ok());
        }
    }
    eprintln!(
        "replayed {} run_message inputs; decoded per code 0x0600..0x0606: {decoded:?}",
        corpus.len() + regressions.len()
    );
    // The corpus must keep reaching every remote-run decoder's success path.
    assert!(
        decoded.iter().all(|&n| n > 0),
        "a remote-run code no corpus input decodes: {decoded:?}"
    );
}

#[test]
fn run_driver_survives_empty_and_tiny_inputs() {
    for data in [&[][..], &[0], &[0xff; 3], &[7; 64], &[0; 49], &[1; 200]] {
        run_drive::run_run_message(data);
    }
}

#[test]
fn drop_message_corpus_replays() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = files(&fuzz.join("corpus/drop_message"));
    assert!(!corpus.is_empty(), "fuzz/corpus/drop_message/ is empty");
    let regressions = files(&fuzz.join("regressions/drop_message"));
    let codes: Vec<weft_protocol::Code> = drop_drive::DROP_CODES
        .map(weft_protocol::Code)
        .filter(|c| c.is_known())
        .collect();
    let mut decoded = vec![0usize; codes.len()];
    for path in corpus.iter().chain(&regressions) {
        eprintln!("{}", path.display());
        let data = std::fs::read(path).expect("a readable corpus file");
        drop_drive::run_drop_message(&data);
        for (n, code) in decoded.iter_mut().zip(&codes) {
            *n += usize::from(weft_protocol::Message::decode(*code, &data).is_ok());
        }
    }
    eprintln!(
        "replayed {} drop_message inputs; decoded per code 0x0500..0x0507: {decoded:?}",
        corpus.len() + regressions.len()
    );
    // The corpus must keep reaching every drop decoder's success path.
    assert!(
        decoded.iter().all(|&n| n > 0),
        "a drop code no corpus input decodes: {decoded:?}"
    );
}

#[test]
fn drop_driver_survives_empty_and_tiny_inputs() {
    for data in [&[][..], &[0], &[0xff; 3], &[7; 64], &[0; 66], &[1; 200]] {
        drop_drive::run_drop_message(data);
    }
}

#[test]
fn p2pt_frame_corpus_replays() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = files(&fuzz.join("corpus/p2pt_frame"));
    assert!(!corpus.is_empty(), "fuzz/corpus/p2pt_frame/ is empty");
    let regressions = files(&fuzz.join("regressions/p2pt_frame"));
    let mut decoded = 0;
    for path in corpus.iter().chain(&regressions) {
        eprintln!("{}", path.display());
        let data = std::fs::read(path).expect("a readable corpus file");
        p2pt_drive::run_p2pt_frame(&data);
        if data.is_empty() {
            continue;
        }
        let codes = [0x13, 0x11, 0x10, 0x12];
        let advertised: Vec<u64> = (0..4)
            .filter(|b| data[0] & (1 << b) != 0)
            .map(|b| codes[b])
            .collect();
        let methods = weft_protocol::p2pt::receive_order(&advertised);
        decoded += usize::from(weft_protocol::p2pt::decode_frame(&data[1..], &methods).is_ok());
    }
    // The seeds hold the 21 valid py2p vectors (tests/p2pt/vectors.json) under their own link
    // and under a link advertising all four methods: 39 distinct inputs that decode.
    assert!(decoded >= 39, "only {decoded} p2pt_frame inputs decode");
}
