//! The test vectors of `protocol/vectors.json` (SPEC.md §18), built into the kit.

use serde::Deserialize;

/// The file, as committed.
const VECTORS_JSON: &str = include_str!("../../../protocol/vectors.json");

/// A valid frame of the vectors.
#[derive(Debug, Clone, Deserialize)]
pub struct Valid {
    /// Its name, e.g. `ping`.
    pub name: String,
    /// Its command code.
    pub code: u16,
    /// The whole frame, hex.
    pub frame_hex: String,
}

/// A byte string every receiver must refuse.
#[derive(Debug, Clone, Deserialize)]
pub struct Invalid {
    /// Its name, e.g. `frame_too_large`.
    pub name: String,
    /// The error it must raise (SPEC.md §2.2).
    pub error: String,
    /// The bytes, hex.
    pub frame_hex: String,
}

#[derive(Deserialize)]
struct File {
    vectors: Vec<Valid>,
    invalid: Vec<Invalid>,
}

/// The valid and invalid vectors; empty if the built-in file does not parse (a test checks
/// that it does).
pub fn load() -> (Vec<Valid>, Vec<Invalid>) {
    match serde_json::from_str::<File>(VECTORS_JSON) {
        Ok(f) => (f.vectors, f.invalid),
        Err(_) => (Vec::new(), Vec::new()),
    }
}

/// The bytes of a hex string (an odd or bad digit ends it).
pub fn unhex(hex: &str) -> Vec<u8> {
    hex.as_bytes()
        .chunks(2)
        .map_while(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

impl Valid {
    /// The frame's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        unhex(&self.frame_hex)
    }
}

impl Invalid {
    /// The bytes.
    pub fn bytes(&self) -> Vec<u8> {
        unhex(&self.frame_hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_vectors_parse() {
        let (valid, invalid) = load();
        assert!(valid.len() >= 88 && invalid.len() >= 67);
        assert_eq!(unhex("00ff10"), [0, 255, 16]);
    }
}
