//! Incremental UTF-8 validation that fails on the first invalid byte.
//!
//! A text message may arrive split across frames, and a frame split across reads. RFC 6455
//! asks an endpoint to fail the connection as soon as it sees invalid UTF-8, so the decoder
//! feeds every chunk here as it arrives instead of validating the whole message at the end.

/// The validator's state between chunks: the bytes of a code point that is not complete yet.
#[derive(Debug, Default, Clone)]
pub(crate) struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

/// The input is not UTF-8, and no further byte can make it so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidUtf8;

impl Utf8Validator {
    /// Validates the next chunk of a message.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            let have = self.pending_len as usize;
            let width = sequence_width(self.pending[0]);
            let take = (width - have).min(chunk.len());
            self.pending[have..have + take].copy_from_slice(&chunk[..take]);
            let candidate = &self.pending[..have + take];
            match simdutf8::compat::from_utf8(candidate) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {
                    // Still a valid prefix, and the chunk is used up.
                    self.pending_len = (have + take) as u8;
                    return Ok(());
                }
            }
            chunk = &chunk[take..];
        }
        match simdutf8::compat::from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &chunk[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Ends the message: a code point cut off at the end is invalid.
    pub(crate) fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.pending_len == 0;
        self.pending_len = 0;
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }

    /// Forgets any partial code point (a new message starts).
    pub(crate) fn reset(&mut self) {
        self.pending_len = 0;
    }
}

/// How many bytes the sequence that starts with `lead` takes. Only called on the first
/// byte of a prefix the validator already accepted, so `lead` is a valid lead byte.
fn sequence_width(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::default();
        for c in chunks {
            v.feed(c)?;
        }
        v.finish()
    }

    #[test]
    fn accepts_code_points_split_at_every_byte() {
        let text = "κόσμε 𝄞 ascii €".as_bytes();
        for split in 0..text.len() {
            assert_eq!(
                feed_all(&[&text[..split], &text[split..]]),
                Ok(()),
                "split {split}"
            );
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(feed_all(&bytes), Ok(()));
    }

    #[test]
    fn fails_on_the_chunk_with_the_first_invalid_byte() {
        let mut v = Utf8Validator::default();
        // "κόσμε" then the start of a UTF-16 surrogate (ED A0 80), which is never valid.
        assert_eq!(
            v.feed(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"),
            Ok(())
        );
        assert_eq!(
            v.feed(b"\xed"),
            Ok(()),
            "ED alone may still start a valid code point"
        );
        assert_eq!(
            v.feed(b"\xa0"),
            Err(InvalidUtf8),
            "ED A0 is a surrogate: fail now"
        );
    }

    #[test]
    fn rejects_a_truncated_code_point_at_the_end() {
        assert_eq!(feed_all(&[b"abc\xe2\x82"]), Err(InvalidUtf8));
    }

    #[test]
    fn rejects_overlong_and_out_of_range_sequences() {
        assert_eq!(feed_all(&[b"\xc0\xaf"]), Err(InvalidUtf8));
        assert_eq!(feed_all(&[b"\xf4\x90\x80\x80"]), Err(InvalidUtf8));
        assert_eq!(feed_all(&[b"\xf4", b"\x90"]), Err(InvalidUtf8));
    }
}
