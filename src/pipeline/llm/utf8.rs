//! Token pieces into text: a piece may end inside a UTF-8 code point.

/// Assembles UTF-8 from token pieces that may split a code point.
#[derive(Default)]
pub(super) struct Utf8Stream(Vec<u8>);

impl Utf8Stream {
    pub(super) fn push(&mut self, piece: &[u8]) -> String {
        self.0.extend_from_slice(piece);
        let n = match std::str::from_utf8(&self.0) {
            Ok(_) => self.0.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.0.len(),
        };
        let s = String::from_utf8_lossy(&self.0[..n]).into_owned();
        self.0.drain(..n);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stream_joins_split_code_points() {
        let mut s = Utf8Stream::default();
        let bytes = "é".as_bytes();
        assert_eq!(s.push(&bytes[..1]), "");
        assert_eq!(s.push(&bytes[1..]), "é");
        assert_eq!(s.push(b"ok"), "ok");
    }
}
