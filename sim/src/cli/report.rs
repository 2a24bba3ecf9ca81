//! The default run's report (`weft sim` with no scenario): every protocol's scenarios in
//! one table, its columns, its legend and the links line.

use std::process::ExitCode;

use crate::links::LinkSetup;
use crate::scenario::chord::{self, ChordParams};
use crate::scenario::drops::{self, DropsParams};
use crate::scenario::mesh::{self, FaultMode, MeshParams};
use crate::scenario::p2pt::{self, P2ptParams};
use crate::scenario::replicate::{self, ReplicateParams};
use crate::scenario::table::{self, TableParams};
use crate::scenario::Scenario;

use super::exit;

/// What each column of the default table means, per protocol, in the order of the columns
/// (each scenario's `Scenario::cells`).
pub(super) const COLUMNS: [(&str, &[(&str, &str)]); 6] = [
    (
        "mesh",
        &[
            ("nodes", "nodes in the network"),
            ("edges", "links drawn between them"),
            ("bcast", "broadcasts sent"),
            (
                "delivered",
                "fraction of the deliveries owed at the end that were made (1: all)",
            ),
            ("tx", "BROADCAST frames sent"),
            ("dups", "BROADCAST frames a node received again"),
            (
                "repair",
                "repair frames sent (MESH_DIGEST, MESH_WANT, MESH_REPAIR)",
            ),
            (
                "converged",
                "from the last broadcast (or the heal) until every node held all owed",
            ),
            ("events", "simulator events processed"),
            ("events/s", "events per second of wall-clock time"),
        ],
    ),
    (
        "table",
        &[
            ("nodes", "nodes in the network"),
            (
                "writes",
                "writes scheduled (sets, leased sets, deletes, releases)",
            ),
            ("keys", "keys set at the end"),
            (
                "identical",
                "whether every live node ended with the same table",
            ),
            (
                "lease!",
                "accepted writes another node's lease covered (must be 0)",
            ),
            ("refused", "writes refused under a lease"),
            (
                "catch-up",
                "anti-entropy bytes (TABLE_DIGEST, TABLE_WANT, TABLE_ENTRIES)",
            ),
            (
                "full-resend",
                "bytes that resending whole tables would have cost instead",
            ),
            (
                "converged",
                "from the heal until every live node held the same table",
            ),
            ("events", "simulator events processed"),
        ],
    ),
    (
        "chord",
        &[
            ("nodes", "nodes at the start"),
            ("lookups", "lookups measured"),
            ("mean hops", "nodes contacted per lookup, on average"),
            ("p50", "median hops"),
            ("p99", "99th-percentile hops"),
            (
                "failed",
                "fraction of lookups that failed or named a wrong owner",
            ),
            (
                "lost",
                "keys with a live holder that a get could not return",
            ),
            (
                "ring ok",
                "from the last join until every successor and predecessor was right",
            ),
            ("events", "simulator events processed"),
            ("events/s", "events per second of wall-clock time"),
        ],
    ),
    (
        "replicate",
        &[
            ("nodes", "nodes in the network"),
            ("ops", "local file operations carried out at random nodes"),
            (
                "identical",
                "whether every node ended with the same folder (digest)",
            ),
            (
                "lost",
                "versions written and never superseded that a node lacks (must be 0)",
            ),
            (
                "corrupt",
                "files anywhere with content no operation wrote (must be 0)",
            ),
            ("conflicts", "conflict copies made"),
            (
                "sent/need",
                "HEREIS bytes sent over the bytes of blocks receivers lacked",
            ),
            (
                "index",
                "index message bytes (LIST, IHAVE, IMOVED, IDELETED)",
            ),
            (
                "converged",
                "from the heal until every node was idle with nothing in flight",
            ),
            ("events", "simulator events processed"),
        ],
    ),
    (
        "drops",
        &[
            (
                "nodes",
                "nodes in the network (owners, subscribers and a forger)",
            ),
            ("versions", "the counter of the drop's last version"),
            (
                "attacks",
                "the forger's attacks (forged, tampered and replayed versions, corrupt blocks)",
            ),
            (
                "refused",
                "versions honest nodes refused (each closed the sender's link)",
            ),
            (
                "corrupt",
                "blocks that failed their hash at honest nodes, discarded and fetched elsewhere",
            ),
            (
                "forged",
                "forged versions or owner lists honest nodes held (must be 0)",
            ),
            (
                "identical",
                "whether every honest node showed the last version and every copy matched it",
            ),
            ("converged", "from the last publish until that held"),
            ("events", "simulator events processed"),
        ],
    ),
    (
        "p2p.today",
        &[
            (
                "nodes",
                "nodes in the network (a sync1 subnet, half of them compressing)",
            ),
            ("faults", "links cut and nodes crashed in the safety phase"),
            (
                "delivered",
                "broadcasts sent after the heal delivered exactly once, of those owed",
            ),
            ("keys", "keys written after the heal held, of those owed"),
            (
                "whole",
                "from the heal until every node was up and the network connected",
            ),
            (
                "dups",
                "broadcast frames dropped as already seen (60 s window)",
            ),
            ("events", "simulator events processed"),
        ],
    ),
];

/// The column legend `weft sim --help` ends with.
pub(super) fn legend() -> String {
    let mut text = String::from(
        "Columns of the table `weft sim` prints (times are simulated ms; result: ok, or FAILED\n\
         with the violation and its replay line below the rows):",
    );
    for (protocol, columns) in COLUMNS {
        text.push_str(&format!("\n  {protocol}:"));
        for (title, meaning) in columns {
            text.push_str(&format!("\n    {title:<13}{meaning}"));
        }
    }
    text
}

/// The default table's scenarios, by protocol: each row's name and parameters.
pub(super) type DefaultScenarios = (
    Vec<(&'static str, MeshParams)>,
    Vec<(&'static str, TableParams)>,
    Vec<(&'static str, ChordParams)>,
    Vec<(&'static str, ReplicateParams)>,
);

/// The secret of the default table's private networks.
pub(super) const DEFAULT_SECRET: &str = "weft-sim";

/// The scenarios of the default table: with Noise links (an open network, but for the
/// wrong-secret rows: a private one and a node of another secret), or, if `plaintext`, with
/// plaintext links and without the wrong-secret rows.
pub(super) fn default_scenarios(plaintext: bool) -> DefaultScenarios {
    let mut mesh = vec![
        (
            "mesh, no faults",
            MeshParams::new(1000, 8, 1, 20, FaultMode::None),
        ),
        (
            "mesh, swarm faults",
            MeshParams::new(24, 4, 1, 30, FaultMode::Swarm),
        ),
        (
            "mesh, partitions+crashes",
            MeshParams::new(
                32,
                4,
                2,
                30,
                FaultMode::List("latency,partitions,crashes".into()),
            ),
        ),
        ("mesh, wrong-secret node", {
            let mut p = MeshParams::new(24, 4, 3, 30, FaultMode::Swarm);
            p.links = LinkSetup::private(DEFAULT_SECRET, 1);
            p
        }),
    ];
    let mut table = vec![
        (
            "table, swarm faults",
            TableParams::new(16, 1, 200, FaultMode::Swarm),
        ),
        ("table, halves", {
            let mut p = TableParams::new(16, 2, 200, FaultMode::None);
            p.halves = true;
            p
        }),
        ("table, wrong-secret node", {
            let mut p = TableParams::new(16, 3, 200, FaultMode::Swarm);
            p.links = LinkSetup::private(DEFAULT_SECRET, 1);
            p
        }),
    ];
    if plaintext {
        mesh.retain(|(_, p)| p.links.wrong_secret_nodes == 0);
        table.retain(|(_, p)| p.links.wrong_secret_nodes == 0);
        mesh.iter_mut()
            .for_each(|(_, p)| p.links = LinkSetup::plaintext());
        table
            .iter_mut()
            .for_each(|(_, p)| p.links = LinkSetup::plaintext());
    }
    let chord = vec![
        ("chord, joins", ChordParams::new(256, 1, 1000)),
        (
            "chord, 20% fail at once",
            ChordParams {
                fail_fraction: 0.2,
                ..ChordParams::new(128, 1, 500)
            },
        ),
        (
            "chord, swarm faults",
            ChordParams {
                swarm: true,
                ..ChordParams::new(32, 1, 300)
            },
        ),
    ];
    let replicate = vec![
        ("replicate, 5 nodes", ReplicateParams::new(5, 1, 60)),
        ("replicate, line of 5", {
            let mut p = ReplicateParams::new(5, 2, 60);
            p.shape = mesh::Shape::Line;
            p
        }),
        ("replicate, corrupt peer", {
            let mut p = ReplicateParams::new(5, 3, 60);
            p.shape = mesh::Shape::Ring;
            p.corrupt_peer = true;
            p
        }),
    ];
    (mesh, table, chord, replicate)
}

/// The drops rows of the default table (plaintext links, simulation only: the forger writes
/// its frames into its links).
pub(super) fn default_drops() -> Vec<(&'static str, DropsParams)> {
    vec![(
        "drops, swarm faults, forger",
        DropsParams::new(6, 1, FaultMode::Swarm),
    )]
}

/// The README's main job: the default scenario of every protocol, as a table under a line
/// saying how links are protected (or, with `json`, one JSON object: `runs`, each report with
/// its `scenario` name and `links`, and `ok`); with `plaintext`, the mesh and table rows run
/// plaintext links, simulation only.
pub(super) fn default_table(json: bool, plaintext: bool) -> ExitCode {
    let (mesh, table, chord, replicate) = default_scenarios(plaintext);
    if !json {
        super::say(&format!("{}\n", links_line(plaintext)));
    }
    let mut runs = Vec::new();
    let mesh_ok = section("", &mesh, mesh::run, json.then_some(&mut runs));
    let table_ok = section("\n", &table, table::run, json.then_some(&mut runs));
    let chord_ok = section("\n", &chord, chord::run, json.then_some(&mut runs));
    let replicate_ok = section("\n", &replicate, replicate::run, json.then_some(&mut runs));
    let drops_ok = section(
        "\n",
        &default_drops(),
        drops::run,
        json.then_some(&mut runs),
    );
    let p2pt_ok = section(
        "\n",
        &[("p2p.today, swarm faults", P2ptParams::new(16, 1, true))],
        p2pt::run,
        json.then_some(&mut runs),
    );
    let ok = mesh_ok && table_ok && chord_ok && replicate_ok && drops_ok && p2pt_ok;
    if json {
        super::say(&format!(
            "{}\n",
            serde_json::json!({ "runs": runs, "ok": ok })
        ));
    } else {
        super::say("(times are simulated; each row replays with `weft sim mesh ...`, `weft sim table ...`, `weft sim chord ...`, `weft sim replicate ...`, `weft sim drops ...` or `weft sim p2pt ...`; the columns are explained in `weft sim --help`)\n");
    }
    exit(ok)
}

/// The default table's header line: how the mesh and table rows' links are protected.
pub(super) fn links_line(plaintext: bool) -> String {
    if plaintext {
        "links: PLAINTEXT (--plaintext-sim-only: simulation only, weft itself always encrypts)"
            .into()
    } else {
        format!(
            "links: {} (open network; the wrong-secret rows: a private network and a node of \
             another secret, which must never link)",
            weft_engine::noise::NOISE_PROTOCOL
        )
    }
}

/// One protocol's part of the default table, after `gap`: a title line, a row per scenario as
/// it finishes, then each failure with its replay line; or, given `json`, each report added
/// to it with its `scenario` name, and nothing printed. True if every run held.
pub(super) fn section<P, R: Scenario>(
    gap: &str,
    scenarios: &[(&str, P)],
    run: fn(&P) -> R,
    mut json: Option<&mut Vec<serde_json::Value>>,
) -> bool {
    let mut ok = true;
    let mut failures = Vec::new();
    for (k, (name, p)) in scenarios.iter().enumerate() {
        let r = run(p);
        ok &= r.header().ok;
        if let Some(runs) = json.as_deref_mut() {
            let mut value = serde_json::json!({ "scenario": name });
            if let (Some(map), Ok(serde_json::Value::Object(report))) =
                (value.as_object_mut(), serde_json::to_value(&r))
            {
                map.extend(report);
            }
            runs.push(value);
            continue;
        }
        let cells = r.cells();
        if k == 0 {
            let titles: String = cells.iter().map(|(t, w, _)| format!("{t:>w$}")).collect();
            super::say(&format!(
                "{gap}{:<26}{titles}  {:<6}\n",
                "scenario", "result"
            ));
        }
        let values: String = cells.iter().map(|(_, w, v)| format!("{v:>w$}")).collect();
        super::say(&format!("{name:<26}{values}  {:<6}\n", r.header().result()));
        failures.extend(r.header().failure(&format!("  {name}")));
    }
    failures.iter().for_each(|f| super::say(&format!("{f}\n")));
    ok
}
