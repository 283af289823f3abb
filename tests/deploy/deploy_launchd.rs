//! The launchd plist in packaging/: a property list Python's plistlib (the format plutil checks)
//! accepts, that runs the installed binary as root handing over to `nobody`, without sudo, and
//! that launchd keeps alive. Plain file checks: they run on every platform.

use std::path::PathBuf;
use std::process::Command;

fn plist_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging/com.imds-tun.plist")
}

/// The plist as JSON, read by plistlib; `None` without python3: a skip on a developer machine,
/// a failure under `CI=true`, like every test that cannot run.
fn plist_as_json() -> Option<serde_json::Value> {
    let script = "import json, plistlib, sys\n\
                  with open(sys.argv[1], 'rb') as f:\n    \
                  print(json.dumps(plistlib.load(f)))";
    let output = match Command::new("python3")
        .args(["-c", script])
        .arg(plist_path())
        .output()
    {
        Ok(output) => output,
        Err(error) => {
            let in_ci = std::env::var("CI")
                .is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1");
            assert!(
                !in_ci,
                "python3 is not available ({error}); CI must have it"
            );
            eprintln!("SKIPPED: python3 is not available ({error})");
            return None;
        }
    };
    assert!(
        output.status.success(),
        "plistlib refused the plist:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).expect("plistlib printed JSON"))
}

#[test]
fn launchd_plist_is_a_valid_property_list_for_the_installed_binary() {
    let Some(plist) = plist_as_json() else {
        return;
    };
    assert_eq!(plist["Label"], "com.imds-tun");
    let arguments: Vec<&str> = plist["ProgramArguments"]
        .as_array()
        .expect("ProgramArguments is an array")
        .iter()
        .map(|argument| argument.as_str().expect("arguments are strings"))
        .collect();
    assert_eq!(arguments.first(), Some(&"/usr/local/bin/imds-tun"));
    assert!(
        arguments
            .windows(2)
            .any(|pair| pair == ["--user", "nobody"]),
        "{arguments:?}"
    );
    assert!(!arguments.contains(&"sudo"), "{arguments:?}");
    assert_eq!(plist["RunAtLoad"], true);
    assert_eq!(plist["KeepAlive"], true);
    let log = plist["StandardErrorPath"].as_str().expect("a log path");
    assert!(log.starts_with("/var/log/"), "{log}");
}
