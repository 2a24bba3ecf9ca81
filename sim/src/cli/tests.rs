//! `weft sim`'s command line: arguments parsed to the runs they name, the default report's
//! columns, and progress lines.

use clap::Parser;

use super::report::{default_drops, default_scenarios, legend, section, COLUMNS};
use super::*;
use crate::scenario::chord::ChordParams;
use crate::scenario::drops::DropsParams;
use crate::scenario::mesh::{FaultMode, MeshParams};
use crate::scenario::p2pt::P2ptParams;
use crate::scenario::replicate::{ReplicateFaults, ReplicateParams};
use crate::scenario::table::TableParams;
use crate::scenario::Cell;

/// `weft` as far as `weft sim` goes.
#[derive(Parser)]
#[command(name = "weft")]
struct Weft {
    #[command(subcommand)]
    command: Top,
}

#[derive(clap::Subcommand)]
enum Top {
    Sim(SimArgs),
}

/// A printed command line, split as a shell splits unquoted words, parsed as `weft` does.
fn parse(line: &str) -> Result<SimCommand, String> {
    let Weft {
        command: Top::Sim(args),
    } = Weft::try_parse_from(line.split_whitespace()).map_err(|e| e.to_string())?;
    args.command.ok_or_else(|| "no scenario".into())
}

/// The parameters a replay line runs with, shown with `Debug`.
fn replayed(line: &str) -> Result<String, String> {
    Ok(match parse(line)? {
        SimCommand::Mesh(a) => format!("{:?}", a.params()?),
        SimCommand::Table(a) => format!("{:?}", a.params()?),
        SimCommand::Chord(a) => format!("{:?}", a.params()?),
        SimCommand::Replicate(a) => format!("{:?}", a.params()?),
        SimCommand::Drops(a) => format!("{:?}", a.params()?),
        SimCommand::P2pt(a) => format!("{:?}", a.params()),
        SimCommand::Sweep { .. } => return Err("a sweep is no replay".into()),
    })
}

#[test]
fn every_replay_line_parses_back_to_the_same_run() {
    let mut runs: Vec<(String, String)> = Vec::new();
    let mut mesh_run = |p: MeshParams| runs.push((p.replay(), format!("{p:?}")));
    for seed in 1..=60 {
        mesh_run(mesh::sweep_params(seed));
    }
    let (mesh_rows, table_rows, chord_rows, replicate_rows) = default_scenarios(false);
    let (plain_mesh, plain_table, _, _) = default_scenarios(true);
    plain_mesh.into_iter().for_each(|(_, p)| mesh_run(p));
    mesh_rows.into_iter().for_each(|(_, p)| mesh_run(p));
    // A shape that ignores --degree, whatever it is; a list with spaces and empty names.
    let mut star = MeshParams::new(5, 8, 3, 4, FaultMode::List(" latency, ,crashes ".into()));
    star.shape = mesh::Shape::Star;
    star.sabotage = true;
    mesh_run(star.clone());
    mesh_run(MeshParams::new(6, 2, 1, 3, FaultMode::List(String::new())));
    let mut table_run = |p: TableParams| runs.push((p.replay(), format!("{p:?}")));
    (1..=60).for_each(|seed| table_run(table::sweep_params(seed)));
    table_rows.into_iter().for_each(|(_, p)| table_run(p));
    plain_table.into_iter().for_each(|(_, p)| table_run(p));
    let mut chord_run = |p: ChordParams| runs.push((p.replay(), format!("{p:?}")));
    (1..=60).for_each(|seed| chord_run(chord::sweep_params(seed)));
    chord_rows.into_iter().for_each(|(_, p)| chord_run(p));
    chord_run(ChordParams {
        churn: Some(0.1),
        loss: 0.05,
        ..ChordParams::new(50, 4, 100)
    });
    chord_run(ChordParams {
        tracker_flood: Some(128),
        adversary: true,
        ..ChordParams::new(16, 2, 20)
    });
    let mut replicate_run = |p: ReplicateParams| runs.push((p.replay(), format!("{p:?}")));
    (1..=60).for_each(|seed| replicate_run(replicate::sweep_params(seed)));
    (1..=60).for_each(|seed| replicate_run(replicate::sweep_params_large(seed)));
    replicate_rows
        .into_iter()
        .for_each(|(_, p)| replicate_run(p));
    let mut listed = ReplicateParams::new(4, 9, 7);
    listed.faults = ReplicateFaults::List("drops,writes".into());
    listed.shape = mesh::Shape::Star;
    listed.safety_ms = 5_000;
    replicate_run(listed);
    let p2pt_sweep = (1..=20).map(p2pt::sweep_params);
    for p in [P2ptParams::new(16, 1, true), P2ptParams::new(5, 9, false)]
        .into_iter()
        .chain(p2pt_sweep)
    {
        runs.push((p.replay(), format!("{p:?}")));
    }
    let drops_sweep = (1..=60).map(drops::sweep_params);
    for p in default_drops()
        .into_iter()
        .map(|(_, p)| p)
        .chain(drops_sweep)
    {
        runs.push((p.replay(), format!("{p:?}")));
    }
    let mut quiet = DropsParams::new(3, 4, FaultMode::None);
    quiet.forger = false;
    quiet.safety_ms = 9_000;
    runs.push((quiet.replay(), format!("{quiet:?}")));
    for (line, params) in &runs {
        let again = replayed(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        // Lists are printed trimmed: compare the runs, not the spelling.
        let params = params.replace(" latency, ,crashes ", "latency,crashes");
        let params = params.replace("List(\"\")", "None");
        assert_eq!(again, params, "{line}");
    }
    // The same run: the same trace.
    let line = star.replay();
    let Ok(SimCommand::Mesh(a)) = parse(&line) else {
        panic!("{line}")
    };
    let again = mesh::run(&a.params().unwrap());
    let first = mesh::run(&star);
    assert!(!first.header.ok, "sabotaged");
    assert_eq!(again.header.digest, first.header.digest);
    assert_eq!(again.header.replay, line);
}

#[test]
fn faults_are_one_mode_or_a_list_of_names() {
    for empty in ["", " ", ",", " , "] {
        let e = FaultMode::parse(empty).unwrap_err();
        assert!(e.contains("no faults named"), "{empty:?}: {e}");
    }
    let e = FaultMode::parse("swarm,latency").unwrap_err();
    assert!(e.contains("cannot be combined"), "{e}");
    assert!(FaultMode::parse("none, crashes").is_err());
    assert!(FaultMode::parse("latency,bogus")
        .unwrap_err()
        .contains("unknown fault 'bogus'"));
    assert_eq!(FaultMode::parse(" swarm "), Ok(FaultMode::Swarm));
    assert_eq!(
        FaultMode::parse(" latency , crashes,"),
        Ok(FaultMode::List("latency,crashes".into()))
    );
}

#[test]
fn ring_line_and_star_need_no_degree() {
    for shape in ["star", "ring", "line"] {
        let line = format!("weft sim mesh --nodes 4 --topology {shape}");
        let Ok(SimCommand::Mesh(a)) = parse(&line) else {
            panic!("{line}")
        };
        let p = a.params().unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(!p.replay().contains("--degree"), "{}", p.replay());
    }
    let Ok(SimCommand::Mesh(a)) = parse("weft sim mesh --nodes 4") else {
        panic!()
    };
    assert!(
        a.params().is_err(),
        "a regular graph of degree 8 on 4 nodes"
    );
}

#[test]
fn the_default_table_as_json_names_each_run() {
    let scenarios = [("tiny mesh", MeshParams::new(4, 2, 1, 2, FaultMode::None))];
    let mut runs = Vec::new();
    assert!(section("", &scenarios, mesh::run, Some(&mut runs)));
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["scenario"], "tiny mesh");
    assert_eq!(runs[0]["protocol"], "mesh");
    assert_eq!(runs[0]["broadcasts"], 2);
    assert_eq!(runs[0]["ok"], true);
    let mut sabotaged = scenarios[0].1.clone();
    sabotaged.sabotage = true;
    let mut runs = Vec::new();
    assert!(!section(
        "",
        &[("bad", sabotaged)],
        mesh::run,
        Some(&mut runs)
    ));
    assert!(runs[0]["replay"].as_str().unwrap().ends_with("--sabotage"));
}

#[test]
fn the_legend_names_every_column_in_order() {
    let mesh_cells = mesh::run(&MeshParams::new(4, 2, 1, 1, FaultMode::None)).cells();
    let table_cells = table::run(&TableParams::new(3, 1, 3, FaultMode::None)).cells();
    let chord_params = ChordParams {
        keys: 2,
        ..ChordParams::new(3, 1, 5)
    };
    let chord_cells = chord::run(&chord_params).cells();
    let titles = |cells: Vec<Cell>| cells.into_iter().map(|(t, _, _)| t).collect::<Vec<_>>();
    let replicate_cells = replicate::run(&ReplicateParams::new(2, 1, 2)).cells();
    let drops_cells = drops::run(&default_drops()[0].1).cells();
    let p2pt_cells = p2pt::run(&P2ptParams::new(3, 1, false)).cells();
    let cells = [
        titles(mesh_cells),
        titles(table_cells),
        titles(chord_cells),
        titles(replicate_cells),
        titles(drops_cells),
        titles(p2pt_cells),
    ];
    for ((protocol, columns), cells) in COLUMNS.iter().zip(cells) {
        let legend: Vec<&str> = columns.iter().map(|(t, _)| *t).collect();
        assert_eq!(legend, cells, "{protocol}");
    }
    let help = legend();
    assert!(
        help.contains("\n    lease!       accepted writes"),
        "{help}"
    );
}
