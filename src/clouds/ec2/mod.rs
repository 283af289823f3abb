//! The EC2 instance metadata protocol as plain functions of a request.
//!
//! [`Ec2`] is the catch-all [`MetadataService`]: it claims every request no other cloud claimed.
//! Its answer is a plain function of the request head and the time; it does no I/O and never
//! waits, but for a `--caller-role` caller's first credentials (up to 5 s, once per role).
//! Routing, in order:
//!
//! 1. Paths with `..`/`.`/empty segments are 404. Length is not judged here: the HTTP layer has
//!    already answered 414 to anything longer than `--max-path-length`.
//! 2. `/latest/api/token`: PUT issues an IMDSv2 token; any other method is 405. A PUT on a dated
//!    version's token path is 403, as EC2 documents.
//! 3. Anything else must be GET or HEAD (405 otherwise), and passes the token check: a presented
//!    token must be valid (401 otherwise, in both modes); no token is 401 in required mode.
//! 4. `/` lists versions; `/<version>/…` is looked up in the [`tree::Tree`], the same for
//!    `latest` and every dated version.
//!
//! Modules: [`tree`] (paths and listings), [`token`] (IMDSv2 tokens), [`identity`] (the
//! identity document), [`responses`] (bodies and headers), [`signature`] (document signatures),
//! [`replay`] (the tree of a recorded snapshot, `--replay`).

pub mod identity;
mod instance;
pub mod interruptions;
pub mod replay;
pub mod responses;
pub mod signature;
pub mod token;
pub mod tree;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use time::OffsetDateTime;

use crate::attribution::CallerIdentity;
use crate::credentials::roles::{CallerRoles, LazyRole};
use crate::credentials::{CredentialSource, RoleCredentials};
use crate::http::{Answering, Context, CredentialsRead, MetadataService, Reply};
use responses::{iso8601_utc_seconds, pretty_json};
use token::TokenMint;
use tree::{Leaf, Node, Tree};

pub use instance::{Instance, PublicKey, SecurityGroup, TokenPolicy, partition};

/// The versions `GET /` lists, oldest first, as a current instance does.
pub const VERSIONS: &[&str] = &[
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "2011-01-01",
    "2011-05-01",
    "2012-01-12",
    "2014-02-25",
    "2014-11-05",
    "2015-10-20",
    "2016-04-19",
    "2016-06-30",
    "2016-09-02",
    "2018-03-28",
    "2018-08-17",
    "2018-09-24",
    "2019-10-01",
    "2020-10-27",
    "2021-01-03",
    "2021-03-23",
    "2021-07-15",
    "2022-09-24",
    "2024-04-11",
    "latest",
];

/// The header an IMDSv2 token travels in.
pub const SESSION_TOKEN_HEADER: HeaderName = HeaderName::from_static("x-aws-ec2-metadata-token");
const TOKEN_TTL_HEADER: HeaderName =
    HeaderName::from_static("x-aws-ec2-metadata-token-ttl-seconds");
const FORWARDED_FOR_HEADER: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The metadata service for one instance. Immutable after `new` apart from the credential
/// source's own cache, so it is shared by `Arc` across connections without locking.
pub struct Ec2 {
    tree: Tree,
    versions: Bytes,
    tokens: Arc<TokenMint>,
    imdsv2: TokenPolicy,
    credentials: Arc<dyn CredentialSource>,
    account_id: String,
    role_name: String,
    interruptions: Arc<interruptions::Board>,
    caller_roles: Option<Arc<CallerRoles>>,
    /// The longest TTL a token is issued for (`--max-token-ttl`); a PUT asking for more gets
    /// this many seconds.
    max_token_ttl: u32,
    /// The tree is a recording (`--replay`): its own interruption paths (`events/`,
    /// `instance-life-cycle`) answer while nothing is pending.
    replayed: bool,
}

impl std::fmt::Debug for Ec2 {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Ec2")
            .field("imdsv2", &self.imdsv2)
            .finish_non_exhaustive()
    }
}

impl Ec2 {
    /// Builds the tree, the identity document and its signatures once, at start-up.
    pub fn new(
        instance: &Instance,
        token_policy: TokenPolicy,
        credentials: Arc<dyn CredentialSource>,
    ) -> Ec2 {
        let now = OffsetDateTime::now_utc();
        Ec2::started_at(
            instance,
            token_policy,
            credentials,
            now.replace_nanosecond(0).unwrap_or(now),
        )
    }

    /// As [`Ec2::new`], with the instance's pending (launch) time given.
    fn started_at(
        instance: &Instance,
        token_policy: TokenPolicy,
        credentials: Arc<dyn CredentialSource>,
        pending_time: OffsetDateTime,
    ) -> Ec2 {
        let document = identity::document(instance, pending_time);
        let signatures = signature::DeferredSignatures::new(document.as_bytes());
        signatures.warm_up();
        let tree = Tree::build(instance, &document, &signatures, pending_time);
        Ec2::serving(tree, instance, token_policy, credentials)
    }

    /// As [`Ec2::new`], serving a recorded snapshot's tree (`--replay`): `base` is the instance
    /// the defaults alone describe, `instance` the one every setting does; where they differ the
    /// setting wins over the recording (see [`replay`]). `served` names the role and the
    /// account of the credentials (the recorded account unless a setting changed it).
    pub fn replaying(
        recorded: &crate::snapshot::Ec2Tree,
        base: &Instance,
        instance: &Instance,
        served: &Instance,
        token_policy: TokenPolicy,
        credentials: Arc<dyn CredentialSource>,
    ) -> Ec2 {
        let now = OffsetDateTime::now_utc();
        let pending_time = now.replace_nanosecond(0).unwrap_or(now);
        let tree = replay::tree(recorded, base, instance, pending_time);
        Ec2 {
            replayed: true,
            ..Ec2::serving(tree, served, token_policy, credentials)
        }
    }

    fn serving(
        tree: Tree,
        instance: &Instance,
        token_policy: TokenPolicy,
        credentials: Arc<dyn CredentialSource>,
    ) -> Ec2 {
        Ec2 {
            tree,
            versions: Bytes::from(VERSIONS.join("\n")),
            tokens: Arc::new(TokenMint::new()),
            imdsv2: token_policy,
            credentials,
            account_id: instance.account_id.clone(),
            role_name: instance.role_name.clone(),
            interruptions: Arc::new(interruptions::Board::default()),
            caller_roles: None,
            max_token_ttl: *token::TTL_RANGE.end(),
            replayed: false,
        }
    }

    /// Issues tokens for at most `seconds` (`--max-token-ttl`), whatever a PUT asks for: the
    /// reply's TTL header says what was granted, and a client that assumes what it asked for
    /// meets a 401 early, as under a short TTL on EC2.
    pub fn with_max_token_ttl(mut self, seconds: u32) -> Ec2 {
        self.max_token_ttl = seconds.clamp(*token::TTL_RANGE.start(), *token::TTL_RANGE.end());
        self
    }

    /// The interruptions this instance is told about, for whoever changes them (`ctl`).
    pub fn interruptions(&self) -> Arc<interruptions::Board> {
        self.interruptions.clone()
    }

    /// The mint of this instance's IMDSv2 tokens, for whoever counts them (`ctl status`, the
    /// metrics).
    pub fn token_mint(&self) -> Arc<TokenMint> {
        self.tokens.clone()
    }

    /// Starts the caller's role if this is its first caller and waits (up to 5 s) for its first
    /// credentials, so the first answer carries keys rather than an error.
    async fn prepare_role(&self, caller: &CallerIdentity) {
        let Some(roles) = &self.caller_roles else {
            return;
        };
        if let Ok(Some(role)) = roles.for_caller(caller) {
            let source = roles.source(role);
            if !source.wait_first(std::time::Duration::from_secs(5)).await {
                crate::warn_limited!(role = %role.role.arn, "no credentials yet for this caller role");
            }
        }
    }

    /// Gives some callers other roles (`--caller-role`); the rules are shared with the
    /// container endpoints, so a role is assumed once whichever endpoint its caller asks.
    pub fn with_caller_roles(mut self, roles: Arc<CallerRoles>) -> Ec2 {
        self.caller_roles = Some(roles);
        self
    }

    /// The answer to one request at `now`; a `caller` with a `--caller-role` rule sees that
    /// role under `iam/`. HEAD is answered as GET (`http` drops the body).
    fn route(
        &self,
        request: &http::request::Parts,
        now: OffsetDateTime,
        caller: Option<&CallerIdentity>,
    ) -> Reply {
        let Some(segments) = split_path(request.uri.path()) else {
            return responses::error(StatusCode::NOT_FOUND);
        };
        if let [version, "api", "token"] = segments.as_slice() {
            if *version == "latest" {
                return self.token_endpoint(request, now);
            }
            // EC2 refuses tokens on dated paths on purpose; other methods fall through to 404.
            if request.method == Method::PUT && VERSIONS.contains(version) {
                return responses::error(StatusCode::FORBIDDEN);
            }
        }
        if request.method != Method::GET && request.method != Method::HEAD {
            return responses::error(StatusCode::METHOD_NOT_ALLOWED)
                .header(ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        if !self.authorized(request, now) {
            return responses::error(StatusCode::UNAUTHORIZED);
        }
        match segments.split_first() {
            None => responses::text(self.versions.clone()),
            Some((version, _)) if !VERSIONS.contains(version) => {
                responses::error(StatusCode::NOT_FOUND)
            }
            Some((_, rest)) => {
                let path = rest.join("/");
                if !path.starts_with("meta-data/iam") {
                    return self.tree_answer(&path, now);
                }
                let Some((roles, caller)) = self.caller_roles.as_ref().zip(caller) else {
                    return self.tree_answer(&path, now);
                };
                match roles.for_caller(caller) {
                    Ok(Some(role)) => self.caller_role_answer(&path, roles, role, now),
                    Ok(None) => self.tree_answer(&path, now),
                    Err(undecided) => {
                        crate::warn_limited!(
                            "{caller}: no credentials served: {undecided} (403; see \
                             docs/credentials.md#a-role-per-caller)"
                        );
                        undecided_caller()
                    }
                }
            }
        }
    }

    /// A path under a version: the interruptions' part of the tree first (one snapshot), then
    /// the fixed tree.
    fn tree_answer(&self, path: &str, now: OffsetDateTime) -> Reply {
        // Only `meta-data`'s own listing merges the fixed one with the interruptions' entries;
        // no other path needs it looked up.
        let static_listing = match (path == "meta-data").then(|| self.tree.get(path)).flatten() {
            Some(Node::Directory(listing)) => listing.clone(),
            _ => Bytes::new(),
        };
        let board = self.interruptions.snapshot();
        // A replayed tree recorded these paths as the instance showed them: they answer until
        // `ctl` tells the instance something (then the board's answers, as on a built tree).
        let recorded = (self.replayed && *board == interruptions::Interruptions::default())
            .then(|| self.tree.get(path))
            .flatten();
        let dynamic = match recorded {
            Some(_) => None,
            None => board.lookup(path, now, &static_listing),
        };
        match recorded
            .or(dynamic.as_ref())
            .or_else(|| self.tree.get(path))
        {
            None => responses::error(StatusCode::NOT_FOUND),
            Some(Node::Directory(listing)) => responses::text(listing.clone()),
            Some(Node::Leaf(Leaf::Text(value))) => responses::text(value.clone()),
            Some(Node::Leaf(Leaf::Octets(value))) => responses::octets(value.clone()),
            Some(Node::Leaf(Leaf::Typed { body, content_type })) => {
                responses::text(body.clone()).header(CONTENT_TYPE, content_type.clone())
            }
            Some(Node::Leaf(Leaf::Signed { form, signatures })) => responses::text(
                Bytes::copy_from_slice(signatures.get().form(*form).as_bytes()),
            ),
            Some(Node::Leaf(Leaf::Credentials { extended })) => {
                self.credentials_reply(*extended, now)
            }
        }
    }

    /// `meta-data/iam/…` for a caller with its own role: exactly what an instance with that one
    /// role shows; any other role's name is a 404.
    fn caller_role_answer(
        &self,
        path: &str,
        roles: &CallerRoles,
        role: &LazyRole,
        now: OffsetDateTime,
    ) -> Reply {
        let name = role.role.name.as_str();
        match path {
            "meta-data/iam" => responses::text("info\nsecurity-credentials/"),
            "meta-data/iam/info" => responses::text(pretty_json(&[
                ("Code", "Success".into()),
                ("LastUpdated", iso8601_utc_seconds(now).into()),
                (
                    "InstanceProfileArn",
                    format!(
                        "arn:{}:iam::{}:instance-profile/{name}",
                        role.role.partition, role.role.account_id
                    )
                    .into(),
                ),
                (
                    "InstanceProfileId",
                    instance_profile_id(&role.role.arn).into(),
                ),
            ])),
            "meta-data/iam/security-credentials" => responses::text(name.to_owned()),
            _ => {
                let extended = match path.strip_prefix("meta-data/iam/security-credentials/") {
                    Some(asked) if asked == name => false,
                    _ => match path.strip_prefix("meta-data/iam/security-credentials-extended/") {
                        Some(asked) if asked == name => true,
                        _ => return responses::error(StatusCode::NOT_FOUND),
                    },
                };
                let source = roles.source(role);
                self.credentials_reply_from(source.as_ref(), name, extended, now)
            }
        }
    }

    /// `PUT /latest/api/token`.
    fn token_endpoint(&self, request: &http::request::Parts, now: OffsetDateTime) -> Reply {
        if request.method != Method::PUT {
            return responses::empty(StatusCode::METHOD_NOT_ALLOWED)
                .header(ALLOW, HeaderValue::from_static("OPTIONS, PUT"));
        }
        // A forwarded PUT came through a proxy: exactly what IMDSv2 exists to stop.
        if request.headers.contains_key(FORWARDED_FOR_HEADER) {
            return responses::error(StatusCode::FORBIDDEN);
        }
        let ttl = request
            .headers
            .get(TOKEN_TTL_HEADER)
            .and_then(|value| token::parse_ttl(value.as_bytes()));
        let Some(asked) = ttl else {
            return responses::error(StatusCode::BAD_REQUEST);
        };
        let granted = asked.min(self.max_token_ttl);
        responses::text(self.tokens.issue(now.unix_timestamp(), granted))
            .header(TOKEN_TTL_HEADER, HeaderValue::from(granted))
    }

    /// The checks of a read before anything is looked up, for a request answered elsewhere
    /// (`--pass-through`): GET or HEAD (else 405), and the IMDSv2 token rules of this instance
    /// (else 401). The refusal, on EC2's page, or `None` when the request may go on.
    pub fn refusal(&self, request: &http::request::Parts, now: OffsetDateTime) -> Option<Reply> {
        if request.method != Method::GET && request.method != Method::HEAD {
            return Some(
                responses::error(StatusCode::METHOD_NOT_ALLOWED)
                    .header(ALLOW, HeaderValue::from_static("GET, HEAD")),
            );
        }
        if !self.authorized(request, now) {
            return Some(responses::error(StatusCode::UNAUTHORIZED));
        }
        None
    }

    /// A presented token must be good in both modes: a client that sends one expects v2
    /// semantics and must learn (401) that its token is stale, so it fetches a new one instead
    /// of silently downgrading. Without a token only optional mode serves (IMDSv1).
    fn authorized(&self, request: &http::request::Parts, now: OffsetDateTime) -> bool {
        match request.headers.get(SESSION_TOKEN_HEADER) {
            Some(value) => value
                .to_str()
                .is_ok_and(|token| self.tokens.check(token, now.unix_timestamp()).is_ok()),
            None => self.imdsv2 == TokenPolicy::Optional,
        }
    }

    /// The role's credentials JSON, or EC2's error shape when the source has none.
    fn credentials_reply(&self, extended: bool, now: OffsetDateTime) -> Reply {
        self.credentials_reply_from(self.credentials.as_ref(), &self.role_name, extended, now)
    }

    fn credentials_reply_from(
        &self,
        source: &dyn CredentialSource,
        role_name: &str,
        extended: bool,
        now: OffsetDateTime,
    ) -> Reply {
        match source.current(now) {
            Ok(credentials) => responses::text(credentials_json(
                &credentials,
                extended.then_some(self.account_id.as_str()),
            ))
            .credentials_read(
                CredentialsRead::new(RoleCredentialsRead(role_name.to_owned())).of_role(role_name),
            ),
            Err(error) => {
                crate::warn_limited!(code = %error.code, "serving a credential error");
                responses::text(pretty_json(&[
                    ("Code", error.code.into()),
                    ("Message", error.message.into()),
                    ("LastUpdated", iso8601_utc_seconds(now).into()),
                ]))
            }
        }
    }
}

impl MetadataService for Ec2 {
    fn name(&self) -> &'static str {
        "ec2"
    }

    /// Every request: EC2 is registered last, the catch-all, as `/` and unknown paths are its.
    fn claims(&self, _request: &http::request::Parts) -> bool {
        true
    }

    /// Whether a `--caller-role` rule could apply: only under `meta-data/iam`.
    fn depends_on_caller(&self, request: &http::request::Parts) -> bool {
        self.caller_roles.is_some() && request.uri.path().contains("/meta-data/iam")
    }

    fn answer<'a>(&'a self, context: Context<'a>) -> Answering<'a> {
        Box::pin(async move {
            if let Some(caller) = context.caller {
                self.prepare_role(caller).await;
            }
            let mut reply = self.route(&context.request, context.now, context.caller);
            reply.tokenless = tokenless(&context.request);
            reply
        })
    }
}

/// Whether `request` is an IMDSv1 request: a read (GET, HEAD) of anything but the token
/// endpoint, without a session token. Served in optional mode, 401 in required mode; counted
/// either way, so a rehearsal in required mode still names who would break.
pub fn tokenless(request: &http::request::Parts) -> bool {
    (request.method == Method::GET || request.method == Method::HEAD)
        && !request.headers.contains_key(SESSION_TOKEN_HEADER)
        && !request.uri.path().ends_with("/api/token")
}

/// The answer under `meta-data/iam` to a caller a `--caller-role` rule could apply to but who
/// cannot be told: no role, no keys, and a body that says why without naming anybody.
fn undecided_caller() -> Reply {
    Reply::message(
        StatusCode::FORBIDDEN,
        Bytes::from_static(
            b"imds-tun: cannot tell whether a --caller-role rule applies to this caller, so no \
              credentials are served (imds-tun's log says which rule and why)\n",
        ),
    )
}

/// What a credentials answer handed out, for the audit line: `role credentials NAME`.
#[derive(Debug)]
struct RoleCredentialsRead(String);

impl std::fmt::Display for RoleCredentialsRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "role credentials {}", self.0)
    }
}

/// An instance profile id for a role: `AIPA` and 17 characters derived from its ARN, stable.
fn instance_profile_id(arn: &str) -> String {
    use sha2::Digest as _;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = sha2::Sha256::digest(arn.as_bytes());
    let tail: String = digest[..17]
        .iter()
        .map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]))
        .collect();
    format!("AIPA{tail}")
}

/// `iam/security-credentials/<role>` exactly as EC2 lays it out; `account_id` for the
/// extended form.
pub fn credentials_json(credentials: &RoleCredentials, account_id: Option<&str>) -> String {
    let mut fields = vec![
        ("Code", "Success".into()),
        (
            "LastUpdated",
            iso8601_utc_seconds(credentials.last_updated).into(),
        ),
        ("Type", "AWS-HMAC".into()),
        ("AccessKeyId", credentials.access_key_id.as_str().into()),
        (
            "SecretAccessKey",
            credentials.secret_access_key.as_str().into(),
        ),
        ("Token", credentials.token.as_str().into()),
        (
            "Expiration",
            iso8601_utc_seconds(credentials.expiration).into(),
        ),
    ];
    if let Some(account_id) = account_id {
        fields.push(("AccountId", account_id.into()));
    }
    pretty_json(&fields)
}

/// The path's segments, a trailing `/` ignored; `None` for anything no metadata path can be
/// (relative, empty or dot segments). Query strings are not part of `path()`. No length cap of
/// its own: a second, fixed one would turn paths that `--max-path-length` admits (a long tag
/// key) into 404 and skip the method and token checks for them.
fn split_path(path: &str) -> Option<Vec<&str>> {
    let inner = path.strip_prefix('/')?;
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() {
        return Some(Vec::new());
    }
    let segments: Vec<&str> = inner.split('/').collect();
    let bad = segments
        .iter()
        .any(|segment| segment.is_empty() || *segment == "." || *segment == "..");
    (!bad).then_some(segments)
}

#[cfg(test)]
mod tests;
