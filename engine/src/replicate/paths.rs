//! Path rules of folder replication (SPEC.md §22.3): what a peer's path may be, the one
//! Unicode form, case clashes, and `.weftignore`.
//!
//! Everything here is pure: strings in, verdicts out. Paths are the wire form: relative to
//! the folder root, `/`-separated, NFC.

use std::borrow::Cow;
use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use unicode_normalization::{is_nfc, UnicodeNormalization};
use weft_protocol::{PathRefusal, PATH_BYTES_MAX};

/// The reserved folder at a shared folder's root (temporary files, trash); no peer's path
/// may lie inside it.
pub const RESERVED_DIR: &str = ".weft";

/// The ignore file at a shared folder's root, in gitignore syntax.
pub const IGNORE_FILE: &str = ".weftignore";

/// The longest one component (file or directory name) may be, in bytes: `NAME_MAX` of
/// Linux, macOS and Windows file systems alike.
pub const COMPONENT_BYTES_MAX: usize = 255;

/// Whether `path` may name something in a shared folder: relative, `/`-separated, no empty,
/// `.` or `..` component, no NUL, `\` or control character, NFC, at most
/// `weft_protocol::PATH_BYTES_MAX` bytes and 255 per component, and not inside
/// [`RESERVED_DIR`].
///
/// `.weft` is refused in any case (`.WEFT`, `.Weft`): a case-insensitive disk maps those
/// onto the reserved folder. The checks run in this order, so a path with several faults
/// gets the first: length, characters, shape (relative, no empty component), dot
/// components, component length, reserved, normal form. A path refused only as
/// `NotNormalized` passes once [`normalize`]d, unless NFC made it longer than the limits.
pub fn check_path(path: &str) -> Result<(), PathRefusal> {
    if path.is_empty() {
        return Err(PathRefusal::NotRelative);
    }
    if path.len() > PATH_BYTES_MAX {
        return Err(PathRefusal::TooLong);
    }
    if path.chars().any(is_bad_char) {
        return Err(PathRefusal::BadCharacter);
    }
    // A leading `/` (absolute) and a trailing one both show up as an empty component.
    for component in path.split('/') {
        if component.is_empty() {
            return Err(PathRefusal::NotRelative);
        }
        if component == "." || component == ".." {
            return Err(PathRefusal::DotComponent);
        }
        if component.len() > COMPONENT_BYTES_MAX {
            return Err(PathRefusal::TooLong);
        }
    }
    if is_reserved(path) {
        return Err(PathRefusal::Reserved);
    }
    if !is_nfc(path) {
        return Err(PathRefusal::NotNormalized);
    }
    Ok(())
}

/// NUL, `\` (a separator on Windows), and the C0 controls and DEL.
fn is_bad_char(c: char) -> bool {
    c == '\\' || c.is_ascii_control()
}

/// Whether a component of `path` is [`RESERVED_DIR`] in any case: at the root, weft's own;
/// deeper, that of a shared folder nested inside this one (its temporary files, trash and
/// marker are no peer's to have, nor to write into).
pub fn is_reserved(path: &str) -> bool {
    // Cheap filter first: only a name starting with a dot can fold to `.weft` (no
    // non-ASCII character lowercases to `w`, `e`, `f` or `t`; the full key settles it).
    path.split('/')
        .any(|c| c.starts_with('.') && case_key(c) == RESERVED_DIR)
}

/// Whether a symlink at `path` may point at `target`: relative, and resolving (lexically,
/// from `path`'s directory) to a place inside the folder.
///
/// `..` is allowed while the walk stays inside (the folder root itself counts as inside);
/// empty and `.` components are skipped as the OS does. Refusals: a NUL or `\` (Windows
/// would read `..\..` as a way out) is `BadCharacter`, an empty target `BadEntry`, one over
/// `PATH_BYTES_MAX` bytes `TooLong`, an absolute one or one that leaves the folder
/// `SymlinkEscapes`. The target is stored and never followed by weft; this keeps a link
/// from pointing other programs outside the folder.
pub fn check_symlink_target(path: &str, target: &str) -> Result<(), PathRefusal> {
    if target.is_empty() {
        return Err(PathRefusal::BadEntry);
    }
    if target.len() > PATH_BYTES_MAX {
        return Err(PathRefusal::TooLong);
    }
    if target.contains(['\0', '\\']) {
        return Err(PathRefusal::BadCharacter);
    }
    if target.starts_with('/') {
        return Err(PathRefusal::SymlinkEscapes);
    }
    // Depth below the root of the walk so far: start in the link's directory.
    let mut depth: usize = 0;
    let directory = path.rsplit_once('/').map_or("", |(directory, _)| directory);
    for component in directory.split('/').chain(target.split('/')) {
        match component {
            "" | "." => {}
            ".." => depth = depth.checked_sub(1).ok_or(PathRefusal::SymlinkEscapes)?,
            _ => depth += 1,
        }
    }
    Ok(())
}

/// `path` in Unicode normalization form C (what the scanner reports).
pub fn normalize(path: &str) -> Cow<'_, str> {
    if is_nfc(path) {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(path.nfc().collect())
    }
}

/// The key two paths share when they differ only in case: full Unicode lowercase of the NFC
/// form (per character, as `char::to_lowercase`), brought back to NFC.
pub fn case_key(path: &str) -> String {
    let lower: String = normalize(path)
        .chars()
        .flat_map(char::to_lowercase)
        .collect();
    match normalize(&lower) {
        Cow::Borrowed(_) => lower,
        Cow::Owned(normal) => normal,
    }
}

/// `.weftignore` rules: gitignore syntax, relative to the folder root.
///
/// Matching follows git: a path is ignored when a directory above it is (walking from the
/// root down), and a negation (`!pattern`) cannot bring back a path whose directory is
/// ignored; otherwise the last rule that matches the path itself decides. The ignore file
/// and the reserved folder are never ignored by rules (the scanner decides about those).
///
/// A rule prefixed `(?d)` (Syncthing's spelling) ignores as it would without the prefix and
/// also makes what it ignores deletable: a host may remove it when it alone keeps a
/// directory a peer deleted from being removed ([`IgnoreRules::is_deletable`]).
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    /// The compiled rules; `None` when there are none.
    matcher: Option<Gitignore>,
    /// The `(?d)` rules alone, compiled (without the prefix); `None` when there are none
    /// (boxed: most rules have none, and the rules travel in commands).
    deletable: Option<Box<Gitignore>>,
    /// The lines they were compiled from (in NFC): two sets of rules are equal when these are.
    lines: Vec<String>,
}

/// The prefix of a rule whose ignored paths may be removed with a directory a peer deleted.
pub const DELETABLE_PREFIX: &str = "(?d)";

impl PartialEq for IgnoreRules {
    fn eq(&self, other: &IgnoreRules) -> bool {
        self.lines == other.lines
    }
}

impl Eq for IgnoreRules {}

impl IgnoreRules {
    /// The rules in `text` (the ignore file's contents); lines that do not parse are
    /// returned beside the rules that do, as `line N: why` (N from 1).
    ///
    /// Each line is brought to NFC first, as paths are. The lines are compiled in memory
    /// (`GitignoreBuilder::add_line`, never `add`, no global git config). The one OS query
    /// on the way: the compiled matcher's scratch pool is sized by
    /// `std::thread::available_parallelism` (regex-automata, read once per process); it
    /// changes no verdict.
    pub fn parse(text: &str) -> (IgnoreRules, Vec<String>) {
        let mut builder = GitignoreBuilder::new("");
        let mut deletable = GitignoreBuilder::new("");
        let mut errors = Vec::new();
        let mut lines = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = normalize(line).into_owned();
            let (rule, may_delete) = match line.strip_prefix(DELETABLE_PREFIX) {
                Some(rule) => (rule, true),
                None => (line.as_str(), false),
            };
            match builder.add_line(None, rule) {
                Ok(_) => {
                    // The same line parsed just now: it parses again. An ignoring rule
                    // without the prefix takes deletability back from what it matches, so
                    // the last rule matching a path decides here as it does for ignoring.
                    let trimmed = rule.trim_start();
                    if may_delete {
                        let _ = deletable.add_line(None, rule);
                    } else if !trimmed.is_empty()
                        && !trimmed.starts_with('#')
                        && !trimmed.starts_with('!')
                    {
                        let _ = deletable.add_line(None, &format!("!{rule}"));
                    }
                    lines.push(line);
                }
                Err(error) => errors.push(format!("line {}: {error}", index + 1)),
            }
        }
        match (builder.build(), deletable.build()) {
            (Ok(matcher), _) if matcher.is_empty() => (IgnoreRules::default(), errors),
            (Ok(matcher), Ok(deletable)) => (
                IgnoreRules {
                    matcher: Some(matcher),
                    deletable: (!deletable.is_empty()).then(|| Box::new(deletable)),
                    lines,
                },
                errors,
            ),
            (Err(error), _) | (_, Err(error)) => {
                // Only the glob set as a whole failing (size limits): no rule applies.
                errors.push(format!("rules: {error}"));
                (IgnoreRules::default(), errors)
            }
        }
    }

    /// The lines the rules were compiled from (NFC, those that parsed): `parse` of them
    /// joined by newlines gives equal rules.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Whether there are no rules (nothing is ignored).
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// Whether `path` (a directory if `is_dir`) or one of its parents is ignored.
    pub fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        self.matcher
            .as_ref()
            .is_some_and(|m| ignored_by(m, path, is_dir))
    }

    /// Whether `path` (a directory if `is_dir`) is ignored and a `(?d)` rule ignores it or
    /// one of its parents: a host may remove it (and all under it) when it alone keeps a
    /// directory a peer deleted from being removed.
    pub fn is_deletable(&self, path: &str, is_dir: bool) -> bool {
        self.deletable
            .as_ref()
            .is_some_and(|d| self.is_ignored(path, is_dir) && ignored_by(d, path, is_dir))
    }
}

/// Whether `matcher` ignores `path` (a directory if `is_dir`) or one of its parents (tested
/// from the root down).
fn ignored_by(matcher: &Gitignore, path: &str, is_dir: bool) -> bool {
    // The matcher wants a path under its root: no leading `/` (it would panic on one).
    let path = path.trim_start_matches('/');
    if path.is_empty() || path == IGNORE_FILE || is_reserved(path) {
        return false;
    }
    let parents = path.match_indices('/').map(|(end, _)| &path[..end]);
    for parent in parents.filter(|parent| !parent.is_empty()) {
        if matcher.matched(Path::new(parent), true).is_ignore() {
            return true;
        }
    }
    matcher.matched(Path::new(path), is_dir).is_ignore()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{quickcheck, TestResult};

    #[test]
    fn hostile_paths_are_refused_with_their_reason() {
        let long_component = "a".repeat(COMPONENT_BYTES_MAX + 1);
        let long_path = format!("{}b", "a/".repeat(PATH_BYTES_MAX / 2)); // one byte over
        let cases: &[(&str, PathRefusal)] = &[
            ("", PathRefusal::NotRelative),
            ("/etc/passwd", PathRefusal::NotRelative),
            ("/", PathRefusal::NotRelative),
            ("a//b", PathRefusal::NotRelative),
            ("a/", PathRefusal::NotRelative),
            ("..", PathRefusal::DotComponent),
            ("../x", PathRefusal::DotComponent),
            ("a/../../x", PathRefusal::DotComponent),
            ("a/./b", PathRefusal::DotComponent),
            (".", PathRefusal::DotComponent),
            ("a/..", PathRefusal::DotComponent),
            ("a\0b", PathRefusal::BadCharacter),
            ("..\\..\\x", PathRefusal::BadCharacter),
            ("a\\b", PathRefusal::BadCharacter),
            ("a\nb", PathRefusal::BadCharacter),
            ("a\rb", PathRefusal::BadCharacter),
            ("tab\there", PathRefusal::BadCharacter),
            ("esc\u{1b}[31m", PathRefusal::BadCharacter),
            ("del\u{7f}", PathRefusal::BadCharacter),
            ("e\u{301}", PathRefusal::NotNormalized),
            ("dir/cafe\u{301}.txt", PathRefusal::NotNormalized),
            ("\u{212b}", PathRefusal::NotNormalized), // ANGSTROM SIGN: NFC is U+00C5
            (&long_component, PathRefusal::TooLong),
            (&long_path, PathRefusal::TooLong),
            (".weft", PathRefusal::Reserved),
            (".weft/tmp/1", PathRefusal::Reserved),
            (".WEFT/x", PathRefusal::Reserved),
            (".Weft", PathRefusal::Reserved),
            ("inner/.weft/folder", PathRefusal::Reserved),
            ("a/b/.WEFT", PathRefusal::Reserved),
        ];
        for (path, reason) in cases {
            assert_eq!(check_path(path), Err(*reason), "{path:?}");
        }
    }

    #[test]
    fn ordinary_paths_are_accepted() {
        let longest_component = "a".repeat(COMPONENT_BYTES_MAX);
        let longest_path = format!("{}bb", "a/".repeat(PATH_BYTES_MAX / 2 - 1));
        assert_eq!(longest_path.len(), PATH_BYTES_MAX);
        for path in [
            "a",
            "a/b/c.txt",
            ".weftignore",
            ".weft2",
            ".wef",
            "a/.weft2",
            "a/x.weft/b",
            "...",
            "..a",
            "a..",
            ".hidden",
            "café/naïve.txt",
            "日本語/ファイル",
            "emoji 🎉",
            &longest_component,
            &longest_path,
        ] {
            assert_eq!(check_path(path), Ok(()), "{path:?}");
        }
    }

    #[test]
    fn nfd_is_refused_and_normalize_fixes_it() {
        let nfd = "Cafe\u{301}/A\u{30a}ngstro\u{308}m";
        assert_eq!(check_path(nfd), Err(PathRefusal::NotNormalized));
        let fixed = normalize(nfd);
        assert_eq!(fixed, "Café/Ångström");
        assert!(matches!(fixed, Cow::Owned(_)));
        assert_eq!(check_path(&fixed), Ok(()));
        assert!(matches!(normalize("Café"), Cow::Borrowed(_)));
    }

    #[test]
    fn case_key_joins_paths_differing_only_in_case() {
        assert_eq!(case_key("Foo/Bar"), case_key("foo/BAR"));
        assert_eq!(case_key("ÄRGER/Σ"), case_key("ärger/σ"));
        // NFD and NFC forms share the key too.
        assert_eq!(case_key("E\u{301}T\u{c9}"), case_key("été"));
        assert_ne!(case_key("foo/bar"), case_key("foo/baz"));
        assert_eq!(case_key(".WEFT"), RESERVED_DIR);
    }

    #[test]
    fn symlink_targets_inside_the_folder_pass() {
        for (path, target) in [
            ("link", "file"),
            ("link", "a/b/c"),
            ("link", "."),
            ("link", "./a"),
            ("a/link", ".."),
            ("a/link", "../b"),
            ("a/b/link", "../../c"),
            ("a/link", "x/../../y"),
            ("a/link", "a//b/"),
        ] {
            assert_eq!(
                check_symlink_target(path, target),
                Ok(()),
                "{path} -> {target}"
            );
        }
    }

    #[test]
    fn hostile_symlink_targets_are_refused() {
        let cases: &[(&str, &str, PathRefusal)] = &[
            ("link", "/etc/passwd", PathRefusal::SymlinkEscapes),
            ("link", "..", PathRefusal::SymlinkEscapes),
            ("link", "../x", PathRefusal::SymlinkEscapes),
            ("a/link", "../..", PathRefusal::SymlinkEscapes),
            ("a/link", "b/../../../x", PathRefusal::SymlinkEscapes),
            // Down and up again cannot hide a step above the root.
            ("link", "../a/../a", PathRefusal::SymlinkEscapes),
            ("link", "", PathRefusal::BadEntry),
            ("link", "a\0b", PathRefusal::BadCharacter),
            ("link", "..\\..\\x", PathRefusal::BadCharacter),
        ];
        for (path, target, reason) in cases {
            assert_eq!(
                check_symlink_target(path, target),
                Err(*reason),
                "{path} -> {target}"
            );
        }
        let long = "a/".repeat(PATH_BYTES_MAX / 2 + 1);
        assert_eq!(
            check_symlink_target("link", &long),
            Err(PathRefusal::TooLong)
        );
    }

    fn rules(text: &str) -> IgnoreRules {
        let (rules, errors) = IgnoreRules::parse(text);
        assert_eq!(errors, Vec::<String>::new());
        rules
    }

    #[test]
    fn deletable_rules_ignore_and_make_deletable() {
        let rules = rules(
            "(?d)*.pyc\n(?d)__pycache__/\n*.log\n(?d)cache/\n!cache/keep\n(?d)*.tmp\nkeep.tmp\n",
        );
        let cases: &[(&str, bool, bool, bool)] = &[
            // (path, is_dir, ignored, deletable)
            ("a.pyc", false, true, true),
            ("pkg/__pycache__", true, true, true),
            ("pkg/__pycache__/m.cpython.pyc", false, true, true),
            ("pkg/__pycache__/notes.txt", false, true, true),
            ("run.log", false, true, false),
            ("pkg/m.py", false, false, false),
            ("cache/keep", false, true, true),
            (".weftignore", false, false, false),
            // The last rule matching decides: `keep.tmp` is ignored, not deletable.
            ("a.tmp", false, true, true),
            ("keep.tmp", false, true, false),
            (".weft/tmp/0000000000000001", false, false, false),
        ];
        for &(path, is_dir, ignored, deletable) in cases {
            assert_eq!(rules.is_ignored(path, is_dir), ignored, "{path}");
            assert_eq!(rules.is_deletable(path, is_dir), deletable, "{path}");
        }
        // The prefix is part of the line: rules with and without it differ, and the lines
        // parse again to equal rules.
        assert_ne!(
            rules,
            self::rules("*.pyc\n__pycache__/\n*.log\ncache/\n!cache/keep\n*.tmp\nkeep.tmp\n")
        );
        assert_eq!(IgnoreRules::parse(&rules.lines().join("\n")).0, rules);
    }

    #[test]
    fn ignore_rules_follow_gitignore() {
        let rules =
            rules("# comment\n\n*.tmp\nbuild/\n!keep.tmp\n/root-only\n**/deep\ndocs/*.pdf\r\n");
        let cases: &[(&str, bool, bool)] = &[
            // (path, is_dir, ignored)
            ("a.tmp", false, true),
            ("x/y/a.tmp", false, true),
            ("a.tmpx", false, false),
            ("keep.tmp", false, false),
            ("x/keep.tmp", false, false),
            ("build", true, true),
            ("build", false, false), // `build/` matches directories only
            ("build/out.o", false, true),
            ("src/build/out.o", false, true),
            ("build/keep.tmp", false, true), // no re-including under an ignored directory
            ("root-only", false, true),
            ("root-only/inner", false, true),
            ("x/root-only", false, false),
            ("deep", false, true),
            ("a/b/deep", true, true),
            ("a/b/deep/c", false, true),
            ("deeper", false, false),
            ("docs/a.pdf", false, true),
            ("docs/sub/a.pdf", false, false),
            ("readme.md", false, false),
            ("/a.tmp", false, true),
            ("//a.tmp", false, true),
            ("", true, false),
        ];
        for (path, is_dir, ignored) in cases {
            assert_eq!(
                rules.is_ignored(path, *is_dir),
                *ignored,
                "{path:?} dir={is_dir}"
            );
        }
    }

    #[test]
    fn ignore_rules_never_ignore_the_ignore_file_or_the_reserved_folder() {
        let rules = rules("*\n.*\n");
        assert!(rules.is_ignored("anything", false));
        assert!(rules.is_ignored("a/.weftignore", false));
        assert!(!rules.is_ignored(IGNORE_FILE, false));
        assert!(!rules.is_ignored(RESERVED_DIR, true));
        assert!(!rules.is_ignored(".weft/tmp/1", false));
    }

    #[test]
    fn ignore_rules_are_matched_in_nfc() {
        let rules = rules("cafe\u{301}.txt\n");
        assert!(rules.is_ignored("café.txt", false));
    }

    #[test]
    fn bad_ignore_lines_are_reported_and_the_rest_apply() {
        let (rules, errors) = IgnoreRules::parse("*.tmp\na{b\n*.log\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("line 2: "), "{errors:?}");
        assert!(rules.is_ignored("x.tmp", false));
        assert!(rules.is_ignored("x.log", false));
        assert!(!rules.is_ignored("ab", false));
    }

    #[test]
    fn no_rules_ignore_nothing() {
        for text in ["", "# only a comment\n\n", "!negation-only"] {
            let (rules, errors) = IgnoreRules::parse(text);
            assert!(errors.is_empty());
            assert!(!rules.is_ignored("a", false));
            assert!(!rules.is_ignored("a/b", true));
        }
        assert!(!IgnoreRules::default().is_ignored("a", false));
    }

    /// Fragments that build paths near the edges: separators, dots, case, combining marks,
    /// precomposed letters, the reserved name, singletons that NFC maps elsewhere.
    /// (Bad characters are left to the table: they would refuse nearly every assembly.)
    const FRAGMENTS: &[&str] = &[
        "/", ".", "..", "a", "B", "e\u{301}", "é", "\u{212b}", "\u{30a}", "Σ", ".weft", ".WEFT",
        "\u{958}", "\u{37e}", "x", " ", "ß", "İ",
    ];

    /// Fragments of symlink targets: steps up and down, empty and `.` components.
    const TARGET_FRAGMENTS: &[&str] = &["..", "../", "/", ".", "./", "a", "b/"];

    fn assemble_from(fragments: &[&str], picks: &[u8]) -> String {
        picks
            .iter()
            .map(|&pick| fragments[usize::from(pick) % fragments.len()])
            .collect()
    }

    fn assemble(picks: &[u8]) -> String {
        assemble_from(FRAGMENTS, picks)
    }

    quickcheck! {
        /// What `case_clash_on_way` relies on: a directory's case key is the path's key up
        /// to the same `/` (the same number of `/` in both), for any string and for paths
        /// built of case- and normalization-sensitive fragments.
        fn a_prefix_case_key_is_the_key_prefix(any: String, picks: Vec<u8>) -> bool {
            [any, assemble(&picks)].iter().all(|path| {
                let key = case_key(path);
                let cuts = |s: &str| -> Vec<usize> {
                    s.match_indices('/').map(|(i, _)| i).chain([s.len()]).collect()
                };
                let (p, k) = (cuts(path), cuts(&key));
                p.len() == k.len()
                    && p.iter().zip(&k).all(|(&p, &k)| case_key(&path[..p]) == key[..k])
            })
        }

        fn nothing_panics_on_any_string(path: String, other: String, text: String) -> bool {
            let _ = check_path(&path);
            let _ = check_symlink_target(&path, &other);
            let _ = case_key(&path);
            let (rules, _) = IgnoreRules::parse(&text);
            let _ = rules.is_ignored(&path, false);
            let _ = rules.is_ignored(&other, true);
            normalize(&path) == path.nfc().collect::<String>()
        }

        fn normalize_makes_an_otherwise_good_path_pass(picks: Vec<u8>) -> TestResult {
            let path = assemble(&picks);
            match check_path(&path) {
                Ok(()) => TestResult::from_bool(normalize(&path) == path),
                Err(PathRefusal::NotNormalized) => {
                    let normal = normalize(&path);
                    let fits = normal.len() <= PATH_BYTES_MAX
                        && normal.split('/').all(|c| c.len() <= COMPONENT_BYTES_MAX);
                    if fits {
                        TestResult::from_bool(check_path(&normal) == Ok(()))
                    } else {
                        TestResult::from_bool(check_path(&normal) == Err(PathRefusal::TooLong))
                    }
                }
                Err(_) => TestResult::discard(),
            }
        }

        fn any_string_passes_once_normalized_if_it_passes_otherwise(path: String) -> TestResult {
            match check_path(&path) {
                Ok(()) => TestResult::from_bool(normalize(&path) == path),
                Err(PathRefusal::NotNormalized) => {
                    let normal = normalize(&path);
                    TestResult::from_bool(matches!(
                        check_path(&normal),
                        Ok(()) | Err(PathRefusal::TooLong)
                    ))
                }
                Err(_) => TestResult::discard(),
            }
        }

        fn case_key_ignores_ascii_case(picks: Vec<u8>) -> bool {
            let path = assemble(&picks);
            case_key(&path) == case_key(&path.to_ascii_uppercase())
                && case_key(&path) == case_key(&path.to_ascii_lowercase())
        }

        fn accepted_symlink_targets_never_climb_above_the_root(picks: Vec<u8>, depth: u8) -> bool {
            let directory = "d/".repeat(usize::from(depth % 4));
            let path = format!("{directory}link");
            let target = assemble_from(TARGET_FRAGMENTS, &picks);
            match check_symlink_target(&path, &target) {
                Ok(()) => {
                    // Replay the walk: the depth never goes below zero.
                    let mut level = i64::from(depth % 4);
                    target.split('/').all(|c| {
                        match c {
                            "" | "." => {}
                            ".." => level -= 1,
                            _ => level += 1,
                        }
                        level >= 0
                    }) && !target.starts_with('/')
                }
                Err(_) => true,
            }
        }
    }
}
