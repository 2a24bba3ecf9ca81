//! The runner's and requester's rules that the in-process network tests (`sim/tests/run.rs`)
//! do not reach.

use super::protocol::cut;

#[test]
fn refusal_text_is_cut_on_a_character_boundary() {
    assert_eq!(cut("abc".into(), 5), "abc");
    assert_eq!(cut("abcdef".into(), 3), "abc");
    // "é" is two bytes: a cut inside it keeps the character out.
    assert_eq!(cut("aé".into(), 2), "a");
    assert_eq!(cut("ééé".into(), 4), "éé");
}
