//! Splitting a document into retrieval chunks.
//!
//! A chunk is a few sentences that belong together: paragraphs are never
//! merged across a heading, a paragraph is only cut between sentences, and
//! each chunk carries the headings above it (`Menu > Breads`) so that a chunk
//! about "it" still says what "it" is, both to the embedding and to BM25.
//! Markdown headings (`#`…`######`) are understood; plain text is the same
//! without headings. The rules are plain functions of the text, so the same
//! document always yields the same chunks (which re-indexing by hash needs).

/// A chunk's target size, one or two sentences: paragraphs under one heading
/// are packed up to this, and a longer paragraph is cut between sentences.
/// Small on purpose: a small LLM answers from the notes it is given, and a
/// chunk of one or two facts leaves it less to pick the wrong one from
/// (measured on the eight spoken bakery questions with Qwen2.5 0.5B: 6 right
/// with 600 characters, 8 with 120).
pub const TARGET_CHARS: usize = 120;
/// A "sentence" with no full stop is cut at a space near this.
pub const MAX_CHARS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the document, from 0.
    pub index: usize,
    /// The heading path, outermost first, joined with " > " (may be empty).
    pub heading: String,
    /// The chunk's own text.
    pub body: String,
}

impl Chunk {
    /// What is embedded and indexed: the heading path, then the body.
    pub fn text(&self) -> String {
        if self.heading.is_empty() {
            self.body.clone()
        } else {
            format!("{}\n{}", self.heading, self.body)
        }
    }
}

/// Splits `doc` into chunks; `markdown` turns on heading handling.
pub fn chunk(doc: &str, markdown: bool) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut headings: Vec<(usize, String)> = Vec::new();
    let mut para: Vec<&str> = Vec::new();
    let mut section: Vec<String> = Vec::new();
    let mut in_fence = false;
    for line in doc.lines() {
        let trimmed = line.trim();
        if markdown && (trimmed.starts_with("```") || trimmed.starts_with("~~~")) {
            in_fence = !in_fence;
        }
        let heading = if markdown && !in_fence {
            heading_of(trimmed)
        } else {
            None
        };
        if let Some((level, title)) = heading {
            flush_para(&mut para, &mut section);
            flush_section(&mut section, &headings, &mut out);
            headings.retain(|(l, _)| *l < level);
            headings.push((level, title.to_string()));
        } else if trimmed.is_empty() {
            flush_para(&mut para, &mut section);
        } else {
            para.push(trimmed);
        }
    }
    flush_para(&mut para, &mut section);
    flush_section(&mut section, &headings, &mut out);
    out
}

/// `## Title` → (2, "Title"); a `#` not followed by a space is not a heading.
fn heading_of(line: &str) -> Option<(usize, &str)> {
    let level = line.chars().take_while(|&c| c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !rest.starts_with(' ') {
        return None;
    }
    let title = rest.trim().trim_end_matches('#').trim();
    (!title.is_empty()).then_some((level, title))
}

fn flush_para(para: &mut Vec<&str>, section: &mut Vec<String>) {
    if para.is_empty() {
        return;
    }
    let text = para.join(" ");
    para.clear();
    if text.chars().count() <= TARGET_CHARS {
        section.push(text);
        return;
    }
    // Longer than a chunk: cut between sentences, packing up to the target.
    let mut piece = String::new();
    for s in sentences(&text) {
        if !piece.is_empty() && piece.chars().count() + s.chars().count() > TARGET_CHARS {
            section.push(std::mem::take(&mut piece));
        }
        if !piece.is_empty() {
            piece.push(' ');
        }
        piece.push_str(s);
    }
    if !piece.is_empty() {
        section.push(piece);
    }
}

/// Packs a heading's paragraphs into chunks of up to [`TARGET_CHARS`].
fn flush_section(section: &mut Vec<String>, headings: &[(usize, String)], out: &mut Vec<Chunk>) {
    let heading = headings
        .iter()
        .map(|(_, t)| t.as_str())
        .collect::<Vec<_>>()
        .join(" > ");
    let mut body = String::new();
    for p in section.drain(..) {
        if !body.is_empty() && body.chars().count() + p.chars().count() > TARGET_CHARS {
            out.push(Chunk {
                index: out.len(),
                heading: heading.clone(),
                body: std::mem::take(&mut body),
            });
        }
        if !body.is_empty() {
            body.push('\n');
        }
        body.push_str(&p);
    }
    if !body.is_empty() {
        out.push(Chunk {
            index: out.len(),
            heading,
            body,
        });
    }
}

/// Sentences of `text`: cut after `.`, `!` or `?` followed by a space. A
/// sentence with no such end (a 5,000-character run-on) is cut at a space
/// near [`MAX_CHARS`] instead (or anywhere, without a space), so no piece
/// grows without bound.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let b = text.as_bytes();
    let mut last_space = None;
    for (i, &c) in b.iter().enumerate() {
        if c == b' ' {
            last_space = Some(i);
        }
        let ends = matches!(c, b'.' | b'!' | b'?') && b.get(i + 1) == Some(&b' ');
        if ends {
            out.push(text[start..=i].trim());
            start = i + 1;
            last_space = None;
        } else if i - start >= MAX_CHARS {
            // At a space if there is one in this piece, else anywhere (a
            // 5,000-character "word"), on a character boundary.
            let cut = last_space.filter(|&s| s > start).unwrap_or(i);
            if text.is_char_boundary(cut) {
                out.push(text[start..cut].trim());
                start = cut;
                last_space = None;
            }
        }
    }
    let tail = text[start..].trim();
    if !tail.is_empty() {
        out.push(tail);
    }
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_become_context_and_sections_never_merge() {
        let doc = "# Menu\n\nIntro line.\n\n## Breads\n\nRye loaf.\nWheat loaf.\n\n## Cakes\n\nPlum tart.\n";
        let c = chunk(doc, true);
        let got: Vec<(&str, &str)> = c
            .iter()
            .map(|c| (c.heading.as_str(), c.body.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("Menu", "Intro line."),
                ("Menu > Breads", "Rye loaf. Wheat loaf."),
                ("Menu > Cakes", "Plum tart.")
            ]
        );
        assert_eq!(c[1].text(), "Menu > Breads\nRye loaf. Wheat loaf.");
        assert_eq!(c.iter().map(|c| c.index).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn table_of_edge_cases() {
        // (document, markdown, expected (heading, body) pairs)
        type Case<'a> = (&'a str, bool, &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            ("", true, &[]),
            ("\n\n  \n", true, &[]),
            ("# Only a heading\n", true, &[]),
            ("#hashtag is text\n", true, &[("", "#hashtag is text")]),
            (
                "# A\n### C\ntext\n## B\nmore\n",
                true,
                &[("A > C", "text"), ("A > B", "more")],
            ),
            (
                "# Not a heading in plain text\nbody",
                false,
                &[("", "# Not a heading in plain text body")],
            ),
            (
                "```\n# code comment\n```\n",
                true,
                &[("", "``` # code comment ```")],
            ),
            ("# T #\nx", true, &[("T", "x")]),
        ];
        for (doc, md, want) in cases {
            let got: Vec<(String, String)> = chunk(doc, *md)
                .into_iter()
                .map(|c| (c.heading, c.body))
                .collect();
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(h, b)| (h.to_string(), b.to_string()))
                .collect();
            assert_eq!(got, want, "document {doc:?}");
        }
    }

    #[test]
    fn paragraphs_pack_to_the_target_and_long_ones_cut_between_sentences() {
        let para = "A sentence of about forty characters ok. ".repeat(10); // ~410 chars
        let doc = format!(
            "# H\n\n{para}\n\n{para}\n\n{}",
            "Long one here. ".repeat(100)
        );
        let c = chunk(&doc, true);
        assert!(c.len() >= 4, "{} chunks", c.len());
        for ch in &c {
            assert!(
                ch.body.chars().count() <= MAX_CHARS,
                "chunk of {} chars",
                ch.body.len()
            );
            assert_eq!(ch.heading, "H");
        }
        // Cuts fall after a sentence end.
        assert!(c.iter().all(|ch| ch.body.ends_with('.')), "{c:#?}");
    }

    #[test]
    fn a_run_on_without_full_stops_or_spaces_is_still_bounded() {
        let c = chunk(&"é".repeat(5000), false);
        assert!(c.len() >= 5, "{} chunks", c.len());
        assert!(c.iter().all(|ch| ch.body.chars().count() <= MAX_CHARS + 1));
        assert_eq!(
            c.iter().map(|ch| ch.body.chars().count()).sum::<usize>(),
            5000
        );
    }

    #[test]
    fn a_run_on_without_full_stops_is_still_bounded() {
        let doc = "word ".repeat(3000);
        let c = chunk(&doc, false);
        assert!(c.len() >= 10);
        assert!(c.iter().all(|ch| ch.body.chars().count() <= MAX_CHARS + 10));
        let words: usize = c.iter().map(|ch| ch.body.split_whitespace().count()).sum();
        assert_eq!(words, 3000, "no word lost");
    }
}
