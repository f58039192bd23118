//! Optional HMAC-SHA256 signatures of envelopes, with key rotation.
//!
//! A signed envelope is the unsigned one with one more map entry, last: `s` = the 32-byte
//! HMAC-SHA256, under the signing key, of the unsigned envelope's bytes. Envelopes are small
//! fixmaps (at most 15 entries), so the unsigned bytes are recovered exactly by decrementing the
//! map header and cutting the `s` entry off. A verifier accepts a signature made with any of its
//! keys, so keys rotate by adding the new key to every worker, then signing with it, then
//! retiring the old one.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::reader::{Item, Reader};
use super::{next_key, Poison};

type HmacSha256 = Hmac<Sha256>;

const SIG_LEN: usize = 32;
/// msgpack: fixstr "s", then bin8 of 32 bytes.
const SIG_PREFIX: [u8; 4] = [0xa1, b's', 0xc4, SIG_LEN as u8];
/// Bytes a signature adds to an envelope.
pub const SIGNATURE_OVERHEAD: usize = SIG_PREFIX.len() + SIG_LEN;

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length")
}

/// Append the signature entry to an envelope made by `encode_envelope` (a fixmap).
pub fn sign(envelope: &mut Vec<u8>, key: &[u8]) {
    let entries = envelope[0] & 0x0f;
    debug_assert!(envelope[0] & 0xf0 == 0x80 && entries < 15);
    let mut m = mac(key);
    m.update(envelope);
    let tag = m.finalize().into_bytes();
    envelope[0] = 0x80 | (entries + 1);
    envelope.extend_from_slice(&SIG_PREFIX);
    envelope.extend_from_slice(&tag);
}

/// Check an envelope's signature against `keys` (any one may have signed it). With no keys,
/// signatures are not required and not checked.
pub fn verify(bytes: &[u8], keys: &[Vec<u8>]) -> Result<(), Poison> {
    if keys.is_empty() {
        return Ok(());
    }
    let (unsigned_end, tag) = find_signature(bytes)?.ok_or(Poison::Unsigned)?;
    let header = [bytes[0] - 1];
    let body = &bytes[1..unsigned_end];
    let accepted = keys.iter().any(|key| {
        let mut m = mac(key);
        m.update(&header);
        m.update(body);
        m.verify_slice(tag).is_ok()
    });
    if accepted {
        Ok(())
    } else {
        Err(Poison::BadSignature(
            "no accepted key produced it (tampered, or signed with an unknown key)".into(),
        ))
    }
}

/// Where the `s` entry starts and its tag, if the envelope has one.
fn find_signature(bytes: &[u8]) -> Result<Option<(usize, &[u8])>, Poison> {
    let bad = |e: String| Poison::BadPayload(e);
    let mut rd = Reader::new(bytes);
    let n = match rd.next().map_err(bad)? {
        Item::Map(n) if bytes[0] & 0xf0 == 0x80 => n,
        _ => return Err(bad("envelope is not a small map".into())),
    };
    for i in 0..n {
        let start = rd.pos();
        let key = next_key(&mut rd).map_err(bad)?;
        if key != Item::Str("s") {
            rd.skip(1).map_err(bad)?;
            continue;
        }
        if i + 1 != n {
            return Err(Poison::BadSignature(
                "signature is not the last entry".into(),
            ));
        }
        return match rd.next().map_err(bad)? {
            Item::Bin(tag) if tag.len() == SIG_LEN => Ok(Some((start, tag))),
            _ => Err(Poison::BadSignature("signature is not 32 bytes".into())),
        };
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made envelope `{v: 1, t: "x"}`.
    fn envelope() -> Vec<u8> {
        vec![0x82, 0xa1, b'v', 0x01, 0xa1, b't', 0xa1, b'x']
    }

    #[test]
    fn signed_envelope_verifies_with_any_accepted_key_and_parses() {
        let mut env = envelope();
        sign(&mut env, b"new");
        assert_eq!(env[0], 0x83);
        let keys = vec![b"old".to_vec(), b"new".to_vec()];
        assert_eq!(verify(&env, &keys), Ok(()));
        let parsed = super::super::parse_envelope(&env, 1 << 20).unwrap();
        assert_eq!(parsed.task, "x");
    }

    #[test]
    fn unsigned_tampered_and_foreign_messages_are_refused() {
        let keys = vec![b"k".to_vec()];
        assert_eq!(verify(&envelope(), &keys), Err(Poison::Unsigned));
        assert_eq!(
            verify(&envelope(), &[]),
            Ok(()),
            "no keys: nothing required"
        );

        let mut env = envelope();
        sign(&mut env, b"k");
        let mut tampered = env.clone();
        tampered[7] = b'y'; // the task name
        assert_eq!(
            verify(&tampered, &keys).unwrap_err().reason(),
            "bad_signature"
        );

        let mut foreign = envelope();
        sign(&mut foreign, b"other");
        assert_eq!(
            verify(&foreign, &keys).unwrap_err().reason(),
            "bad_signature"
        );
    }

    #[test]
    fn a_signature_that_is_not_last_is_refused() {
        let mut env = envelope();
        sign(&mut env, b"k");
        // Move the `s` entry first: same bytes, different order.
        let sig = env.split_off(8);
        let mut moved = vec![env[0]];
        moved.extend_from_slice(&sig);
        moved.extend_from_slice(&env[1..]);
        let err = verify(&moved, &[b"k".to_vec()]).unwrap_err();
        assert_eq!(err.reason(), "bad_signature");
    }
}
