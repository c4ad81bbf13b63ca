//! The rendezvous `fifo://` and `mq://` share: a client names its private pair with a *token*
//! and announces it in a fixed-size *connect record* written into the listener's well-known
//! connect FIFO or queue.
//!
//! ```text
//! 0        magic (8 bytes, the transport's)
//! 8        fixed fields (the transport's: none for fifo://, the client's pid u32 LE for mq://)
//! 8+f      token length (1 byte)
//! 9+f      token: three groups of 1-16 lowercase hex digits joined by `-` (pid, counter, random)
//! ...      zero padding to RECORD_LEN
//! ```
//!
//! The token becomes part of file or queue names the listener opens, so a record is accepted
//! only in exactly the form clients write (no `/`, no `..`, zero padding): that also rejects a
//! stray write that starts like a record and would take the start of the next real record as
//! its token.

/// The size of a connect record: well under `PIPE_BUF` (so each is written atomically into a
/// FIFO) and the smallest message size of a queue.
pub(crate) const RECORD_LEN: usize = 64;

const MAGIC_LEN: usize = 8;

/// A fresh token: our pid, a counter and a random (or time-derived) number, in hex.
pub(crate) fn token(n: u64, random: u64) -> String {
    format!("{:x}-{n:x}-{random:x}", std::process::id())
}

/// Whether `token` has exactly the form [`token`] writes.
pub(crate) fn is_token(token: &[u8]) -> bool {
    let groups: Vec<&[u8]> = token.split(|&b| b == b'-').collect();
    groups.len() == 3
        && groups
            .iter()
            .all(|g| !g.is_empty() && g.len() <= 16 && g.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// The record announcing `token` (cut to what fits), after `magic` and `fixed`.
pub(crate) fn encode(magic: &[u8; MAGIC_LEN], fixed: &[u8], token: &str) -> [u8; RECORD_LEN] {
    let mut record = [0u8; RECORD_LEN];
    record[..MAGIC_LEN].copy_from_slice(magic);
    record[MAGIC_LEN..][..fixed.len()].copy_from_slice(fixed);
    let at = MAGIC_LEN + fixed.len();
    let token = &token.as_bytes()[..token.len().min(RECORD_LEN - at - 1)];
    record[at] = token.len() as u8;
    record[at + 1..][..token.len()].copy_from_slice(token);
    record
}

/// The fixed fields (`fixed_len` bytes) and the token of a well-formed record of exactly
/// [`RECORD_LEN`] bytes starting with `magic`; `None` for anything else.
pub(crate) fn decode<'r>(record: &'r [u8], magic: &[u8; MAGIC_LEN], fixed_len: usize) -> Option<(&'r [u8], &'r str)> {
    if record.len() != RECORD_LEN {
        return None;
    }
    let rest = record.strip_prefix(magic)?;
    let (fixed, rest) = rest.split_at_checked(fixed_len)?;
    let (&len, rest) = rest.split_first()?;
    let (token, padding) = rest.split_at_checked(usize::from(len))?;
    if !is_token(token) || !padding.iter().all(|&b| b == 0) {
        return None;
    }
    Some((fixed, std::str::from_utf8(token).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let token = token(3, 0xdead_beef);
        let record = encode(b"magic123", &[1, 2, 3, 4], &token);
        assert_eq!(decode(&record, b"magic123", 4), Some((&[1u8, 2, 3, 4][..], token.as_str())));
        assert_eq!(decode(&record, b"magic124", 4), None);
        assert_eq!(decode(&record[..RECORD_LEN - 1], b"magic123", 4), None);
        for bad in ["1-2", "1-2-3-4", "1--3", "1-2-G", "1-2-../x", "1-2-11111111111111111"] {
            assert_eq!(decode(&encode(b"magic123", &[], bad), b"magic123", 0), None, "{bad}");
        }
    }
}
