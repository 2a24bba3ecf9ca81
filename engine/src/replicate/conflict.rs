//! The conflict rule of SPEC.md §22 (folder replication): which of two concurrent versions of
//! a path wins, and where the loser's content is kept. Every node applies the same rule in any
//! order and ends with the same records.

use core::cmp::Ordering;

use weft_protocol::{Counter, FileKind, Version, VersionOrder};

use super::paths::COMPONENT_BYTES_MAX;
use super::types::Record;
use weft_protocol::PATH_BYTES_MAX;

/// Whether two records hold the same content (same kind, blocks, target and mode; or both
/// deletions): concurrent versions of the same content are no conflict, they merge.
pub(crate) fn same_content(a: &Record, b: &Record) -> bool {
    match (a.deleted, b.deleted) {
        (true, true) => true,
        (false, false) => {
            a.entry.kind == b.entry.kind
                && a.entry.mode == b.entry.mode
                && a.entry.target == b.entry.target
                && a.entry.size == b.entry.size
                && a.entry.blocks == b.entry.blocks
        }
        _ => false,
    }
}

/// The total order of concurrent versions: a present entry beats a deletion; else a
/// directory beats a file or symlink (a directory that lost would be renamed to its copy,
/// carrying off what is in it under paths no record has); else the larger `mtime_ms`; else the larger `modified_by`; else the larger counter of `modified_by` (the
/// same author's later change); else (never between two honest nodes) the larger version
/// vector, compared counter by counter; else (equal versions of other content) the
/// content: kind, size, blocks, target, mode. `Greater`: `a` wins.
///
/// The author's counter comes before the whole vectors: a winner takes a merged version
/// ([`winner_version`]), which changes its vector, and compared by vectors alone two edits
/// by one author in one millisecond could order one way at the node that settled them and
/// the other way where the winner arrived under its merged version, and neither side would
/// take the other's (seed 868 of 12 nodes on a line). The author's later edit wins, and
/// its counter stays: the loser's ancestors hold that author's counter below it.
pub(crate) fn order(a: &Record, b: &Record) -> Ordering {
    let hashes = |r: &Record| r.entry.blocks.iter().map(|x| x.hash).collect::<Vec<_>>();
    let own = |r: &Record| r.entry.version.get(r.entry.modified_by);
    let directory = |r: &Record| !r.deleted && r.entry.kind == FileKind::Directory;
    (!a.deleted)
        .cmp(&!b.deleted)
        .then(directory(a).cmp(&directory(b)))
        .then(a.entry.mtime_ms.cmp(&b.entry.mtime_ms))
        .then(a.entry.modified_by.cmp(&b.entry.modified_by))
        .then_with(|| own(a).cmp(&own(b)))
        .then_with(|| a.entry.version.counters.cmp(&b.entry.version.counters))
        .then(a.entry.kind.cmp(&b.entry.kind))
        .then(a.entry.size.cmp(&b.entry.size))
        .then_with(|| hashes(a).cmp(&hashes(b)))
        .then_with(|| a.entry.target.cmp(&b.entry.target))
        .then(a.entry.mode.cmp(&b.entry.mode))
}

/// The version a conflict's winner `winner` (a version) takes over the present loser `loser`:
/// merged with every version the loser descends from, never with the loser's own. That is
/// the loser's version with its author's counter one lower (the counter its author took for
/// the loser itself, which no earlier version holds). So the nodes that hold the loser find
/// the winner concurrent and settle the conflict themselves (their content is the loser's
/// only copy until then), while a node still holding an older version the loser grew from
/// finds the winner newer: that version is superseded, and its own pairing with the winner
/// may order the other way and would never settle. Falls back to `winner` if the merge
/// would descend from the loser (a loser whose author holds no counter in it).
pub(crate) fn winner_version(winner: &Version, loser: &Record) -> Version {
    let mut before = loser.entry.version.clone();
    let by = loser.entry.modified_by;
    if let Ok(i) = before.counters.binary_search_by_key(&by, |c| c.node) {
        before.counters[i].value = before.counters[i].value.saturating_sub(1);
        if before.counters[i].value == 0 {
            before.counters.remove(i);
        }
    }
    let v = winner.merged(&before);
    match v.compare(&loser.entry.version) {
        VersionOrder::Concurrent | VersionOrder::Older => v,
        VersionOrder::Newer | VersionOrder::Equal => winner.clone(),
    }
}

/// The version of the conflict copy of `loser` (a present entry that lost a conflict): the
/// loser's edit alone, `{modified_by: its counter}`, the edit the copy path names. Every
/// node that copies the loser makes the same record whatever version of the path it held
/// it under (a merge counts changes of the path, not of the copy), and every edit or
/// deletion of the copy descends from it. A loser whose author holds no counter keeps its
/// own version.
pub(crate) fn copy_version(loser: &Record) -> Version {
    let by = loser.entry.modified_by;
    match loser.entry.version.get(by) {
        0 => loser.entry.version.clone(),
        value => Version {
            counters: vec![Counter { node: by, value }],
        },
    }
}

/// Where the content of `loser` (a present entry that lost a conflict at `path`) is kept:
/// `NAME.conflict-<first 8 hex digits of modified_by>-<its counter of modified_by>`, the
/// extension kept after (`a/b.txt` -> `a/b.conflict-1a2b3c4d-3.txt`; a name whose only dot
/// leads it, `.bashrc`, has no extension). A name that would pass `COMPONENT_BYTES_MAX` (or
/// a path `PATH_BYTES_MAX`) loses the end of its stem, cut at a character boundary and
/// followed by `~` and the first 8 hex digits of the whole name's BLAKE3, and its extension
/// too if these, the tag and the extension alone do not fit.
pub(crate) fn conflict_copy_path(path: &str, loser: &Record) -> String {
    let by = loser.entry.modified_by;
    copy_path(path, by >> 32, loser.entry.version.get(by))
}

/// [`conflict_copy_path`] for the tag of `by_high` (the author's top 32 bits) and `counter`.
fn copy_path(path: &str, by_high: u64, counter: u64) -> String {
    let tag = format!(".conflict-{by_high:08x}-{counter}");
    let name_start = path.rfind('/').map_or(0, |i| i + 1);
    let (dir, name) = path.split_at(name_start);
    let (stem, mut ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    };
    let budget = COMPONENT_BYTES_MAX.min(PATH_BYTES_MAX.saturating_sub(dir.len()));
    if stem.len() + tag.len() + ext.len() <= budget {
        return format!("{dir}{stem}{tag}{ext}");
    }
    // Cut: `~` and 8 hex digits of the whole name's hash follow what is kept of the stem,
    // so two long names that share their start get two copies.
    let mark = format!("~{}", &blake3::hash(name.as_bytes()).to_hex()[..8]);
    if mark.len() + tag.len() > budget {
        // No room even for the mark and the tag beside the directory (a path near
        // `PATH_BYTES_MAX`): the copy goes to the folder's root, named by the whole path's
        // hash (a copy past the bound was never announced, nor could a host write it).
        let mark = format!("~{}", &blake3::hash(path.as_bytes()).to_hex()[..8]);
        let ext = if mark.len() + tag.len() + ext.len() <= COMPONENT_BYTES_MAX {
            ext
        } else {
            ""
        };
        return format!("{mark}{tag}{ext}");
    }
    if mark.len() + tag.len() + ext.len() >= budget {
        ext = "";
    }
    let mut stem_end = budget
        .saturating_sub(mark.len() + tag.len() + ext.len())
        .min(stem.len());
    while !stem.is_char_boundary(stem_end) {
        stem_end -= 1;
    }
    format!("{dir}{}{mark}{tag}{ext}", &stem[..stem_end])
}

/// Whether `candidate` is a conflict copy of `path` (named by [`conflict_copy_path`]).
pub(crate) fn is_conflict_copy_of(path: &str, candidate: &str) -> bool {
    copy_tag(candidate).is_some_and(|tag| copy_path(path, tag.by_high, tag.counter) == candidate)
}

/// The parts of a copy's name, as [`conflict_copy_path`] writes it: where its tag starts in
/// `candidate`, the author's top 32 bits and the counter the tag carries, and the extension
/// after it.
struct CopyTag<'a> {
    at: usize,
    by_high: u64,
    counter: u64,
    ext: &'a str,
}

fn copy_tag(candidate: &str) -> Option<CopyTag<'_>> {
    let name_start = candidate.rfind('/').map_or(0, |i| i + 1);
    let at = name_start + candidate[name_start..].rfind(".conflict-")?;
    let rest = &candidate[at + ".conflict-".len()..];
    let (hex, after) = rest.split_once('-')?;
    let digits = after.bytes().take_while(u8::is_ascii_digit).count();
    let ext = &after[digits..];
    if hex.len() != 8
        || !hex.bytes().all(|b| b.is_ascii_hexdigit())
        || digits == 0
        || !(ext.is_empty() || ext.starts_with('.'))
    {
        return None;
    }
    Some(CopyTag {
        at,
        by_high: u64::from_str_radix(hex, 16).ok()?,
        counter: after[..digits].parse().ok()?,
        ext,
    })
}

/// The path whose conflict copy `candidate` is (`a/b.conflict-1a2b3c4d-3.txt` → `a/b.txt`),
/// if its name has the form `conflict_copy_path` gives (a copy whose name was cut to fit
/// gives the cut name).
pub fn conflict_origin(candidate: &str) -> Option<String> {
    let tag = copy_tag(candidate)?;
    Some(format!("{}{}", &candidate[..tag.at], tag.ext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::{FileEntry, FileKind, Version};

    fn rec(path: &str, by: u64, mtime_ms: i64, deleted: bool) -> Record {
        Record {
            entry: FileEntry {
                path: path.into(),
                kind: FileKind::File,
                target: String::new(),
                mode: 6,
                size: 0,
                mtime_ms,
                modified_by: by,
                version: Version::default().bumped(by).bumped(by).bumped(by),
                sequence: 1,
                blocks: Vec::new(),
            },
            deleted,
        }
    }

    #[test]
    fn the_copy_name_keeps_the_extension_and_names_the_loser() {
        let loser = rec("a/b.txt", 0x1a2b_3c4d_5e6f_7081, 1, false);
        let copy = conflict_copy_path("a/b.txt", &loser);
        assert_eq!(copy, "a/b.conflict-1a2b3c4d-3.txt");
        assert!(is_conflict_copy_of("a/b.txt", &copy));
        assert!(!is_conflict_copy_of("a/b.txt", "a/b.txt"));
        assert_eq!(
            conflict_copy_path(".bashrc", &loser),
            ".bashrc.conflict-1a2b3c4d-3"
        );
        assert_eq!(
            conflict_copy_path("d.x/file", &loser),
            "d.x/file.conflict-1a2b3c4d-3"
        );
    }

    #[test]
    fn a_present_entry_beats_a_deletion_then_mtime_then_node() {
        assert_eq!(
            order(&rec("p", 1, 0, false), &rec("p", 2, 9, true)),
            Ordering::Greater
        );
        assert_eq!(
            order(&rec("p", 1, 5, false), &rec("p", 2, 4, false)),
            Ordering::Greater
        );
        assert_eq!(
            order(&rec("p", 1, 5, false), &rec("p", 2, 5, false)),
            Ordering::Less
        );
        // One author, one millisecond: its later edit wins, whatever else the vectors hold.
        let mut early = rec("p", 5, 5, false);
        early.entry.version = version_of(&[(3, 9), (5, 2)]);
        let mut late = rec("p", 5, 5, false);
        late.entry.version = version_of(&[(1, 1), (5, 3)]);
        assert_eq!(order(&late, &early), Ordering::Greater);
        assert_eq!(order(&early, &late), Ordering::Less);
    }

    fn version_of(counters: &[(u64, u64)]) -> Version {
        let mut v = Version::default();
        for &(node, value) in counters {
            for _ in 0..value {
                v = v.bumped(node);
            }
        }
        v
    }

    #[test]
    fn the_winner_takes_what_the_loser_grew_from_but_not_the_loser() {
        // B = {1:2, 2:1} by node 2; its ancestor A = {1:2}; winner W = {3:1}.
        let mut loser = rec("p", 2, 5, false);
        loser.entry.version = version_of(&[(1, 2), (2, 1)]);
        let w = version_of(&[(3, 1)]);
        let v = winner_version(&w, &loser);
        assert_eq!(v, version_of(&[(1, 2), (3, 1)]));
        assert_eq!(v.compare(&version_of(&[(1, 2)])), VersionOrder::Newer);
        assert_eq!(v.compare(&loser.entry.version), VersionOrder::Concurrent);
        // A loser whose author holds no counter in it: the winner keeps its own version.
        loser.entry.modified_by = 9;
        assert_eq!(winner_version(&w, &loser), w);
    }

    /// Counters of at most 6 of 4 nodes (1..=4), each 0..=3: versions that often meet.
    fn small(v: &[(u8, u8)]) -> Vec<(u64, u64)> {
        let mut m = std::collections::BTreeMap::new();
        for &(n, c) in v.iter().take(6) {
            m.insert(u64::from(n % 4) + 1, u64::from(c % 4));
        }
        m.into_iter().collect()
    }

    quickcheck::quickcheck! {
        /// For a loser made by `author` on top of `base`, and a concurrent winner without the
        /// loser's own counter: the version given descends from the winner and from every
        /// ancestor of the loser, and never from the loser.
        fn winner_version_holds_ancestors_never_the_loser(
            base: Vec<(u8, u8)>,
            author: u8,
            lower: Vec<u8>,
            winner_base: Vec<(u8, u8)>,
            winner_author: u8
        ) -> bool {
            let base_counters = small(&base);
            let author = u64::from(author % 4) + 1;
            let mut loser = rec("p", author, 5, false);
            loser.entry.version = version_of(&base_counters).bumped(author);
            let ancestor: Vec<(u64, u64)> = base_counters
                .iter()
                .zip(lower.iter().chain(std::iter::repeat(&0)))
                .map(|(&(n, c), &d)| (n, c.saturating_sub(u64::from(d % 3))))
                .collect();
            let ancestor = version_of(&ancestor);
            let winner = version_of(&small(&winner_base)).bumped(u64::from(winner_author % 4) + 1);
            if winner.compare(&loser.entry.version) != VersionOrder::Concurrent {
                return true;
            }
            let v = winner_version(&winner, &loser);
            if winner.get(author) >= loser.entry.version.get(author) {
                // Never between honest nodes (the winner would hold the counter the loser's
                // author took for the loser): the winner keeps its own version.
                return v == winner;
            }
            let descends =
                |x: &Version| matches!(v.compare(x), VersionOrder::Newer | VersionOrder::Equal);
            descends(&winner) && descends(&ancestor) && !descends(&loser.entry.version)
        }
    }

    quickcheck::quickcheck! {
        /// Two versions of one loser's content (its own, and any merge of it with other
        /// versions of the path) give one copy path and one copy version; the loser descends
        /// from it, and so does every later change of the copy (an edit or a deletion).
        fn a_copy_version_is_the_loser_edit_alone(
            base: Vec<(u8, u8)>,
            author: u8,
            other: Vec<(u8, u8)>,
            editor: u8
        ) -> bool {
            let author = u64::from(author % 4) + 1;
            let mut loser = rec("p", author, 5, false);
            loser.entry.version = version_of(&small(&base)).bumped(author);
            let mut merged = loser.clone();
            merged.entry.version = loser.entry.version.merged(&version_of(&small(&other)));
            if merged.entry.version.get(author) != loser.entry.version.get(author) {
                // A merge with a later change by the same author names another edit.
                return true;
            }
            let v = copy_version(&loser);
            let edit = v.bumped_past(u64::from(editor % 4) + 1, 9);
            let descends = |x: &Version, y: &Version| {
                matches!(x.compare(y), VersionOrder::Newer | VersionOrder::Equal)
            };
            v == copy_version(&merged)
                && conflict_copy_path("p", &loser) == conflict_copy_path("p", &merged)
                && v.counters.len() == 1
                && descends(&loser.entry.version, &v)
                && edit.compare(&v) == VersionOrder::Newer
        }
    }

    #[test]
    fn conflict_origin_undoes_conflict_copy_path() {
        for path in [
            "a/b.txt",
            "archive.tar.gz",
            ".bashrc",
            "Makefile",
            "d.x/file",
            "x",
        ] {
            let copy = conflict_copy_path(path, &rec(path, 0x1a2b_3c4d_5e6f_7081, 1, false));
            assert_eq!(conflict_origin(&copy).as_deref(), Some(path), "{copy}");
            assert!(is_conflict_copy_of(path, &copy));
        }
        for plain in [
            "a/b.txt",
            "x.conflict-zz-1",
            "x.conflict-1a2b3c4d-",
            "x.conflict-1a2b3c4d-3x",
        ] {
            assert_eq!(conflict_origin(plain), None, "{plain}");
        }
    }

    /// A name near the limits still gets a copy within them, told apart as a copy of it
    /// alone; the cut keeps whole characters and the extension where it fits.
    #[test]
    fn a_long_name_gets_a_copy_within_the_limits() {
        let r = |p: &str| rec(p, 0x1a2b_3c4d_5e6f_7081, 12, false);
        let long = format!("d/{}.txt", "é".repeat(120));
        let copy = conflict_copy_path(&long, &r(&long));
        assert_eq!(super::super::paths::check_path(&copy), Ok(()), "{copy}");
        assert!(copy.ends_with(".conflict-1a2b3c4d-3.txt"), "{copy}");
        let name_bytes = copy.len() - 2;
        assert!(name_bytes + 1 >= COMPONENT_BYTES_MAX, "{copy}");
        assert!(is_conflict_copy_of(&long, &copy));
        let other = format!("d/{}.txt", "é".repeat(119));
        assert!(!is_conflict_copy_of(&other, &copy));
        // An extension too long to keep beside the tag goes.
        let ext = format!("x.{}", "e".repeat(250));
        let copy = conflict_copy_path(&ext, &r(&ext));
        assert!(
            copy.starts_with("x~") && copy.ends_with(".conflict-1a2b3c4d-3"),
            "{copy}"
        );
        assert!(is_conflict_copy_of(&ext, &copy));
        // A path at its own limit: the name is cut to keep the path within PATH_BYTES_MAX.
        let deep = format!("{}/{}", "d".repeat(PATH_BYTES_MAX - 40), "file-name-here");
        let copy = conflict_copy_path(&deep, &r(&deep));
        assert!(copy.len() <= PATH_BYTES_MAX, "{}", copy.len());
        // Deeper still, with no room beside the directory even for the mark and the tag:
        // the copy goes to the root, a valid path, and is still known as the path's copy.
        let dirs = vec!["d".repeat(COMPONENT_BYTES_MAX); 15].join("/");
        let deepest = format!("{dirs}/{}/x.txt", "e".repeat(250));
        assert!(deepest.len() <= PATH_BYTES_MAX);
        assert_eq!(super::super::paths::check_path(&deepest), Ok(()));
        let copy = conflict_copy_path(&deepest, &r(&deepest));
        assert_eq!(super::super::paths::check_path(&copy), Ok(()), "{copy}");
        assert!(
            !copy.contains('/') && copy.ends_with(".conflict-1a2b3c4d-3.txt"),
            "{copy}"
        );
        assert!(is_conflict_copy_of(&deepest, &copy));
    }
}
