//! Splitting Markdown and text into overlapping chunks.
//!
//! A chunk should be about one topic and say which: the document is split into
//! sections at headings, sections into paragraphs, and paragraphs are packed
//! into chunks of at most [`ChunkOptions::max_chars`] characters. Each chunk's
//! first line is its heading trail (`Gateway > Limits`), so a chunk taken out
//! of context — in a prompt or a citation — still names its topic, and the
//! embedder sees the topic words too. Consecutive chunks of one section
//! overlap by whole sentences, so a fact that straddles a boundary is whole in
//! at least one chunk.
//!
//! Plain text is Markdown without headings: it becomes one section.

use super::Chunk;
use crate::text;

/// How documents are cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Maximum characters of a chunk's body (the heading line comes on top).
    pub max_chars: usize,
    /// Up to this many characters of whole sentences from the end of a chunk
    /// are repeated at the start of the next chunk of the same section.
    pub overlap_chars: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self { max_chars: 900, overlap_chars: 150 }
    }
}

/// A heading-delimited part of a document.
struct Section {
    /// Titles from the top-level heading down to this section's.
    trail: Vec<String>,
    /// Paragraphs: prose with hard wraps joined, code blocks verbatim.
    paragraphs: Vec<String>,
}

/// A piece that is never split further when packing.
struct Unit {
    text: String,
    /// What joins the piece to the one before it in a chunk: a blank line
    /// when it begins a paragraph, a space when it continues prose, a newline
    /// when it continues a code block.
    sep: &'static str,
}

/// Cuts `text` (Markdown or plain) into chunks with ids `<doc_id>#<n>`.
/// Sections without body text yield no chunk; an empty document yields none.
pub fn chunk_document(doc_id: &str, source: &str, text: &str, opts: &ChunkOptions) -> Vec<Chunk> {
    // A zero limit would make no progress; one character is the least that
    // still cuts text.
    let max = opts.max_chars.max(1);
    // An overlap as long as the chunk would leave no room for new text.
    let overlap = opts.overlap_chars.min(max / 2);
    let mut out = Vec::new();
    for section in sections(text) {
        let trail = section.trail.join(" > ");
        for body in pack(&units(&section.paragraphs, max), max, overlap) {
            let text = if trail.is_empty() { body } else { format!("{trail}\n{body}") };
            out.push(Chunk {
                doc_id: doc_id.to_string(),
                chunk_id: format!("{doc_id}#{}", out.len()),
                source: source.to_string(),
                text,
            });
        }
    }
    out
}

/// ATX heading level and title of `line`, if it is one (`## Title ##`).
fn heading(line: &str) -> Option<(usize, String)> {
    let t = line.trim_start();
    // More than three spaces of indent make a code block, not a heading.
    if line.len() - t.len() > 3 {
        return None;
    }
    let level = t.chars().take_while(|&c| c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &t[level..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        // `#hashtag` is text, not a heading.
        return None;
    }
    let title = rest.trim().trim_end_matches('#').trim_end().to_string();
    Some((level, title))
}

fn is_fence(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("```") || t.starts_with("~~~")
}

/// Splits the document at headings (outside code fences) and each section's
/// body into paragraphs.
fn sections(text: &str) -> Vec<Section> {
    let mut out = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut trail: Vec<String> = Vec::new();
    let mut body: Vec<&str> = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if is_fence(line) {
            in_code = !in_code;
        } else if let Some((level, title)) = heading(line).filter(|_| !in_code) {
            push_section(&mut out, &trail, &body);
            body.clear();
            while stack.last().is_some_and(|(l, _)| *l >= level) {
                stack.pop();
            }
            stack.push((level, title));
            trail = stack.iter().map(|(_, t)| t.clone()).filter(|t| !t.is_empty()).collect();
            continue;
        }
        body.push(line);
    }
    push_section(&mut out, &trail, &body);
    out
}

fn push_section(out: &mut Vec<Section>, trail: &[String], body: &[&str]) {
    let paragraphs = paragraphs(body);
    if !paragraphs.is_empty() {
        out.push(Section { trail: trail.to_vec(), paragraphs });
    }
}

/// Paragraphs of a section body. Prose goes through
/// [`text::unwrap_paragraphs`] so hard-wrapped lines join; fenced code keeps
/// its lines, since joining them would change what the code says.
fn paragraphs(lines: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut prose = String::new();
    let mut code = String::new();
    let mut in_code = false;
    let flush_prose = |prose: &mut String, out: &mut Vec<String>| {
        for p in text::unwrap_paragraphs(prose).split("\n\n") {
            let p = p.trim();
            if !p.is_empty() {
                out.push(p.to_string());
            }
        }
        prose.clear();
    };
    for line in lines {
        if is_fence(line) {
            if in_code {
                code.push_str(line.trim());
                out.push(std::mem::take(&mut code));
            } else {
                flush_prose(&mut prose, &mut out);
                code.push_str(line.trim());
                code.push('\n');
            }
            in_code = !in_code;
        } else if in_code {
            code.push_str(line.trim_end());
            code.push('\n');
        } else {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    flush_prose(&mut prose, &mut out);
    // An unclosed fence: keep what it holds rather than dropping it.
    let code = code.trim_end();
    if !code.is_empty() {
        out.push(code.to_string());
    }
    out
}

fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// Breaks paragraphs into pieces of at most `max` characters: whole
/// paragraphs when they fit, else sentences, else (for a sentence longer than
/// a chunk) runs of words, and as a last resort runs of characters.
fn units(paragraphs: &[String], max: usize) -> Vec<Unit> {
    let mut out = Vec::new();
    for p in paragraphs {
        if char_len(p) <= max {
            out.push(Unit { text: p.clone(), sep: "\n\n" });
            continue;
        }
        // Code is cut between lines (sentence splitting would join them);
        // prose between sentences.
        let (pieces, sep) = if is_fence(p) {
            (p.lines().map(str::to_string).collect(), "\n")
        } else {
            (text::sentences(p), " ")
        };
        let mut first = true;
        for piece in pieces {
            for part in split_long(&piece, max) {
                out.push(Unit { text: part, sep: if first { "\n\n" } else { sep } });
                first = false;
            }
        }
    }
    out
}

/// Splits `s` at whitespace into pieces of at most `max` characters; a word
/// longer than `max` is cut between characters.
fn split_long(s: &str, max: usize) -> Vec<String> {
    if char_len(s) <= max {
        return vec![s.to_string()];
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0;
    for word in s.split_whitespace() {
        let wlen = char_len(word);
        if cur_len > 0 && cur_len + 1 + wlen <= max {
            cur.push(' ');
            cur.push_str(word);
            cur_len += 1 + wlen;
            continue;
        }
        if cur_len > 0 {
            out.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        if wlen <= max {
            cur.push_str(word);
            cur_len = wlen;
        } else {
            let chars: Vec<char> = word.chars().collect();
            for piece in chars.chunks(max) {
                out.push(piece.iter().collect());
            }
        }
    }
    if cur_len > 0 {
        out.push(cur);
    }
    out
}

/// Packs units into chunk bodies of at most `max` characters. Each body after
/// the first starts with the previous body's tail (see [`overlap_tail`]) when
/// that still leaves room for the next unit.
fn pack(units: &[Unit], max: usize, overlap: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0;
    // Whether `cur` holds anything beyond the overlap; a body that is only
    // overlap would repeat text without adding any.
    let mut has_new = false;
    for unit in units {
        let sep = unit.sep;
        let ulen = char_len(&unit.text);
        if has_new && cur_len + sep.len() + ulen > max {
            let tail = overlap_tail(&cur, overlap);
            out.push(std::mem::take(&mut cur));
            let tail_len = char_len(&tail);
            cur_len = 0;
            if !tail.is_empty() && tail_len + sep.len() + ulen <= max {
                cur = tail;
                cur_len = tail_len;
            }
        }
        if cur_len > 0 {
            cur.push_str(sep);
            cur_len += sep.len();
        }
        cur.push_str(&unit.text);
        cur_len += ulen;
        has_new = true;
    }
    if has_new {
        out.push(cur);
    }
    out
}

/// The last whole sentences of `body` totalling at most `overlap` characters
/// (joined by spaces); empty when even the last sentence is longer.
fn overlap_tail(body: &str, overlap: usize) -> String {
    let mut picked: Vec<String> = Vec::new();
    let mut len = 0;
    for sentence in text::sentences(body).into_iter().rev() {
        let add = char_len(&sentence) + usize::from(!picked.is_empty());
        if len + add > overlap {
            break;
        }
        len += add;
        picked.push(sentence);
    }
    picked.reverse();
    picked.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(max_chars: usize, overlap_chars: usize) -> ChunkOptions {
        ChunkOptions { max_chars, overlap_chars }
    }

    #[test]
    fn default_options() {
        assert_eq!(ChunkOptions::default(), opts(900, 150));
    }

    #[test]
    fn headings_make_trails_and_sections() {
        let md = "Intro text before any heading.\n\n# Gateway\n\nThe gateway speaks gRPC.\n\n## Limits\n\nAt most 64 requests\nper second per client.\n\n## Retries\n\nThree retries.\n\n# Agents ##\n\nAgents are actors.\n";
        let chunks = chunk_document("guide", "docs/guide.md", md, &ChunkOptions::default());
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "Intro text before any heading.",
                "Gateway\nThe gateway speaks gRPC.",
                // The hard wrap is joined into one line.
                "Gateway > Limits\nAt most 64 requests per second per client.",
                "Gateway > Retries\nThree retries.",
                "Agents\nAgents are actors.",
            ]
        );
        let ids: Vec<&str> = chunks.iter().map(|c| c.chunk_id.as_str()).collect();
        assert_eq!(ids, vec!["guide#0", "guide#1", "guide#2", "guide#3", "guide#4"]);
        assert!(chunks.iter().all(|c| c.doc_id == "guide" && c.source == "docs/guide.md"));
    }

    #[test]
    fn code_fences_are_not_headings_and_keep_lines() {
        let md = "# Setup\n\nRun this:\n\n```sh\n# not a heading\nmeshops serve\n```\n";
        let chunks = chunk_document("s", "s.md", md, &ChunkOptions::default());
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].text, "Setup\nRun this:\n\n```sh\n# not a heading\nmeshops serve\n```");
    }

    #[test]
    fn plain_text_and_empty_input() {
        let chunks =
            chunk_document("notes", "notes.txt", "First para\nwrapped.\n\nSecond para.", &opts(900, 0));
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].text, "First para wrapped.\n\nSecond para.");
        assert!(chunk_document("e", "e.txt", "", &ChunkOptions::default()).is_empty());
        assert!(chunk_document("h", "h.md", "# Only\n## Headings\n", &ChunkOptions::default()).is_empty());
    }

    #[test]
    fn paragraphs_are_packed_up_to_the_limit() {
        // Five 19-char paragraphs; with the "\n\n" separators two fit in 40.
        let text = (0..5).map(|i| format!("Paragraph number {i}.")).collect::<Vec<_>>().join("\n\n");
        let chunks = chunk_document("p", "p.txt", &text, &opts(40, 0));
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "Paragraph number 0.\n\nParagraph number 1.",
                "Paragraph number 2.\n\nParagraph number 3.",
                "Paragraph number 4.",
            ]
        );
        assert!(chunks.iter().all(|c| c.text.chars().count() <= 40));
    }

    #[test]
    fn next_chunk_starts_with_whole_sentence_overlap() {
        let text = "Alpha one. Alpha two.\n\nBeta one. Beta two.\n\nGamma one. Gamma two.";
        let chunks = chunk_document("o", "o.txt", text, &opts(35, 12));
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "Alpha one. Alpha two.",
                "Alpha two.\n\nBeta one. Beta two.",
                "Beta two.\n\nGamma one. Gamma two.",
            ]
        );
    }

    #[test]
    fn overlap_does_not_cross_sections() {
        let md = "# A\n\nFirst sentence here.\n\n# B\n\nSecond sentence here.";
        let chunks = chunk_document("x", "x.md", md, &opts(30, 25));
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].text, "B\nSecond sentence here.");
    }

    #[test]
    fn long_paragraph_is_split_at_sentences() {
        let sentences: Vec<String> = (0..12).map(|i| format!("Sentence {i} talks about retries.")).collect();
        let text = sentences.join(" ");
        let chunks = chunk_document("l", "l.md", &format!("# Long\n\n{text}\n"), &opts(100, 40));
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        for c in &chunks {
            let body = c.text.strip_prefix("Long\n").unwrap();
            assert!(body.chars().count() <= 100, "{body:?}");
            // Only whole sentences: every body starts a sentence and ends one.
            assert!(body.starts_with("Sentence "), "{body:?}");
            assert!(body.ends_with("retries."), "{body:?}");
        }
        // Every sentence appears in some chunk, in order of first appearance.
        let all: String = chunks.iter().map(|c| c.text.as_str()).collect::<Vec<_>>().join(" ");
        let mut from = 0;
        for s in &sentences {
            let at = all[from..].find(s.as_str()).map(|i| i + from);
            assert!(at.is_some(), "missing {s:?}");
            from = at.unwrap_or(from);
        }
        // Consecutive chunks overlap: chunk n+1 begins with chunk n's last sentence.
        for pair in chunks.windows(2) {
            let prev_last = text::sentences(&pair[0].text).pop().unwrap();
            assert!(pair[1].text.strip_prefix("Long\n").unwrap().starts_with(&prev_last));
        }
    }

    #[test]
    fn over_long_sentence_and_word_are_cut_without_panicking() {
        let word = "é".repeat(25);
        let text = format!("{} {word}", "word ".repeat(30));
        let chunks = chunk_document("w", "w.txt", &text, &opts(10, 3));
        assert!(!chunks.is_empty());
        assert!(chunks.iter().all(|c| c.text.chars().count() <= 10));
        assert!(!chunk_document("z", "z.txt", "Some text.", &opts(0, 0)).is_empty());
    }
}
