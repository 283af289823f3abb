//! Running a document's commands as written: its fenced blocks, and a shell in which
//! `imds-tun` is the binary under test and `sudo` only runs its command (the tests are root).

use std::os::unix::fs::PermissionsExt as _;

use super::{Namespace, TempDir};

/// The bodies of the fenced blocks (without their language line) of `markdown` after the first
/// `from` and before the next `until` after it (the end if there is none), in order.
pub(crate) fn fenced_blocks(markdown: &str, from: &str, until: &str) -> Vec<String> {
    let (_, section) = markdown
        .split_once(from)
        .unwrap_or_else(|| panic!("the document has no {from:?}"));
    let section = section
        .split_once(until)
        .map_or(section, |(inside, _)| inside);
    section
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|block| {
            let (_language, body) = block.split_once('\n').unwrap_or_default();
            body.to_owned()
        })
        .collect()
}

/// A shell whose PATH starts with `imds-tun` and a `sudo` that runs its command.
pub(crate) struct DocShell {
    /// Holds the PATH's directory until the shell is dropped.
    _scratch: TempDir,
    path: String,
}

impl DocShell {
    /// The shell's directory, made now.
    pub(crate) fn new() -> DocShell {
        let scratch = TempDir::new();
        let bin = scratch.path().join("bin");
        std::fs::create_dir(&bin).expect("bin");
        std::os::unix::fs::symlink(super::binary(), bin.join("imds-tun")).expect("symlink");
        std::fs::write(bin.join("sudo"), "#!/bin/sh\nexec \"$@\"\n").expect("sudo");
        std::fs::set_permissions(bin.join("sudo"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let path = format!("PATH={}:/usr/bin:/bin", bin.display());
        DocShell {
            _scratch: scratch,
            path,
        }
    }

    /// Runs `script` with `sh -e` in `namespace` with only that PATH in its environment; its
    /// stdout, or a panic with both outputs if it fails.
    pub(crate) fn run(&self, namespace: &Namespace, script: &str) -> String {
        let output = namespace.exec(&["env", "-i", &self.path, "sh", "-e", "-c", script]);
        assert!(
            output.status.success(),
            "{script}: {}",
            super::text(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}
