//! The p2p.today report: one line per SPEC.md §25 section, pass, fail (with the first failing
//! check's reason) or skip, with the notes the checks made (what the peer did where py2p's
//! behaviour is only observed, never required), as text or JSON.

use serde::Serialize;

pub use super::super::report::{Outcome, SectionLine, Verdict};

/// A SPEC.md §25 section the kit tests, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Section {
    /// §25.2 Frame.
    Frame,
    /// §25.5 Compression.
    Compression,
    /// §25.9 Session.
    Session,
    /// §25.10 Mesh.
    Mesh,
    /// §25.11 Sync table.
    Table,
}

impl Section {
    /// Every section, in report order.
    pub const ALL: [Section; 5] = [
        Section::Frame,
        Section::Compression,
        Section::Session,
        Section::Mesh,
        Section::Table,
    ];

    /// The section's number as SPEC.md writes it.
    pub fn tag(self) -> &'static str {
        match self {
            Section::Frame => "§25.2",
            Section::Compression => "§25.5",
            Section::Session => "§25.9",
            Section::Mesh => "§25.10",
            Section::Table => "§25.11",
        }
    }

    /// The section's title.
    pub fn title(self) -> &'static str {
        match self {
            Section::Frame => "Frame",
            Section::Compression => "Compression",
            Section::Session => "Session",
            Section::Mesh => "Mesh",
            Section::Table => "Sync table",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// The section it tests.
    pub section: Section,
    /// What it checks, in a few words.
    pub name: &'static str,
    /// What it found.
    pub outcome: Outcome,
    /// What it observed without judging it.
    pub notes: Vec<String>,
}

/// Every check's result, in the order they ran.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The peer tested.
    pub peer: String,
    /// The py2p subnet the kit assumed.
    pub subnet: &'static str,
    /// The results.
    pub results: Vec<CheckResult>,
}

/// The whole report as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct JsonReport {
    /// The peer tested.
    pub peer: String,
    /// `p2p.today`.
    pub dialect: &'static str,
    /// The py2p subnet the kit assumed.
    pub subnet: &'static str,
    /// The kit's role: it dials.
    pub role: &'static str,
    /// Whether no check failed.
    pub pass: bool,
    /// One entry per section.
    pub sections: Vec<SectionLine>,
}

impl Report {
    /// One line per section that has checks, in section order.
    pub fn lines(&self) -> Vec<SectionLine> {
        Section::ALL
            .into_iter()
            .filter(|&section| self.results.iter().any(|r| r.section == section))
            .map(|section| {
                let mine = self.results.iter().filter(|r| r.section == section);
                SectionLine::tally(
                    section.tag(),
                    section.title(),
                    mine.map(|r| (r.name, &r.outcome, r.notes.as_slice())),
                )
            })
            .collect()
    }

    /// Whether every check that ran passed.
    pub fn pass(&self) -> bool {
        !self
            .results
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Fail(_)))
    }

    /// The report as JSON.
    pub fn json(&self) -> JsonReport {
        JsonReport {
            peer: self.peer.clone(),
            dialect: "p2p.today",
            subnet: self.subnet,
            role: "initiator",
            pass: self.pass(),
            sections: self.lines(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(section: Section, name: &'static str, outcome: Outcome) -> CheckResult {
        CheckResult {
            section,
            name,
            outcome,
            notes: Vec::new(),
        }
    }

    #[test]
    fn one_line_per_section_with_notes() {
        let mut noted = result(Section::Session, "str star", Outcome::Pass);
        noted.notes.push("answered with renegotiate".into());
        let mut failed_noted = result(Section::Mesh, "relay", Outcome::Fail("echoed".into()));
        failed_noted.notes.push("seen twice".into());
        let report = Report {
            peer: "127.0.0.1:1".into(),
            subnet: "mesh",
            results: vec![
                result(Section::Session, "handshake", Outcome::Pass),
                noted,
                result(Section::Frame, "checksum", Outcome::Pass),
                failed_noted,
                result(Section::Mesh, "old", Outcome::Fail("relayed".into())),
                result(Section::Table, "kept", Outcome::Skip("mesh".into())),
            ],
        };
        let lines: Vec<String> = report.lines().iter().map(SectionLine::text).collect();
        assert_eq!(
            lines,
            [
                "PASS §25.2 Frame (1 check)",
                "PASS §25.9 Session (2 checks; note: str star: answered with renegotiate)",
                "FAIL §25.10 Mesh: relay: echoed (and 1 more failing check) (note: relay: seen twice)",
                "SKIP §25.11 Sync table: kept: mesh",
            ]
        );
        assert!(!report.pass());
        let json = serde_json::to_value(report.json()).expect("JSON");
        assert_eq!(json["pass"], false);
        assert_eq!(json["dialect"], "p2p.today");
        assert_eq!(json["sections"][2]["result"], "fail");
        assert_eq!(json["sections"][2]["failures"][1], "old: relayed");
        assert_eq!(
            json["sections"][1]["notes"][0],
            "str star: answered with renegotiate"
        );
    }
}
