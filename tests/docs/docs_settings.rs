//! The settings the documentation lists must be the settings imds-tun has.
//!
//! Every setting is one field of `config::Layer`: its long flag (clap) and its config key (serde)
//! come from that field. README.md's flag table must list exactly the long flags clap knows
//! (hidden, test-only flags and clap's own `--help`/`--version` aside), and docs/metadata.md's
//! key table exactly the config keys serde accepts; docs/example-config.json must load with
//! keys from that set and be the example docs/metadata.md shows. A flag or key added without its
//! row, or a row left behind by a rename, fails here. No root needed.

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use imds_tun::cli::Cli;
use imds_tun::config::Layer;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The lines of the Markdown section that starts with `heading`, up to the next heading of the
/// same or a higher level.
fn section<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    let level = heading.chars().take_while(|&c| c == '#').count();
    let mut lines = text.lines().skip_while(|line| line.trim_end() != heading);
    assert!(lines.next().is_some(), "no `{heading}` section");
    lines
        .take_while(|line| {
            let hashes = line.chars().take_while(|&c| c == '#').count();
            !(hashes > 0 && hashes <= level && line[hashes..].starts_with(' '))
        })
        .collect()
}

/// The first code span (`` `...` ``) of each table row's first cell, up to its first space:
/// `--tag` from ``| `--tag KEY=VALUE` |``, `tag` from ``| `tag` |``.
fn first_cells(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|line| line.strip_prefix("| `"))
        .map(|rest| {
            let span = &rest[..rest.find('`').expect("a closed code span")];
            span.split(' ').next().unwrap_or(span).to_owned()
        })
        .collect()
}

fn set_of(items: &[String], what: &str) -> BTreeSet<String> {
    let set: BTreeSet<String> = items.iter().cloned().collect();
    assert_eq!(
        set.len(),
        items.len(),
        "{what} lists an entry twice: {items:?}"
    );
    set
}

/// What is in `documented` but not in `actual`, and the other way round, for a readable failure.
fn assert_same(documented: &BTreeSet<String>, actual: &BTreeSet<String>, what: &str) {
    let extra: Vec<_> = documented.difference(actual).collect();
    let missing: Vec<_> = actual.difference(documented).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: documented but unknown to imds-tun: {extra:?}; known but not documented: \
         {missing:?}"
    );
}

#[test]
fn the_readme_flag_table_lists_exactly_the_flags_clap_knows() {
    let readme = read("README.md");
    let documented = set_of(
        &first_cells(&section(&readme, "## Flags")),
        "README.md's flag table",
    );
    let command = Cli::command();
    let flags: Vec<String> = command
        .get_arguments()
        .filter(|arg| !arg.is_hide_set())
        .filter_map(|arg| arg.get_long())
        .filter(|long| !matches!(*long, "help" | "version"))
        .map(|long| format!("--{long}"))
        .collect();
    assert!(
        flags.len() > 40,
        "clap's flags were not all found: {flags:?}"
    );
    assert_same(&documented, &set_of(&flags, "clap"), "README.md flag table");
}

#[test]
fn the_metadata_key_table_lists_exactly_the_config_keys() {
    let metadata = read("docs/metadata.md");
    let documented = set_of(
        &first_cells(&section(&metadata, "### JSON schema")),
        "docs/metadata.md's key table",
    );
    let keys: Vec<String> = Layer::keys().iter().map(|key| key.to_string()).collect();
    assert!(keys.len() > 40, "serde's keys were not all found: {keys:?}");
    assert_same(
        &documented,
        &set_of(&keys, "serde"),
        "docs/metadata.md key table",
    );
}

#[test]
fn the_example_config_loads_and_is_the_example_the_docs_show() {
    let example = read("docs/example-config.json");
    imds_tun::config::file::parse(example.as_bytes())
        .unwrap_or_else(|error| panic!("docs/example-config.json: {error}"));
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&example).expect("one JSON object");
    let keys = Layer::keys();
    for key in object.keys() {
        assert!(keys.contains(&key.as_str()), "unknown key {key}");
    }
    let metadata = read("docs/metadata.md");
    assert!(
        metadata.contains(&format!("```json\n{}```", example)),
        "docs/metadata.md must show docs/example-config.json as it is"
    );
}

/// The checks above would pass vacuously if the table parser found nothing; it must see a
/// flag added to the table (and so, by the comparison, one missing from it).
#[test]
fn the_table_parser_sees_every_row() {
    let table = "## Flags\n\n| Flag | Default | Meaning |\n|---|---|---|\n\
                 | `--tag KEY=VALUE` | none | x |\n| `--no-tun` | off | y |\n\n## Next\n| `--not-this` |";
    assert_eq!(
        first_cells(&section(table, "## Flags")),
        ["--tag", "--no-tun"]
    );
}
