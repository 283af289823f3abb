//! What imds-tun says, as the user reads it from the real binary: command-line errors (clap's
//! whole message, then the help of the subcommand typed), colours only on a terminal
//! (`NO_COLOR` honoured), the advice for a claimed metadata address derived from what the kernel
//! holds (each kind of claim made for real in a namespace of its own), and the shell
//! completions and man page the binary prints itself.

use crate::common::{self, TempDir, text};

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `imds-tun ARGS` without a namespace, stdin closed.
fn run(arguments: &[&str]) -> Output {
    Command::new(common::BINARY)
        .args(arguments)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

/// Every example of issue 23 (item 4): the message clap wrote, whole, and the way to more help
/// naming the subcommand typed; exit 2. `--help` still prints the help and exits 0.
#[test]
fn a_command_line_error_keeps_clap_s_message_and_points_at_the_subcommand_s_help() {
    for (arguments, wanted) in [
        (
            &["ctl", "spot"][..],
            &[
                "imds-tun: the following required arguments were not provided:",
                "  --action <ACTION>",
                "Usage: imds-tun ctl spot --action <ACTION>",
                "For more information, try 'imds-tun ctl spot --help'.",
            ][..],
        ),
        (
            &["--regoin", "eu-west-1"][..],
            &[
                "imds-tun: unexpected argument '--regoin' found",
                "tip: a similar argument exists: '--region'",
                "For more information, try 'imds-tun --help'.",
            ][..],
        ),
        (
            &["ctl", "lifecycle", "terminated"][..],
            &[
                "imds-tun: invalid value 'terminated' for '<STATE>'",
                "[possible values: InService, Terminated, Warmed:Hibernated, Warmed:Running, \
                 Warmed:Stopped, Warmed:Terminated]",
                "tip: a similar value exists: 'Terminated'",
                "For more information, try 'imds-tun ctl lifecycle --help'.",
            ][..],
        ),
        (
            &["--mtu", "abc"][..],
            &[
                "imds-tun: invalid value 'abc' for '--mtu <BYTES>'",
                "For more information, try 'imds-tun --help'.",
            ][..],
        ),
        (
            &["ctl", "fault", "--status", "500", "--bogus"][..],
            &[
                "imds-tun: unexpected argument '--bogus' found",
                "For more information, try 'imds-tun ctl fault --help'.",
            ][..],
        ),
    ] {
        let output = run(arguments);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{arguments:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{arguments:?}: {}", text(&output));
        for line in wanted {
            assert!(
                stderr.contains(line),
                "{arguments:?} lacks {line:?}:\n{stderr}"
            );
        }
        assert!(
            stderr.starts_with("imds-tun: "),
            "{arguments:?}: the first line is the error:\n{stderr}"
        );
        assert_eq!(
            stderr.matches("For more information").count(),
            1,
            "{arguments:?}:\n{stderr}"
        );
    }
    // A subcommand without its own subcommand is an error too, with the help that lists them.
    let output = run(&["ctl"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("Usage: imds-tun ctl <COMMAND>"));
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage: imds-tun"));
}

/// Starts `imds-tun --no-tun --listen 127.0.0.1:0` (no root needed) with its stderr going to
/// `stderr`, lets it log its start-up, stops it with SIGTERM, and returns what it wrote.
fn start_up_log(command: &mut Command) -> Vec<u8> {
    let child = command
        .stdin(Stdio::null())
        .env("RUST_LOG", "info")
        .spawn()
        .expect("the command runs");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
    std::thread::sleep(Duration::from_millis(1500));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let output = child.wait_with_output().expect("the command ends");
    output.stdout
}

/// Item 7: logs written to a file (the CI guide's `imds-tun.log`, launchd's log, the journal)
/// carry no colour codes; a terminal gets them, unless `NO_COLOR` is set.
#[test]
fn logs_are_coloured_only_on_a_terminal_and_never_with_no_color() {
    const ESC: u8 = 0x1b;
    let scratch = TempDir::new();
    let log = std::path::PathBuf::from(scratch.file("imds-tun.log", b""));
    let mut to_file = Command::new(common::BINARY);
    to_file
        .args(["--no-tun", "--listen", "127.0.0.1:0"])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("the log file"));
    start_up_log(&mut to_file);
    let written = std::fs::read(&log).expect("reading the log");
    let shown = String::from_utf8_lossy(&written);
    assert!(
        shown.contains(common::READY_LINE),
        "the start-up line: {shown}"
    );
    assert!(
        !written.contains(&ESC),
        "colour codes in a log file: {shown:?}"
    );

    // On a terminal (a pseudo-terminal from `script`, which copies it to its stdout).
    let on_terminal = |no_color: Option<&str>| {
        let mut command = Command::new("script");
        command
            .args(["-q", "-e", "-c"])
            .arg(format!(
                "exec {} --no-tun --listen 127.0.0.1:0",
                common::BINARY
            ))
            .arg("/dev/null")
            .env("TERM", "xterm-256color")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        match no_color {
            Some(value) => command.env("NO_COLOR", value),
            None => command.env_remove("NO_COLOR"),
        };
        start_up_log(&mut command)
    };
    let coloured = on_terminal(None);
    assert!(
        String::from_utf8_lossy(&coloured).contains(common::READY_LINE),
        "{}",
        String::from_utf8_lossy(&coloured)
    );
    assert!(
        coloured.contains(&ESC),
        "a terminal gets colours: {:?}",
        String::from_utf8_lossy(&coloured)
    );
    let plain = on_terminal(Some("1"));
    assert!(String::from_utf8_lossy(&plain).contains(common::READY_LINE));
    assert!(
        !plain.contains(&ESC),
        "NO_COLOR=1 on a terminal: {:?}",
        String::from_utf8_lossy(&plain)
    );
}

/// The one command in backticks after "remove it with" (or "remove the pair with"), without
/// its `sudo` (the test is root).
fn advised_command(message: &str) -> Vec<String> {
    let rest = message
        .split(" with `sudo ")
        .nth(1)
        .unwrap_or_else(|| panic!("no `sudo ...` command in {message:?}"));
    let command = rest.split('`').next().unwrap_or_default();
    command.split_whitespace().map(str::to_owned).collect()
}

/// Item 6: for each way something can hold 169.254.169.254, made for real in a namespace, the
/// refusal and `--check` name it as the kernel holds it, and the command they give removes
/// exactly that: run as given it succeeds, and imds-tun starts afterwards. (Before, every
/// refusal said `ip addr del 169.254.169.254/32 dev lo`: "Address not found" for aws-vault's
/// /24 alias, and no help for a route.)
#[test]
fn the_claimed_address_advice_is_the_command_that_releases_that_claim() {
    let cases: [(&str, &[&[&str]], &str); 5] = [
        (
            "a /32 alias on lo",
            &[&["addr", "add", "169.254.169.254/32", "dev", "lo"]],
            "an address (169.254.169.254/32) on interface lo",
        ),
        (
            "aws-vault's /24 alias on lo",
            &[&["addr", "add", "169.254.169.254/24", "dev", "lo"]],
            "an address (169.254.169.254/24) on interface lo",
        ),
        (
            "a host route through an interface",
            &[
                &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                &["link", "set", "v0", "up"],
                &["link", "set", "v1", "up"],
                &["route", "add", "169.254.169.254/32", "dev", "v0"],
            ],
            "a host route via interface v0",
        ),
        (
            "a host route through a gateway",
            &[
                &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                &["link", "set", "v0", "up"],
                &["link", "set", "v1", "up"],
                &["addr", "add", "10.99.0.1/24", "dev", "v0"],
                &[
                    "route",
                    "add",
                    "169.254.169.254/32",
                    "via",
                    "10.99.0.2",
                    "dev",
                    "v0",
                ],
            ],
            "a host route via 10.99.0.2 on interface v0",
        ),
        (
            "the peer of a point-to-point link",
            &[
                &["tuntap", "add", "dev", "p2p0", "mode", "tun"],
                &[
                    "addr",
                    "add",
                    "169.254.169.253",
                    "peer",
                    "169.254.169.254/32",
                    "dev",
                    "p2p0",
                ],
                &["link", "set", "p2p0", "up"],
            ],
            "the point-to-point peer of interface p2p0",
        ),
    ];
    for (what, setup, holder) in cases {
        let namespace = namespace!();
        for command in setup {
            namespace.ip(command);
        }
        let mut child = namespace.spawn(&[]);
        let status = child.wait_exit(Duration::from_secs(10));
        common::assert_exit_code(&child, status, 1);
        let stderr = child.stderr();
        let refusal = stderr
            .lines()
            .find(|line| line.starts_with("imds-tun: 169.254.169.254 is already claimed by"))
            .unwrap_or_else(|| panic!("{what}: no refusal in\n{stderr}"));
        assert!(refusal.contains(holder), "{what}: {refusal}");
        let check = namespace.exec(&[common::BINARY, "--check"]);
        let report = String::from_utf8_lossy(&check.stdout).into_owned();
        let line = report
            .lines()
            .find(|line| line.starts_with("fail  metadata address:"))
            .unwrap_or_else(|| panic!("{what}: {}", text(&check)));
        let command = advised_command(refusal);
        assert_eq!(
            advised_command(line),
            command,
            "{what}: --check advises the same"
        );
        let mut full = vec![
            "ip".to_owned(),
            "-n".to_owned(),
            namespace.name().to_owned(),
        ];
        full.extend(command.iter().skip(1).cloned());
        assert_eq!(command[0], "ip", "{what}: {command:?}");
        let released = Command::new(&full[0])
            .args(&full[1..])
            .output()
            .expect("ip runs");
        assert!(
            released.status.success(),
            "{what}: `{}` as advised: {}",
            command.join(" "),
            text(&released)
        );
        let started = common::start(&namespace, &[]);
        drop(started);
    }
}

/// Item 10 and 25: a scenario's mistake is said once, by position, step and key, with the
/// scenario's commands (not the control protocol's internal ones) and nothing of the file's
/// text, through `--scenario` and `ctl play` alike (both read the file before anything else).
#[test]
fn a_scenario_mistake_names_the_step_and_key_and_never_the_file_s_text() {
    let scratch = TempDir::new();
    let file = scratch.file(
        "scenario.json",
        br#"[{"at": "+0s", "command": "rebalance"}, {"at": "+30s", "command": "spot-hunter2"}]"#,
    );
    for (arguments, prefix) in [
        (
            vec![
                "--no-tun",
                "--listen",
                "127.0.0.1:0",
                "--scenario",
                file.as_str(),
            ],
            format!("imds-tun: --scenario {file}: "),
        ),
        (
            vec!["ctl", "play", file.as_str()],
            format!("imds-tun ctl: scenario {file}: "),
        ),
    ] {
        let output = run(&arguments);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{arguments:?}: {}",
            text(&output)
        );
        let line = stderr
            .lines()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{arguments:?}: no line starting {prefix:?}:\n{stderr}"));
        // The scenario's own commands, every one, whatever commands are added.
        let commands = imds_tun::control::protocol::SCENARIO_COMMANDS.join(", ");
        assert_eq!(
            &line[prefix.len()..],
            format!("step 2: `command`: expected one of {commands}, found another string"),
            "{arguments:?}"
        );
        assert!(commands.starts_with("spot, rebalance, event"), "{commands}");
        assert!(!stderr.contains("hunter2"), "the file's text: {stderr}");
    }
}

/// `--log-format json` from the first line to the last, a failed run's closing error included:
/// a second imds-tun on the same --listen port logs its start and its refusal as JSON objects.
#[test]
fn a_json_run_writes_only_json_lines_even_when_it_fails() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let busy = holder.local_addr().expect("its address").to_string();
    let output = Command::new(common::BINARY)
        .args(["--no-tun", "--listen", &busy, "--log-format", "json"])
        .stdin(Stdio::null())
        .output()
        .expect("the command runs");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    let last = lines.last().unwrap_or_else(|| panic!("no line: {stderr}"));
    assert_eq!(last["level"], "ERROR", "{stderr}");
    let message = last["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!("imds-tun: cannot listen on {busy}")),
        "{stderr}"
    );
}
