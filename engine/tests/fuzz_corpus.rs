//! Replays the committed fuzz corpora (`fuzz/corpus/`, `fuzz/regressions/`) through the same
//! logic the fuzz targets run, so every input the fuzzers kept stays a regression test under
//! `cargo test`, without libfuzzer.

#[path = "../../fuzz/src/decoder_drive.rs"]
mod decoder_drive;
#[path = "../../fuzz/src/node_drive.rs"]
mod node_drive;
#[path = "../../fuzz/src/noise_drive.rs"]
mod noise_drive;
#[path = "../../fuzz/src/p2pt_node_drive.rs"]
mod p2pt_node_drive;

use std::path::{Path, PathBuf};

/// The files of `fuzz/<kind>/<target>/`, sorted; none if the directory does not exist.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `run` on every corpus and regression input of `target`; returns how many there were.
fn replay(target: &str, mut run: impl FnMut(&Path, &[u8])) -> usize {
    let corpus = inputs("corpus", target);
    assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ is empty");
    let all: Vec<PathBuf> = corpus
        .into_iter()
        .chain(inputs("regressions", target))
        .collect();
    for path in &all {
        let data = std::fs::read(path).expect("a readable corpus file");
        run(path, &data);
    }
    all.len()
}

#[test]
fn frame_decoder_corpus_replays() {
    let n = replay("frame_decoder", |path, data| {
        eprintln!("{}", path.display());
        decoder_drive::run_frame_decoder(data);
    });
    eprintln!("replayed {n} frame_decoder inputs");
}

#[test]
fn noise_link_corpus_replays() {
    let n = replay("noise_link", |path, data| {
        eprintln!("{}", path.display());
        noise_drive::run_noise_link(data);
    });
    eprintln!("replayed {n} noise_link inputs");
}

#[test]
fn p2pt_node_corpus_replays() {
    let mut total = p2pt_node_drive::P2ptSummary::default();
    let n = replay("p2pt_node", |path, data| {
        eprintln!("{}", path.display());
        let s = p2pt_node_drive::run_p2pt_node(data);
        total.delivered += s.delivered;
        total.key_changes += s.key_changes;
        total.faults += s.faults;
    });
    eprintln!("replayed {n} p2pt_node inputs: {total:?}");
    // The corpus reaches past the frame layer: deliveries, table changes and closes.
    assert!(
        total.delivered > 0 && total.key_changes > 0 && total.faults > 0,
        "{total:?}"
    );
}

#[test]
fn node_corpus_replays() {
    let mut total = node_drive::NodeSummary::default();
    let n = replay("node", |path, data| {
        eprintln!("{}", path.display());
        let s = node_drive::run_node_with(data, node_drive::default_config());
        total.metrics.session.handshakes_completed += s.metrics.session.handshakes_completed;
        total.metrics.mesh.broadcasts_delivered += s.metrics.mesh.broadcasts_delivered;
        total.table_events += s.table_events;
        total.chord_events += s.chord_events;
        total.replica_frames_sent += s.replica_frames_sent;
        total.storage_requests += s.storage_requests;
        total.replicate_events += s.replicate_events;
        total.drop_frames_sent += s.drop_frames_sent;
        total.drops_events += s.drops_events;
        total.run_frames_sent += s.run_frames_sent;
        total.run_events += s.run_events;
        total.process_requests += s.process_requests;
        total.process_spawns += s.process_spawns;
        total.noise_links += s.noise_links;
        total.rules_set += s.rules_set;
    });
    eprintln!(
        "replayed {n} node inputs: {} handshakes, {} broadcasts delivered, {} table and {} \
         Chord events, {} replication frames sent, {} storage steps, {} replication events; \
         {} Noise links, {} drop frames sent, {} drops events, {} run frames sent, {} run \
         events, {} process steps ({} spawns); {} ignore rules set",
        total.metrics.session.handshakes_completed,
        total.metrics.mesh.broadcasts_delivered,
        total.table_events,
        total.chord_events,
        total.replica_frames_sent,
        total.storage_requests,
        total.replicate_events,
        total.noise_links,
        total.drop_frames_sent,
        total.drops_events,
        total.run_frames_sent,
        total.run_events,
        total.process_requests,
        total.process_spawns,
        total.rules_set,
    );
    // The corpus must keep reaching past the handshake, or it has lost most of its value.
    assert!(
        total.metrics.session.handshakes_completed > 0,
        "no corpus input completes a handshake"
    );
    assert!(
        total.metrics.mesh.broadcasts_delivered > 0,
        "no corpus input delivers a broadcast"
    );
    // And into folder replication: frames to a linked peer, storage steps for the host.
    assert!(
        total.replica_frames_sent > 0,
        "no corpus input makes the node send a replication frame"
    );
    assert!(
        total.storage_requests > 0,
        "no corpus input makes the node ask for a storage step"
    );
    // And into drops and remote runs (over Noise links, which runs need): drop frames and
    // events, a process the node spawns for a peer, events of runs the application asked for.
    assert!(
        total.noise_links > 0,
        "no corpus input completes a Noise handshake"
    );
    assert!(
        total.drop_frames_sent > 0 && total.drops_events > 0,
        "no corpus input reaches drops: {} DROP frames sent, {} events",
        total.drop_frames_sent,
        total.drops_events
    );
    assert!(
        total.process_spawns > 0,
        "no corpus input makes the node spawn a process for a peer's run"
    );
    assert!(
        total.run_events > 0,
        "no corpus input makes the node report a run the application asked for"
    );
    // And into `.weftignore` rules changing under a running folder.
    assert!(
        total.rules_set > 0,
        "no corpus input sets a folder's ignore rules"
    );
}

#[test]
fn node_small_limits_corpus_replays() {
    let config = node_drive::small_limits_config();
    let limits = config.limits.clone();
    let mut total = node_drive::NodeSummary::default();
    let (mut slow, mut dropped, mut evicting, mut capped) = (0, 0, 0, 0);
    let n = replay("node_small_limits", |path, data| {
        eprintln!("{}", path.display());
        let s = node_drive::run_node_with(data, config.clone());
        slow += usize::from(s.slow_peer_closes > 0);
        dropped += usize::from(s.metrics.session.relays_dropped > 0);
        evicting += usize::from(s.store_evictions > 0);
        capped += usize::from(
            s.too_many_closes + s.too_many_refusals > 0
                || s.inbound_peak == limits.inbound_max
                || s.outbound_peak == limits.outbound_max,
        );
        total.metrics.session.handshakes_completed += s.metrics.session.handshakes_completed;
        total.metrics.mesh.broadcasts_delivered += s.metrics.mesh.broadcasts_delivered;
        total.metrics.session.relays_dropped += s.metrics.session.relays_dropped;
        total.slow_peer_closes += s.slow_peer_closes;
        total.too_many_closes += s.too_many_closes;
        total.too_many_refusals += s.too_many_refusals;
        total.store_evictions += s.store_evictions;
        total.inbound_peak = total.inbound_peak.max(s.inbound_peak);
        total.table_events += s.table_events;
        total.chord_events += s.chord_events;
        total.outbound_peak = total.outbound_peak.max(s.outbound_peak);
    });
    eprintln!(
        "replayed {n} node_small_limits inputs: {} handshakes, {} broadcasts delivered; \
         slow-peer closes {} (in {slow} inputs), relays dropped {} (in {dropped}), \
         repair-store evictions >= {} (in {evicting}), connection-cap closes {} and refusals {} \
         (caps reached in {capped}), peak {} inbound / {} outbound",
        total.metrics.session.handshakes_completed,
        total.metrics.mesh.broadcasts_delivered,
        total.slow_peer_closes,
        total.metrics.session.relays_dropped,
        total.store_evictions,
        total.too_many_closes,
        total.too_many_refusals,
        total.inbound_peak,
        total.outbound_peak,
    );
    // The point of this target: the bounded paths the default limits never reach.
    assert!(
        slow + dropped > 0,
        "no corpus input reaches a slow-peer disconnect or a relay drop"
    );
    assert!(
        total.metrics.session.handshakes_completed > 0,
        "no corpus input completes a handshake"
    );
    assert!(
        total.table_events > 0 && total.chord_events > 0,
        "no corpus input reaches the sync table ({}) or Chord ({}) events",
        total.table_events,
        total.chord_events
    );
}

#[test]
fn node_driver_survives_empty_and_tiny_inputs() {
    for data in [&[][..], &[0], &[0xff; 3], &[7; 64]] {
        node_drive::run_node(data);
        node_drive::run_node_metrics(data);
        node_drive::run_node_small_limits(data);
        assert!(node_drive::default_config().limits.send_queue_bytes_max > 8 * 1024);
        decoder_drive::run_frame_decoder(data);
    }
}
