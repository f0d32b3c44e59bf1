//! Text utilities shared by the pipeline, the tests and the load tester:
//! word error rate, the sentence chunker that feeds streaming TTS, and
//! the loop check on a reply's clauses.

/// Lower-case words without punctuation ("Paris." → "paris", "I'm" → "im").
pub fn normalize_words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word error rate of `hyp` against `reference`: (S + D + I) / N after
/// [`normalize_words`]. An empty reference gives 0 for an empty hypothesis, else 1.
pub fn wer(reference: &str, hyp: &str) -> f64 {
    let r = normalize_words(reference);
    let h = normalize_words(hyp);
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { 1.0 };
    }
    strsim::generic_levenshtein(&r, &h) as f64 / r.len() as f64
}

/// Character error rate over letters and digits only (spaces and
/// punctuation removed): counts "France is" heard as "Francis" as one
/// letter off, where WER counts two words wrong.
pub fn cer(reference: &str, hyp: &str) -> f64 {
    let chars = |t: &str| -> Vec<char> { normalize_words(t).concat().chars().collect() };
    let (r, h) = (chars(reference), chars(hyp));
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { 1.0 };
    }
    strsim::generic_levenshtein(&r, &h) as f64 / r.len() as f64
}

/// Splits streamed LLM text into pieces worth synthesizing: whole sentences,
/// or an early clause of at least `min_clause_words` words so the first audio
/// starts before the first sentence is finished.
#[derive(Debug, Clone)]
pub struct SentenceChunker {
    buf: String,
    min_clause_words: usize,
    emitted_any: bool,
}

impl SentenceChunker {
    pub fn new(min_clause_words: usize) -> Self {
        Self {
            buf: String::new(),
            min_clause_words,
            emitted_any: false,
        }
    }

    /// Add streamed text; returns the pieces that are complete.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while let Some(end) = self.next_break() {
            let piece: String = self.buf.drain(..end).collect();
            let piece = piece.trim().to_string();
            if !piece.is_empty() {
                out.push(piece);
                self.emitted_any = true;
            }
        }
        out
    }

    /// The rest, at the end of the reply.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_string())
    }

    /// Byte index just past the first break in the buffer, if any.
    fn next_break(&self) -> Option<usize> {
        let chars: Vec<(usize, char)> = self.buf.char_indices().collect();
        for (k, &(i, c)) in chars.iter().enumerate() {
            let next = chars.get(k + 1).map(|&(_, n)| n);
            // Only break once the following character is known to be a space
            // (so "3.5" or "e.g." mid-stream are not split).
            let followed_by_space = matches!(next, Some(n) if n.is_whitespace());
            if !followed_by_space {
                continue;
            }
            let end = i + c.len_utf8();
            if matches!(c, '.' | '!' | '?' | '\n') {
                return Some(end);
            }
            if !self.emitted_any
                && matches!(c, ',' | ';' | ':')
                && self.buf[..end].split_whitespace().count() >= self.min_clause_words
            {
                return Some(end);
            }
        }
        None
    }
}

/// Where `piece` starts repeating a clause said earlier (in `earlier` or
/// in the piece itself), as a byte offset into `piece`: the model is
/// looping. Clauses end at punctuation; ones under three words ("Yes.",
/// "Step one,") may repeat. Compared as [`normalize_words`], so "1/2 cup
/// maple syrup," and "1/2 cup maple syrup." are the same clause.
pub fn repeat_at<'a>(earlier: impl IntoIterator<Item = &'a str>, piece: &str) -> Option<usize> {
    let mut seen: Vec<Vec<String>> = earlier
        .into_iter()
        .flat_map(clauses)
        .map(|(_, words)| words)
        .collect();
    for (at, words) in clauses(piece) {
        if seen.contains(&words) {
            return Some(at);
        }
        seen.push(words);
    }
    None
}

/// The clauses of `text` of three words or more: (byte offset, words).
fn clauses(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut start = 0;
    let ends = text.char_indices().chain([(text.len(), '.')]);
    for (i, c) in ends {
        if matches!(c, ',' | '.' | ';' | ':' | '!' | '?' | '\n') {
            let words = normalize_words(&text[start..i]);
            if words.len() >= 3 {
                out.push((start, words));
            }
            start = (i + c.len_utf8()).min(text.len());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_clause_is_found_where_it_starts() {
        let cases: &[(&[&str], &str, Option<usize>)] = &[
            (&[], "Add a cup of syrup, add a cup of syrup.", Some(19)),
            (&["Add a cup of syrup."], "Then add a cup of syrup!", None),
            (
                &["Add a cup of syrup."],
                "Stir. add a cup of syrup!",
                Some(5),
            ),
            (&["1/2 cup of flour,"], "1/2 cup of flour.", Some(0)),
            (&["Yes, yes."], "Yes. Step one, step one.", None),
            (&[], "Sunscreen, sunglasses, sunscreen.", None),
            (&[], "", None),
        ];
        for (earlier, piece, want) in cases {
            assert_eq!(
                repeat_at(earlier.iter().copied(), piece),
                *want,
                "{piece:?}"
            );
        }
    }

    #[test]
    fn wer_counts_edits() {
        assert_eq!(
            wer(
                "What is the capital of France?",
                "what is the capital of france"
            ),
            0.0
        );
        assert!((wer("a b c d", "a x c") - 0.5).abs() < 1e-9);
        assert!((wer("a b", "a b c d") - 1.0).abs() < 1e-9);
        assert_eq!(wer("", ""), 0.0);
        assert_eq!(wer("", "x"), 1.0);
        let c = cer(
            "The capital of France is Paris.",
            "the capital of Francis Paris",
        );
        assert!(c > 0.0 && c < 0.05, "{c}");
    }

    #[test]
    fn chunker_streams_sentences_and_an_early_clause() {
        let mut c = SentenceChunker::new(6);
        let mut out = Vec::new();
        for tok in [
            "The capital",
            " of France",
            " is Paris,",
            " a city of",
            " light.",
            " It has 3.5",
            " million",
            " people. Enjoy",
        ] {
            out.extend(c.push(tok));
        }
        out.extend(c.finish());
        assert_eq!(
            out,
            vec![
                "The capital of France is Paris,",
                "a city of light.",
                "It has 3.5 million people.",
                "Enjoy"
            ]
        );
    }

    #[test]
    fn short_clause_waits_for_the_sentence() {
        let mut c = SentenceChunker::new(6);
        assert!(c.push("Yes, ").is_empty());
        assert_eq!(c.push("it is. "), vec!["Yes, it is."]);
        // After the first piece, commas no longer split.
        assert!(
            c.push("Well, that is a long clause with words, ")
                .is_empty()
        );
    }
}
