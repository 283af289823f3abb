//! Module docs must name what exists. Each module's opening `//!` block (and each test file's)
//! is read for code spans that name something in this repository, and each must still be there:
//!
//! - a repository path (`src/cidr.rs`, `docs/hardening.md`, `tests/common/`);
//! - a file beside the module, or in its own folder (a bare file name such as client.rs);
//! - an item by its path: from the crate (`imds_tun::credentials::outage::Outage`, or
//!   crate::... in the crate itself), from the module (self::..., super::...), or from a module
//!   of the crate (`cidr::parse`) or of the module itself.
//!
//! Paths that tools create (`target/`, `.venv/`, `node_modules/`) are not checked.
//!
//! rustdoc already fails on a broken link (`scripts/test.sh` runs it with `-D warnings`); this
//! covers the prose it does not read: code spans that are not links. It is a heuristic over the
//! source text, not a compiler. A path resolves when its modules are files (`a/b.rs` or
//! `a/b/mod.rs`), the first segment after them is declared in that module (`fn`, `struct`,
//! `enum`, `trait`, `type`, `const`, `static`, `mod`, `macro_rules!`, or brought in by a `use`),
//! and every later segment (a method, a variant, a field) appears in that module's code, or, for
//! an item it imports, in the crate's. A path whose first segment is not ours (`tokio::spawn`) is
//! not checked; nor is one that starts with a name we share with a dependency (`http::...`) and
//! does not resolve here. In a drawing (a fenced block) every word with `::` that starts at a
//! module of the crate is checked the same way (`stack::spawn`, `http::Server::serve`). No root
//! needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The repository as the check sees it.
struct Tree {
    /// Every file and directory, relative to the repository, `/`-separated, no trailing `/`.
    paths: BTreeSet<String>,
    /// The top-level directories (`src`, `docs`): a code span starting with one is a path.
    top_levels: BTreeSet<String>,
    /// The text of every `.rs` file under `src/` and `tests/`.
    sources: BTreeMap<String, String>,
    /// The crates the code depends on, as Rust names them (`aws_config`).
    dependencies: BTreeSet<String>,
}

impl Tree {
    /// The repository this test was built from. `target/`, `.git` and installed tooling
    /// (`.venv`, `node_modules`) are left out: no module names them.
    fn of_repository() -> Tree {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut tree = Tree {
            paths: BTreeSet::new(),
            top_levels: BTreeSet::new(),
            sources: BTreeMap::new(),
            dependencies: dependencies(&read(&root.join("Cargo.toml"))),
        };
        walk(root, root, &mut tree);
        tree
    }

    /// A tree made of `files` (path, text); their directories exist too.
    fn of(files: &[(&str, &str)], dependencies: &[&str]) -> Tree {
        let mut tree = Tree {
            paths: BTreeSet::new(),
            top_levels: BTreeSet::new(),
            sources: BTreeMap::new(),
            dependencies: dependencies.iter().map(|name| name.to_string()).collect(),
        };
        for (path, text) in files {
            let mut directory = Path::new(path).parent();
            while let Some(parent) = directory.filter(|parent| !parent.as_os_str().is_empty()) {
                let parent_text = parent.to_string_lossy().into_owned();
                if !parent_text.contains('/') {
                    tree.top_levels.insert(parent_text.clone());
                }
                tree.paths.insert(parent_text);
                directory = parent.parent();
            }
            tree.paths.insert(path.to_string());
            tree.sources.insert(path.to_string(), text.to_string());
        }
        tree
    }

    /// The file of the crate's module `path` (`[]` is `src/lib.rs`).
    fn module_file(&self, path: &[String]) -> Option<&str> {
        if path.is_empty() {
            return self
                .sources
                .get_key_value("src/lib.rs")
                .map(|(k, _)| k.as_str());
        }
        let base = format!("src/{}", path.join("/"));
        [format!("{base}.rs"), format!("{base}/mod.rs")]
            .into_iter()
            .find_map(|file| self.sources.get_key_value(&file).map(|(k, _)| k.as_str()))
    }

    /// The code of module `path` and of every module below it, comments removed.
    fn module_code(&self, path: &[String]) -> String {
        let Some(file) = self.module_file(path) else {
            return String::new();
        };
        let below = format!("src/{}/", path.join("/"));
        self.sources
            .iter()
            .filter(|(name, _)| {
                name.as_str() == file || (!path.is_empty() && name.starts_with(&below))
            })
            .map(|(_, text)| code(text))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn walk(root: &Path, directory: &Path, tree: &mut Tree) {
    let entries = std::fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("{}: {error}", directory.display()));
    for entry in entries {
        let entry = entry.expect("a directory entry");
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if directory == root && matches!(name.as_str(), "target" | ".git" | ".venv") {
            continue;
        }
        if name == "node_modules" || name == "target" && directory.ends_with("fuzz") {
            continue;
        }
        let relative = path
            .strip_prefix(root)
            .expect("under the root")
            .to_string_lossy()
            .replace('\\', "/");
        let is_directory = entry.file_type().is_ok_and(|kind| kind.is_dir());
        tree.paths.insert(relative.clone());
        if is_directory && directory == root {
            tree.top_levels.insert(relative.clone());
        }
        if is_directory {
            walk(root, &path, tree);
        } else if relative.ends_with(".rs")
            && (relative.starts_with("src/") || relative.starts_with("tests/"))
        {
            tree.sources.insert(relative, read(&path));
        }
    }
}

/// The names of `[dependencies]` and `[dev-dependencies]` in a Cargo.toml, as Rust spells them.
fn dependencies(manifest: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_dependencies = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_dependencies = line.ends_with("dependencies]");
        } else if in_dependencies
            && let Some((name, _)) = line.split_once('=')
            && !line.starts_with('#')
        {
            names.insert(name.trim().replace('-', "_"));
        }
    }
    names
}

/// `text` with every `//` comment removed (naively: a `//` inside a string cuts the line too,
/// which can only make a name look missing, never present).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| line.split_once("//").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers of `code`, in order.
fn words(code: &str) -> impl Iterator<Item = &str> {
    code.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|word| !word.is_empty())
}

/// Whether `code` declares `name` itself (not through a `use`).
fn declares(code: &str, name: &str) -> bool {
    const KEYWORDS: [&str; 10] = [
        "fn",
        "struct",
        "enum",
        "trait",
        "type",
        "const",
        "static",
        "mod",
        "union",
        "macro_rules",
    ];
    let mut previous = "";
    for word in words(code) {
        if word == name && KEYWORDS.contains(&previous) {
            return true;
        }
        previous = word;
    }
    false
}

/// Whether a `use` statement of `code` brings in `name`.
fn imports(code: &str, name: &str) -> bool {
    code.split(';').any(|statement| {
        let statement = statement.trim_start();
        let statement = statement
            .strip_prefix("pub(crate) ")
            .or_else(|| statement.strip_prefix("pub(super) "))
            .or_else(|| statement.strip_prefix("pub "))
            .unwrap_or(statement);
        statement.starts_with("use ") && words(statement).any(|word| word == name)
    })
}

fn mentions(code: &str, name: &str) -> bool {
    words(code).any(|word| word == name)
}

/// The crate module a source file is (`src/a/b.rs` and `src/a/b/mod.rs` are `[a, b]`); test
/// files and `src/main.rs` stand at the crate root, as their paths name its modules.
fn module_of(file: &str) -> Vec<String> {
    let Some(inside) = file.strip_prefix("src/") else {
        return Vec::new();
    };
    if inside == "lib.rs" || inside == "main.rs" {
        return Vec::new();
    }
    let inside = inside.strip_suffix(".rs").unwrap_or(inside);
    let inside = inside.strip_suffix("/mod").unwrap_or(inside);
    inside.split('/').map(str::to_owned).collect()
}

/// One line of a file's opening `//!` block.
struct DocLine<'a> {
    number: usize,
    /// The text after `//!`.
    text: &'a str,
    /// Inside a fenced block (a drawing), where there are no code spans.
    fenced: bool,
}

/// The opening `//!` block of a file, its fence lines left out.
fn opening_doc(text: &str) -> Vec<DocLine<'_>> {
    let mut lines = Vec::new();
    let mut fenced = false;
    for (index, line) in text.lines().enumerate() {
        let Some(doc) = line.trim_start().strip_prefix("//!") else {
            break;
        };
        if doc.trim_start().starts_with("```") {
            fenced = !fenced;
        } else {
            lines.push(DocLine {
                number: index + 1,
                text: doc,
                fenced,
            });
        }
    }
    lines
}

/// What a doc line names: its inline code spans; in a drawing, every word with a `::` in it
/// (`stack::driver`, `http::Server::serve`), which only counts if it starts at a module of
/// ours.
fn names(line: &DocLine<'_>) -> Vec<String> {
    if line.fenced {
        line.text
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map(|word| word.trim_matches(':'))
            .filter(|word| word.contains("::") && !word.starts_with(|c: char| c.is_ascii_digit()))
            .map(|word| format!("drawn:{word}"))
            .collect()
    } else {
        line.text
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }
}

/// What a code span names.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Nothing of ours (an address, a URL path, another crate's item).
    NotOurs,
    Exists,
    /// Something of ours that is not there, and why.
    Missing(String),
}

impl Verdict {
    fn missing_unless(exists: bool, why: impl FnOnce() -> String) -> Verdict {
        if exists {
            Verdict::Exists
        } else {
            Verdict::Missing(why())
        }
    }
}

/// What `span`, in the opening doc of `file`, names.
fn verdict(tree: &Tree, file: &str, span: &str) -> Verdict {
    let span = span.trim();
    // A repository path: its first part is a top-level directory.
    let is_path_text = |text: &str| {
        !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
    };
    let made_by_tools = ["target/", ".venv", "node_modules"]
        .iter()
        .any(|made| span.starts_with(made) || span.contains(&format!("/{made}")));
    if let Some((first, _)) = span.split_once('/')
        && tree.top_levels.contains(first)
        && is_path_text(span)
        && !made_by_tools
    {
        let path = span.trim_end_matches('/');
        return Verdict::missing_unless(tree.paths.contains(path), || {
            format!("`{span}`: no such path")
        });
    }
    // A file beside the module (`client.rs`), or in the module's own folder.
    if span.ends_with(".rs") && !span.contains('/') && is_path_text(span) {
        let directory = Path::new(file)
            .parent()
            .map_or(String::new(), |d| d.to_string_lossy().into_owned());
        let own_folder = file.strip_suffix(".rs").unwrap_or(file).to_owned();
        let found = [
            format!("{directory}/{span}"),
            format!("{own_folder}/{span}"),
        ]
        .iter()
        .any(|candidate| tree.paths.contains(candidate));
        return Verdict::missing_unless(found, || format!("`{span}`: no such file beside {file}"));
    }
    item_verdict(tree, file, span)
}

/// What a name in a drawing names: only a path from a module of the crate is checked there
/// (`stack::driver`), never an address (`fd00:ec2::254`) or another crate's path.
fn drawn_verdict(tree: &Tree, path: &str) -> Verdict {
    let first = path.split("::").next().unwrap_or_default();
    if tree.module_file(&[first.to_owned()]).is_none() {
        return Verdict::NotOurs;
    }
    item_verdict(tree, "src/lib.rs", path)
}

/// What is wrong with an item path (`crate::a::B::c`), if `span` is one of ours.
fn item_verdict(tree: &Tree, file: &str, span: &str) -> Verdict {
    // `f()`, `f(..)`, `Type<T>` and `m!` name the item `f`, `Type`, `m`.
    let path = span.split(['(', '<']).next().unwrap_or(span);
    let macro_call = path.ends_with('!');
    let path = path.trim_end_matches('!');
    let segments: Vec<&str> = path.split("::").collect();
    let well_formed = segments.len() >= 2
        && segments.iter().all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !segment.starts_with(|c: char| c.is_ascii_digit())
        });
    if !well_formed {
        return Verdict::NotOurs;
    }
    let here = module_of(file);
    // In a test file, `crate::` and `self::` are the test's own; only `imds_tun::` is ours.
    if file.starts_with("tests/") && matches!(segments[0], "crate" | "self" | "super") {
        return Verdict::NotOurs;
    }
    let (start, rest, explicit): (Vec<String>, &[&str], bool) = match segments[0] {
        "crate" | "imds_tun" => (Vec::new(), &segments[1..], true),
        "self" => (here.clone(), &segments[1..], true),
        "super" => {
            let mut module = here.clone();
            let mut rest = &segments[..];
            while rest.first() == Some(&"super") {
                module.pop();
                rest = &rest[1..];
            }
            (module, rest, true)
        }
        _ => (here.clone(), &segments[..], false),
    };
    if macro_call && rest.len() == 1 {
        let exists = tree
            .sources
            .values()
            .any(|text| declares(&code(text), rest[0]));
        return Verdict::missing_unless(exists, || {
            format!("`{span}`: no macro {} in the crate", rest[0])
        });
    }
    if explicit {
        return match resolve(tree, &start, rest) {
            Ok(()) => Verdict::Exists,
            Err(why) => Verdict::Missing(format!("`{span}`: {why}")),
        };
    }

    // Unprefixed: relative to this module, else to the crate root, if it starts with ours.
    let ours_at = |module: &[String]| {
        let mut child = module.to_vec();
        child.push(rest[0].to_owned());
        tree.module_file(&child).is_some() || visible(tree, module, rest[0]).is_some()
    };
    let mut tried = Vec::new();
    let mut places = vec![start];
    if !places[0].is_empty() {
        places.push(Vec::new());
    }
    for module in places {
        if ours_at(&module) {
            match resolve(tree, &module, rest) {
                Ok(()) => return Verdict::Exists,
                Err(why) => tried.push(why),
            }
        }
    }
    if tried.is_empty() || tree.dependencies.contains(rest[0]) {
        return Verdict::NotOurs; // or a dependency's path that does not resolve here
    }
    Verdict::Missing(format!("`{span}`: {}", tried.join("; ")))
}

/// How a name is seen in a module.
enum Seen {
    /// Declared in this module (or, through `use super::*`, in the one above).
    Declared(Vec<String>),
    /// Brought in by a `use` from somewhere else.
    Imported,
}

/// Whether `name` is declared in `module`, imported into it, or seen through its
/// `use super::*` (a tests module's).
fn visible(tree: &Tree, module: &[String], name: &str) -> Option<Seen> {
    let own = code(&tree.sources[tree.module_file(module)?]);
    if declares(&own, name) {
        Some(Seen::Declared(module.to_vec()))
    } else if imports(&own, name) {
        Some(Seen::Imported)
    } else if !module.is_empty() && own.contains("use super::*;") {
        visible(tree, &module[..module.len() - 1], name)
    } else {
        None
    }
}

/// Follows `segments` from module `module`: modules, then one item, then its members.
fn resolve(tree: &Tree, module: &[String], segments: &[&str]) -> Result<(), String> {
    let mut module = module.to_vec();
    for (index, segment) in segments.iter().enumerate() {
        let Some(file) = tree.module_file(&module) else {
            return Err(format!("no module {}", module.join("::")));
        };
        let mut child = module.clone();
        child.push(segment.to_string());
        if tree.module_file(&child).is_some() {
            module = child;
            continue;
        }
        let members = &segments[index + 1..];
        let searched = match visible(tree, &module, segment) {
            Some(Seen::Declared(home)) => tree.module_code(&home),
            Some(Seen::Imported) => tree
                .sources
                .values()
                .map(|text| code(text))
                .collect::<Vec<_>>()
                .join("\n"),
            None => return Err(format!("{file} declares no `{segment}`")),
        };
        return match members.iter().find(|member| !mentions(&searched, member)) {
            Some(member) => Err(format!("no `{member}` in the code of `{segment}`'s module")),
            None => Ok(()),
        };
    }
    Ok(())
}

/// Every problem in the opening docs of the tree's sources, one line each, and how many code
/// spans named something of ours.
fn check(tree: &Tree) -> (Vec<String>, usize) {
    let mut found = Vec::new();
    let mut ours = 0;
    for (file, text) in &tree.sources {
        for line in opening_doc(text) {
            for name in names(&line) {
                let verdict = match name.strip_prefix("drawn:") {
                    Some(drawn) => drawn_verdict(tree, drawn),
                    None => verdict(tree, file, &name),
                };
                match verdict {
                    Verdict::NotOurs => {}
                    Verdict::Exists => ours += 1,
                    Verdict::Missing(why) => {
                        ours += 1;
                        found.push(format!("{file}:{}: {why}", line.number));
                    }
                }
            }
        }
    }
    (found, ours)
}

fn problems(tree: &Tree) -> Vec<String> {
    check(tree).0
}

#[test]
fn every_module_doc_names_paths_and_items_that_exist() {
    let tree = Tree::of_repository();
    assert!(tree.sources.contains_key("src/lib.rs"), "the tree was read");
    let (found, ours) = check(&tree);
    // Not a check that cannot fail: the docs name hundreds of our paths and items.
    assert!(
        ours > 50,
        "only {ours} names of ours were found: is the reader broken?"
    );
    assert!(
        found.is_empty(),
        "module docs name what is not there (fix the doc, or the name):\n{}",
        found.join("\n")
    );
}

/// A small crate: `a` with a child `b`, a struct with a method, an import, and a macro.
fn small_crate(lib_doc: &str) -> Tree {
    Tree::of(
        &[
            ("src/lib.rs", lib_doc),
            (
                "src/a/mod.rs",
                "//! a\npub mod b;\npub struct Thing;\nimpl Thing { pub fn go(&self) {} }\nuse std::time::Instant;\n",
            ),
            (
                "src/a/b.rs",
                "//! b\npub fn spawn() {}\n#[macro_export]\nmacro_rules! shout { () => {} }\n",
            ),
            ("docs/guide.md", ""),
        ],
        &["http", "tokio"],
    )
}

#[test]
fn the_check_passes_names_that_exist() {
    let tree = small_crate(
        "//! `crate::a::Thing`, `imds_tun::a::b::spawn()`, `a::Thing::go`, `a::b`, `crate::shout!`,\n\
         //! `docs/guide.md`, `src/a/`, `a/b.rs`-free text, `b.rs` is not beside lib.rs but\n\
         //! `tokio::spawn`, `http::Request`, `Instant::now`, `10.0.0.0/8` are not ours.\n\
         //! ```text\n//! crate::a::Drawn  src/not/checked.rs\n//! ```\n",
    );
    let found = problems(&tree);
    assert_eq!(
        found,
        ["src/lib.rs:2: `b.rs`: no such file beside src/lib.rs"]
    );
}

#[test]
fn the_check_fails_on_each_kind_of_stale_name() {
    let stale = [
        ("`crate::a::Gone`", "src/a/mod.rs declares no `Gone`"),
        ("`crate::z::Thing`", "src/lib.rs declares no `z`"),
        (
            "`a::Thing::stop`",
            "no `stop` in the code of `Thing`'s module",
        ),
        ("`imds_tun::a::b::run`", "src/a/b.rs declares no `run`"),
        ("`super::a::Gone`", "src/a/mod.rs declares no `Gone`"),
        ("`crate::whisper!`", "no macro whisper"),
        ("`src/a/c.rs`", "no such path"),
        ("`docs/gone.md`", "no such path"),
    ];
    for (span, why) in stale {
        let tree = small_crate(&format!("//! The crate.\n//!\n//! See {span} for more.\n"));
        let found = problems(&tree);
        assert_eq!(found.len(), 1, "{span}: {found:?}");
        assert!(
            found[0].starts_with(&format!("src/lib.rs:3: {span}: ")),
            "{found:?}"
        );
        assert!(found[0].contains(why), "{span}: {found:?}");
    }
    // A module's own doc resolves names relative to it, and a file beside it.
    let tree = Tree::of(
        &[
            ("src/lib.rs", "//! root\npub mod a;\n"),
            (
                "src/a/mod.rs",
                "//! `b::spawn` and `b.rs`; `b::halt` and `c.rs` are gone.\npub mod b;\n",
            ),
            ("src/a/b.rs", "pub fn spawn() {}\n"),
        ],
        &[],
    );
    assert_eq!(
        problems(&tree),
        [
            "src/a/mod.rs:1: `b::halt`: src/a/b.rs declares no `halt`",
            "src/a/mod.rs:1: `c.rs`: no such file beside src/a/mod.rs",
        ]
    );
}

#[test]
fn a_drawing_is_checked_for_paths_from_our_modules_only() {
    let tree = small_crate(
        "//! ```text\n\
         //!  client ─▶ a::b::spawn (one task) ─▶ a::Thing::go\n\
         //!  fd00:ec2::254  tokio::spawn  crate::Drawn  a::Thing::stop\n\
         //! ```\n",
    );
    assert_eq!(
        problems(&tree),
        ["src/lib.rs:3: `a::Thing::stop`: no `stop` in the code of `Thing`'s module"]
    );
}

#[test]
fn only_the_opening_block_of_a_file_is_read() {
    let tree = small_crate(
        "//! `crate::a::Thing`\n\nuse x;\n//! `crate::a::Gone` after code is not the opening block\n/// `crate::a::Gone` in an item's doc\nfn f() {}\n",
    );
    assert!(problems(&tree).is_empty(), "{:?}", problems(&tree));
}
