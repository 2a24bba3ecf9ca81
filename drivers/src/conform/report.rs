//! The kit's report: one line per SPEC.md section, pass, fail (with the first failing
//! check's reason) or skip, as text or JSON.

use serde::Serialize;

/// A SPEC.md section the kit tests, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Section {
    /// §2 Frame.
    Frame,
    /// §3 Compression.
    Compression,
    /// §4 Payload encoding.
    Payload,
    /// §6.13 Which message is allowed when.
    States,
    /// §7 Identity and handshake.
    Handshake,
    /// §8 Connections and links (caps before the handshake, BYE, families, dedicated
    /// connections).
    Connections,
    /// §9 Liveness.
    Liveness,
    /// §10 Discovery.
    Discovery,
    /// §11 Mesh broadcast.
    Mesh,
    /// §19 Sync table.
    Table,
    /// §20 Chord.
    Chord,
    /// §21 Encrypted links (Noise).
    Noise,
    /// §22 Folder replication.
    Replication,
    /// §23 Remote runs.
    Remote,
    /// §24.2 Drops: manifests and the acceptance rules.
    DropAcceptance,
    /// §24.3 Drops: file lists and the root hash.
    DropFiles,
    /// §24.5 Drops: messages.
    DropMessages,
}

impl Section {
    /// Every section, in report order.
    pub const ALL: [Section; 17] = [
        Section::Frame,
        Section::Compression,
        Section::Payload,
        Section::States,
        Section::Handshake,
        Section::Connections,
        Section::Liveness,
        Section::Discovery,
        Section::Mesh,
        Section::Table,
        Section::Chord,
        Section::Noise,
        Section::Replication,
        Section::Remote,
        Section::DropAcceptance,
        Section::DropFiles,
        Section::DropMessages,
    ];

    /// The section's number as SPEC.md writes it: `§2`, `§6.13`.
    pub fn tag(self) -> &'static str {
        match self {
            Section::Frame => "§2",
            Section::Compression => "§3",
            Section::Payload => "§4",
            Section::States => "§6.13",
            Section::Handshake => "§7",
            Section::Connections => "§8",
            Section::Liveness => "§9",
            Section::Discovery => "§10",
            Section::Mesh => "§11",
            Section::Table => "§19",
            Section::Chord => "§20",
            Section::Noise => "§21",
            Section::Replication => "§22",
            Section::Remote => "§23",
            Section::DropAcceptance => "§24.2",
            Section::DropFiles => "§24.3",
            Section::DropMessages => "§24.5",
        }
    }

    /// The section's title.
    pub fn title(self) -> &'static str {
        match self {
            Section::Frame => "frame",
            Section::Compression => "compression",
            Section::Payload => "payload encoding",
            Section::States => "which message is allowed when",
            Section::Handshake => "identity and handshake",
            Section::Connections => "connections and links",
            Section::Liveness => "liveness",
            Section::Discovery => "discovery",
            Section::Mesh => "mesh broadcast",
            Section::Table => "sync table",
            Section::Chord => "Chord",
            Section::Noise => "encrypted links (Noise)",
            Section::Replication => "folder replication",
            Section::Remote => "remote runs",
            Section::DropAcceptance => "drops: the acceptance rules",
            Section::DropFiles => "drops: file lists and the root hash",
            Section::DropMessages => "drops: messages",
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The peer did what SPEC.md requires.
    Pass,
    /// It did not: why.
    Fail(String),
    /// The check does not apply to this peer, or was not run: why.
    Skip(String),
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
}

/// Every check's result, in the order they ran.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The peer tested.
    pub peer: String,
    /// The kit's role: `initiator` (it dialed) or `acceptor`.
    pub role: &'static str,
    /// The results.
    pub results: Vec<CheckResult>,
}

/// A section's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every check that ran passed.
    Pass,
    /// At least one check failed.
    Fail,
    /// No check ran.
    Skip,
}

/// One section's line.
#[derive(Debug, Clone, Serialize)]
pub struct SectionLine {
    /// `§2`.
    pub section: &'static str,
    /// `frame`.
    pub title: &'static str,
    /// The verdict.
    pub result: Verdict,
    /// Checks that passed.
    pub passed: usize,
    /// Checks that failed, with their reasons: `check: reason`.
    pub failures: Vec<String>,
    /// Checks skipped, with their reasons.
    pub skipped: Vec<String>,
    /// What checks observed without judging it, each `check: note` (the p2p.today kit's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl SectionLine {
    /// The line of section `tag` (`§2`) titled `title`, from its checks: each its name, what
    /// it found and its notes.
    pub fn tally<'a>(
        tag: &'static str,
        title: &'static str,
        checks: impl IntoIterator<Item = (&'a str, &'a Outcome, &'a [String])>,
    ) -> SectionLine {
        let mut line = SectionLine {
            section: tag,
            title,
            result: Verdict::Skip,
            passed: 0,
            failures: Vec::new(),
            skipped: Vec::new(),
            notes: Vec::new(),
        };
        for (name, outcome, notes) in checks {
            match outcome {
                Outcome::Pass => line.passed += 1,
                Outcome::Fail(why) => line.failures.push(format!("{name}: {why}")),
                Outcome::Skip(why) => line.skipped.push(format!("{name}: {why}")),
            }
            line.notes
                .extend(notes.iter().map(|n| format!("{name}: {n}")));
        }
        line.result = if !line.failures.is_empty() {
            Verdict::Fail
        } else if line.passed > 0 {
            Verdict::Pass
        } else {
            Verdict::Skip
        };
        line
    }

    /// The one line of text: `PASS §2 frame (12 checks)`, `FAIL §2 frame: check: reason`,
    /// with the notes if any: `PASS §25.9 Session (5 checks; note: …)`.
    pub fn text(&self) -> String {
        let head = format!("{} {}", self.section, self.title);
        let notes = if self.notes.is_empty() {
            String::new()
        } else {
            format!("; note: {}", self.notes.join("; note: "))
        };
        match self.result {
            Verdict::Pass => {
                let plural = if self.passed == 1 { "" } else { "s" };
                let skipped = match self.skipped.len() {
                    0 => String::new(),
                    n => format!(", {n} skipped"),
                };
                format!(
                    "PASS {head} ({} check{plural}{skipped}{notes})",
                    self.passed
                )
            }
            Verdict::Fail => {
                let more = match self.failures.len() {
                    0 | 1 => String::new(),
                    n => format!(
                        " (and {} more failing check{})",
                        n - 1,
                        if n == 2 { "" } else { "s" }
                    ),
                };
                let first = self.failures.first().map_or("", String::as_str);
                let notes = match notes.strip_prefix("; ") {
                    Some(n) => format!(" ({n})"),
                    None => notes,
                };
                format!("FAIL {head}: {first}{more}{notes}")
            }
            Verdict::Skip => {
                let why = self.skipped.first().map_or("", String::as_str);
                format!("SKIP {head}: {why}")
            }
        }
    }
}

/// The whole report as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct JsonReport {
    /// The peer tested.
    pub peer: String,
    /// The kit's role.
    pub role: &'static str,
    /// Whether no check failed.
    pub pass: bool,
    /// One entry per section that has checks.
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
                    mine.map(|r| (r.name, &r.outcome, &[][..])),
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
            role: self.role,
            pass: self.pass(),
            sections: self.lines(),
        }
    }
}

/// Prints `lines` one per line, or `json` as one object.
pub fn print(lines: &[SectionLine], json: Option<&impl Serialize>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match json {
        Some(report) => {
            let text = serde_json::to_string(report).unwrap_or_default();
            let _ = writeln!(out, "{text}");
        }
        None => {
            for line in lines {
                let _ = writeln!(out, "{}", line.text());
            }
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
        }
    }

    #[test]
    fn one_line_per_section_first_failure_first() {
        let report = Report {
            peer: "127.0.0.1:1".into(),
            role: "initiator",
            results: vec![
                result(Section::Handshake, "a", Outcome::Pass),
                result(Section::Frame, "b", Outcome::Fail("no BYE".into())),
                result(Section::Frame, "c", Outcome::Fail("late".into())),
                result(Section::Frame, "d", Outcome::Pass),
                result(Section::Chord, "e", Outcome::Skip("no Chord".into())),
                result(Section::Handshake, "f", Outcome::Skip("n/a".into())),
            ],
        };
        let lines: Vec<String> = report.lines().iter().map(SectionLine::text).collect();
        assert_eq!(
            lines,
            [
                "FAIL §2 frame: b: no BYE (and 1 more failing check)",
                "PASS §7 identity and handshake (1 check, 1 skipped)",
                "SKIP §20 Chord: e: no Chord",
            ]
        );
        assert!(!report.pass());
        let json = serde_json::to_value(report.json()).expect("JSON");
        assert_eq!(json["pass"], false);
        assert_eq!(json["sections"][0]["result"], "fail");
        assert_eq!(json["sections"][0]["failures"][1], "c: late");
    }
}
