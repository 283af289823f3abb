//! Placeholder for operating systems without a TUN implementation yet (macOS comes next).

use super::{FileUser, OpenAsError, PlatformError, TunRequest};
use nix::unistd::Gid;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Never constructed on this OS.
#[derive(Debug)]
pub struct AsyncTun(());

impl AsyncTun {
    pub fn name(&self) -> &str {
        ""
    }
    pub async fn readable(&self) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    pub fn try_recv(&self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    pub async fn send(&self, _packet: &[u8]) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

pub fn claim_metadata_address(_request: &TunRequest) -> Result<AsyncTun, PlatformError> {
    Err(PlatformError::Unsupported)
}

pub(crate) fn current_claim() -> Result<Option<String>, PlatformError> {
    Err(PlatformError::Unsupported)
}

/// A portable stand-in: the file is opened with the process's rights and kept only if its
/// permission bits let `user` read it (owner, then group, then others, as the kernel decides).
/// Weaker than switching ids (see linux.rs): directories on the way and ACLs are not checked,
/// and `user.groups` is only the primary group ([`groups_of`]), which can refuse a file the
/// user could read through another group but never admits one the bits forbid.
pub(crate) fn open_as_user(
    path: &Path,
    options: &OpenOptions,
    user: &FileUser,
) -> Result<File, OpenAsError> {
    use std::os::unix::fs::MetadataExt;
    let file = options.open(path).map_err(OpenAsError::Open)?;
    let metadata = file.metadata().map_err(OpenAsError::Open)?;
    let mode = metadata.mode();
    let readable = if metadata.uid() == user.uid.as_raw() {
        mode & 0o400 != 0
    } else if user.groups.iter().any(|gid| gid.as_raw() == metadata.gid()) {
        mode & 0o040 != 0
    } else {
        mode & 0o004 != 0
    };
    if readable {
        Ok(file)
    } else {
        Err(OpenAsError::Open(io::Error::from(
            io::ErrorKind::PermissionDenied,
        )))
    }
}

/// Only the primary group: this fallback has no portable `getgrouplist`.
pub(crate) fn groups_of(_name: &str, gid: Gid) -> io::Result<Vec<Gid>> {
    Ok(vec![gid])
}
