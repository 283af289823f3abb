//! Settings of upstream proxy mode (`--upstream`) and of the shared token that guards
//! non-loopback `--listen` sockets.
//!
//! Why a token at all: a `--listen` socket on anything but loopback hands role credentials to
//! every host that can reach it, and unlike 169.254.169.254 (which only this host routes into
//! its TUN) a LAN or a VM's NAT gateway reaches it. So such a listener needs a shared secret
//! (`--listen-token-file`), which the other side sends (`--upstream-token-file`), or the loudly
//! named opt-out `--insecure-listen-without-token`. Start-up refuses anything else.
//!
//! A token file must not be readable by every user (mode `o+r`): imds-tun refuses it instead of
//! warning, because a warning scrolls past in a service log while the secret stays exposed.
//! The secret is never logged and never printed in an error; its `Debug` is redacted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::http::shared_token::{LISTENER_TOKEN_HEADER, SharedToken};
pub use crate::http::upstream::UpstreamSettings;

use super::super::ConfigError;
use super::super::layer::Layer;
use super::super::named_file::{self, NamedFile, Opener};
use super::super::origin::{Origin, label, number, pick};

/// Default time to establish a TCP connection to the upstream.
pub const UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 1000;
/// Default time from sending a request upstream to receiving its response head.
pub const UPSTREAM_RESPONSE_TIMEOUT_MS: u64 = 5000;

/// Upstream forwarding and listener protection, resolved.
#[derive(Debug, Clone, Default)]
pub struct ProxySettings {
    /// Forward every request to this metadata service instead of answering locally.
    pub upstream: Option<UpstreamSettings>,
    /// The secret non-loopback `--listen` sockets require in [`LISTENER_TOKEN_HEADER`].
    pub listen_token: Option<SharedToken>,
    /// The user accepted serving non-loopback listeners without a token.
    pub insecure_listen_without_token: bool,
}

/// What non-loopback `--listen` sockets require, resolved.
#[derive(Debug, Clone, Default)]
pub struct ListenerProtection {
    /// The secret non-loopback `--listen` sockets require in [`LISTENER_TOKEN_HEADER`].
    pub listen_token: Option<SharedToken>,
    /// The user accepted serving non-loopback listeners without a token.
    pub insecure_listen_without_token: bool,
}

impl ListenerProtection {
    /// The secret requests on `listener` must carry, if any: loopback listeners need none.
    pub fn token_for(&self, listener: SocketAddr) -> Option<&SharedToken> {
        if listener.ip().is_loopback() {
            None
        } else {
            self.listen_token.as_ref()
        }
    }
}

/// Reads a token file with `opener`'s rights: a regular file of at most 4 KiB that not every
/// user may read.
pub fn read_token_file(
    path: &Path,
    what: &str,
    opener: &Opener,
) -> Result<SharedToken, ConfigError> {
    let (text, described) = read_secret_file(path, what, opener)?;
    // Not UTF-8 is not printable ASCII either: parse says so, without the bytes.
    SharedToken::parse(&text).map_err(|why| ConfigError(format!("{described}: {why}")))
}

/// A file that holds a secret, read with `opener`'s rights: a regular file of at most 4 KiB
/// that not every user may read. Returns its text (invalid UTF-8 replaced) and how to name it.
pub(super) fn read_secret_file(
    path: &Path,
    what: &str,
    opener: &Opener,
) -> Result<(String, String), ConfigError> {
    let file =
        NamedFile::open(path, what, opener).map_err(|error| ConfigError(error.to_string()))?;
    let described = file.describe();
    {
        use std::os::unix::fs::PermissionsExt;
        // Only a regular file gets here, so the mode bits are the file's own, and chmod is the
        // fix (for /dev/zero it would not have been: NamedFile says "not a regular file").
        let mode = file.metadata().permissions().mode() & 0o777;
        if mode & 0o004 != 0 {
            return Err(ConfigError(format!(
                "{described}: readable by every user (mode {mode:03o}), and it holds a secret; run \
                 `chmod 600 {}` (or 640 for a group)",
                path.display()
            )));
        }
    }
    let bytes = file
        .read(named_file::TOKEN_CAP)
        .map_err(|error| ConfigError(error.to_string()))?;
    Ok((String::from_utf8_lossy(&bytes).into_owned(), described))
}

/// Resolves the proxy settings; `listen` are the resolved `--listen` addresses and `tun` says
/// whether a TUN device will be created.
pub fn resolve(
    file: &Layer,
    flags: &Layer,
    listen: &[SocketAddr],
    tun: bool,
    files: &Opener,
) -> Result<ProxySettings, ConfigError> {
    let insecure = pick(
        flags.insecure_listen_without_token,
        file.insecure_listen_without_token,
    )
    .is_some_and(|(value, _)| value);
    let listen_token = pick(
        flags.listen_token_file.clone(),
        file.listen_token_file.clone(),
    )
    .map(|(path, origin)| read_token_file(&path, &label(origin, "listen_token_file"), files))
    .transpose()?;
    if listen_token.is_none()
        && !insecure
        && let Some(exposed) = listen.iter().find(|address| !address.ip().is_loopback())
    {
        return Err(ConfigError(format!(
            "--listen {exposed} is not a loopback address, so it would serve role credentials to \
             the network: require a shared secret with --listen-token-file FILE (clients send it \
             as X-Imds-Tun-Token, e.g. an imds-tun with --upstream-token-file), or accept the risk \
             with --insecure-listen-without-token"
        )));
    }

    let upstream_token = pick(
        flags.upstream_token_file.clone(),
        file.upstream_token_file.clone(),
    );
    let upstream = match pick(flags.upstream.clone(), file.upstream.clone()) {
        None => {
            if let Some((_, origin)) = upstream_token {
                return Err(ConfigError(format!(
                    "{}: only meaningful with --upstream URL",
                    label(origin, "upstream_token_file")
                )));
            }
            None
        }
        Some((text, origin)) => {
            let url = parse_upstream(&text, tun).map_err(|why| {
                let shown = without_userinfo(&text);
                ConfigError(format!("{} {shown:?}: {why}", label(origin, "upstream")))
            })?;
            if let Some(own) =
                listener_it_names(&url, listen, &crate::platform::host::local_addresses())
            {
                return Err(ConfigError(format!(
                    "{} {text:?} is this imds-tun's own --listen {own}: every request would be \
                     forwarded back to itself; point --upstream at another metadata service",
                    label(origin, "upstream")
                )));
            }
            let token = upstream_token
                .map(|(path, origin): (PathBuf, Origin)| {
                    read_token_file(&path, &label(origin, "upstream_token_file"), files)
                })
                .transpose()?;
            let connect = number(
                pick(
                    flags.upstream_connect_timeout_ms,
                    file.upstream_connect_timeout_ms,
                ),
                "upstream_connect_timeout_ms",
                50..=60_000,
                "milliseconds",
                UPSTREAM_CONNECT_TIMEOUT_MS,
            )?;
            let response = number(
                pick(
                    flags.upstream_response_timeout_ms,
                    file.upstream_response_timeout_ms,
                ),
                "upstream_response_timeout_ms",
                50..=300_000,
                "milliseconds",
                UPSTREAM_RESPONSE_TIMEOUT_MS,
            )?;
            Some(UpstreamSettings {
                url,
                token,
                connect_timeout: Duration::from_millis(connect),
                response_timeout: Duration::from_millis(response),
                interface: None,
                flag: "--upstream",
            })
        }
    };
    Ok(ProxySettings {
        upstream,
        listen_token,
        insecure_listen_without_token: insecure,
    })
}

/// `http://HOST[:PORT][/]` → the URI with scheme and authority only.
fn parse_upstream(text: &str, tun: bool) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|_| "expected a URL such as \"http://10.0.2.2:8080\"".to_string())?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https upstreams are not supported: imds-tun forwards plain HTTP, like the \
                        metadata service itself; use http://HOST:PORT and protect it with \
                        --upstream-token-file"
                    .into(),
            );
        }
        _ => return Err("expected an http:// URL such as \"http://10.0.2.2:8080\"".into()),
    }
    let Some(authority) = uri.authority() else {
        return Err("the URL names no host; expected e.g. \"http://10.0.2.2:8080\"".into());
    };
    if authority.as_str().contains('@') {
        return Err(
            "the URL carries a user name or password, which imds-tun would neither send nor keep \
             out of its log; remove it and protect the upstream with a shared secret instead \
             (--upstream-token-file here, --listen-token-file there)"
                .into(),
        );
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(
            "give only scheme, host and port (no path or query): requests keep their own path"
                .into(),
        );
    }
    let is_self = authority.host() == "169.254.169.254" && authority.port_u16().unwrap_or(80) == 80;
    if tun && is_self {
        return Err("that is the address this TUN serves; imds-tun would forward to itself".into());
    }
    http::Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|error| error.to_string())
}

/// The `--listen` address that `url` would reach, if any: the same port, and the same address,
/// or a wildcard listener and an upstream on this machine (`localhost`, loopback, unspecified,
/// or an address of one of `local`'s interfaces). A host name other than `localhost` is not
/// resolved here; the `Via` check catches what this misses, one request later.
fn listener_it_names(
    url: &http::Uri,
    listen: &[SocketAddr],
    local: &[IpAddr],
) -> Option<SocketAddr> {
    let authority = url.authority()?;
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    let name = host.strip_suffix('.').unwrap_or(host);
    let targets: Vec<IpAddr> = if name.eq_ignore_ascii_case("localhost") {
        vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
    } else {
        vec![host.parse().ok()?]
    };
    let on_this_machine =
        |ip: &IpAddr| ip.is_loopback() || ip.is_unspecified() || local.contains(ip);
    listen.iter().copied().find(|own| {
        own.port() == port
            && targets.iter().any(|target| {
                *target == own.ip()
                    || (own.ip().is_unspecified() && on_this_machine(target))
                    || (target.is_unspecified() && on_this_machine(&own.ip()))
            })
    })
}

/// `text` with any user-info (`user:password@`) in its authority replaced by `***@`, for
/// messages: a refused URL is shown, its password never.
fn without_userinfo(text: &str) -> String {
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, text),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let Some((_, host)) = authority.rsplit_once('@') else {
        return text.to_owned();
    };
    let scheme = scheme
        .map(|scheme| format!("{scheme}://"))
        .unwrap_or_default();
    format!("{scheme}***@{host}{tail}")
}

#[cfg(test)]
mod tests {
    /// The listener half of a proxy resolution, as `config::resolve` keeps it.
    fn listeners(settings: &ProxySettings) -> ListenerProtection {
        ListenerProtection {
            listen_token: settings.listen_token.clone(),
            insecure_listen_without_token: settings.insecure_listen_without_token,
        }
    }

    use super::*;
    use crate::temp_dir::TempDir;

    fn write_token(dir: &Path, mode: u32, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("token");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn loopback_listen_needs_no_token() {
        let settings = resolve(
            &Layer::default(),
            &Layer::default(),
            &[addr("127.0.0.1:8080"), addr("[::1]:8080")],
            true,
            &Opener::OwnRights,
        )
        .unwrap();
        assert!(settings.listen_token.is_none());
    }

    #[test]
    fn non_loopback_listen_without_token_is_refused_naming_both_ways_out() {
        let error = resolve(
            &Layer::default(),
            &Layer::default(),
            &[addr("127.0.0.1:1"), addr("0.0.0.0:8080")],
            true,
            &Opener::OwnRights,
        )
        .unwrap_err();
        assert!(error.0.contains("0.0.0.0:8080"), "{}", error.0);
        assert!(error.0.contains("--listen-token-file"), "{}", error.0);
        assert!(
            error.0.contains("--insecure-listen-without-token"),
            "{}",
            error.0
        );
        assert!(!error.0.contains('\n'));
    }

    #[test]
    fn the_insecure_opt_out_allows_a_non_loopback_listen() {
        let flags = Layer {
            insecure_listen_without_token: Some(true),
            ..Layer::default()
        };
        let settings = resolve(
            &Layer::default(),
            &flags,
            &[addr("10.0.2.2:8080")],
            false,
            &Opener::OwnRights,
        )
        .unwrap();
        assert!(settings.insecure_listen_without_token);
        assert!(
            listeners(&settings)
                .token_for(addr("10.0.2.2:8080"))
                .is_none()
        );
    }

    #[test]
    fn a_token_file_guards_only_non_loopback_listeners() {
        let dir = TempDir::new();
        let path = write_token(dir.path(), 0o600, "0123456789abcdef0123\n");
        let flags = Layer {
            listen_token_file: Some(path),
            ..Layer::default()
        };
        let settings = resolve(
            &Layer::default(),
            &flags,
            &[addr("10.0.2.2:8080")],
            false,
            &Opener::OwnRights,
        )
        .unwrap();
        let listeners = listeners(&settings);
        let token = listeners.token_for(addr("10.0.2.2:8080")).unwrap();
        assert_eq!(token.expose(), "0123456789abcdef0123");
        assert!(listeners.token_for(addr("127.0.0.1:8080")).is_none());
    }

    #[test]
    fn world_readable_token_file_is_refused_without_showing_the_secret() {
        let dir = TempDir::new();
        let path = write_token(dir.path(), 0o644, "supersecretvalue-0123456789");
        let error = read_token_file(&path, "--listen-token-file", &Opener::OwnRights).unwrap_err();
        assert!(error.0.contains("chmod 600"), "{}", error.0);
        assert!(error.0.contains("644"), "{}", error.0);
        assert!(!error.0.contains("supersecret"), "{}", error.0);
    }

    #[test]
    fn a_token_file_that_is_not_a_regular_file_is_refused_as_such_not_with_chmod_advice() {
        let error = read_token_file(
            Path::new("/dev/zero"),
            "--listen-token-file",
            &Opener::OwnRights,
        )
        .unwrap_err();
        assert_eq!(
            error.0,
            "--listen-token-file /dev/zero: is a character device, not a regular file; imds-tun \
             reads only regular files"
        );
        assert!(!error.0.contains("chmod"), "{}", error.0);
    }

    #[test]
    fn an_over_large_token_file_is_refused_without_showing_it() {
        let dir = TempDir::new();
        let path = write_token(dir.path(), 0o600, &"supersecretvalue".repeat(300));
        let error =
            read_token_file(&path, "--upstream-token-file", &Opener::OwnRights).unwrap_err();
        assert!(error.0.contains("4800 bytes"), "{}", error.0);
        assert!(error.0.contains("limit of 4096 bytes"), "{}", error.0);
        assert!(!error.0.contains("supersecret"), "{}", error.0);
    }

    #[test]
    fn short_empty_or_spaced_secrets_are_refused() {
        assert!(SharedToken::parse("").is_err());
        assert!(SharedToken::parse("short").is_err());
        assert!(SharedToken::parse("has a space in the middle!!").is_err());
        assert!(SharedToken::parse("  0123456789abcdef  \n").is_ok());
    }

    #[test]
    fn token_comparison_accepts_only_the_exact_secret() {
        let token = SharedToken::parse("0123456789abcdef").unwrap();
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b"0123456789abcdef0"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "SharedToken(<redacted>)");
    }

    #[test]
    fn upstream_url_must_be_plain_http_with_a_host() {
        assert_eq!(
            parse_upstream("http://10.0.2.2:8080", true)
                .unwrap()
                .to_string(),
            "http://10.0.2.2:8080/"
        );
        assert!(parse_upstream("http://10.0.2.2:8080/", true).is_ok());
        let https = parse_upstream("https://10.0.2.2", true).unwrap_err();
        assert!(
            https.contains("https upstreams are not supported"),
            "{https}"
        );
        assert!(parse_upstream("10.0.2.2:8080", true).is_err());
        assert!(parse_upstream("http://10.0.2.2:8080/latest", true).is_err());
        assert!(parse_upstream("http://169.254.169.254", true).is_err());
        assert!(parse_upstream("http://169.254.169.254", false).is_ok());
    }

    #[test]
    fn upstream_url_with_a_password_is_refused_without_showing_it() {
        for url in [
            "http://user:hunter2-secret@10.0.2.2:8080",
            "http://user:hunter2-secret@10.0.2.2:8080/",
            "https://user:hunter2-secret@10.0.2.2",
            "http://hunter2-secret@10.0.2.2:8080/latest",
        ] {
            let flags = Layer {
                upstream: Some(url.into()),
                ..Layer::default()
            };
            let error =
                resolve(&Layer::default(), &flags, &[], true, &Opener::OwnRights).unwrap_err();
            assert!(!error.0.contains("hunter2"), "{}", error.0);
            assert!(error.0.contains("***@10.0.2.2"), "{}", error.0);
        }
        let error = parse_upstream("http://user:pw@10.0.2.2:8080", true).unwrap_err();
        assert!(error.contains("user name or password"), "{error}");
        assert_eq!(
            without_userinfo("http://10.0.2.2:8080/x@y"),
            "http://10.0.2.2:8080/x@y"
        );
    }

    #[test]
    fn an_upstream_that_is_one_of_our_listeners_is_refused() {
        let url = |text: &str| parse_upstream(text, false).unwrap();
        let ours: IpAddr = "10.0.2.2".parse().unwrap();
        let local = [ours];
        let named = |upstream: &str, listen: &[&str]| {
            let listen: Vec<SocketAddr> = listen.iter().map(|a| addr(a)).collect();
            listener_it_names(&url(upstream), &listen, &local)
        };
        // The reported reproduction, and its spellings.
        for upstream in [
            "http://127.0.0.1:8081",
            "http://localhost:8081",
            "http://LOCALHOST.:8081",
            "http://0.0.0.0:8081",
        ] {
            assert_eq!(
                named(upstream, &["127.0.0.1:8081"]),
                Some(addr("127.0.0.1:8081")),
                "{upstream}"
            );
        }
        assert!(named("http://[::1]:8081", &["[::1]:8081"]).is_some());
        // A wildcard listener is reached through loopback or any of our addresses.
        assert!(named("http://127.0.0.1:8081", &["0.0.0.0:8081"]).is_some());
        assert!(named("http://10.0.2.2:8081", &["0.0.0.0:8081"]).is_some());
        assert!(named("http://[::1]:8081", &["[::]:8081"]).is_some());
        // Another port, another machine, a loopback listener for a remote upstream: fine.
        assert_eq!(named("http://127.0.0.1:8082", &["127.0.0.1:8081"]), None);
        assert_eq!(named("http://10.0.2.3:8081", &["0.0.0.0:8081"]), None);
        assert_eq!(named("http://10.0.2.2:8081", &["127.0.0.1:8081"]), None);
        assert_eq!(
            named("http://metadata.example:8081", &["0.0.0.0:8081"]),
            None
        );
        // Port 80 is the default.
        assert!(named("http://127.0.0.1", &["127.0.0.1:80"]).is_some());
    }

    #[test]
    fn the_self_loop_error_names_the_listener() {
        let flags = Layer {
            upstream: Some("http://127.0.0.1:8081".into()),
            ..Layer::default()
        };
        let error = resolve(
            &Layer::default(),
            &flags,
            &[addr("127.0.0.1:8081")],
            true,
            &Opener::OwnRights,
        )
        .unwrap_err();
        assert!(error.0.contains("--listen 127.0.0.1:8081"), "{}", error.0);
        assert!(error.0.contains("back to itself"), "{}", error.0);
    }

    #[test]
    fn upstream_token_without_upstream_is_an_error() {
        let flags = Layer {
            upstream_token_file: Some(PathBuf::from("/nonexistent")),
            ..Layer::default()
        };
        let error = resolve(&Layer::default(), &flags, &[], true, &Opener::OwnRights).unwrap_err();
        assert!(error.0.contains("--upstream-token-file"), "{}", error.0);
    }

    #[test]
    fn upstream_timeouts_come_from_the_config_file() {
        let file = Layer {
            upstream: Some("http://10.0.2.2:8080".into()),
            upstream_connect_timeout_ms: Some(250),
            upstream_response_timeout_ms: Some(2000),
            ..Layer::default()
        };
        let settings = resolve(&file, &Layer::default(), &[], true, &Opener::OwnRights).unwrap();
        let upstream = settings.upstream.unwrap();
        assert_eq!(upstream.connect_timeout, Duration::from_millis(250));
        assert_eq!(upstream.response_timeout, Duration::from_millis(2000));
        let defaults = resolve(
            &Layer {
                upstream: Some("http://10.0.2.2:8080".into()),
                ..Layer::default()
            },
            &Layer::default(),
            &[],
            true,
            &Opener::OwnRights,
        )
        .unwrap()
        .upstream
        .unwrap();
        assert_eq!(defaults.connect_timeout, Duration::from_secs(1));
        assert_eq!(defaults.response_timeout, Duration::from_secs(5));
    }
}
