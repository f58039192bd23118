//! Job ids: short, sortable by creation time, readable, with an optional per-task prefix
//! (`invoice_06f3h2k9qd7wx1bmz0ra`).
//!
//! 20 characters of Crockford's base32 (lowercase, no i, l, o, u): 10 for the milliseconds
//! since the Unix epoch (50 bits: sortable until the year 37,000) and 10 for 50 random bits,
//! so two ids made in the same millisecond collide once in about 2^25 pairs of a burst of that
//! size, far beyond any enqueue rate. Ids of one millisecond sort randomly among themselves.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

use crate::errors::{Error, Result};

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Longest prefix: the id stays well under the 128-character limit.
pub const MAX_PREFIX: usize = 24;

/// Check a prefix: 1 to [`MAX_PREFIX`] ASCII letters, digits or '-'.
pub fn check_prefix(prefix: &str) -> Result<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-';
    if !prefix.is_empty() && prefix.len() <= MAX_PREFIX && prefix.chars().all(ok) {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "id_prefix {prefix:?} is not valid: use 1 to {MAX_PREFIX} ASCII letters, digits or '-'"
    )))
}

fn push_base32(out: &mut String, mut value: u64, chars: usize) {
    let start = out.len();
    for _ in 0..chars {
        out.push(ALPHABET[(value & 31) as usize] as char);
        value >>= 5;
    }
    // Written least significant first: reverse the part just written.
    let tail: String = out[start..].chars().rev().collect();
    out.truncate(start);
    out.push_str(&tail);
}

/// `count` fresh ids, each `<prefix>_<20 chars>` (or the 20 chars alone).
pub fn fresh(prefix: Option<&str>, count: usize) -> Vec<String> {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut rng = rand::rng();
    (0..count)
        .map(|_| {
            let mut id = String::with_capacity(prefix.map_or(0, |p| p.len() + 1) + 20);
            if let Some(p) = prefix {
                id.push_str(p);
                id.push('_');
            }
            push_base32(&mut id, ms, 10);
            push_base32(&mut id, rng.random::<u64>() & ((1 << 50) - 1), 10);
            id
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_prefixed_and_sort_by_time() {
        let a = fresh(Some("inv"), 1).pop().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = fresh(None, 1).pop().unwrap();
        assert!(a.starts_with("inv_") && a.len() == 24, "{a}");
        assert_eq!(b.len(), 20);
        assert!(a[4..14] < b[..10], "{a} then {b}: time part sorts");
        assert!(b.chars().all(|c| ALPHABET.contains(&(c as u8))));
        let many = fresh(None, 10_000);
        let unique: std::collections::HashSet<_> = many.iter().collect();
        assert_eq!(unique.len(), many.len());
    }

    #[test]
    fn bad_prefixes_are_refused() {
        assert!(check_prefix("order-2").is_ok());
        for bad in ["", "a_b", "a.b", &"x".repeat(25)] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }
}
