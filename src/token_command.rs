//! Running a command the user named to get a token (`gcloud auth print-access-token`,
//! `az account get-access-token ...`), with every bound a shared service needs.
//!
//! The command is split into words on whitespace and run directly, never through a shell, so a
//! value substituted into it (an ID token's audience, from any local caller) is one argument and
//! nothing more. It runs as the user imds-tun serves as: after the privilege drop that is the
//! user behind `sudo`, so the command sees that user's `gcloud`/`az` login, not root's. At most
//! [`MAX_RUNNING`] run at once. Each gets no stdin, [`TIMEOUT`] to finish (then it is killed),
//! and at most [`MAX_OUTPUT`] bytes of stdout are kept. What it prints is a secret and never
//! logged; a failure logs the exit status and the first line of stderr, bounded. How often a
//! command runs (once per token, not again right after a failure, within each caller's budget)
//! is for its callers to decide (the clouds' token cache).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;

use crate::log_limit::bounded;
use crate::secret::Secret;

/// How long a token command may run.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Token commands running at once, whatever asked for them (each may be a Python process of
/// 100 MB); one more waits for a place, within its [`TIMEOUT`].
pub const MAX_RUNNING: usize = 8;

/// The places of [`MAX_RUNNING`].
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_RUNNING);

/// The most stdout kept: tokens are a few KiB at most.
pub const MAX_OUTPUT: u64 = 64 * 1024;

/// The most stderr kept for the error message.
const MAX_ERROR_OUTPUT: u64 = 4 * 1024;

/// A command line, split into words; a placeholder such as `{audience}` or `{resource}` in a
/// word is replaced per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    words: Vec<String>,
}

/// Why a command line is not usable, for the settings error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandLineError {
    /// The setting holds no word at all.
    #[error("is empty")]
    Empty,
    /// No word holds the placeholder, so every request would get the same token.
    #[error("needs {placeholder} in one of its words (replaced by each request's value)")]
    NoPlaceholder {
        /// The placeholder the setting must use: `{audience}` or `{resource}`.
        placeholder: &'static str,
    },
}

impl CommandLine {
    /// Splits `text` on whitespace; no quoting, no shell, at least one word.
    pub fn parse(text: &str) -> Result<CommandLine, CommandLineError> {
        let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        if words.is_empty() {
            return Err(CommandLineError::Empty);
        }
        Ok(CommandLine { words })
    }

    /// As [`CommandLine::parse`], and the line must use `placeholder` (`{audience}`).
    pub fn parse_with(
        text: &str,
        placeholder: &'static str,
    ) -> Result<CommandLine, CommandLineError> {
        let line = CommandLine::parse(text)?;
        if !line.words.iter().any(|word| word.contains(placeholder)) {
            return Err(CommandLineError::NoPlaceholder { placeholder });
        }
        Ok(line)
    }

    /// The words with `placeholder` replaced by `value`, which stays inside its word.
    pub fn with_value(&self, placeholder: &str, value: &str) -> Vec<String> {
        self.words
            .iter()
            .map(|word| word.replace(placeholder, value))
            .collect()
    }

    /// The words as given, program first.
    pub fn words(&self) -> &[String] {
        &self.words
    }
}

impl std::fmt::Display for CommandLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.words.join(" "))
    }
}

/// The longest value substituted into a command.
pub const MAX_VALUE_LEN: usize = 1024;

/// A value from a request (an audience, a resource) that is safe to substitute into a word: not
/// read as an option, not read as a file (azure-cli, like other CLIs built on `knack`, replaces
/// an argument `@FILE` with the file's content), one line, bounded.
pub fn check_value(value: &str) -> Result<(), &'static str> {
    if value.len() > MAX_VALUE_LEN {
        return Err("longer than 1024 bytes");
    }
    if value.starts_with('-') {
        return Err("starts with '-'");
    }
    if value.starts_with('@') {
        return Err("starts with '@'");
    }
    if value.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    Ok(())
}

/// Why a command gave no token.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started (not found, not executable) or waited for.
    #[error("`{program}` could not be started: {error}")]
    Start {
        /// The command's first word, as named (`gcloud`, `az`).
        program: String,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// [`MAX_RUNNING`] other token commands ran for all of its [`TIMEOUT`]: it never started.
    #[error(
        "`{program}` did not start within {} s: {MAX_RUNNING} token commands were running",
        TIMEOUT.as_secs()
    )]
    Busy {
        /// The command's first word, as named (`gcloud`, `az`).
        program: String,
    },
    /// It ran longer than [`TIMEOUT`] and was killed.
    #[error("`{program}` did not finish within {} s and was stopped", TIMEOUT.as_secs())]
    Timeout {
        /// The command's first word, as named (`gcloud`, `az`).
        program: String,
    },
    /// It exited unsuccessfully.
    #[error("`{program}` failed ({status}): {stderr}")]
    Failed {
        /// The command's first word, as named (`gcloud`, `az`).
        program: String,
        /// How it exited (code or signal).
        status: std::process::ExitStatus,
        /// The first non-blank line of its stderr, bounded as log text.
        stderr: String,
    },
    /// It succeeded but printed only whitespace.
    #[error("`{program}` printed nothing")]
    Empty {
        /// The command's first word, as named (`gcloud`, `az`).
        program: String,
    },
    /// It printed more than [`MAX_OUTPUT`] bytes: not a token.
    #[error("`{program}` printed more than {MAX_OUTPUT} bytes")]
    TooLong {
        /// The command's first word, as named (`gcloud`, `az`).
        program: String,
    },
}

/// Runs `words` (program first) and returns its trimmed stdout; the waiting for one of the
/// [`MAX_RUNNING`] places counts in its [`TIMEOUT`].
pub async fn run(words: &[String]) -> Result<Secret, CommandError> {
    let program = words.first().cloned().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let Ok(Ok(_place)) = tokio::time::timeout_at(deadline, RUNNING.acquire()).await else {
        return Err(CommandError::Busy { program });
    };
    let mut child = tokio::process::Command::new(&program)
        .args(words.iter().skip(1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| CommandError::Start {
            program: program.clone(),
            error,
        })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let finished = tokio::time::timeout_at(deadline, async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            if let Some(stdout) = stdout {
                let _ = stdout.take(MAX_OUTPUT + 1).read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(stderr) = stderr {
                let _ = stderr.take(MAX_ERROR_OUTPUT).read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        let status = child.wait().await;
        (status, out, err)
    })
    .await;
    let Ok((status, out, err)) = finished else {
        // Dropping the child (kill_on_drop) stops it.
        return Err(CommandError::Timeout { program });
    };
    let status = status.map_err(|error| CommandError::Start {
        program: program.clone(),
        error,
    })?;
    if !status.success() {
        let first_line = String::from_utf8_lossy(&err)
            .lines()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("")
            .to_owned();
        return Err(CommandError::Failed {
            program,
            status,
            stderr: bounded(first_line.as_bytes()).to_string(),
        });
    }
    if out.len() as u64 > MAX_OUTPUT {
        return Err(CommandError::TooLong { program });
    }
    let text = String::from_utf8_lossy(&out).trim().to_owned();
    if text.is_empty() {
        return Err(CommandError::Empty { program });
    }
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        CommandLine::parse(text).expect("valid").words().to_vec()
    }

    #[tokio::test]
    async fn stdout_is_the_token_trimmed() {
        let token = run(&words("printf  ya29.abc\\n")).await.expect("token");
        assert_eq!(token.expose(), "ya29.abc");
    }

    #[tokio::test]
    async fn a_failure_names_the_program_and_its_first_error_line_not_its_output() {
        let error = run(&words("sh -c echo_secret_then_fail"))
            .await
            .expect_err("fails");
        let message = error.to_string();
        assert!(message.starts_with("`sh` failed"), "{message}");
        let missing = run(&words("/nonexistent/gcloud auth"))
            .await
            .expect_err("missing");
        assert!(
            missing.to_string().contains("could not be started"),
            "{missing}"
        );
    }

    #[test]
    fn values_that_could_be_read_as_options_are_refused() {
        assert!(check_value("https://api.example.com").is_ok());
        assert!(check_value("--impersonate-service-account=x").is_err());
        assert_eq!(check_value("@/etc/passwd"), Err("starts with '@'"));
        assert!(check_value("https://user@example.com").is_ok());
        assert!(check_value("a\nb").is_err());
        assert!(check_value(&"a".repeat(1025)).is_err());
    }

    #[test]
    fn the_audience_is_one_argument_whatever_it_contains() {
        let line = CommandLine::parse_with(
            "gcloud auth print-identity-token --audiences={audience}",
            "{audience}",
        )
        .expect("valid");
        assert_eq!(
            line.with_value("{audience}", "x; rm -rf / --impersonate"),
            vec![
                "gcloud",
                "auth",
                "print-identity-token",
                "--audiences=x; rm -rf / --impersonate"
            ]
        );
        assert_eq!(
            CommandLine::parse_with("gcloud auth print-identity-token", "{audience}"),
            Err(CommandLineError::NoPlaceholder {
                placeholder: "{audience}"
            })
        );
        assert_eq!(CommandLine::parse("  "), Err(CommandLineError::Empty));
    }
}
