//! `--pass-through RULE`: requests the rules name are answered by the real metadata service,
//! the one the kernel reached before imds-tun claimed the address; everything else as without.
//!
//! On a real cloud VM imds-tun's route hides the provider's own service. Passing chosen
//! requests through keeps the VM's own agents working (a CI runner on Azure) while imds-tun
//! answers the rest: per-caller roles, the callers report and refusals on a real EC2 instance
//! with the instance's other metadata from EC2 itself. The rules are [`rules`]'s; this module
//! is the [`MetadataService`] that claims what they pass, checks it as imds-tun would, and
//! forwards it with the `--upstream` forwarder ([`Upstream`], limits, streaming, 502/504 and
//! loop detection included) over connections bound to the real service's interface, so they
//! leave past imds-tun's own TUN.
//!
//! EC2 requests are imds-tun's to authorize: the client's IMDSv2 token is checked against
//! imds-tun's tokens (the token policy of the run applies, 401 otherwise) and never forwarded;
//! the real service gets imds-tun's own token instead ([`RealToken`]); when it refuses a token
//! held (401: it restarted, or ended its tokens), the request is asked once more with a new one. GCE and Azure requests
//! pass with their headers as sent (`Metadata-Flavor`, `Metadata: true`), after `http`'s own
//! checks (Host, `X-Forwarded-For`, limits, faults), which run before any service.
//!
//! What this does not do: find the real service (that is a kernel question,
//! `platform::real_metadata_route`, asked before the claim), or pass the token endpoint or a
//! path with `..`, `//` or percent-escapes (never passed, see [`rules`]).

pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};
use tokio::time::Instant;

use crate::clouds::ec2::{self, Ec2};
use crate::http::service::{Answering, Context, MetadataService};
use crate::http::upstream::UpstreamSettings;
use crate::http::{Reply, Upstream};
pub use rules::{Protocol, Rule, Rules};

/// The TTL imds-tun asks the real service for its own token: EC2's longest, 6 hours.
pub const REAL_TOKEN_TTL_SECONDS: u32 = 21_600;

/// A token is fetched again this long before its TTL runs out.
pub const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// After a failed token request, requests go without a token this long before the next try.
pub const TOKEN_COOLDOWN: Duration = Duration::from_secs(5);

/// The largest token answer read (EC2's are 56 bytes).
const TOKEN_BYTES: usize = 4096;

const TOKEN_TTL_HEADER: HeaderName =
    HeaderName::from_static("x-aws-ec2-metadata-token-ttl-seconds");

/// What `--pass-through` needs: the rules, and the real service reached through the
/// interface the kernel routed the address out of before the claim.
#[derive(Debug, Clone)]
pub struct PassThroughSettings {
    /// The rules, in the order given.
    pub rules: Rules,
    /// `http://169.254.169.254`, the timeouts, and the interface connections are bound to.
    pub upstream: UpstreamSettings,
}

/// The service that answers the requests the rules pass, from the real metadata service.
pub struct PassThrough {
    rules: Rules,
    upstream: Upstream,
    ec2: Arc<Ec2>,
    token: RealToken,
}

impl std::fmt::Debug for PassThrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassThrough")
            .field("rules", &self.rules)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl PassThrough {
    /// Passes what `settings`' rules name; `ec2` (the local EC2 service, shared) checks the
    /// IMDSv2 tokens of passed EC2 requests. Connects lazily.
    pub fn new(settings: &PassThroughSettings, ec2: Arc<Ec2>) -> PassThrough {
        PassThrough {
            rules: settings.rules.clone(),
            upstream: Upstream::new(&settings.upstream),
            ec2,
            token: RealToken::default(),
        }
    }

    async fn pass(&self, context: Context<'_>) -> Reply {
        let mut request: Parts = context.request;
        let protocol = Protocol::of(request.uri.path());
        let tokenless = protocol == Protocol::Ec2 && ec2::tokenless(&request);
        if protocol == Protocol::Ec2
            && let Some(mut refusal) = self.ec2.refusal(&request, context.now)
        {
            refusal.tokenless = tokenless;
            return refusal;
        }
        // The client's token is imds-tun's, meaningless there; imds-tun's own goes instead.
        request.headers.remove(ec2::SESSION_TOKEN_HEADER);
        request.headers.remove(TOKEN_TTL_HEADER);
        if protocol != Protocol::Ec2 {
            return self.upstream.forward(request, context.body).await;
        }
        let held = self.token.get(&self.upstream, Instant::now()).await;
        let again = request.clone();
        let sent_held = held.as_ref().is_some_and(|(_, fresh)| !fresh);
        if let Some((token, _)) = held {
            request.headers.insert(ec2::SESSION_TOKEN_HEADER, token);
        }
        let mut reply = self.upstream.forward(request, context.body).await;
        if reply.status == StatusCode::UNAUTHORIZED && sent_held {
            // The real service no longer takes the token held (it restarted, or expired them
            // all): once more with a new one. A passed EC2 request is a GET or HEAD, so asking
            // twice changes nothing there; a fresh token refused is not asked again.
            self.token.forget().await;
            if let Some((token, _)) = self.token.get(&self.upstream, Instant::now()).await {
                let mut again = again;
                again.headers.insert(ec2::SESSION_TOKEN_HEADER, token);
                // Asked again without the body (a GET's, if any, went with the first try).
                again.headers.remove(http::header::CONTENT_LENGTH);
                reply = self.upstream.forward(again, None).await;
            }
        }
        reply.tokenless = tokenless;
        reply
    }
}

impl MetadataService for PassThrough {
    fn name(&self) -> &'static str {
        "pass-through"
    }

    /// A request one of the rules passes (by its path).
    fn claims(&self, request: &Parts) -> bool {
        self.rules.passing(request.uri.path()).is_some()
    }

    /// The body goes to the real service as it arrives (Azure's `StartRequests`).
    fn takes_body(&self, _request: &Parts) -> bool {
        true
    }

    fn answer<'a>(&'a self, context: Context<'a>) -> Answering<'a> {
        Box::pin(self.pass(context))
    }
}

/// imds-tun's own IMDSv2 token with the real service: fetched when first needed, kept until
/// [`RENEW_BEFORE`] before its TTL ends, one fetch at a time (the others wait for it), not
/// asked again for [`TOKEN_COOLDOWN`] after a failure (requests then go without one, and a
/// service that requires tokens answers them 401).
#[derive(Debug, Default)]
pub struct RealToken {
    state: tokio::sync::Mutex<TokenState>,
}

#[derive(Debug, Default)]
struct TokenState {
    /// The token and when to fetch another.
    held: Option<(HeaderValue, Instant)>,
    /// When the last fetch failed.
    failed: Option<Instant>,
}

impl RealToken {
    /// The token to send at `now`, and whether it was fetched just now (else it was held),
    /// fetched through `upstream` if none is held.
    pub async fn get(&self, upstream: &Upstream, now: Instant) -> Option<(HeaderValue, bool)> {
        let mut state = self.state.lock().await;
        if let Some((token, renew)) = &state.held
            && now < *renew
        {
            return Some((token.clone(), false));
        }
        if state
            .failed
            .is_some_and(|failed| now.saturating_duration_since(failed) < TOKEN_COOLDOWN)
        {
            return None;
        }
        match fetch_token(upstream).await {
            Ok(token) => {
                let lifetime = Duration::from_secs(u64::from(REAL_TOKEN_TTL_SECONDS));
                state.held = Some((token.clone(), now + lifetime.saturating_sub(RENEW_BEFORE)));
                state.failed = None;
                Some((token, true))
            }
            Err(why) => {
                crate::warn_limited!(
                    "--pass-through: no IMDSv2 token from the real metadata service {} ({why}); \
                     passing EC2 requests without one",
                    upstream.url()
                );
                state.held = None;
                state.failed = Some(now);
                None
            }
        }
    }

    /// Drops the token held, so the next request fetches another.
    pub async fn forget(&self) {
        self.state.lock().await.held = None;
    }
}

/// `PUT /latest/api/token` on the real service.
async fn fetch_token(upstream: &Upstream) -> Result<HeaderValue, String> {
    let mut headers = HeaderMap::new();
    headers.insert(TOKEN_TTL_HEADER, HeaderValue::from(REAL_TOKEN_TTL_SECONDS));
    headers.insert(
        http::header::HOST,
        HeaderValue::from_static("169.254.169.254"),
    );
    let (status, _, body) = upstream
        .fetch(Method::PUT, "/latest/api/token", headers, TOKEN_BYTES)
        .await?;
    if status != StatusCode::OK {
        return Err(format!("it answered {status}"));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| "its token is not text".to_owned())?
        .trim();
    let mut value =
        HeaderValue::from_str(text).map_err(|_| "its token is not a header value".to_owned())?;
    if text.is_empty() {
        return Err("its token is empty".into());
    }
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A metadata service on loopback that answers every token `PUT` with `status` and a
    /// token numbered by its count; the count of `PUT`s.
    async fn token_service(status: u16) -> (Upstream, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let puts = Arc::new(AtomicUsize::new(0));
        let counted = puts.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let number = if head.starts_with(b"PUT /latest/api/token ") {
                        counted.fetch_add(1, Ordering::SeqCst) + 1
                    } else {
                        0
                    };
                    // Slow enough that concurrent callers overlap.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let body = format!("token-{number}");
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        let upstream = Upstream::new(&UpstreamSettings {
            url: format!("http://{address}/").parse().expect("a URL"),
            token: None,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
            interface: None,
            flag: "--pass-through",
        });
        (upstream, puts)
    }

    #[tokio::test]
    async fn one_put_for_many_callers_then_a_new_one_before_the_ttl_ends() {
        let (upstream, puts) = token_service(200).await;
        let (upstream, token) = (Arc::new(upstream), Arc::new(RealToken::default()));
        let now = Instant::now();
        let all = futures_join(&token, &upstream, now, 10).await;
        assert!(
            all.iter().all(|got| got.as_deref() == Some("token-1")),
            "{all:?}"
        );
        assert_eq!(puts.load(Ordering::SeqCst), 1);
        let ttl = Duration::from_secs(u64::from(REAL_TOKEN_TTL_SECONDS));
        let before_renewal = now + ttl - RENEW_BEFORE - Duration::from_secs(1);
        let (kept, fresh) = token.get(&upstream, before_renewal).await.expect("a token");
        assert_eq!((kept.to_str().ok(), fresh), (Some("token-1"), false));
        let (renewed, fresh) = token
            .get(&upstream, now + ttl - RENEW_BEFORE)
            .await
            .expect("a token");
        assert_eq!((renewed.to_str().ok(), fresh), (Some("token-2"), true));
        token.forget().await;
        let (again, _) = token.get(&upstream, now + ttl).await.expect("a token");
        assert_eq!(again.to_str().ok(), Some("token-3"));
        assert!(again.is_sensitive(), "never logged");
    }

    #[tokio::test]
    async fn a_refused_put_is_not_asked_again_during_the_cooldown() {
        let (upstream, puts) = token_service(403).await;
        let token = RealToken::default();
        let now = Instant::now();
        assert!(token.get(&upstream, now).await.is_none());
        assert!(
            token
                .get(&upstream, now + TOKEN_COOLDOWN - Duration::from_millis(1))
                .await
                .is_none()
        );
        assert_eq!(puts.load(Ordering::SeqCst), 1);
        assert!(token.get(&upstream, now + TOKEN_COOLDOWN).await.is_none());
        assert_eq!(puts.load(Ordering::SeqCst), 2);
    }

    /// `count` concurrent `get`s at `now`, their tokens as text.
    async fn futures_join(
        token: &Arc<RealToken>,
        upstream: &Arc<Upstream>,
        now: Instant,
        count: usize,
    ) -> Vec<Option<String>> {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..count {
            let (token, upstream) = (token.clone(), upstream.clone());
            calls.spawn(async move {
                token
                    .get(&upstream, now)
                    .await
                    .and_then(|(value, _)| value.to_str().ok().map(str::to_owned))
            });
        }
        calls.join_all().await
    }
}
