//! Recording EC2: an IMDSv2 token (IMDSv1 when the service gives none), then every listing and
//! leaf under `/latest/`, breadth first, into an [`Ec2Tree`].
//!
//! The pure parts are plain functions tested without a socket: how a listing's lines name
//! children ([`parse_listing`], with EC2's quirks: the version root lists `meta-data` and
//! `dynamic` without the `/` of a directory, `public-keys/` lists `0=name` for the directory
//! `0/`), which paths are never fetched ([`redaction_for`]) and which answers are never kept
//! ([`looks_like_credentials`]). The crawl itself (`record`) keeps the bounds: a visited set
//! (a listing naming a path twice, or a loop, costs nothing), [`crate::snapshot::BOUNDS`] for
//! depth, path length, paths and bytes, and the client's per-request and total time. A listing
//! is kept in the snapshot only where it differs from the one the leaves derive.

use std::collections::{BTreeMap, HashSet, VecDeque};

use http::{HeaderName, HeaderValue, Method, StatusCode};

use super::client::{Answer, FetchError};
use super::{Outcome, Recorder};
use crate::clouds::ec2::responses::{OCTET_STREAM, TEXT_PLAIN};
use crate::secret::Secret;
use crate::snapshot::{BOUNDS, Ec2Tree, Leaf, Redaction, check_ec2_path};

/// The lifetime asked for the token: EC2's longest, six hours, so one token lasts the crawl.
pub const TOKEN_TTL_SECONDS: u32 = 21_600;
/// The longest token accepted (EC2's are 56 characters).
const MAX_TOKEN_BYTES: usize = 1024;

/// One child a listing names: its path from the version root, and whether it is a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `meta-data/placement`, without a final `/`.
    pub path: String,
    /// True for a directory (listed with a `/`, or one of EC2's quirks).
    pub directory: bool,
}

/// The children `listing` (the answer for `directory`, `""` being the version root) names, or
/// for a line that names none, why. Lines are LF-separated (a CR before the LF is ignored);
/// empty lines name nothing.
pub fn parse_listing(directory: &str, listing: &str) -> Vec<Result<Entry, String>> {
    let mut entries = Vec::new();
    for line in listing.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let (name, is_directory) = match line.strip_suffix('/') {
            Some(name) => (name, true),
            None if directory.is_empty() => (line, matches!(line, "meta-data" | "dynamic")),
            // `public-keys/` lists each key as `INDEX=name`; the key's directory is `INDEX/`.
            None if directory.ends_with("public-keys") => match line.split_once('=') {
                Some((index, _))
                    if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    (index, true)
                }
                _ => (line, false),
            },
            None => (line, false),
        };
        if name.contains('/') {
            entries.push(Err(format!("{line:?} is not a name (it has a `/` inside)")));
            continue;
        }
        let path = if directory.is_empty() {
            name.to_owned()
        } else {
            format!("{directory}/{name}")
        };
        match check_ec2_path(&path) {
            Ok(()) => entries.push(Ok(Entry {
                path,
                directory: is_directory,
            })),
            Err(problem) => entries.push(Err(format!("{:?} {problem}", truncated(&path)))),
        }
    }
    entries
}

/// Why a leaf at `path` is never fetched, if it is one of those: role credentials
/// (`…/security-credentials/ROLE`, `…/security-credentials-extended/ROLE`, anything deeper
/// under either, anything under `identity-credentials/` but its `info`), signatures of the identity document (`signature`,
/// `pkcs7`, `rsa2048`, wherever they are), and anything called `token`.
pub fn redaction_for(path: &str) -> Option<Redaction> {
    let segments: Vec<&str> = path.split('/').collect();
    let name = segments.last().copied().unwrap_or_default();
    if matches!(name, "signature" | "pkcs7" | "rsa2048") {
        return Some(Redaction::Signature);
    }
    let directories = &segments[..segments.len().saturating_sub(1)];
    if directories
        .iter()
        .any(|segment| segment.starts_with("security-credentials"))
        || (directories.contains(&"identity-credentials") && name != "info")
    {
        return Some(Redaction::Credentials);
    }
    if name.eq_ignore_ascii_case("token") {
        return Some(Redaction::Token);
    }
    None
}

/// True for a value that looks like role credentials (the JSON keys EC2's credential documents
/// have), wherever it was served: such a value is kept as `{"redacted": "credentials"}`.
pub fn looks_like_credentials(value: &[u8]) -> bool {
    ["\"SecretAccessKey\"", "\"Token\"", "\"AccessKeyId\""]
        .iter()
        .any(|key| contains(value, key.as_bytes()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    match std::str::from_utf8(haystack) {
        Ok(text) => std::str::from_utf8(needle).is_ok_and(|needle| text.contains(needle)),
        Err(_) => haystack
            .windows(needle.len())
            .any(|window| window == needle),
    }
}

/// The listings that differ from the ones the leaves derive, keyed as the snapshot keys them
/// (`dir/`, `""` for the version root).
pub fn listings_to_keep(
    tree: &Ec2Tree,
    served: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    served
        .iter()
        .filter(|(directory, listing)| tree.derived_listing(directory) != **listing)
        .map(|(directory, listing)| {
            let key = if directory.is_empty() {
                String::new()
            } else {
                format!("{directory}/")
            };
            (key, listing.clone())
        })
        .collect()
}

/// The Content-Type EC2 serves at `path`.
pub fn usual_content_type(path: &str) -> &'static str {
    if path == "user-data" {
        OCTET_STREAM
    } else {
        TEXT_PLAIN
    }
}

/// At most 80 bytes of `text` for a message (on a character boundary).
fn truncated(text: &str) -> &str {
    let mut end = text.len().min(80);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The crawl's request headers: the token, if there is one.
struct Session {
    token: Option<Secret>,
}

impl Session {
    fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        self.token
            .as_ref()
            .and_then(|token| HeaderValue::from_str(token.expose()).ok())
            .map(|mut value| {
                value.set_sensitive(true);
                vec![(HeaderName::from_static("x-aws-ec2-metadata-token"), value)]
            })
            .unwrap_or_default()
    }

    /// True when `value` holds the session's token.
    fn leaks_token(&self, value: &[u8]) -> bool {
        self.token
            .as_ref()
            .is_some_and(|token| contains(value, token.expose().as_bytes()))
    }
}

/// Asks for an IMDSv2 token; `None` when the service gives none (404, 405, 403, a timeout:
/// IMDSv1 then), `Err` only when it cannot be reached at all.
async fn token(recorder: &Recorder) -> Result<Option<Secret>, FetchError> {
    let ttl = HeaderValue::from(TOKEN_TTL_SECONDS);
    let answer = recorder
        .client()
        .fetch(
            Method::PUT,
            "/latest/api/token",
            &[(
                HeaderName::from_static("x-aws-ec2-metadata-token-ttl-seconds"),
                ttl,
            )],
            MAX_TOKEN_BYTES,
        )
        .await;
    match answer {
        Ok(Answer { status, body, .. }) if status == StatusCode::OK => {
            let token = String::from_utf8(body.to_vec())
                .ok()
                .filter(|token| !token.is_empty() && HeaderValue::from_str(token).is_ok());
            Ok(token.map(Secret::new))
        }
        Ok(_) => Ok(None),
        Err(error) if error.is_connect() => Err(error),
        Err(FetchError::Deadline(seconds)) => Err(FetchError::Deadline(seconds)),
        Err(_) => Ok(None),
    }
}

/// Records the EC2 tree at the recorder's service.
pub(crate) async fn record(recorder: &mut Recorder) -> Outcome<Ec2Tree> {
    let session = match token(recorder).await {
        Ok(token) => Session { token },
        Err(error) => return Outcome::Failed(error),
    };
    let headers = session.headers();
    let root = match recorder
        .client()
        .fetch(Method::GET, "/latest/", &headers, BOUNDS.leaf_bytes)
        .await
    {
        Ok(answer) if answer.status == StatusCode::OK => answer,
        Ok(answer) => {
            return Outcome::Absent(format!("GET /latest/ answered {}", answer.status));
        }
        Err(error) => return Outcome::Failed(error),
    };
    let root = match String::from_utf8(root.body.to_vec()) {
        Ok(listing)
            if listing
                .split('\n')
                .any(|line| line.trim_end_matches(['/', '\r']) == "meta-data") =>
        {
            listing
        }
        _ => return Outcome::Absent("GET /latest/ does not list meta-data".into()),
    };

    let mut tree = Ec2Tree {
        imdsv2: session.token.is_some(),
        ..Ec2Tree::default()
    };
    let mut served: BTreeMap<String, String> = BTreeMap::new();
    let mut visited: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    recorder.count_path();
    if recorder.count_bytes(root.len(), "/latest/") {
        served.insert(String::new(), root);
        queue.push_back(String::new());
    }

    'crawl: while let Some(directory) = queue.pop_front() {
        let listing = served.get(&directory).map_or("", String::as_str);
        let entries = parse_listing(&directory, listing);
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(why) => {
                    recorder.problem(format!("/latest/{directory}/: skipped {why}"));
                    continue;
                }
            };
            if !visited.insert(entry.path.clone()) {
                continue;
            }
            if !recorder.count_path() {
                break 'crawl;
            }
            if !entry.directory
                && let Some(why) = redaction_for(&entry.path)
            {
                tree.leaves.insert(entry.path, Leaf::redacted(why));
                continue;
            }
            let url = if entry.directory {
                format!("/latest/{}/", entry.path)
            } else {
                format!("/latest/{}", entry.path)
            };
            let answer = match recorder
                .client()
                .fetch(Method::GET, &url, &headers, BOUNDS.leaf_bytes)
                .await
            {
                Ok(answer) if answer.status == StatusCode::OK => answer,
                Ok(answer) => {
                    recorder.problem(format!("{url}: listed, but answered {}", answer.status));
                    continue;
                }
                Err(error) => {
                    let fatal = matches!(error, FetchError::Connect(_) | FetchError::Deadline(_));
                    recorder.problem(format!("{url}: {error}"));
                    if fatal {
                        break 'crawl;
                    }
                    continue;
                }
            };
            if !recorder.count_bytes(answer.body.len(), &url) {
                break 'crawl;
            }
            if entry.directory {
                match String::from_utf8(answer.body.to_vec()) {
                    Ok(listing) => {
                        served.insert(entry.path.clone(), listing);
                        queue.push_back(entry.path);
                    }
                    Err(_) => recorder.problem(format!("{url}: the listing is not UTF-8 text")),
                }
                continue;
            }
            let leaf = if looks_like_credentials(&answer.body) {
                Leaf::redacted(Redaction::Credentials)
            } else if session.leaks_token(&answer.body) {
                Leaf::redacted(Redaction::Token)
            } else {
                let mut leaf = Leaf::from_bytes(answer.body.to_vec());
                leaf.content_type = answer.content_type.filter(|served| {
                    served != usual_content_type(&entry.path) && served.len() <= 256
                });
                leaf
            };
            tree.leaves.insert(entry.path, leaf);
        }
    }
    // A listing the crawl did not finish may name paths that are not in the snapshot; it is
    // kept as served all the same (the snapshot is marked partial).
    tree.listings = listings_to_keep(&tree, &served);
    Outcome::Recorded(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(directory: &str, listing: &str) -> Vec<(String, bool)> {
        parse_listing(directory, listing)
            .into_iter()
            .filter_map(Result::ok)
            .map(|entry| (entry.path, entry.directory))
            .collect()
    }

    #[test]
    fn the_version_root_lists_directories_without_a_slash() {
        assert_eq!(
            entries("", "dynamic\nmeta-data\nuser-data"),
            [
                ("dynamic".to_owned(), true),
                ("meta-data".to_owned(), true),
                ("user-data".to_owned(), false)
            ]
        );
    }

    #[test]
    fn public_keys_lists_index_equals_name_for_a_directory() {
        assert_eq!(
            entries("meta-data/public-keys", "0=my-key\n1=other"),
            [
                ("meta-data/public-keys/0".to_owned(), true),
                ("meta-data/public-keys/1".to_owned(), true)
            ]
        );
        // Elsewhere a `=` is part of a leaf's name.
        assert_eq!(
            entries("meta-data/tags/instance", "0=x"),
            [("meta-data/tags/instance/0=x".to_owned(), false)]
        );
    }

    #[test]
    fn a_slash_marks_a_directory_and_crlf_and_blank_lines_are_ignored() {
        assert_eq!(
            entries("meta-data", "ami-id\r\nplacement/\n\nmac"),
            [
                ("meta-data/ami-id".to_owned(), false),
                ("meta-data/placement".to_owned(), true),
                ("meta-data/mac".to_owned(), false)
            ]
        );
    }

    #[test]
    fn lines_that_name_no_path_are_refused_with_a_reason() {
        let parsed = parse_listing("meta-data", "../\n.\na/b\nwith space\nfine\nq?x");
        let errors: Vec<&String> = parsed.iter().filter_map(|e| e.as_ref().err()).collect();
        assert_eq!(errors.len(), 5, "{parsed:?}");
        assert!(
            parsed
                .iter()
                .any(|e| e.as_ref().is_ok_and(|e| e.path == "meta-data/fine"))
        );
        // The version root names only EC2's three categories.
        assert!(parse_listing("", "latest")[0].is_err());
        // A path deeper than the bound is refused.
        let deep = vec!["a"; BOUNDS.depth - 1].join("/");
        assert!(parse_listing(&format!("meta-data/{deep}"), "b")[0].is_err());
    }

    #[test]
    fn credentials_signatures_and_tokens_are_never_fetched() {
        let cases = [
            (
                "meta-data/iam/security-credentials/app",
                Some(Redaction::Credentials),
            ),
            (
                "meta-data/iam/security-credentials-extended/app",
                Some(Redaction::Credentials),
            ),
            (
                "meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
                Some(Redaction::Credentials),
            ),
            (
                "meta-data/iam/security-credentials/app/odd",
                Some(Redaction::Credentials),
            ),
            ("meta-data/iam/security-credentials", None),
            ("meta-data/identity-credentials/ec2/info", None),
            ("meta-data/iam/info", None),
            (
                "dynamic/instance-identity/signature",
                Some(Redaction::Signature),
            ),
            (
                "dynamic/instance-identity/pkcs7",
                Some(Redaction::Signature),
            ),
            (
                "dynamic/instance-identity/rsa2048",
                Some(Redaction::Signature),
            ),
            ("meta-data/odd/place/pkcs7", Some(Redaction::Signature)),
            ("meta-data/api/token", Some(Redaction::Token)),
            ("dynamic/instance-identity/document", None),
            ("meta-data/instance-id", None),
            ("user-data", None),
        ];
        for (path, expected) in cases {
            assert_eq!(redaction_for(path), expected, "{path}");
        }
    }

    #[test]
    fn a_value_that_looks_like_credentials_is_recognised_anywhere() {
        assert!(looks_like_credentials(
            br#"{"Code":"Success","AccessKeyId":"ASIA","SecretAccessKey":"s","Token":"t"}"#
        ));
        assert!(looks_like_credentials(b"\xff\xfe \"SecretAccessKey\" \x00"));
        assert!(!looks_like_credentials(
            br#"{"accountId":"123","region":"eu-west-1"}"#
        ));
        assert!(!looks_like_credentials(b"Token without quotes"));
    }

    #[test]
    fn only_listings_that_differ_from_the_derived_one_are_kept() {
        let mut tree = Ec2Tree::default();
        for path in [
            "meta-data/instance-id",
            "meta-data/public-keys/0/openssh-key",
            "meta-data/iam/info",
            "meta-data/iam/security-credentials/app",
        ] {
            tree.leaves.insert(path.into(), Leaf::text("v"));
        }
        let served: BTreeMap<String, String> = [
            ("", "meta-data"),
            ("meta-data", "iam/\ninstance-id\npublic-keys/"),
            ("meta-data/public-keys", "0=my-key"),
            ("meta-data/public-keys/0", "openssh-key"),
            ("meta-data/iam", "info\nsecurity-credentials/"),
            ("meta-data/iam/security-credentials", "app"),
        ]
        .into_iter()
        .map(|(d, l)| (d.to_owned(), l.to_owned()))
        .collect();
        let kept = listings_to_keep(&tree, &served);
        assert_eq!(
            kept.into_iter().collect::<Vec<_>>(),
            [
                (String::new(), "meta-data".to_owned()),
                ("meta-data/public-keys/".to_owned(), "0=my-key".to_owned())
            ]
        );
    }

    #[test]
    fn user_data_is_octets_and_the_rest_text() {
        assert_eq!(usual_content_type("user-data"), "application/octet-stream");
        assert_eq!(usual_content_type("meta-data/ami-id"), "text/plain");
    }
}
