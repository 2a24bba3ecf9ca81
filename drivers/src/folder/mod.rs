//! A shared folder on a real disk: the drivers' side of folder replication (SPEC.md §22).
//!
//! ```text
//! DIR/                      the shared folder
//! DIR/.weft/                reserved (engine/src/replicate/paths.rs RESERVED_DIR): no peer
//!                           path may lie inside it, and the scanner never reports it
//! DIR/.weft/folder          the marker: the folder id in hex, one line. A folder whose root
//!                           or marker is missing is stopped with an error, never taken as
//!                           "everything was deleted"
//! DIR/.weft/tmp/            temporary files being fetched (`<16 hex digits of the temp id>`)
//! DIR/.weft/trash/          what a remote change replaced or deleted, kept for a while
//! ```
//!
//! [`disk`] carries out the engine's storage steps on the folder; [`scan`] finds local
//! changes, skipping what the folder's `.weftignore` ([`ignore_file`]) ignores; [`cache`] is what both share: what the scanner last saw of each path, so that
//! unchanged files are never hashed again and the engine's own writes are not reported back
//! as local changes.

pub mod apart;
pub mod cache;
pub mod disk;
pub mod ignore_file;
#[cfg(test)]
mod mount_ns;
pub(crate) mod mounts;
pub mod run;
pub mod scan;

/// The reserved folder's name (the engine's `RESERVED_DIR`).
pub use weft_engine::replicate::paths::RESERVED_DIR;

/// The marker file, inside [`RESERVED_DIR`].
pub const MARKER_FILE: &str = "folder";

/// The marker's name while `weft leave --delete` removes the folder, inside
/// [`RESERVED_DIR`]: set aside so, the folder is no node's (it stops, SPEC.md §22.10), and a
/// leave run again after a kill still knows it.
pub const LEAVING_MARKER_FILE: &str = "folder.leaving";

/// The temporary files' folder, inside [`RESERVED_DIR`].
pub const TEMP_DIR: &str = "tmp";

/// The trash folder, inside [`RESERVED_DIR`].
pub const TRASH_DIR: &str = "trash";
