//! Text → phonemes → ids for Piper voices.
//!
//! Phonemes come from the `espeak-ng` program (IPA mode) rather than linking
//! libespeak-ng, which is GPL-3.0: voxloop stays MIT/Apache, and a ~30 ms
//! process spawn per sentence is small next to synthesis. espeak-ng prints
//! one line per clause and drops punctuation; Piper's own phonemizer keeps the
//! clause punctuation, so it is put back here clause by clause.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum PhonemeError {
    #[error("cannot run espeak-ng ({0}); install the Debian packages espeak-ng and espeak-ng-data")]
    Spawn(std::io::Error),
    #[error("espeak-ng failed: {0}")]
    Failed(String),
}

const CLAUSE_PUNCT: &[char] = &[',', '.', ';', ':', '!', '?'];

/// Split text into clauses, each with the punctuation that ended it.
pub fn split_clauses(text: &str) -> Vec<(String, Option<char>)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        // A clause break is punctuation followed by whitespace or the end
        // ("3.5" and "e.g." inside a word are not breaks).
        let at_break =
            CLAUSE_PUNCT.contains(&c) && chars.get(i + 1).is_none_or(|n| n.is_whitespace());
        if at_break {
            if cur.chars().any(char::is_alphanumeric) {
                out.push((cur.trim().to_string(), Some(c)));
            }
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    if cur.chars().any(char::is_alphanumeric) {
        out.push((cur.trim().to_string(), None));
    }
    out
}

/// Phonemize `text` with `espeak-ng -q --ipa -v VOICE`, keeping clause punctuation.
pub fn phonemize(text: &str, voice: &str) -> Result<String, PhonemeError> {
    let clauses = split_clauses(text);
    if clauses.is_empty() {
        return Ok(String::new());
    }
    let joined: Vec<String> = clauses
        .iter()
        .map(|(t, p)| match p {
            Some(p) => format!("{t}{p}"),
            None => t.clone(),
        })
        .collect();
    let mut child = Command::new("espeak-ng")
        .args(["-q", "--ipa", "-b", "1", "-v", voice])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(PhonemeError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(joined.join(" ").as_bytes())
            .map_err(|e| PhonemeError::Failed(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| PhonemeError::Failed(e.to_string()))?;
    if !out.status.success() {
        return Err(PhonemeError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Ok(attach_punctuation(&lines, &clauses))
}

/// Join espeak's clause lines, appending each clause's punctuation when the
/// clause counts agree (otherwise only the final punctuation).
fn attach_punctuation(lines: &[&str], clauses: &[(String, Option<char>)]) -> String {
    let mut s = String::new();
    if lines.len() == clauses.len() {
        for (line, (_, p)) in lines.iter().zip(clauses) {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(line);
            if let Some(p) = p {
                s.push(*p);
            }
        }
    } else {
        s = lines.join(" ");
        if let Some((_, Some(p))) = clauses.last() {
            s.push(*p);
        }
    }
    s
}

/// Map phonemes to Piper ids: `^`, each phoneme's id then the pad id, `$`.
/// Characters missing from the map are skipped.
pub fn phoneme_ids(phonemes: &str, map: &HashMap<String, Vec<i64>>) -> Vec<i64> {
    let id = |s: &str| map.get(s).and_then(|v| v.first()).copied();
    let pad = id("_").unwrap_or(0);
    let mut ids = vec![id("^").unwrap_or(1)];
    let mut buf = [0u8; 4];
    for c in phonemes.chars() {
        if let Some(v) = map.get(c.encode_utf8(&mut buf) as &str) {
            ids.extend_from_slice(v);
            ids.push(pad);
        }
    }
    ids.push(id("$").unwrap_or(2));
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_keep_their_punctuation() {
        let c = split_clauses("Hello, world. It costs 3.5 dollars! Ok");
        assert_eq!(
            c,
            vec![
                ("Hello".into(), Some(',')),
                ("world".into(), Some('.')),
                ("It costs 3.5 dollars".into(), Some('!')),
                ("Ok".into(), None),
            ]
        );
        assert!(split_clauses("  ...  ").is_empty());
    }

    #[test]
    fn punctuation_is_reattached() {
        let clauses = split_clauses("Hello, world.");
        assert_eq!(
            attach_punctuation(&["həlˈoʊ", "wˈɜːld"], &clauses),
            "həlˈoʊ, wˈɜːld."
        );
        assert_eq!(attach_punctuation(&["a b c"], &clauses), "a b c.");
    }

    #[test]
    fn ids_are_framed_and_padded() {
        let mut map = HashMap::new();
        for (k, v) in [("_", 0), ("^", 1), ("$", 2), (" ", 3), ("a", 14), ("ə", 59)] {
            map.insert(k.to_string(), vec![v]);
        }
        assert_eq!(phoneme_ids("a ə?", &map), vec![1, 14, 0, 3, 0, 59, 0, 2]);
    }

    #[test]
    fn espeak_phonemizes_when_installed() {
        match phonemize("Hello, world.", "en-us") {
            Ok(p) => {
                assert!(p.contains(','), "{p}");
                assert!(p.ends_with('.'), "{p}");
                assert!(p.contains("wˈɜːld"), "{p}");
            }
            Err(PhonemeError::Spawn(_)) => {
                panic!("espeak-ng is required (scripts/install-deps.sh installs it)")
            }
            Err(e) => panic!("{e}"),
        }
    }
}
