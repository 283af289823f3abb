//! Reading a file the user named: `--config`, `--user-data`, `--listen-token-file`,
//! `--upstream-token-file`, and their config-file keys. Every such read goes through here.
//!
//! imds-tun starts as root, so without care a flag could make it read any file on the host and
//! serve it to every local process (`sudo imds-tun --user-data /etc/shadow`). Three guarantees:
//!
//! - **Whose rights.** Under `sudo` (root, with a non-zero `SUDO_UID`) a file is opened with the
//!   invoking user's uid, gid and supplementary groups ([`Opener::from_environment`]), so it
//!   reads only what that user could read anyway. A root service outside sudo (systemd) opens
//!   with root's rights: root chose the file. The id switching is OS code and lives in
//!   [`crate::platform::open_as_user`].
//! - **Only regular files.** The open is non-blocking (a FIFO without a writer cannot hang it)
//!   and takes no controlling terminal; `fstat` on the open descriptor then refuses anything
//!   but a regular file, naming what it is (`/dev/zero` is a character device).
//! - **A size cap.** At most [`Cap::bytes`] are read (one more, to tell "exactly the cap" from
//!   "more"); a larger file is refused with its size and the cap.
//!
//! No error carries the file's content: messages name the flag, the path and what is wrong.
//! What this module does not do: interpret the bytes (the config parser and the token check
//! do), or decide the caps of settings (resolution does, e.g. `--max-user-data-bytes`).

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::platform::privileges;
use crate::platform::{self, FileUser, OpenAsError};

/// The most a `--config` file may hold: far more than every key with long values.
pub const CONFIG_CAP: Cap = Cap {
    bytes: 1024 * 1024,
    advice: "a config file holds settings, not data; put large user data in --user-data FILE",
};

/// The most a token file may hold: a secret is a line of a few dozen characters.
pub const TOKEN_CAP: Cap = Cap {
    bytes: 4096,
    advice: "a token file holds one secret, e.g. `openssl rand -hex 32 > FILE`",
};

/// The most bytes a read may return, and what to tell a person whose file is larger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// The largest file read, in bytes.
    pub bytes: u64,
    /// What to tell a person whose file is larger: what the file is for, or what to use instead.
    pub advice: &'static str,
}

/// Whose rights a named file is opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opener {
    /// The process's own: not root, or a root service outside sudo.
    OwnRights,
    /// The user who ran `sudo`.
    InvokingUser(FileUser),
}

impl Opener {
    /// Decides from the process: root with a non-zero `SUDO_UID` (and `SUDO_GID`) opens as
    /// that user, with the groups the group database gives them; anything else as itself.
    /// `--user` does not change this: it picks whom to serve as, not who named the files.
    pub fn from_environment() -> Result<Opener, NamedFileError> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(Opener::OwnRights);
        }
        let sudo_uid = std::env::var("SUDO_UID").ok();
        let sudo_gid = std::env::var("SUDO_GID").ok();
        let Some(account) = privileges::sudo_user(sudo_uid.as_deref(), sudo_gid.as_deref()) else {
            return Ok(Opener::OwnRights);
        };
        let groups = match nix::unistd::User::from_uid(account.uid) {
            Ok(Some(user)) => platform::groups_of(&user.name, account.gid).map_err(|source| {
                NamedFileError::Groups {
                    user: account.name.clone(),
                    source,
                }
            })?,
            // No passwd entry: no group database entry either; only the id sudo recorded.
            _ => vec![account.gid],
        };
        Ok(Opener::InvokingUser(FileUser {
            name: account.name,
            uid: account.uid,
            gid: account.gid,
            groups,
        }))
    }
}

/// Why a named file was not read. Every message is one line: the flag (or config key), the
/// path, what is wrong and what to do; never the file's content.
#[derive(Debug, thiserror::Error)]
pub enum NamedFileError {
    /// Opened as the user behind sudo, and refused for lack of their rights.
    #[error(
        "{what} {path}: permission denied for user {user} (imds-tun opens files named under \
         sudo with the invoking user's rights); make it readable by {user} or name another file"
    )]
    PermissionDenied {
        /// The flag or config key that named the file (`--user-data`, `config: user_data`).
        what: String,
        /// The path as given, quoted when it holds spaces or control characters.
        path: String,
        /// The user behind sudo whose rights the open used (login name, or `uid N`).
        user: String,
    },
    /// The open itself failed: no such file, a loop of links, or (with the process's own
    /// rights) no permission.
    #[error("{what} {path}: cannot open: {source}")]
    Open {
        /// The flag or config key that named the file (`--user-data`, `config: user_data`).
        what: String,
        /// The path as given, quoted when it holds spaces or control characters.
        path: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Taking the user's rights failed, so the file was not opened (and never as root).
    #[error("{what} {path}: cannot open it with the rights of {user}: {source}")]
    Switch {
        /// The flag or config key that named the file (`--user-data`, `config: user_data`).
        what: String,
        /// The path as given, quoted when it holds spaces or control characters.
        path: String,
        /// The user behind sudo whose rights the open used (login name, or `uid N`).
        user: String,
        /// What failed in the switch.
        #[source]
        source: OpenAsError,
    },
    /// The path names a directory, device, FIFO or socket: only regular files are read.
    #[error("{what} {path}: is a {kind}, not a regular file; imds-tun reads only regular files")]
    NotRegular {
        /// The flag or config key that named the file (`--user-data`, `config: user_data`).
        what: String,
        /// The path as given, quoted when it holds spaces or control characters.
        path: String,
        /// What it is instead ("directory", "FIFO (named pipe)", ...).
        kind: &'static str,
    },
    /// The file holds more than its [`Cap`] allows.
    #[error("{what} {path}: {size}, more than the limit of {cap} bytes ({advice})")]
    TooLarge {
        /// The flag or config key that named the file (`--user-data`, `config: user_data`).
        what: String,
        /// The path as given, quoted when it holds spaces or control characters.
        path: String,
        /// "20000 bytes", or "it holds more" when the file grew or does not report a size.
        size: String,
        /// [`Cap::bytes`]: the most this file may hold.
        cap: u64,
        /// [`Cap::advice`]: what to do instead.
        advice: &'static str,
    },
    /// Reading the open file, or its metadata, failed.
    #[error("{what} {path}: cannot read: {source}")]
    Read {
        /// The flag or config key that named the file (`--user-data`, `config: user_data`).
        what: String,
        /// The path as given, quoted when it holds spaces or control characters.
        path: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The user behind sudo's groups could not be read from the group database, so their
    /// rights cannot be reproduced.
    #[error(
        "cannot look up the groups of {user}, whose rights open the files named under sudo: \
         {source}"
    )]
    Groups {
        /// The user behind sudo (login name, or `uid N`).
        user: String,
        /// The lookup's error.
        #[source]
        source: io::Error,
    },
}

/// A regular file the user named, open for reading.
#[derive(Debug)]
pub struct NamedFile {
    file: File,
    metadata: Metadata,
    what: String,
    path: String,
}

impl NamedFile {
    /// Opens `path` (named by `what`, e.g. `--user-data` or `config: user_data`) with
    /// `opener`'s rights, and refuses anything but a regular file.
    pub fn open(path: &Path, what: &str, opener: &Opener) -> Result<NamedFile, NamedFileError> {
        let shown = shown(path);
        let mut options = OpenOptions::new();
        // std adds O_CLOEXEC itself. O_NONBLOCK: opening a FIFO for reading would otherwise
        // wait for a writer. O_NOCTTY: naming a terminal must not make it ours.
        options
            .read(true)
            .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits());
        let opened = match opener {
            Opener::OwnRights => options.open(path).map_err(|source| NamedFileError::Open {
                what: what.to_owned(),
                path: shown.clone(),
                source,
            }),
            Opener::InvokingUser(user) => {
                platform::open_as_user(path, &options, user).map_err(|error| match error {
                    OpenAsError::Open(source)
                        if source.kind() == io::ErrorKind::PermissionDenied =>
                    {
                        NamedFileError::PermissionDenied {
                            what: what.to_owned(),
                            path: shown.clone(),
                            user: user.name.clone(),
                        }
                    }
                    OpenAsError::Open(source) => NamedFileError::Open {
                        what: what.to_owned(),
                        path: shown.clone(),
                        source,
                    },
                    other => NamedFileError::Switch {
                        what: what.to_owned(),
                        path: shown.clone(),
                        user: user.name.clone(),
                        source: other,
                    },
                })
            }
        };
        let file = opened?;
        let metadata = file.metadata().map_err(|source| NamedFileError::Read {
            what: what.to_owned(),
            path: shown.clone(),
            source,
        })?;
        if !metadata.is_file() {
            return Err(NamedFileError::NotRegular {
                what: what.to_owned(),
                path: shown,
                kind: kind_of(&metadata),
            });
        }
        Ok(NamedFile {
            file,
            metadata,
            what: what.to_owned(),
            path: shown,
        })
    }

    /// The open file's own metadata (not the path's: nothing can swap the file in between).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The flag and path, as every message about this file starts.
    pub fn describe(&self) -> String {
        format!("{} {}", self.what, self.path)
    }

    /// Reads the whole file if it holds at most `cap.bytes`; refuses it otherwise.
    pub fn read(self, cap: Cap) -> Result<Vec<u8>, NamedFileError> {
        let too_large = |size: String| NamedFileError::TooLarge {
            what: self.what.clone(),
            path: self.path.clone(),
            size,
            cap: cap.bytes,
            advice: cap.advice,
        };
        let reported = self.metadata.len();
        if reported > cap.bytes {
            return Err(too_large(format!("{reported} bytes")));
        }
        // The size can lie (procfs files report 0) or change while we read: read at most one
        // byte more than the cap and judge by what arrived.
        let mut bytes = Vec::with_capacity(usize::try_from(reported).unwrap_or(0));
        (&self.file)
            .take(cap.bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|source| NamedFileError::Read {
                what: self.what.clone(),
                path: self.path.clone(),
                source,
            })?;
        if bytes.len() as u64 > cap.bytes {
            return Err(too_large("it holds more".to_owned()));
        }
        Ok(bytes)
    }
}

/// Opens and reads `path` in one step: see [`NamedFile::open`] and [`NamedFile::read`].
pub fn read(path: &Path, what: &str, opener: &Opener, cap: Cap) -> Result<Vec<u8>, NamedFileError> {
    NamedFile::open(path, what, opener)?.read(cap)
}

/// What a non-regular file is, for the refusal.
fn kind_of(metadata: &Metadata) -> &'static str {
    let kind = metadata.file_type();
    if kind.is_dir() {
        "directory"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_fifo() {
        "FIFO (named pipe)"
    } else if kind.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// The path as it appears in a message: as is, or quoted when it holds spaces or control
/// characters, so the message stays one unambiguous line.
fn shown(path: &Path) -> String {
    let text = path.display().to_string();
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) || text.is_empty() {
        format!("{text:?}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_dir::TempDir;
    use std::time::{Duration, Instant};

    const SMALL: Cap = Cap {
        bytes: 16,
        advice: "test advice",
    };

    #[test]
    fn a_file_of_exactly_the_cap_is_read_and_one_byte_more_is_refused() {
        let scratch = TempDir::new();
        let exact = scratch.file("exact", &[b'a'; 16]);
        let bytes = read(Path::new(&exact), "--user-data", &Opener::OwnRights, SMALL)
            .expect("16 bytes fit");
        assert_eq!(bytes.len(), 16);

        let over = scratch.file("over", b"SECRET-CONTENT-17");
        let message = read(Path::new(&over), "--user-data", &Opener::OwnRights, SMALL)
            .expect_err("17 bytes do not fit")
            .to_string();
        assert!(message.starts_with("--user-data "), "{message}");
        assert!(message.contains("17 bytes"), "the size: {message}");
        assert!(message.contains("limit of 16 bytes"), "the cap: {message}");
        assert!(message.contains("test advice"), "what to do: {message}");
        assert!(!message.contains("SECRET"), "no content: {message}");
        assert!(!message.contains('\n'), "one line: {message}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_that_reports_no_size_is_still_capped() {
        // procfs files report size 0 whatever they hold.
        let message = read(
            Path::new("/proc/self/maps"),
            "--user-data",
            &Opener::OwnRights,
            SMALL,
        )
        .expect_err("maps is larger than 16 bytes")
        .to_string();
        assert!(message.contains("it holds more"), "{message}");
        assert!(message.contains("limit of 16 bytes"), "{message}");
    }

    #[test]
    fn dev_zero_is_refused_as_a_character_device_at_once() {
        let started = Instant::now();
        let message = read(
            Path::new("/dev/zero"),
            "--user-data",
            &Opener::OwnRights,
            SMALL,
        )
        .expect_err("not a regular file")
        .to_string();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(
            message,
            "--user-data /dev/zero: is a character device, not a regular file; imds-tun reads \
             only regular files"
        );
    }

    #[test]
    fn a_fifo_without_a_writer_is_refused_without_blocking() {
        let scratch = TempDir::new();
        let fifo = scratch.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        // A blocking open would wait for a writer forever; run it on a thread to fail, not hang.
        let (sender, receiver) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let outcome = read(&path, "--config", &Opener::OwnRights, CONFIG_CAP)
                .map_err(|error| error.to_string());
            let _ = sender.send(outcome);
        });
        let outcome = receiver
            .recv_timeout(Duration::from_secs(2))
            .expect("the open returned instead of waiting for a writer");
        let message = outcome.expect_err("a FIFO is not a regular file");
        assert!(
            message.contains("is a FIFO (named pipe), not a regular file"),
            "{message}"
        );
    }

    #[test]
    fn a_directory_is_refused_naming_what_it_is() {
        let scratch = TempDir::new();
        let message = read(scratch.path(), "--config", &Opener::OwnRights, CONFIG_CAP)
            .expect_err("a directory")
            .to_string();
        assert!(
            message.contains("is a directory, not a regular file"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_file_names_flag_and_path() {
        let message = read(
            Path::new("/nonexistent/imds-tun/user-data"),
            "config: user_data",
            &Opener::OwnRights,
            SMALL,
        )
        .expect_err("missing")
        .to_string();
        assert!(
            message.starts_with("config: user_data /nonexistent/imds-tun/user-data: cannot open"),
            "{message}"
        );
    }

    #[test]
    fn a_path_with_spaces_or_newlines_is_quoted() {
        assert_eq!(shown(Path::new("/etc/imds.json")), "/etc/imds.json");
        assert_eq!(shown(Path::new("/tmp/a b")), "\"/tmp/a b\"");
        assert_eq!(shown(Path::new("/tmp/a\nb")), "\"/tmp/a\\nb\"");
    }

    /// Switching ids is process-wide, so a multi-threaded caller is refused before any id
    /// changes (the e2e tests in tests/namespace/file_access.rs prove the single-threaded switch).
    #[cfg(target_os = "linux")]
    #[test]
    fn opening_as_another_user_is_refused_while_other_threads_run() {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let _ = stopped.recv();
        });
        let user = FileUser {
            name: "nobody".into(),
            uid: nix::unistd::Uid::from_raw(65534),
            gid: nix::unistd::Gid::from_raw(65534),
            groups: vec![nix::unistd::Gid::from_raw(65534)],
        };
        let before = (nix::unistd::geteuid(), nix::unistd::getegid());
        let message = read(
            Path::new("/etc/hostname"),
            "--user-data",
            &Opener::InvokingUser(user),
            SMALL,
        )
        .expect_err("refused with several threads")
        .to_string();
        let _ = stop.send(());
        let _ = other.join();
        assert!(message.contains("threads"), "{message}");
        assert_eq!((nix::unistd::geteuid(), nix::unistd::getegid()), before);
    }
}
