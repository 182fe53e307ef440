//! The physical label printed on a device, derived from its `rot_id`
//! (2.4.14.11), and checkable against it.
//!
//! Form: `TL-XXXX-XXXX-XXXX-XXXX-C/SKU`. The sixteen symbols are the first
//! 80 bits of the `rot_id` in Crockford base32 (no I, L, O, U: nothing to
//! misread on a label); `C` is Crockford's mod-37 check symbol over those 80
//! bits, so a mistyped label is caught before any lookup; the SKU after the
//! slash names the product for the user (2.4.14.11). 80 bits make a
//! collision between two devices' labels negligible for any real fleet; the
//! label is an index into the custody ledger, not a credential — the device
//! proves its identity live with its identity key (2.4.14.10).

use crate::error::{Error, Result};

const SYMBOLS: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CHECK_SYMBOLS: &[u8; 37] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ*~$=U";
const PREFIX: &str = "TL-";

/// The label for a device of product `sku` with RoT `rot_id`.
///
/// # Errors
/// [`Error::Invalid`] when `rot_id` is not a well-formed `rot_id`.
pub fn label(rot_id: &str, sku: &str) -> Result<String> {
    let value = leading_bits(rot_id)?;
    let mut out = String::with_capacity(32 + sku.len());
    out.push_str(PREFIX);
    for i in 0..16 {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        let shift = 75 - 5 * i;
        out.push(SYMBOLS[((value >> shift) & 0x1f) as usize] as char);
    }
    out.push('-');
    out.push(CHECK_SYMBOLS[(value % 37) as usize] as char);
    out.push('/');
    out.push_str(sku);
    Ok(out)
}

/// Whether `printed` is the label of the RoT `rot_id`: its code decodes, its
/// check symbol matches, and it names this `rot_id`. Case and the dashes'
/// positions are forgiven; the commonly misread O, I and L read as 0, 1, 1.
pub fn matches(printed: &str, rot_id: &str) -> bool {
    let Ok(expected) = leading_bits(rot_id) else {
        return false;
    };
    decode(printed) == Some(expected)
}

/// The 80 bits a printed label encodes, if its check symbol is right.
pub fn decode(printed: &str) -> Option<u128> {
    let code = printed.split('/').next()?.trim();
    let code = code
        .strip_prefix(PREFIX)
        .or_else(|| code.strip_prefix("tl-"))?;
    let symbols: Vec<u8> = code
        .bytes()
        .filter(|b| *b != b'-')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    let (check, body) = symbols.split_last()?;
    if body.len() != 16 {
        return None;
    }
    let mut value: u128 = 0;
    for b in body {
        let b = match b {
            b'O' => b'0',
            b'I' | b'L' => b'1',
            other => *other,
        };
        let digit = SYMBOLS.iter().position(|s| *s == b)?;
        value = (value << 5) | digit as u128;
    }
    (CHECK_SYMBOLS[(value % 37) as usize] == *check).then_some(value)
}

fn leading_bits(rot_id: &str) -> Result<u128> {
    if !trustline_proto::identity::is_well_formed_rot_id(rot_id) {
        return Err(Error::Invalid(format!("{rot_id:?} is not a rot_id")));
    }
    let bytes = hex::decode(&rot_id[..20]).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(bytes
        .iter()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rot(n: u8) -> String {
        trustline_proto::identity::rot_id(&[n])
    }

    #[test]
    fn a_label_matches_its_rot_and_no_other() {
        let l = label(&rot(1), "SKU-1").expect("label");
        assert!(l.starts_with("TL-") && l.ends_with("/SKU-1"), "{l}");
        assert_eq!(l.len(), "TL-XXXX-XXXX-XXXX-XXXX-C/SKU-1".len());
        assert!(matches(&l, &rot(1)));
        assert!(!matches(&l, &rot(2)));
        assert!(matches(&l.to_lowercase(), &rot(1)));
    }

    #[test]
    fn any_single_symbol_typo_is_caught() {
        let l = label(&rot(7), "X").expect("label");
        let code: Vec<char> = l.chars().collect();
        for i in 3..code.len() - 2 {
            if code[i] == '-' {
                continue;
            }
            for s in SYMBOLS.iter().map(|b| *b as char) {
                if s == code[i] {
                    continue;
                }
                let mut typo = code.clone();
                typo[i] = s;
                let typo: String = typo.into_iter().collect();
                assert!(!matches(&typo, &rot(7)), "{typo} accepted");
            }
        }
    }

    #[test]
    fn malformed_rot_ids_get_no_label() {
        assert!(label("abc", "X").is_err());
        assert!(!matches("TL-0000-0000-0000-0000-0/X", "abc"));
        assert!(decode("nonsense").is_none());
    }
}
