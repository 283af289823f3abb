//! Messages the documentation quotes must be messages imds-tun prints.
//!
//! `docs/guides/troubleshooting.md` quotes each message in bold (`**`...`**`) so a reader can
//! search for the line they see; the README and the guides show sample output in code blocks.
//! A message changed in the source but not in the docs (or invented by them) sends the reader
//! nowhere, so:
//! - the messages a plain run can produce (bad settings, a busy port) are produced: the test
//!   runs imds-tun as each quote says and compares what it printed (`RUNS`); every bold quote
//!   of the guide's "Settings" section must be one of them, so a new quote there cannot be only
//!   "similar" to the source;
//! - every other bold quote, and every output line in a code block of any document (`imds-tun:`
//!   errors, `ok`/`warn`/`fail` lines of `--check`, `INFO`/`WARN` log lines), is checked
//!   against the string literals under `src/`: with the values a message carries (a path, an
//!   address, a pid) replaced by placeholders in the source, the quote must be made of pieces of
//!   those literals, and one piece must be long enough to be distinctive; an elision (`...`,
//!   `…`) splits a sample into pieces checked alone.
//!
//! No root needed.

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

/// The longest piece of `quote` starting at byte `start` that occurs in `haystack`. A piece
/// that occurs has every shorter beginning occurring too, so the length is found by bisection.
fn longest_from(quote: &str, start: usize, haystack: &str) -> usize {
    let ends: Vec<usize> = quote[start..]
        .char_indices()
        .map(|(offset, c)| start + offset + c.len_utf8())
        .collect();
    // Invariant: ends[..low] all occur; ends[high..] none does.
    let (mut low, mut high) = (0, ends.len());
    while low < high {
        let middle = (low + high) / 2;
        if haystack.contains(&quote[start..ends[middle]]) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low.checked_sub(1).map_or(0, |index| ends[index] - start)
}

/// Pieces shorter than this are too common ("the ", ": ") to count as the source's.
const MIN_PIECE: usize = 12;
/// At least one piece this long (or the whole quote, if shorter) must be the source's verbatim.
const DISTINCTIVE: usize = 30;

/// Why `quote` is not a message of the source, or `None` if it is: greedily covered by literal
/// pieces of at least [`MIN_PIECE`] bytes, the rest (the values) at most half of its text, and
/// one piece of [`DISTINCTIVE`] bytes.
fn mismatch(quote: &str, haystack: &str) -> Option<String> {
    let found = covering(quote, haystack);
    let covered: usize = found.iter().map(|range| range.len()).sum();
    let longest = found.iter().map(|range| range.len()).max().unwrap_or(0);
    let wanted = DISTINCTIVE.min(quote.len());
    if longest < wanted {
        return Some(format!(
            "its longest piece found in src/ is {longest} bytes (needs {wanted})"
        ));
    }
    // The values a message carries (times, ARNs, addresses, counts) are not the source's to
    // have; half of the rest must be.
    let text = quote.len() - values_length(quote);
    if covered * 2 < text {
        return Some(format!(
            "only {covered} of its {text} bytes of text (values aside) are found in src/"
        ));
    }
    None
}

/// [`mismatch`], and nothing between the source's long pieces that is neither a value nor one of
/// its short literals (`ok  `, `tun device`, `uid `): output the docs show must be the
/// program's word for word, where [`mismatch`] lets a paraphrase pass if half of it is right.
fn strict_mismatch(quote: &str, haystack: &str, fragments: &[&str]) -> Option<String> {
    if let Some(why) = mismatch(quote, haystack) {
        return Some(why);
    }
    let found = covering(quote, haystack);
    let mut at = 0;
    let mut gaps = Vec::new();
    for range in found
        .iter()
        .chain(std::iter::once(&(quote.len()..quote.len())))
    {
        gaps.push(&quote[at..range.start]);
        at = range.end;
    }
    gaps.into_iter()
        .find(|gap| unexplained_letters(gap, fragments) >= STRICT_LETTERS)
        .map(|gap| format!("{gap:?} is neither the source's text nor a value"))
}

/// The letters of `gap` outside every occurrence of a short literal of the source and outside
/// values (words with a digit).
fn unexplained_letters(gap: &str, fragments: &[&str]) -> usize {
    let mut explained = vec![false; gap.len()];
    for fragment in fragments {
        for (at, _) in gap.match_indices(fragment) {
            explained[at..at + fragment.len()].fill(true);
        }
    }
    let mut offset = 0;
    let mut letters = 0;
    for word in gap.split_inclusive(char::is_whitespace) {
        if !is_value(word) {
            letters += word
                .char_indices()
                .filter(|(at, c)| c.is_alphabetic() && !explained[offset + at])
                .count();
        }
        offset += word.len();
    }
    letters
}

/// Whether a word of a sample is a value rather than the program's words: it has a digit, a
/// `/` or an `@` (times, addresses, ARNs, paths, `alice@devbox`), is in double quotes (what
/// `{:?}` prints), or is an identifier in CamelCase (STS's `AccessDenied`, `GetSessionToken`).
fn is_value(word: &str) -> bool {
    let bare = word.trim().trim_matches(|c: char| "()[],;:'`".contains(c));
    let camel = bare.chars().next().is_some_and(char::is_uppercase)
        && bare.chars().skip(1).any(char::is_uppercase)
        && bare.chars().any(char::is_lowercase)
        && bare.chars().all(char::is_alphanumeric);
    bare.bytes()
        .any(|byte| byte.is_ascii_digit() || byte == b'/' || byte == b'@')
        || (bare.len() >= 2 && bare.starts_with('"') && bare.ends_with('"'))
        || camel
}

/// How many letters of words (not values) a sample may have that are not the source's: a name
/// (`imds-tun`, `alice`, `web-server`) fits, a phrase (`fine for tests`) does not.
const STRICT_LETTERS: usize = 12;

/// The byte ranges of `quote` found in `haystack`, greedily from the start: each the longest
/// piece of at least [`MIN_PIECE`] bytes, unless a piece starting inside it reaches further
/// (`; serving the ` belongs to another message than `serving the last good credentials
/// until `), in which case it counts up to there.
fn covering(quote: &str, haystack: &str) -> Vec<std::ops::Range<usize>> {
    let mut found = Vec::new();
    let mut at = 0;
    while at < quote.len() {
        let piece = longest_from(quote, at, haystack);
        if piece >= MIN_PIECE {
            // Only where a word begins: a message's literal starts at one.
            let further = quote[at..at + piece]
                .char_indices()
                .skip(1)
                .map(|(offset, _)| at + offset)
                .filter(|&start| {
                    quote[..start]
                        .chars()
                        .next_back()
                        .is_some_and(|before| !before.is_alphanumeric())
                })
                .find(|&start| start + longest_from(quote, start, haystack) > at + piece);
            if let Some(start) = further {
                if start - at >= MIN_PIECE {
                    found.push(at..start);
                }
                at = start;
                continue;
            }
            found.push(at..at + piece);
            at += piece;
        } else {
            at += quote[at..].chars().next().map_or(1, char::len_utf8);
        }
    }
    found
}

/// How many bytes of `quote` are values: words with a digit in them (`2026-11-23T18:43:41Z`,
/// `arn:aws:iam::123456789012:role/app`, `127.0.0.1:8080`, `3600s`).
fn values_length(quote: &str) -> usize {
    quote
        .split_whitespace()
        .map(|word| word.trim_matches(|c: char| "()[],;\"'`".contains(c)))
        .filter(|word| word.bytes().any(|byte| byte.is_ascii_digit()))
        .map(str::len)
        .sum()
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

/// The string literals of the program under `src/` (unit tests left out), as [`literals`].
fn source_haystack() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files
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
        .collect()
}

fn troubleshooting_guide() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/guides/troubleshooting.md");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

#[test]
fn every_bold_message_in_the_troubleshooting_guide_is_printed_by_the_source() {
    let haystack = source_haystack();
    let guide = troubleshooting_guide();
    let quotes = bold_quotes(&guide);
    assert!(quotes.len() >= 20, "the guide's bold quotes: {quotes:#?}");
    let drifted: Vec<String> = quotes
        .iter()
        // Those are checked by running imds-tun (clap's own words are not in src/).
        .filter(|quote| !RUNS.iter().any(|run| run.quote == quote.as_str()))
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

/// Output lines assembled from small pieces, too short to be found by [`mismatch`]: a text the
/// line contains, and the literal pieces (placeholders as [`GAP`]) that must each be in the
/// source.
const DYNAMIC_OUTPUT: &[(&str, &[&str])] = &[
    // The audit line, src/http/mod.rs: `{caller} read {what}`, the caller from
    // src/attribution.rs (`pid {pid} ({})`, `uid {}`), what from the service that answered.
    (
        " read role credentials ",
        &["\u{1} read \u{1}", "role credentials \u{1}"],
    ),
    (
        " read a GCE access token",
        &["\u{1} read \u{1}", "a GCE access token"],
    ),
    (
        " read a GCE identity token",
        &["\u{1} read \u{1}", "a GCE identity token"],
    ),
    (
        " read an Azure managed identity token for ",
        &[
            "\u{1} read \u{1}",
            "an Azure managed identity token for \u{1}",
        ],
    ),
];

/// The short literals of the source (the text between two placeholders), which may stand
/// between its long pieces in a sample (see [`strict_mismatch`]).
fn fragments(haystack: &str) -> Vec<&str> {
    let set: std::collections::BTreeSet<&str> = haystack
        .split(GAP)
        .filter(|fragment| fragment.len() >= 3 && fragment.chars().any(char::is_alphabetic))
        .collect();
    set.into_iter().collect()
}

/// Why an output sample (elisions allowed) is not the source's, or `None`.
fn sample_mismatch(sample: &str, haystack: &str, fragments: &[&str]) -> Option<String> {
    if let Some((_, pieces)) = DYNAMIC_OUTPUT
        .iter()
        .find(|(contains, _)| sample.contains(contains))
    {
        let missing: Vec<&str> = pieces
            .iter()
            .copied()
            .filter(|piece| !haystack.contains(piece))
            .collect();
        return (!missing.is_empty()).then(|| format!("pieces no longer in src/: {missing:?}"));
    }
    let pieces: Vec<&str> = sample
        .split(['…'])
        .flat_map(|piece| piece.split("..."))
        .map(str::trim)
        .filter(|piece| piece.len() >= MIN_PIECE)
        .collect();
    if pieces.is_empty() {
        return Some("nothing left to check between its elisions".to_owned());
    }
    pieces.iter().find_map(|piece| {
        strict_mismatch(piece, haystack, fragments)
            .map(|why| format!("{why}, in the piece {piece:?}"))
    })
}

/// The message of an output line in a code block, without what is not the program's text (a
/// timestamp, the log level, `imds-tun: `); `None` for a line that is not imds-tun's output.
fn output_message(line: &str) -> Option<&str> {
    let line = line.trim();
    // A log line, with or without its timestamp.
    let line = match line.split_once(' ') {
        Some((first, rest)) if first.starts_with("20") && first.contains('T') => rest.trim(),
        _ => line,
    };
    for level in ["INFO ", "WARN ", "ERROR "] {
        if let Some(message) = line.strip_prefix(level) {
            return Some(message.trim());
        }
    }
    for prefix in ["imds-tun ctl: ", "imds-tun: "] {
        if let Some(message) = line.strip_prefix(prefix) {
            return Some(message);
        }
    }
    // `--check`: `ok    check: finding — advice`.
    for level in ["ok    ", "warn  ", "fail  "] {
        if line.starts_with(level) && line.contains(": ") {
            return Some(line);
        }
    }
    None
}

/// Every Markdown file a user reads: the README and everything under docs/.
fn documents() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = vec![root.join("README.md")];
    let mut pending = vec![root.join("docs")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("listing docs/").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                paths.push(path);
            }
        }
    }
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            (name, text)
        })
        .collect()
}

/// The lines inside fenced code blocks (```` ``` ````) of a Markdown text.
fn code_block_lines(markdown: &str) -> Vec<&str> {
    let mut inside = false;
    let mut lines = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
        } else if inside {
            lines.push(line);
        }
    }
    lines
}

/// Sample output in the README and the guides (the `--check` report, a start-up, a failure
/// line) is the program's: before issue 23 the workstation guide showed a `--check` line and
/// docs/credentials.md a `credentials:` line that imds-tun had stopped printing.
#[test]
fn every_output_line_the_docs_show_is_printed_by_the_source() {
    let haystack = source_haystack();
    let fragments = fragments(&haystack);
    let mut checked = 0;
    let mut drifted = Vec::new();
    for (name, text) in documents() {
        for line in code_block_lines(&text) {
            let Some(message) = output_message(line) else {
                continue;
            };
            checked += 1;
            if let Some(why) = sample_mismatch(message, &haystack, &fragments) {
                drifted.push(format!("{name}: {message}\n    {why}"));
            }
        }
    }
    assert!(
        checked >= 15,
        "only {checked} output lines found in the docs"
    );
    assert!(
        drifted.is_empty(),
        "output the docs show that imds-tun does not print:\n{}",
        drifted.join("\n")
    );
}

/// A bold quote reproduced by running imds-tun: the arguments (`{file}` for a file the test
/// writes), the file's content and mode, and what the quote calls that file.
struct Run {
    quote: &'static str,
    arguments: &'static [&'static str],
    file: Option<(&'static [u8], u32, &'static str)>,
    /// A port the test holds while imds-tun runs (the busy-port message).
    hold_port: Option<u16>,
}

/// The guide's quotes that a plain run produces (no root, no namespace).
const RUNS: &[Run] = &[
    Run {
        quote: "--pass-through cannot be combined with --upstream: with --upstream every request \
                is forwarded already; drop one of them",
        arguments: &[
            "--pass-through",
            "ec2",
            "--upstream",
            "http://10.0.2.2:8080",
        ],
        file: None,
        hold_port: None,
    },
    Run {
        quote: "--pass-through \"aws\": expected ec2, gce, azure, or a path prefix starting with / \
                (e.g. /latest/meta-data/placement/)",
        arguments: &["--pass-through", "aws"],
        file: None,
        hold_port: None,
    },
    Run {
        quote: "--listen 0.0.0.0:8080 is not a loopback address, so it would serve role \
                credentials to the network: require a shared secret with --listen-token-file \
                FILE (clients send it as X-Imds-Tun-Token, e.g. an imds-tun with \
                --upstream-token-file), or accept the risk with --insecure-listen-without-token",
        arguments: &["--no-tun", "--listen", "0.0.0.0:8080"],
        file: None,
        hold_port: None,
    },
    Run {
        quote: "--listen-token-file /path/token: readable by every user (mode 644), and it holds \
                a secret; run `chmod 600 /path/token` (or 640 for a group)",
        arguments: &[
            "--no-tun",
            "--listen",
            "10.0.2.2:8080",
            "--listen-token-file",
            "{file}",
        ],
        file: Some((b"0123456789abcdef0123456789abcdef\n", 0o644, "/path/token")),
        hold_port: None,
    },
    Run {
        quote: "--upstream-token-file /path/token: the secret is shorter than 16 characters; \
                make a longer one, e.g. `openssl rand -hex 32 > FILE`",
        arguments: &[
            "--no-tun",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://10.0.2.2:8080",
            "--upstream-token-file",
            "{file}",
        ],
        file: Some((b"short\n", 0o600, "/path/token")),
        hold_port: None,
    },
    Run {
        quote: "--user-data /dev/zero: is a character device, not a regular file; imds-tun reads \
                only regular files",
        arguments: &[
            "--no-tun",
            "--listen",
            "127.0.0.1:0",
            "--user-data",
            "/dev/zero",
        ],
        file: None,
        hold_port: None,
    },
    Run {
        quote: "--user-data /path: 20000 bytes, more than the limit of 16384 bytes (EC2 accepts \
                at most 16384 bytes of user data; allow more with --max-user-data-bytes, up to \
                1048576)",
        arguments: &[
            "--no-tun",
            "--listen",
            "127.0.0.1:0",
            "--user-data",
            "{file}",
        ],
        file: Some((&[b'x'; 20000], 0o644, "/path")),
        hold_port: None,
    },
    Run {
        quote: "--config /path: line 3 column 25: `mtu`: expected a whole number, found a string",
        arguments: &["--config", "{file}"],
        file: Some((
            b"{\n  \"region\": \"eu-west-1\",\n  \"mtu\": \"hunter2-secret\"\n}",
            0o644,
            "/path",
        )),
        hold_port: None,
    },
    Run {
        quote: "--upstream \"https://host:8443\": https upstreams are not supported: imds-tun \
                forwards plain HTTP, like the metadata service itself; use http://HOST:PORT and \
                protect it with --upstream-token-file",
        arguments: &[
            "--no-tun",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "https://host:8443",
        ],
        file: None,
        hold_port: None,
    },
    Run {
        quote: "--upstream \"http://127.0.0.1:8081\" is this imds-tun's own --listen \
                127.0.0.1:8081: every request would be forwarded back to itself; point \
                --upstream at another metadata service",
        arguments: &[
            "--no-tun",
            "--listen",
            "127.0.0.1:8081",
            "--upstream",
            "http://127.0.0.1:8081",
        ],
        file: None,
        hold_port: None,
    },
    Run {
        quote: "--upstream-token-file: only meaningful with --upstream URL",
        arguments: &[
            "--no-tun",
            "--listen",
            "127.0.0.1:0",
            "--upstream-token-file",
            "{file}",
        ],
        file: Some((b"0123456789abcdef0123456789abcdef\n", 0o600, "/path/token")),
        hold_port: None,
    },
    Run {
        quote: "--no-tun: nothing would be served; give at least one --listen ADDR:PORT",
        arguments: &["--no-tun"],
        file: None,
        hold_port: None,
    },
    Run {
        quote: "invalid value '8080' for '--listen <ADDR:PORT>': expected ADDR:PORT such as \
                \"127.0.0.1:8080\"",
        arguments: &["--listen", "8080"],
        file: None,
        hold_port: None,
    },
    Run {
        quote: "cannot listen on 127.0.0.1:8080: Address already in use (os error 98): another \
                process holds that port; pick another --listen",
        arguments: &["--no-tun", "--listen", "127.0.0.1:8080"],
        file: None,
        hold_port: Some(8080),
    },
];

/// Quotes of the "Settings" section no plain run can produce, and why.
const NOT_RUNNABLE: &[(&str, &str)] = &[(
    "--user-data /etc/shadow: permission denied for user alice",
    "it needs sudo's SUDO_UID and root; tests/namespace/file_access.rs produces it",
)];

/// What imds-tun printed for `run` (stderr), with the test's file named as the quote names it.
fn produce(run: &Run) -> String {
    let scratch = std::env::temp_dir().join(format!(
        "imds-tun-docs-{}-{:x}",
        std::process::id(),
        run.quote.len() * 7919 + run.arguments.len()
    ));
    std::fs::create_dir_all(&scratch).expect("a scratch directory");
    let file = scratch.join("file");
    if let Some((content, mode, _)) = run.file {
        std::fs::write(&file, content).expect("writing the file");
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("its mode");
    }
    let file_text = file.display().to_string();
    let arguments: Vec<String> = run
        .arguments
        .iter()
        .map(|argument| argument.replace("{file}", &file_text))
        .collect();
    // Held by the test, or by whoever else already holds it: busy either way.
    let _held = run
        .hold_port
        .and_then(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_imds-tun"))
        .args(&arguments)
        .env("NO_COLOR", "1")
        .env("HOME", &scratch)
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .env_remove("SUDO_USER")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("imds-tun runs");
    // Each of these fails at once; one that serves instead is stopped after 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("imds-tun ends");
    let _ = std::fs::remove_dir_all(&scratch);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match run.file {
        Some((_, _, named)) => stderr.replace(&file_text, named),
        None => stderr,
    }
}

/// The guide's settings messages, and the busy port's, are what imds-tun prints when run as
/// they say: before issue 23 the guide quoted `--listen "8080": expected ADDR:PORT ...`, which
/// only a config file could produce (the flag printed std's "invalid socket address syntax"),
/// and "Address in use" for "Address already in use".
#[test]
fn the_guide_s_settings_messages_are_what_imds_tun_prints_when_run_as_they_say() {
    let guide = troubleshooting_guide();
    let quotes = bold_quotes(&guide);
    let mut wrong = Vec::new();
    for run in RUNS {
        if !quotes.iter().any(|quote| quote == run.quote) {
            wrong.push(format!(
                "not quoted by the guide (update RUNS): {}",
                run.quote
            ));
            continue;
        }
        let printed = produce(run);
        if !printed.contains(run.quote) {
            wrong.push(format!("{}\n    imds-tun printed:\n{printed}", run.quote));
        }
    }
    // Every quote of the Settings section is produced, or says why it cannot be.
    let settings = guide
        .split("\n## Settings")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Settings section");
    for quote in bold_quotes(settings) {
        let produced = RUNS.iter().any(|run| run.quote == quote);
        let excused = NOT_RUNNABLE
            .iter()
            .any(|(start, _)| quote.starts_with(start));
        if !produced && !excused {
            wrong.push(format!(
                "a Settings quote no run produces (add it to RUNS): {quote}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn output_lines_are_found_in_code_blocks_without_their_timestamp_or_level() {
    let markdown = "text\n```console\n$ imds-tun --check\nok    tun device: fine\n\
                    2026-11-23T17:43:41Z  WARN no AWS credentials found\nimds-tun: bad\n\
                    plain words\n```\nimds-tun: outside a block\n";
    let found: Vec<&str> = code_block_lines(markdown)
        .into_iter()
        .filter_map(output_message)
        .collect();
    assert_eq!(
        found,
        ["ok    tun device: fine", "no AWS credentials found", "bad"]
    );
    let haystack = literals(
        r#"fn f() { format!("warn  credentials: FAKE credentials for role {} ({why}; well-formed, rejected by AWS) — configure a profile"); "no AWS credentials found"; }"#,
    );
    let fragments = fragments(&haystack);
    assert!(sample_mismatch(
        "warn  credentials: FAKE credentials for role imds-tun (no AWS credentials found; well-formed, rejected by AWS) — configure a profile",
        &haystack,
        &fragments
    )
    .is_none());
    // What the workstation guide showed before issue 23: half right is not right.
    assert!(sample_mismatch(
        "warn  credentials: fake credentials for role imds-tun (well-formed, rejected by AWS) — fine for tests; ...",
        &haystack,
        &fragments
    )
    .is_some());
}
