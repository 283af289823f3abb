//! `imds-tun env`: the environment a process needs to find the ECS container-credentials
//! endpoint (169.254.170.2) or the EKS Pod Identity endpoint (169.254.170.23, fd00:ec2::23), as
//! POSIX `export` lines, so `eval "$(imds-tun env --ecs app)"` sets them in a shell.
//!
//! The AWS SDKs read these variables themselves; imds-tun only prints them, so the command
//! needs no root and no running imds-tun. Every value is single-quoted (a `'` inside written
//! as `'\''`), so no value can run anything when the output is `eval`ed; the IDs are checked
//! against the characters an ECS credentials ID may have ([`valid_id`]).

use std::path::{Path, PathBuf};

/// The ECS container-credentials and task-metadata address.
pub const ECS_ADDRESS: &str = "169.254.170.2";
/// The EKS Pod Identity address, and its IPv6 one (`--ipv6`).
pub const EKS_ADDRESS: &str = "169.254.170.23";
/// The EKS Pod Identity IPv6 address, in URL form.
pub const EKS_ADDRESS_V6: &str = "[fd00:ec2::23]";
/// The ID `imds-tun` serves the instance's role under on the ECS endpoint.
pub const INSTANCE_ROLE_ID: &str = "imds-tun";
/// The longest ECS credentials ID.
pub const MAX_ID_LENGTH: usize = 64;

/// `imds-tun env --ecs ID` or `imds-tun env --eks --token-file FILE [--ipv6]`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(
    clap::ArgGroup::new("endpoint")
        .required(true)
        .args(["ecs", "eks"])
))]
pub struct EnvArgs {
    /// ECS container credentials and task metadata for this ID: `imds-tun` (the instance's
    /// role) or an ID of the server's `--ecs-credentials ID=ROLE_ARN` (letters, digits, `-`,
    /// `_`, `.`; 1-64). Prints AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and
    /// ECS_CONTAINER_METADATA_URI_V4 (the server runs with `--ecs`).
    #[arg(long, value_name = "ID", value_parser = parse_id)]
    pub ecs: Option<String>,
    /// EKS Pod Identity: prints AWS_CONTAINER_CREDENTIALS_FULL_URI and
    /// AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, and unsets AWS_CONTAINER_CREDENTIALS_RELATIVE_URI,
    /// which the SDKs would prefer (the server runs with `--eks-pod-identity`).
    #[arg(long, requires = "token_file")]
    pub eks: bool,
    /// With --eks: the file holding the token, the same file as the server's
    /// `--eks-pod-identity-token-file` (printed as an absolute path; it must exist).
    #[arg(long, value_name = "FILE", conflicts_with = "ecs")]
    pub token_file: Option<PathBuf>,
    /// With --eks: the IPv6 address fd00:ec2::23 (the server runs with `--ipv6`).
    #[arg(long, conflicts_with = "ecs")]
    pub ipv6: bool,
}

/// Why `imds-tun env` printed nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    /// The token file cannot be found or is not a file.
    #[error("--token-file {path}: {reason}")]
    TokenFile {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token file's path is not UTF-8, so it cannot be written into a shell line.
    #[error("--token-file: the path is not UTF-8: {0}")]
    NotUtf8(String),
}

/// Whether `id` is an ECS credentials ID imds-tun serves: 1-64 of letters, digits, `-`, `_`, `.`.
pub fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_LENGTH).contains(&id.len())
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}

fn parse_id(id: &str) -> Result<String, String> {
    if valid_id(id) {
        Ok(id.to_owned())
    } else {
        Err(format!(
            "an ECS credentials ID is 1-{MAX_ID_LENGTH} letters, digits, '-', '_' or '.', e.g. {INSTANCE_ROLE_ID}"
        ))
    }
}

/// `value` as one POSIX shell word: single-quoted, each `'` closed, escaped and reopened.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The variables for ECS container credentials and task metadata v4 of `id`.
pub fn ecs_variables(id: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            format!("/v2/credentials/{id}"),
        ),
        (
            "ECS_CONTAINER_METADATA_URI_V4",
            format!("http://{ECS_ADDRESS}/v4/{id}"),
        ),
    ]
}

/// The variables for EKS Pod Identity with the token in `token_file` (an absolute path).
pub fn eks_variables(token_file: &str, ipv6: bool) -> Vec<(&'static str, String)> {
    let host = if ipv6 { EKS_ADDRESS_V6 } else { EKS_ADDRESS };
    vec![
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://{host}/v1/credentials"),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.to_owned(),
        ),
    ]
}

/// The lines `imds-tun env` prints for `args`, each ending in a newline; `cwd` makes a
/// relative token file absolute (the SDK reads it from wherever the process runs).
pub fn render(args: &EnvArgs, cwd: &Path) -> Result<String, EnvError> {
    let mut text = String::new();
    if let Some(id) = &args.ecs {
        for (name, value) in ecs_variables(id) {
            text.push_str(&format!("export {name}={}\n", shell_quote(&value)));
        }
    }
    if args.eks {
        let given = args.token_file.as_deref().unwrap_or(Path::new(""));
        let path = cwd.join(given);
        let shown = || given.display().to_string();
        match std::fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() => {}
            Ok(_) => {
                return Err(EnvError::TokenFile {
                    path: shown(),
                    reason: "not a regular file".into(),
                });
            }
            Err(error) => {
                return Err(EnvError::TokenFile {
                    path: shown(),
                    reason: error.to_string(),
                });
            }
        }
        let path = path
            .to_str()
            .ok_or_else(|| EnvError::NotUtf8(path.display().to_string()))?;
        // Set by an earlier `env --ecs`, it would win over FULL_URI in every SDK.
        text.push_str("unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI\n");
        for (name, value) in eks_variables(path, args.ipv6) {
            text.push_str(&format!("export {name}={}\n", shell_quote(&value)));
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: EnvArgs,
    }

    fn parse(words: &[&str]) -> Result<EnvArgs, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("env").chain(words.iter().copied()))
            .map(|wrapper| wrapper.args)
    }

    #[test]
    fn ids_are_letters_digits_dash_underscore_dot_up_to_64() {
        for good in ["imds-tun", "app", "a", "A.b_c-9", &"x".repeat(64)] {
            assert!(valid_id(good), "{good}");
        }
        for bad in [
            "",
            &"x".repeat(65),
            "a b",
            "a/b",
            "a'b",
            "$(id)",
            "é",
            "a\n",
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn quoting_survives_every_shell_character() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(id) `x` \\ \" \n"), "'$(id) `x` \\ \" \n'");
    }

    #[test]
    fn ecs_prints_the_relative_uri_and_the_task_metadata_uri() {
        let args = parse(&["--ecs", "app"]).unwrap();
        assert_eq!(
            render(&args, Path::new("/")).unwrap(),
            "export AWS_CONTAINER_CREDENTIALS_RELATIVE_URI='/v2/credentials/app'\n\
             export ECS_CONTAINER_METADATA_URI_V4='http://169.254.170.2/v4/app'\n"
        );
    }

    #[test]
    fn eks_prints_the_full_uri_and_an_absolute_token_file_and_unsets_the_relative_uri() {
        let dir = crate::temp_dir::TempDir::new();
        dir.file("it's a token", b"secret");
        let args = parse(&["--eks", "--token-file", "it's a token"]).unwrap();
        let expected_path = dir.path().join("it's a token");
        let expected_path = shell_quote(expected_path.to_str().unwrap());
        assert_eq!(
            render(&args, dir.path()).unwrap(),
            format!(
                "unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI\n\
                 export AWS_CONTAINER_CREDENTIALS_FULL_URI='http://169.254.170.23/v1/credentials'\n\
                 export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={expected_path}\n"
            )
        );
        let v6 = parse(&["--eks", "--ipv6", "--token-file", "it's a token"]).unwrap();
        assert!(
            render(&v6, dir.path())
                .unwrap()
                .contains("FULL_URI='http://[fd00:ec2::23]/v1/credentials'\n")
        );
    }

    #[test]
    fn a_missing_token_file_is_refused_by_name() {
        let dir = crate::temp_dir::TempDir::new();
        let args = parse(&["--eks", "--token-file", "absent"]).unwrap();
        let error = render(&args, dir.path()).unwrap_err();
        assert!(
            error.to_string().starts_with("--token-file absent: "),
            "{error}"
        );
        let args = parse(&["--eks", "--token-file", "."]).unwrap();
        assert_eq!(
            render(&args, dir.path()).unwrap_err().to_string(),
            "--token-file .: not a regular file"
        );
    }

    #[test]
    fn the_command_line_needs_exactly_one_endpoint_and_its_own_options() {
        assert!(parse(&[]).is_err(), "no endpoint");
        assert!(parse(&["--ecs", "a", "--eks", "--token-file", "f"]).is_err());
        assert!(parse(&["--eks"]).is_err(), "--eks without --token-file");
        assert!(parse(&["--ecs", "a", "--ipv6"]).is_err(), "--ipv6 is EKS's");
        assert!(parse(&["--ecs", "a", "--token-file", "f"]).is_err());
        let bad = parse(&["--ecs", "a/b"]).unwrap_err().to_string();
        assert!(bad.contains("1-64 letters, digits"), "{bad}");
    }
}
