//! Folder replication (issue 17); today its block function.

pub mod blocks;
