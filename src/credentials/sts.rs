//! The two real fetchers: `AssumeRole` of `--role-arn`, and the caller's own session.
//!
//! Both read their source credentials through the chain (see [`super::setup`]) on every call,
//! so expiring sources (SSO, `credential_process`) are refreshed by aws-config itself.
//!
//! - [`AssumeRole`]: `sts:AssumeRole` with the source credentials. With `--mfa-serial` the
//!   one-time code is spent once, on `GetSessionToken`; the resulting MFA session (which
//!   satisfies `aws:MultiFactorAuthPresent`) then signs every `AssumeRole` until it expires, so
//!   refreshes need no new code.
//! - [`OwnSession`]: no role. Long-term keys (an IAM user's `AKIA…`) are never served: they are
//!   traded for a `GetSessionToken` session. Credentials that already carry a session token
//!   (SSO, an exported session, a `credential_process`) are served as they are.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use time::OffsetDateTime;

use super::cache::Fetch;
use super::{CredentialError, RoleCredentials};

/// Sessions without a known expiry (`AWS_SESSION_TOKEN` from the environment) are served as
/// valid for this long and re-read from the chain before then.
pub const UNKNOWN_EXPIRY_LIFETIME: Duration = Duration::from_secs(3600);

/// An MFA serial and its one-time code; `Debug` hides the code.
#[derive(Clone)]
pub struct Mfa {
    /// The MFA device's serial number or ARN (`--mfa-serial`).
    pub serial: String,
    /// The six-digit code (`--mfa-code`, or typed at the terminal); good for one call only.
    pub code: String,
}

impl std::fmt::Debug for Mfa {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Mfa")
            .field("serial", &self.serial)
            .field("code", &"<redacted>")
            .finish()
    }
}

/// Where STS calls go (`127.0.0.1:5999`, `sts.us-east-1.amazonaws.com`), as the SDK resolved
/// it: recorded by an interceptor as each request leaves, so an error can say where STS could
/// not be reached. Cheap to clone: one shared slot for every client built from one config.
#[derive(Debug, Clone, Default)]
pub struct Destination(Arc<Mutex<Option<String>>>);

impl Destination {
    /// The host (and port, when the URL names one) of the last request; "STS" before any.
    pub fn describe(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "its endpoint".to_owned())
    }
}

impl Intercept for Destination {
    fn name(&self) -> &'static str {
        "imds-tun STS destination"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let authority = context
            .request()
            .uri()
            .parse::<http::Uri>()
            .ok()
            .and_then(|uri| {
                uri.authority()
                    .map(|authority| authority.as_str().to_owned())
            });
        if let Some(authority) = authority {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(authority);
        }
        Ok(())
    }
}

/// `sts:AssumeRole` of one role.
pub struct AssumeRole {
    /// An STS client signing with the source chain.
    pub client: aws_sdk_sts::Client,
    /// STS configuration to build a client for the MFA session from.
    pub config: aws_sdk_sts::Config,
    /// The role to assume (`--role-arn`).
    pub role_arn: String,
    /// `RoleSessionName`, seen in CloudTrail (`--role-session-name`, else `USER@HOST`).
    pub session_name: String,
    /// `ExternalId`, when the role's trust policy asks for one (`--external-id`).
    pub external_id: Option<String>,
    /// `DurationSeconds`: the lifetime asked of each set (`--duration`).
    pub duration: Duration,
    /// Spent on the first call (see the module docs).
    pub mfa: Option<Mfa>,
    /// The MFA session signing `AssumeRole`, once obtained.
    pub mfa_session: Option<(aws_sdk_sts::Client, OffsetDateTime)>,
    /// Where the calls go, for the errors (the clients' config carries it as an interceptor).
    pub destination: Destination,
}

impl std::fmt::Debug for AssumeRole {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AssumeRole")
            .field("role_arn", &self.role_arn)
            .field("session_name", &self.session_name)
            .field("external_id", &self.external_id.as_ref().map(|_| "<set>"))
            .field("duration", &self.duration)
            .field("mfa", &self.mfa)
            .field("has_mfa_session", &self.mfa_session.is_some())
            .finish()
    }
}

impl AssumeRole {
    /// The client to sign `AssumeRole` with: the source chain, or the MFA session.
    async fn signing_client(&mut self) -> Result<aws_sdk_sts::Client, CredentialError> {
        let Some(mfa) = &self.mfa else {
            return Ok(self.client.clone());
        };
        if let Some((client, expires)) = &self.mfa_session {
            if OffsetDateTime::now_utc() < *expires {
                return Ok(client.clone());
            }
            return Err(CredentialError {
                code: "MfaSessionExpired".into(),
                message: format!(
                    "the MFA session from {} expired at {}; restart imds-tun to enter a new code",
                    mfa.serial,
                    rfc3339(*expires)
                ),
            });
        }
        let output = self
            .client
            .get_session_token()
            .serial_number(&mfa.serial)
            .token_code(&mfa.code)
            // The longest an MFA session lasts; it only signs AssumeRole calls.
            .duration_seconds(129_600)
            .send()
            .await
            .map_err(|error| sts_error("GetSessionToken (MFA)", &self.destination, &error))?;
        let session = output
            .credentials()
            .ok_or_else(|| missing("GetSessionToken (MFA)"))?;
        let expires = from_smithy(session.expiration());
        let credentials = Credentials::new(
            session.access_key_id(),
            session.secret_access_key(),
            Some(session.session_token().to_owned()),
            Some(SystemTime::from(expires)),
            "imds-tun-mfa-session",
        );
        let config = self
            .config
            .to_builder()
            .credentials_provider(credentials)
            .build();
        let client = aws_sdk_sts::Client::from_conf(config);
        tracing::info!(
            "MFA session from {} obtained, valid until {}",
            mfa.serial,
            rfc3339(expires)
        );
        self.mfa_session = Some((client.clone(), expires));
        Ok(client)
    }
}

impl Fetch for AssumeRole {
    fn describe(&self) -> String {
        format!("AssumeRole {}", self.role_arn)
    }

    async fn fetch(&mut self) -> Result<RoleCredentials, CredentialError> {
        let client = self.signing_client().await?;
        let called = now_seconds();
        let output = client
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .set_external_id(self.external_id.clone())
            .duration_seconds(seconds_i32(self.duration))
            .send()
            .await
            .map_err(|error| sts_error("AssumeRole", &self.destination, &error))?;
        let issued = output.credentials().ok_or_else(|| missing("AssumeRole"))?;
        Ok(RoleCredentials {
            access_key_id: issued.access_key_id().to_owned(),
            secret_access_key: issued.secret_access_key().to_owned(),
            token: issued.session_token().to_owned(),
            expiration: from_smithy(issued.expiration()),
            last_updated: called,
        })
    }
}

/// The caller's own credentials, as a session (see the module docs).
pub struct OwnSession {
    /// The source credential chain, read again on every fetch.
    pub chain: SharedCredentialsProvider,
    /// An STS client signing with that chain, for `GetSessionToken`.
    pub client: aws_sdk_sts::Client,
    /// `GetSessionToken`'s `DurationSeconds` (`--duration`).
    pub duration: Duration,
    /// Spent on the first `GetSessionToken`; later refreshes cannot repeat it.
    pub mfa: Option<Mfa>,
    /// Whether [`OwnSession::mfa`]'s code was spent: a later `GetSessionToken` fails
    /// `MfaCodeUsed` rather than send it twice.
    pub mfa_used: bool,
    /// Where the calls go, for the errors (the client's config carries it as an interceptor).
    pub destination: Destination,
}

impl std::fmt::Debug for OwnSession {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OwnSession")
            .field("duration", &self.duration)
            .field("mfa", &self.mfa)
            .field("mfa_used", &self.mfa_used)
            .finish()
    }
}

impl Fetch for OwnSession {
    fn describe(&self) -> String {
        "the source credentials' session".into()
    }

    async fn fetch(&mut self) -> Result<RoleCredentials, CredentialError> {
        let called = now_seconds();
        let source = self
            .chain
            .provide_credentials()
            .await
            .map_err(|error| chain_error(&error))?;
        if is_long_term(&source) {
            let mut request = self
                .client
                .get_session_token()
                .duration_seconds(seconds_i32(self.duration));
            if let Some(mfa) = &self.mfa {
                if self.mfa_used {
                    return Err(CredentialError {
                        code: "MfaCodeUsed".into(),
                        message: format!(
                            "a new session needs a new code from {}; restart imds-tun",
                            mfa.serial
                        ),
                    });
                }
                request = request.serial_number(&mfa.serial).token_code(&mfa.code);
                self.mfa_used = true;
            }
            let output = request
                .send()
                .await
                .map_err(|error| sts_error("GetSessionToken", &self.destination, &error))?;
            let issued = output
                .credentials()
                .ok_or_else(|| missing("GetSessionToken"))?;
            return Ok(RoleCredentials {
                access_key_id: issued.access_key_id().to_owned(),
                secret_access_key: issued.secret_access_key().to_owned(),
                token: issued.session_token().to_owned(),
                expiration: from_smithy(issued.expiration()),
                last_updated: called,
            });
        }
        Ok(RoleCredentials {
            access_key_id: source.access_key_id().to_owned(),
            secret_access_key: source.secret_access_key().to_owned(),
            token: source.session_token().unwrap_or_default().to_owned(),
            expiration: source
                .expiry()
                .map_or(called + UNKNOWN_EXPIRY_LIFETIME, OffsetDateTime::from),
            last_updated: called,
        })
    }
}

/// Long-term keys: no session token. (An expiry without a token does not occur in practice;
/// a token is what an STS session needs to be usable.)
pub fn is_long_term(credentials: &Credentials) -> bool {
    credentials
        .session_token()
        .is_none_or(|token| token.is_empty())
}

/// An STS failure as one line for a person: what STS said (its code and message), or why it
/// could not be reached, in words (`cannot reach STS at 127.0.0.1:5999: connection refused`),
/// never the SDK's `Debug` of its error types.
pub fn sts_error<E>(
    operation: &str,
    destination: &Destination,
    error: &SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> CredentialError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let at = destination.describe();
    match error {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            let code = inner.code().unwrap_or("Unknown");
            CredentialError {
                code: code.to_owned(),
                message: format!(
                    "STS refused {operation}: {code}: {}",
                    one_line(inner.message().unwrap_or("no message"))
                ),
            }
        }
        SdkError::TimeoutError(_) => CredentialError {
            code: "NetworkError".into(),
            message: format!("STS at {at} did not answer {operation} in time"),
        },
        SdkError::DispatchFailure(failure) => CredentialError {
            code: "NetworkError".into(),
            message: format!(
                "cannot reach STS at {at}: {}",
                failure.as_connector_error().map_or_else(
                    || "the request could not be sent".to_owned(),
                    |connector| {
                        if connector.is_timeout() {
                            "no connection within the connect timeout".to_owned()
                        } else {
                            why_unreachable(connector)
                        }
                    }
                )
            ),
        },
        SdkError::ResponseError(response) => CredentialError {
            code: "InternalError".into(),
            message: format!(
                "STS at {at} answered {operation} with something that is not an STS response \
                 (HTTP {})",
                response.raw().status().as_u16()
            ),
        },
        other => CredentialError {
            code: "InternalError".into(),
            message: format!("{operation} failed: {}", causes(other)),
        },
    }
}

/// Why a connection failed, as a person says it: the operating system's reason for the
/// deepest I/O error ("connection refused"), or the name that did not resolve, or the TLS
/// handshake's complaint.
fn why_unreachable(error: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest_io: Option<&std::io::Error> = None;
    let mut texts = Vec::new();
    let mut current = Some(error);
    while let Some(level) = current {
        if let Some(io) = level.downcast_ref::<std::io::Error>() {
            deepest_io = Some(io);
        }
        texts.push(level.to_string());
        current = level.source();
    }
    if texts.iter().any(|text| text.starts_with("dns error")) {
        let reason =
            deepest_io.map_or_else(|| causes(error), |io| without_os_error(&io.to_string()));
        return format!("the name does not resolve ({reason})");
    }
    match deepest_io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_owned(),
        Some(std::io::ErrorKind::ConnectionReset) => "the connection was reset".to_owned(),
        Some(std::io::ErrorKind::TimedOut) => "no answer (timed out)".to_owned(),
        Some(std::io::ErrorKind::NetworkUnreachable) => "network unreachable".to_owned(),
        Some(std::io::ErrorKind::HostUnreachable) => "host unreachable".to_owned(),
        Some(std::io::ErrorKind::PermissionDenied) => {
            "permission denied (a firewall rule?)".to_owned()
        }
        _ => causes(error),
    }
}

/// An error and its causes as one line of their `Display`s, each said once (wrappers often
/// repeat their cause), without "(os error N)": never a `Debug`.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(level) = current {
        let text = without_os_error(&one_line(&level.to_string()));
        if !text.is_empty() && !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        current = level.source();
    }
    parts.join(": ")
}

/// `Connection refused (os error 111)` → `Connection refused`.
fn without_os_error(text: &str) -> String {
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text.to_owned(),
    }
}

/// A chain failure (no source credentials, an SSO token that expired, a failing
/// `credential_process`) as one line.
pub fn chain_error(
    error: &aws_credential_types::provider::error::CredentialsError,
) -> CredentialError {
    CredentialError {
        code: "SourceCredentialsUnavailable".into(),
        message: format!("cannot load the source credentials: {}", causes(error)),
    }
}

fn missing(operation: &str) -> CredentialError {
    CredentialError {
        code: "InternalError".into(),
        message: format!("STS {operation} answered without credentials"),
    }
}

/// Newlines would break the one-line-per-failure rule of the logs.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn seconds_i32(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

fn now_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

fn from_smithy(at: &aws_smithy_types::DateTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(at.secs()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// For log lines and messages only, so any RFC 3339 form will do; what clients are served goes
/// through `clouds::ec2::responses::iso8601_utc_seconds`, EC2's exact `2012-04-26T16:39:16Z`.
fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn response(status: u16) -> Response {
        Response::new(
            StatusCode::try_from(status).unwrap(),
            SdkBody::from("<ErrorResponse/>"),
        )
    }

    #[test]
    fn access_denied_keeps_sts_code_and_message() {
        let error: SdkError<AssumeRoleError, Response> = SdkError::service_error(
            AssumeRoleError::generic(
                ErrorMetadata::builder()
                    .code("AccessDenied")
                    .message(
                        "User: arn:aws:iam::123456789012:user/alice is not authorized\nto perform: sts:AssumeRole",
                    )
                    .build(),
            ),
            response(403),
        );
        let mapped = sts_error("AssumeRole", &Destination::default(), &error);
        assert_eq!(mapped.code, "AccessDenied");
        assert_eq!(
            mapped.message,
            "STS refused AssumeRole: AccessDenied: User: arn:aws:iam::123456789012:user/alice is not authorized to perform: sts:AssumeRole"
        );
        let served = super::super::cache::ec2_error("app", Some(&mapped));
        assert_eq!(served.code, "AssumeRoleUnauthorizedAccess");
        assert!(
            served
                .message
                .starts_with("EC2 cannot assume the role app.")
        );
        assert!(served.message.contains("AccessDenied"));
        assert!(!served.message.contains('\n'));
        // Who imds-tun is to STS is its log's business, not every local process's.
        assert!(!served.message.contains("alice"), "{}", served.message);
    }

    #[test]
    fn unreachable_sts_is_said_like_a_person_says_it() {
        let destination = Destination::default();
        *destination.0.lock().unwrap() = Some("127.0.0.1:5999".into());
        // What hyper_util hands the SDK, wrapped as the SDK wraps it.
        #[derive(Debug)]
        struct Connect(std::io::Error);
        impl std::fmt::Display for Connect {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("tcp connect error")
            }
        }
        impl std::error::Error for Connect {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused = Connect(std::io::Error::from_raw_os_error(111));
        let error: SdkError<AssumeRoleError, Response> =
            SdkError::dispatch_failure(aws_sdk_sts::error::ConnectorError::io(refused.into()));
        let mapped = sts_error("AssumeRole", &destination, &error);
        assert_eq!(mapped.code, "NetworkError");
        assert_eq!(
            mapped.message,
            "cannot reach STS at 127.0.0.1:5999: connection refused"
        );
        let error: SdkError<AssumeRoleError, Response> =
            SdkError::timeout_error("operation timeout (all attempts including retries)");
        let mapped = sts_error("AssumeRole", &destination, &error);
        assert_eq!(mapped.code, "NetworkError");
        assert_eq!(
            mapped.message,
            "STS at 127.0.0.1:5999 did not answer AssumeRole in time"
        );
    }

    #[test]
    fn causes_are_each_said_once_without_os_error_numbers() {
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "io error: {}", self.0)
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let error = Wrapper(std::io::Error::other("the token file is gone"));
        assert_eq!(causes(&error), "io error: the token file is gone");
        assert_eq!(
            without_os_error("Connection refused (os error 111)"),
            "Connection refused"
        );
    }

    #[test]
    fn long_term_keys_have_no_session_token() {
        let long_term = Credentials::new("AKIAEXAMPLE", "secret", None, None, "test");
        assert!(is_long_term(&long_term));
        let session = Credentials::new("ASIAEXAMPLE", "secret", Some("token".into()), None, "test");
        assert!(!is_long_term(&session));
    }

    #[test]
    fn debug_hides_the_mfa_code() {
        let mfa = Mfa {
            serial: "arn:aws:iam::123456789012:mfa/alice".into(),
            code: "123456".into(),
        };
        let shown = format!("{mfa:?}");
        assert!(shown.contains("mfa/alice") && !shown.contains("123456\""));
        assert!(!shown.contains("\"123456\""));
    }
}
