//! Opening a file "as another user" on the systems without their own way (neither Linux nor
//! macOS, see linux.rs and macos_open_as.rs): the file is opened with the process's rights and
//! kept only if its permission bits admit the user.

use super::{FileUser, OpenAsError};
use nix::unistd::Gid;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

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
