//! Messages quoted in `docs/guides/troubleshooting.md` must be messages imds-tun prints.
//!
//! The guide quotes each message in bold (`**`...`**`) so a reader can search for the line they
//! see. A message changed in the source but not in the guide (or invented by the guide) sends
//! them nowhere, so every bold quote is checked against the string literals under `src/`: with
//! the values a message carries (a path, an address, a pid) replaced by placeholders in the
//! source, the quote must be made of pieces of those literals, and one piece must be long
//! enough to be distinctive. No root needed.

use std::path::Path;

/// Separates literal pieces: a `{...}` placeholder, or the end of a literal.
const GAP: char = '\u{1}';

/// The text of every string literal in a Rust file, escapes resolved, each `{...}` placeholder
/// and each literal's end turned into [`GAP`]. Comments are skipped, so a message that survives
/// only in a comment does not count.
fn literals(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            'r' if matches!(chars.get(i + 1), Some('"' | '#'))
                && (i == 0 || !chars[i - 1].is_alphanumeric() && chars[i - 1] != '_') =>
            {
                let mut hashes = 0;
                let mut j = i + 1;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    i += 1;
                    continue;
                }
                j += 1;
                let closing: String = std::iter::once('"')
                    .chain("#".repeat(hashes).chars())
                    .collect();
                let rest: String = chars[j..].iter().collect();
                let end = rest.find(&closing).unwrap_or(rest.len());
                out.push_str(&placeholders_to_gaps(&rest[..end]));
                out.push(GAP);
                i = j + rest[..end].chars().count() + closing.chars().count();
            }
            '\'' => {
                // A char literal ('"', '\'') must not open a string; a lifetime is skipped too.
                if chars.get(i + 1) == Some(&'\\') {
                    i += 2;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if chars.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            '"' => {
                let mut text = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        match chars.get(i + 1) {
                            Some('\n') => {
                                // A continuation: the newline and the next line's indent vanish.
                                i += 2;
                                while i < chars.len() && chars[i].is_whitespace() {
                                    i += 1;
                                }
                                continue;
                            }
                            Some('n') => text.push('\n'),
                            Some('t') => text.push('\t'),
                            Some(other) => text.push(*other),
                            None => {}
                        }
                        i += 2;
                    } else {
                        text.push(chars[i]);
                        i += 1;
                    }
                }
                i += 1;
                out.push_str(&placeholders_to_gaps(&text));
                out.push(GAP);
            }
            _ => i += 1,
        }
    }
    out
}

/// `{}` and `{name:?}` become [`GAP`]; `{{` and `}}` are the braces themselves.
fn placeholders_to_gaps(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                for inner in chars.by_ref() {
                    if inner == '}' {
                        break;
                    }
                }
                out.push(GAP);
            }
            other => out.push(other),
        }
    }
    out
}

fn rust_files(dir: &Path, into: &mut Vec<std::path::PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|error| panic!("listing {}: {error}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            into.push(path);
        }
    }
}

/// Every bold quote of the guide: the text between `**\`` and the last `\`**` of a line.
fn bold_quotes(guide: &str) -> Vec<String> {
    guide
        .lines()
        .filter_map(|line| {
            let start = line.find("**`")? + 3;
            let end = line.rfind("`**")?;
            (end > start).then(|| line[start..end].to_string())
        })
        .collect()
}

/// The longest piece of `quote` starting at byte `start` that occurs in `haystack`.
fn longest_from(quote: &str, start: usize, haystack: &str) -> usize {
    let mut best = 0;
    let ends = quote[start..]
        .char_indices()
        .map(|(offset, c)| start + offset + c.len_utf8());
    for end in ends {
        if haystack.contains(&quote[start..end]) {
            best = end - start;
        } else {
            break;
        }
    }
    best
}

/// Pieces shorter than this are too common ("the ", ": ") to count as the source's.
const MIN_PIECE: usize = 12;
/// At least one piece this long (or the whole quote, if shorter) must be the source's verbatim.
const DISTINCTIVE: usize = 30;

/// Why `quote` is not a message of the source, or `None` if it is: greedily covered by literal
/// pieces of at least [`MIN_PIECE`] bytes, the rest (the values) at most half of it, and one
/// piece of [`DISTINCTIVE`] bytes.
fn mismatch(quote: &str, haystack: &str) -> Option<String> {
    let mut covered = 0;
    let mut longest = 0;
    let mut at = 0;
    while at < quote.len() {
        let piece = longest_from(quote, at, haystack);
        if piece >= MIN_PIECE {
            covered += piece;
            longest = longest.max(piece);
            at += piece;
        } else {
            at += quote[at..].chars().next().map_or(1, char::len_utf8);
        }
    }
    let wanted = DISTINCTIVE.min(quote.len());
    if longest < wanted {
        return Some(format!(
            "its longest piece found in src/ is {longest} bytes (needs {wanted})"
        ));
    }
    if covered * 2 < quote.len() {
        return Some(format!(
            "only {covered} of its {} bytes are found in src/",
            quote.len()
        ));
    }
    None
}

/// Quotes assembled from several small pieces, too short to be found by [`mismatch`]: the quote's
/// start, and the literal pieces (placeholders as [`GAP`]) that must each be in the source.
const KNOWN_DYNAMIC: &[(&str, &[&str])] = &[(
    // src/config/file.rs: position, key, then the schema's expectation and the value's kind.
    "--config /path: line 3 column 25: `mtu`:",
    &[
        "line \u{1} column \u{1}: \u{1}",
        "`\u{1}`: \u{1}",
        "expected \u{1}, found \u{1}",
        "a whole number",
        "a string",
    ],
)];

fn known_dynamic_mismatch(quote: &str, haystack: &str) -> Option<Option<String>> {
    let (_, pieces) = KNOWN_DYNAMIC
        .iter()
        .find(|(start, _)| quote.starts_with(start))?;
    let missing: Vec<&str> = pieces
        .iter()
        .copied()
        .filter(|piece| !haystack.contains(piece))
        .collect();
    Some((!missing.is_empty()).then(|| format!("pieces no longer in src/: {missing:?}")))
}

#[test]
fn every_bold_message_in_the_troubleshooting_guide_is_printed_by_the_source() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let haystack: String = files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
            // A unit test's expected text is not a message the program prints.
            let program = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or(&text);
            literals(program)
        })
        .collect();
    let guide_path = root.join("docs/guides/troubleshooting.md");
    let guide = std::fs::read_to_string(&guide_path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", guide_path.display()));
    let quotes = bold_quotes(&guide);
    assert!(quotes.len() >= 20, "the guide's bold quotes: {quotes:#?}");
    let drifted: Vec<String> = quotes
        .iter()
        .filter_map(|quote| {
            known_dynamic_mismatch(quote, &haystack)
                .unwrap_or_else(|| mismatch(quote, &haystack))
                .map(|why| format!("{quote}\n    {why}"))
        })
        .collect();
    assert!(
        drifted.is_empty(),
        "messages quoted in docs/guides/troubleshooting.md that imds-tun does not print:\n{}",
        drifted.join("\n")
    );
}

#[test]
fn the_check_catches_an_invented_message_and_accepts_one_with_values() {
    let haystack = literals(
        r##"fn f() { format!("cannot listen on {address}: {why}: another process holds that port; pick another --listen"); }"##,
    );
    assert_eq!(
        mismatch(
            "cannot listen on 127.0.0.1:8080: Address in use (os error 98): another process holds that port; pick another --listen",
            &haystack
        ),
        None
    );
    assert!(
        mismatch(
            "TUN device name \"imds0\" is already in use: pick another --tun-name",
            &haystack
        )
        .is_some()
    );
}
