//! What a document may be called and contain before it is indexed.
//!
//! Names come from HTTP paths, NATS object names and folder entries, so they
//! are checked as hostile: a name is a relative path of plain components
//! (`guides/returns.md`), never absolute, never `..`, never hidden, never a
//! control character. Content must be UTF-8 text of a supported type, not
//! empty, not binary, not over the size limit.

/// Longest accepted document name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Why a document was refused. Each message is meant for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    #[error(
        "document name {0:?} is not allowed: use a relative path of plain names (no '..', no leading '/' or '.', no control characters, at most 255 bytes)"
    )]
    BadName(String),
    #[error(
        "{0:?} is not indexed: only Markdown (.md, .markdown) and plain text (.txt, .text) are; other formats (PDF, Word, HTML) need converting to text first"
    )]
    Unsupported(String),
    #[error("{0:?} is empty")]
    Empty(String),
    #[error("{name:?} is {size} bytes, over the {limit}-byte limit (kb.max_doc_bytes)")]
    TooLarge {
        name: String,
        size: usize,
        limit: usize,
    },
    #[error("{0:?} is not UTF-8 text")]
    NotUtf8(String),
    #[error("{0:?} looks binary (it contains NUL or control bytes)")]
    Binary(String),
}

/// The kind of text a supported document holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Markdown,
    Text,
}

/// Checks a document name; returns its kind when its type is supported.
pub fn check_name(name: &str) -> Result<Kind, DocError> {
    let bad = || DocError::BadName(name.chars().take(80).collect());
    if name.is_empty()
        || name.len() > MAX_NAME_BYTES
        || name.starts_with('/')
        || name.contains('\\')
    {
        return Err(bad());
    }
    for part in name.split('/') {
        if part.is_empty() || part.starts_with('.') || part.chars().any(|c| c.is_control()) {
            return Err(bad());
        }
    }
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "md" | "markdown" => Ok(Kind::Markdown),
        "txt" | "text" => Ok(Kind::Text),
        _ => Err(DocError::Unsupported(name.to_string())),
    }
}

/// Checks a document's bytes and returns its text.
pub fn check_content<'a>(name: &str, bytes: &'a [u8], limit: usize) -> Result<&'a str, DocError> {
    if bytes.len() > limit {
        return Err(DocError::TooLarge {
            name: name.to_string(),
            size: bytes.len(),
            limit,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| DocError::NotUtf8(name.to_string()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(DocError::Empty(name.to_string()));
    }
    // Text has tabs and newlines; a NUL or a run of other C0 controls means binary.
    let controls = text
        .chars()
        .filter(|&c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\u{c}'))
        .count();
    if text.contains('\0') || controls * 100 > text.len() {
        return Err(DocError::Binary(name.to_string()));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "hours.md",
            "a/b/c.txt",
            "Menu 2026.MD",
            "notes.markdown",
            "x.text",
        ] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd.md",
            "../x.md",
            "a/../x.md",
            "a//b.md",
            ".hidden.md",
            "a/.git/x.md",
            "a\\b.md",
            "x\n.md",
            &"a".repeat(300),
        ] {
            assert!(
                matches!(check_name(bad), Err(DocError::BadName(_))),
                "{bad:?}"
            );
        }
        for unsupported in ["a.pdf", "a", "a.html", "a.md.exe"] {
            assert!(
                matches!(check_name(unsupported), Err(DocError::Unsupported(_))),
                "{unsupported}"
            );
        }
    }

    #[test]
    fn contents() {
        assert_eq!(check_content("a", b"hello\n", 100), Ok("hello\n"));
        assert_eq!(
            check_content("a", "\u{feff}# T\nx".as_bytes(), 100),
            Ok("# T\nx")
        );
        assert!(matches!(
            check_content("a", b"  \n\t", 100),
            Err(DocError::Empty(_))
        ));
        assert!(matches!(
            check_content("a", b"", 100),
            Err(DocError::Empty(_))
        ));
        assert!(matches!(
            check_content("a", &[0xff, 0xfe, 0x41], 100),
            Err(DocError::NotUtf8(_))
        ));
        assert!(matches!(
            check_content("a", b"ab\0cd", 100),
            Err(DocError::Binary(_))
        ));
        assert!(matches!(
            check_content("a", b"\x01\x02\x03abc", 100),
            Err(DocError::Binary(_))
        ));
        assert!(matches!(
            check_content("a", &[b'a'; 101], 100),
            Err(DocError::TooLarge { size: 101, .. })
        ));
    }
}
