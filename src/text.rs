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

/// Where the chunker may end a piece before its sentence ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRules {
    /// A piece of the first sentence may end at a comma, semicolon or colon
    /// once it has this many words.
    pub min_clause_words: usize,
    /// The first piece may end once it has this many words, even
    /// mid-clause (0: only at punctuation): at an earlier comma if there is
    /// one, else before a word that starts a phrase ("of", "the", "is"...)
    /// and after one that does not, so "The capital of France | is Paris."
    /// is cut where a speaker could breathe.
    pub first_piece_words: usize,
}

/// Words that lean on the word after them: a piece should not end on one,
/// and a phrase starts with one. ("you" and "it" are left out: they
/// often end a phrase.)
const LEANING: &[&str] = &[
    "a", "an", "the", "of", "to", "in", "on", "at", "by", "for", "with", "from", "into", "and",
    "or", "but", "nor", "as", "if", "than", "that", "is", "are", "was", "were", "be", "am", "my",
    "your", "our", "their", "his", "her", "its", "this", "these", "those", "very", "so", "not",
    "i", "we", "they", "he", "she", "can", "will", "would", "should", "could", "do", "does", "did",
    "have", "has", "had", "there", "which", "who", "when", "where", "while", "because",
];

/// Past `first_piece_words` plus this many words with no phrase boundary
/// seen, the first piece ends after any word that does not lean.
const LEANING_SLACK: usize = 3;

/// Splits streamed LLM text into pieces worth synthesizing: whole sentences,
/// and a first piece cut early ([`ChunkRules`]) so the first audio starts
/// before the first sentence is finished. Later sentences are spoken whole:
/// by then the audio already playing hides the wait for them.
#[derive(Debug, Clone)]
pub struct SentenceChunker {
    buf: String,
    rules: ChunkRules,
    emitted_any: bool,
    /// The last piece ended before its sentence did.
    sentence_open: bool,
}

impl SentenceChunker {
    pub fn new(rules: ChunkRules) -> Self {
        Self {
            buf: String::new(),
            rules,
            emitted_any: false,
            sentence_open: false,
        }
    }

    /// From now on, cut no piece between phrases: only at punctuation.
    pub fn no_early_first_piece(&mut self) {
        self.rules.first_piece_words = 0;
    }

    /// Add streamed text; returns the pieces that are complete.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while let Some(end) = self.next_break() {
            let piece: String = self.buf.drain(..end).collect();
            let piece = piece.trim().to_string();
            if !piece.is_empty() {
                self.sentence_open = !piece.ends_with(['.', '!', '?']);
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
        let first = !self.emitted_any;
        // The rest of a sentence whose first piece was cut early may be cut
        // too, at a comma or a phrase, so a long first sentence does not
        // leave a gap after a short first piece.
        let early = first || self.sentence_open;
        let chars: Vec<(usize, char)> = self.buf.char_indices().collect();
        // This piece's words so far (first sentence only): (byte index past
        // the word, the word).
        let mut words: Vec<(usize, String)> = Vec::new();
        let mut word_start = 0;
        // Just past the latest comma (or ; :) of this piece.
        let mut clause_end = None;
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
            if !early || c.is_whitespace() {
                continue;
            }
            let word = normalize_words(&self.buf[word_start..end]).pop();
            word_start = end;
            words.push((end, word.unwrap_or_default()));
            if matches!(c, ',' | ';' | ':') {
                if words.len() >= self.rules.min_clause_words {
                    return Some(end);
                }
                clause_end = Some(end);
            }
            if let Some(at) = self.early_break(first, &words, clause_end) {
                return Some(at);
            }
        }
        None
    }

    /// Where the first piece (or the next piece of its sentence) may end
    /// mid-sentence, given its words so far.
    fn early_break(
        &self,
        first: bool,
        words: &[(usize, String)],
        clause_end: Option<usize>,
    ) -> Option<usize> {
        let n = if first {
            self.rules.first_piece_words
        } else if self.rules.first_piece_words > 0 {
            // The piece playing covers about four times its words of
            // generation and synthesis; twice the clause length is safe.
            2 * self.rules.min_clause_words.max(1)
        } else {
            0
        };
        let w = words.len();
        if n == 0 || w < n {
            return None;
        }
        if clause_end.is_some() {
            return clause_end;
        }
        let leans = |k: usize| LEANING.contains(&words[k].1.as_str());
        // Between phrases: the word before leans on nothing, this one starts
        // a phrase ("France | is", "book | for").
        if w > n && !leans(w - 2) && leans(w - 1) {
            return Some(words[w - 2].0);
        }
        if w >= n + LEANING_SLACK && !leans(w - 1) {
            return Some(words[w - 1].0);
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

/// Sounds that hold the floor: a turn that stops on one is not over.
const FILLERS: &[&str] = &["um", "uh", "er", "erm", "hmm", "mm", "well", "like"];

/// Does a transcript of the turn so far read as a finished sentence? It
/// ends with `.`, `?` or `!` (not an ellipsis, not a bracketed tag such as
/// Whisper's "[BLANK_AUDIO]"), and its last word neither leans on a next
/// one ("…a good book for a.") nor is a filler ("So, um."). Whisper
/// punctuates what it hears as whole sentences, so this alone is weak
/// evidence: the conversation uses it only after Smart Turn's "not yet",
/// to end the turn on a shorter silence (`turn.transcript_pause_ms`).
pub fn reads_finished(text: &str) -> bool {
    let t = text.trim();
    if !t.ends_with(['.', '?', '!']) || t.ends_with("..") {
        return false;
    }
    match normalize_words(t).last() {
        Some(w) => !LEANING.contains(&w.as_str()) && !FILLERS.contains(&w.as_str()),
        None => false,
    }
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
    fn a_transcript_reads_finished_only_on_a_whole_sentence() {
        let cases = [
            ("What is the capital of France?", true),
            (" Front left. ", true),
            ("Hello!", true),
            ("Can you recommend a good book for a.", false),
            ("I am planning a trip to the mountains,", false),
            ("I am planning a trip to the", false),
            ("So, um.", false),
            ("What should we pack and...", false),
            ("What should we pack and\u{2026}", false),
            ("[BLANK_AUDIO]", false),
            ("(wind blowing)", false),
            ("", false),
            ("?", false),
        ];
        for (text, want) in cases {
            assert_eq!(reads_finished(text), want, "{text:?}");
        }
    }

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

    const PUNCTUATION_ONLY: ChunkRules = ChunkRules {
        min_clause_words: 6,
        first_piece_words: 0,
    };

    /// Stream `reply` a few characters at a time, as tokens come.
    fn chunk(rules: ChunkRules, reply: &str) -> Vec<String> {
        let mut c = SentenceChunker::new(rules);
        let chars: Vec<char> = reply.chars().collect();
        let mut out = Vec::new();
        for tok in chars.chunks(3) {
            out.extend(c.push(&tok.iter().collect::<String>()));
        }
        out.extend(c.finish());
        out
    }

    #[test]
    fn the_first_piece_ends_after_a_few_words_where_a_speaker_could_breathe() {
        let rules = ChunkRules {
            min_clause_words: 6,
            first_piece_words: 3,
        };
        let cases: &[(&str, &[&str])] = &[
            (
                "The capital of France is Paris.",
                &["The capital of France", "is Paris."],
            ),
            (
                "Two hours is equal to 120 minutes.",
                &["Two hours is equal", "to 120 minutes."],
            ),
            // An earlier comma is the better place.
            ("Yes, I can hear you.", &["Yes,", "I can hear you."]),
            (
                "In London in the spring, it is mild. Bring a coat, a hat, and boots.",
                &[
                    "In London in the spring,",
                    "it is mild.",
                    "Bring a coat, a hat, and boots.",
                ],
            ),
            // Before a phrase, not inside one...
            (
                "A good book for a long train ride is Dune.",
                &["A good book", "for a long train ride is Dune."],
            ),
            (
                "To pack for a trip to the mountains, bring layers.",
                &["To pack for a trip", "to the mountains, bring layers."],
            ),
            (
                "I can hear you very well today.",
                &["I can hear you", "very well today."],
            ),
            // ...or after any word that does not lean, if no phrase starts soon.
            (
                "Paris France Europe Earth Mars Venus.",
                &["Paris France Europe Earth Mars Venus."],
            ),
            (
                "Capital city Paris hosts many famous old museums.",
                &["Capital city Paris hosts many famous", "old museums."],
            ),
            (
                "Sure! A computer is like a hero.",
                &["Sure!", "A computer is like a hero."],
            ),
            ("Hello there.", &["Hello there."]),
            // The rest of a long first sentence is cut too, at a comma...
            (
                "To pack for a trip to the mountains with two friends, bring warm layers and boots. Check the forecast, then go.",
                &[
                    "To pack for a trip",
                    "to the mountains with two friends,",
                    "bring warm layers and boots.",
                    "Check the forecast, then go.",
                ],
            ),
            // No phrase starts soon: the first piece ends after a word that does not lean.
            (
                "Hiking boots warm socks rain jackets thick gloves and maps are what every group needs.",
                &[
                    "Hiking boots warm socks rain jackets",
                    "thick gloves and maps are what every group needs.",
                ],
            ),
            ("Paris", &["Paris"]),
        ];
        for (reply, want) in cases {
            assert_eq!(chunk(rules, reply), *want, "{reply:?}");
        }
    }

    #[test]
    fn chunker_streams_sentences_and_an_early_clause() {
        let mut c = SentenceChunker::new(PUNCTUATION_ONLY);
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
        let mut c = SentenceChunker::new(PUNCTUATION_ONLY);
        assert!(c.push("Yes, ").is_empty());
        assert_eq!(c.push("it is. "), vec!["Yes, it is."]);
        // After the first piece, commas no longer split.
        assert!(
            c.push("Well, that is a long clause with words, ")
                .is_empty()
        );
    }
}
