//! The local web page of a running node (issue 22; SPEC.md §17.1): `weft ui`, or `--ui ADDR`
//! on `weft node`, `create`, `join` and `start` (the flags and the command: `cli::ui`).
//!
//! One page ([`server`]) with live updates by server-sent events (`events`), served by axum
//! on a thread of its own with its own tokio runtime, whatever driver runs the node. It talks
//! to the node only through the control socket ([`api`]), so `weft ui` beside a running node
//! and `--ui` inside it are the same code. Its assets are built into the binary
//! (`include_str!`) and it loads nothing from elsewhere.
//!
//! Security ([`auth`]): it binds 127.0.0.1 unless `--ui-allow-remote` is given (with a
//! warning); every API request carries the token from `<state>/ui-token` as a bearer header
//! (the page's script has it from the printed URL's fragment; no cookie, which every server
//! on this host would be sent); changes come from our own origin; a foreign `Host` is refused.

pub mod api;
pub mod auth;
mod events;
pub mod server;

pub use server::UiServer;
