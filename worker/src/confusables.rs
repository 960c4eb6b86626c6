//! Names that look like other names (Unicode TR39): the confusable
//! skeleton of a name, and whether one word of it mixes scripts.
//!
//! `Ρаypal` (Greek Rho, Cyrillic a) and `Paypal` have the same skeleton, so
//! a name whose skeleton is that of a moderator or owner present in the room
//! is refused, and a word mixing scripts (Latin and Cyrillic, say) is
//! refused outright: no honest name needs it. Scripts that are written
//! together (Han with Hiragana and Katakana, for example) count as one, and
//! digits and punctuation belong to every script.

use unicode_security::{MixedScript, skeleton};

/// The name's TR39 skeleton, ignoring case and surrounding space: two names
/// with the same skeleton can be told apart only by their code points.
pub fn name_skeleton(name: &str) -> String {
    // Lower case first and again after: the skeleton maps some characters
    // to upper-case prototypes (e.g. Cyrillic `Ӏ` to `l`, but `ǀ` to `I`).
    let lower = name.trim().to_lowercase();
    skeleton(&lower).flat_map(char::to_lowercase).collect()
}

/// Whether two names look alike: the same skeleton.
#[cfg(test)]
pub fn look_alike(a: &str, b: &str) -> bool {
    name_skeleton(a) == name_skeleton(b)
}

/// The first word (split at white space) that mixes scripts, if any.
pub fn mixed_script_word(name: &str) -> Option<&str> {
    name.split_whitespace().find(|w| !w.is_single_script())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homoglyphs_share_a_skeleton() {
        // Cyrillic а and о, Greek Ο, digit 0 for o, rn for m.
        assert!(look_alike("\u{0430}dmin", "admin"));
        assert!(look_alike("M\u{043E}d", "mod"));
        assert!(look_alike("\u{039F}wner", "owner"));
        assert!(look_alike(" MOD ", "mod"));
        assert!(look_alike("rnod", "mod"));
        assert!(look_alike("paypa1", "paypal"));
        assert!(!look_alike("alice", "bob"));
        assert!(!look_alike("mod2", "mod"));
    }

    #[test]
    fn mixed_scripts_in_one_word() {
        assert_eq!(mixed_script_word("p\u{0430}ypal"), Some("p\u{0430}ypal"));
        assert_eq!(
            mixed_script_word("ok \u{03B1}lpha"),
            Some("\u{03B1}lpha"),
            "Greek alpha with Latin"
        );
        // One script per word, or scripts written together: fine.
        for ok in [
            "Zoë 山田",
            "Иван Petrov",
            "ひらがな漢字カタカナ",
            "bob_42",
            "Ann-Marie O'Neil",
            "Δημήτρης",
        ] {
            assert_eq!(mixed_script_word(ok), None, "{ok}");
        }
    }
}
