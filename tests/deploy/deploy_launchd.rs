//! The launchd plist in packaging/: a property list Python's plistlib (the format plutil checks)
//! accepts, that runs the installed binary as root handing over to `nobody`, without sudo, and
//! that launchd keeps alive; and the Homebrew formula that installs it as a service, whose Ruby
//! parses (`ruby -c`, the only check without a Mac). Plain file checks: they run on every
//! platform.

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

/// The Homebrew formula (packaging/homebrew/Formula/imds-tun.rb): Ruby that parses (`ruby -c`;
/// no Mac runs it here), whose service runs what the plist runs, keeps it alive as root and logs
/// where the plist logs, and which installs the plist with its own binary's path in it.
#[test]
fn homebrew_formula_parses_and_its_service_is_the_launchd_plist() {
    let formula_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging/homebrew/Formula/imds-tun.rb");
    let checked = match Command::new("ruby").arg("-c").arg(&formula_path).output() {
        Ok(output) => output,
        Err(error) => {
            let in_ci = std::env::var("CI")
                .is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1");
            assert!(!in_ci, "ruby is not available ({error}); CI must have it");
            eprintln!("SKIPPED: ruby is not available ({error})");
            return;
        }
    };
    assert!(
        checked.status.success() && String::from_utf8_lossy(&checked.stdout).contains("Syntax OK"),
        "ruby -c: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let Some(plist) = plist_as_json() else {
        return;
    };
    let formula = std::fs::read_to_string(&formula_path).expect("the formula");
    let arguments: Vec<String> = plist["ProgramArguments"]
        .as_array()
        .expect("ProgramArguments is an array")
        .iter()
        .skip(1)
        .map(|argument| format!("\"{}\"", argument.as_str().expect("a string")))
        .collect();
    let run = format!("run [opt_bin/\"imds-tun\", {}]", arguments.join(", "));
    let log = plist["StandardErrorPath"].as_str().expect("a log path");
    for line in [
        run.as_str(),
        "require_root true",
        "keep_alive true",
        &format!("log_path \"{log}\""),
        &format!("error_log_path \"{log}\""),
        "(buildpath/\"packaging/com.imds-tun.plist\").read",
        "plist.sub(\"/usr/local/bin/imds-tun\", \"#{opt_bin}/imds-tun\")",
        "depends_on \"rust\" => :build",
    ] {
        assert!(formula.contains(line), "the formula lacks {line:?}");
    }
}
