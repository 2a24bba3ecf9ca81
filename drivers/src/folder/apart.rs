//! A shared folder and weft's own folders are kept apart (SPEC.md §22.10): a shared folder
//! that holds a node's state folder would send its secret key and store to every peer, and
//! its `.weft` could be weft's home itself (`weft create --dir ~`: the temporary files'
//! folder would be network `tmp`'s state folder, and `weft leave` would remove every
//! network's); a state folder that holds the shared folder would take the user's files with
//! it when the network is left.

use std::path::{Component, Path, PathBuf};

/// Refuses a shared folder `dir` that holds one of `own` (weft's folders: a state folder,
/// the home of every network's) or lies inside one, by their real paths (symlinks
/// resolved as far as the paths exist).
pub fn keep_apart(dir: &Path, own: &[impl AsRef<Path>]) -> Result<(), String> {
    let shared = real_path(dir);
    for weft in own {
        let weft = weft.as_ref();
        let weft_real = real_path(weft);
        if weft_real.starts_with(&shared) || shared.starts_with(&weft_real) {
            return Err(format!(
                "{} and weft's own folder {} would be inside one another (weft would share its \
                 keys, or take your files with its state); share another folder, or keep the \
                 state elsewhere (--state, WEFT_HOME)",
                dir.display(),
                weft.display()
            ));
        }
    }
    Ok(())
}

/// `path` made absolute, its longest existing start resolved (`canonicalize`) and the rest
/// appended with `.` and `..` taken lexically.
pub(crate) fn real_path(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut rest = Vec::new();
    let mut at = absolute.as_path();
    let mut real = loop {
        if let Ok(real) = at.canonicalize() {
            break real;
        }
        match (at.parent(), at.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                at = parent;
            }
            _ => break PathBuf::new(),
        }
    };
    for part in rest.into_iter().rev() {
        match part {
            Component::ParentDir => {
                real.pop();
            }
            Component::CurDir => {}
            other => real.push(other),
        }
    }
    real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_inside_one_another_are_refused_by_their_real_paths() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().join("home");
        let weft_home = home.join(".weft");
        let state = weft_home.join("net");
        std::fs::create_dir_all(&state).expect("mkdir");
        let own = [state.as_path(), weft_home.as_path()];
        // The user's home holds weft's.
        assert!(keep_apart(&home, &own).is_err());
        // Inside the state folder, or weft's home, existing or not.
        assert!(keep_apart(&state.join("files"), &own).is_err());
        assert!(keep_apart(&weft_home.join("other"), &own).is_err());
        assert!(keep_apart(&weft_home, &own).is_err());
        // Beside them: fine, existing or not, spelled with `..` or not.
        assert!(keep_apart(&home.join("shared"), &own).is_ok());
        assert!(keep_apart(&home.join("new/../shared2"), &own).is_ok());
        assert!(keep_apart(&home.join(".weftish"), &own).is_ok());
        // `..` that leads back into the state folder.
        assert!(keep_apart(&home.join("x/../.weft/net/y"), &own).is_err());
        // Through a symlink to the user's home.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&home, &link).expect("symlink");
        assert!(keep_apart(&link, &own).is_err());
        assert!(keep_apart(&link.join("shared"), &own).is_ok());
    }
}
