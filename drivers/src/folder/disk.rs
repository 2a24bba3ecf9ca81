//! The engine's storage steps carried out on a shared folder on a real disk.
