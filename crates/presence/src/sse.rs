//! An incremental decoder of a `text/event-stream` body: bytes are buffered until a whole
//! line is in, so a chunk boundary inside a UTF-8 character or between the `\r` and `\n` of
//! a CRLF never corrupts an event. Lines end in LF, CRLF or a lone CR (the SSE spec); a
//! blank line ends a frame.

/// Turns body chunks into SSE frames (the frame's lines joined with `\n`).
#[derive(Debug, Default)]
pub(crate) struct SseDecoder {
    /// Bytes not yet ending a line.
    pending: Vec<u8>,
    /// The lines of the frame being read.
    frame: Vec<String>,
    /// The previous chunk ended in `\r`: a `\n` first in the next chunk belongs to it.
    after_cr: bool,
}

impl SseDecoder {
    /// Feeds one chunk; returns the frames it completed, in order.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut frames = Vec::new();
        let mut bytes = chunk;
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\n' || b == b'\r' {
                self.pending.extend_from_slice(&bytes[start..i]);
                self.end_line(&mut frames);
                if b == b'\r' {
                    if i + 1 == bytes.len() {
                        self.after_cr = true;
                    } else if bytes[i + 1] == b'\n' {
                        i += 1;
                    }
                }
                start = i + 1;
            }
            i += 1;
        }
        self.pending.extend_from_slice(&bytes[start..]);
        frames
    }

    fn end_line(&mut self, frames: &mut Vec<String>) {
        // A whole line holds whole UTF-8 characters; only invalid bytes are replaced.
        let line = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        if line.is_empty() {
            if !self.frame.is_empty() {
                let mut f = self.frame.join("\n");
                f.push_str("\n\n");
                frames.push(f);
                self.frame.clear();
            }
        } else {
            self.frame.push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every split of `body` into two chunks decodes to the same frames as one chunk.
    fn check_all_splits(body: &[u8], want: &[&str]) {
        for cut in 0..=body.len() {
            let mut d = SseDecoder::default();
            let mut got = d.push(&body[..cut]);
            got.extend(d.push(&body[cut..]));
            assert_eq!(got, want, "split at byte {cut}");
        }
        // And byte by byte.
        let mut d = SseDecoder::default();
        let mut got = Vec::new();
        for b in body {
            got.extend(d.push(std::slice::from_ref(b)));
        }
        assert_eq!(got, want, "byte by byte");
    }

    #[test]
    fn a_split_inside_a_utf8_character_keeps_it_whole() {
        let body = "event: join\ndata: {\"zone\":\"東京-α\"}\n\n".as_bytes();
        check_all_splits(body, &["event: join\ndata: {\"zone\":\"東京-α\"}\n\n"]);
    }

    #[test]
    fn a_split_inside_crlf_keeps_the_frames_apart() {
        let body = b"event: leave\r\ndata: 1\r\n\r\nevent: resync\r\ndata: 3\r\n\r\n";
        check_all_splits(
            body,
            &["event: leave\ndata: 1\n\n", "event: resync\ndata: 3\n\n"],
        );
    }

    #[test]
    fn lone_cr_and_lf_end_lines_too() {
        check_all_splits(
            b"data: a\rdata: b\r\r: ping\n\n",
            &["data: a\ndata: b\n\n", ": ping\n\n"],
        );
    }

    #[test]
    fn an_unfinished_frame_is_held_back() {
        let mut d = SseDecoder::default();
        assert!(d.push(b"event: join\ndata: {").is_empty());
        assert_eq!(d.push(b"}\n\n"), vec!["event: join\ndata: {}\n\n"]);
    }
}
