//! Akeneo codes (asset, option, family) must match `^[a-zA-Z0-9_]+$` and be at most 255
//! characters. DAM identifiers rarely do (`0A3C2A6E-4C32-4492-BC0DA02`, file names with dots and
//! spaces), so every code is sanitised.
//!
//! The rules, chosen so that the result is **stable** (same input, same code, forever) and
//! **collision-free** (two different inputs never share a code):
//! 1. An input that is already a valid code, and does not end like rule 2's suffix, is kept as is.
//! 2. Any other input has each disallowed character replaced by `_`, is cut so the total stays
//!    within 255 characters, and gets `_` + the first 12 hex digits of the SHA-256 of the
//!    **original** input appended. Two inputs that sanitise alike differ by that suffix.
//!
//! An already-valid input that happens to end with `_` + 12 lower-case hex digits goes through
//! rule 2 too, so that no kept input can equal a suffixed one.

use sha2::{Digest, Sha256};

/// Longest code Akeneo accepts.
pub const MAX_CODE_LEN: usize = 255;
/// Hex digits of the disambiguating suffix.
const SUFFIX_HEX: usize = 12;
// Whole bytes of the digest are written as hex.
const _: () = assert!(SUFFIX_HEX % 2 == 0);

/// True when `s` is a code Akeneo accepts as is.
pub fn is_valid_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CODE_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn looks_suffixed(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > SUFFIX_HEX
        && b[b.len() - SUFFIX_HEX - 1] == b'_'
        && b[b.len() - SUFFIX_HEX..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Turns any string into a valid, stable, collision-free Akeneo code (see the module docs).
pub fn sanitize_code(input: &str) -> String {
    if is_valid_code(input) && !looks_suffixed(input) {
        return input.to_owned();
    }
    let digest = Sha256::digest(input.as_bytes());
    let suffix = crate::hash::lower_hex(&digest[..SUFFIX_HEX / 2]);
    let keep = MAX_CODE_LEN - SUFFIX_HEX - 1;
    let mut out = String::with_capacity(input.len().min(keep) + SUFFIX_HEX + 1);
    for c in input.chars() {
        if out.len() >= keep {
            break;
        }
        out.push(if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        });
    }
    out.push('_');
    out.push_str(&suffix);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_suffix_is_the_start_of_the_inputs_sha256_in_lowercase_hex() {
        // Codes already written to the PIM were made this way: they must not change.
        for input in ["0A3C2A6E-4C32-4492-BC0DA02", "a b", "é"] {
            let full = hex::encode(Sha256::digest(input.as_bytes()));
            let code = sanitize_code(input);
            assert!(
                code.ends_with(&format!("_{}", &full[..SUFFIX_HEX])),
                "{code}"
            );
        }
    }

    #[test]
    fn valid_codes_are_kept() {
        assert_eq!(sanitize_code("sku_54628_picture1"), "sku_54628_picture1");
    }

    #[test]
    fn dam_uid_from_the_akeneo_guide_is_sanitised() {
        let c = sanitize_code("0A3C2A6E-4C32-4492-BC0DA02");
        assert!(c.starts_with("0A3C2A6E_4C32_4492_BC0DA02_"));
        assert!(is_valid_code(&c));
    }

    #[test]
    fn inputs_that_sanitise_alike_get_different_codes() {
        let a = sanitize_code("shoe-red.jpg");
        let b = sanitize_code("shoe_red_jpg");
        let c = sanitize_code("shoe red jpg");
        assert_eq!(b, "shoe_red_jpg");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(b, c);
    }

    #[test]
    fn a_valid_input_shaped_like_a_suffix_is_suffixed_again() {
        let tricky = sanitize_code("a-b");
        assert_ne!(sanitize_code(&tricky), tricky);
    }

    #[test]
    fn long_and_empty_inputs_fit() {
        let long = "x".repeat(1000);
        assert!(sanitize_code(&long).len() <= MAX_CODE_LEN);
        assert!(is_valid_code(&sanitize_code("")));
        assert!(is_valid_code(&sanitize_code("ééé")));
    }

    proptest! {
        #[test]
        fn always_valid_and_stable(s in ".{0,300}") {
            let c = sanitize_code(&s);
            prop_assert!(is_valid_code(&c));
            prop_assert_eq!(&c, &sanitize_code(&s));
        }

        #[test]
        fn distinct_inputs_give_distinct_codes(a in "[a-zA-Z0-9_ .-]{0,40}", b in "[a-zA-Z0-9_ .-]{0,40}") {
            prop_assume!(a != b);
            prop_assert_ne!(sanitize_code(&a), sanitize_code(&b));
        }
    }
}
