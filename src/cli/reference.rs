//! The man page and the shell completions, rendered from the real [`Cli`] so they can only name
//! what the binary parses: `imds-tun man` and `imds-tun completions SHELL` print them, so every
//! way of installing imds-tun has them (the .deb ships what the packaged binary prints,
//! `scripts/install.sh` installs what the installed one prints, a copied static binary prints
//! its own).
//!
//! Both leave out the hidden flags, which exist for the tests only (`--retry-base-ms`,
//! `--credentials-max-lifetime`): clap_complete offers hidden flags (hidden means "not in
//! `--help`", not "not accepted"), and no user should be offered them. Both include `ctl` and
//! every command under it: clap_mangen lists only a command's direct subcommands by name, so
//! the page renders each `ctl` command's synopsis and options itself.
//!
//! What the man page adds to what clap knows (exit status, environment, files) restates the
//! README's "Flags" section, the one place those facts are documented and tested.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use super::Cli;

/// The name users type, and so the name completions register for.
const BIN: &str = "imds-tun";

/// Writes the completion script for `shell` (bash, zsh, fish, elvish, PowerShell).
pub fn completions(shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    // clap_complete reports a write error by panicking; render into memory, then write.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut visible_command(), BIN, &mut script);
    if shell == Shell::Bash {
        script = bash_subcommand_cases(&script);
    }
    out.write_all(&script)
}

/// clap_complete 4.6's bash script names a subcommand's state `imds__tun__subcmd__ctl` where it
/// enters it (the binary's `-` as `__`) but `imds__subcmd__tun__subcmd__ctl` where it completes
/// it (`-` as its separator `__subcmd__`), so nothing under `ctl` would complete: the second
/// spelling of the binary's name becomes the first.
fn bash_subcommand_cases(script: &[u8]) -> Vec<u8> {
    let wrong = format!("{}__subcmd__", BIN.replace('-', "__subcmd__"));
    let right = format!("{}__subcmd__", BIN.replace('-', "__"));
    String::from_utf8_lossy(script)
        .replace(&wrong, &right)
        .into_bytes()
}

/// `Cli`'s command without its hidden flags (see the module docs), subcommands kept, and each
/// subcommand without them too (`exec` takes every setting's flag). clap cannot remove an
/// argument, so a command that has hidden flags is built again from its visible ones.
fn visible_command() -> clap::Command {
    without_hidden(&Cli::command()).version(env!("CARGO_PKG_VERSION"))
}

/// `command` as it is when neither it nor a subcommand hides a flag; else built again from its
/// name, help texts, visible flags and subcommands (each treated the same way).
fn without_hidden(command: &clap::Command) -> clap::Command {
    if !hides_a_flag(command) {
        return command.clone();
    }
    let visible: Vec<clap::Arg> = command
        .get_arguments()
        .filter(|arg| !arg.is_hide_set())
        .cloned()
        .collect();
    let name = if command.get_name() == Cli::command().get_name() {
        BIN.to_owned()
    } else {
        command.get_name().to_owned()
    };
    let mut rebuilt = clap::Command::new(name)
        .args(visible)
        .subcommands(command.get_subcommands().map(without_hidden));
    if let Some(about) = command.get_about() {
        rebuilt = rebuilt.about(about.clone());
    }
    if let Some(long_about) = command.get_long_about() {
        rebuilt = rebuilt.long_about(long_about.clone());
    }
    rebuilt
}

/// Whether `command` or one of its subcommands has a hidden flag.
fn hides_a_flag(command: &clap::Command) -> bool {
    command.get_arguments().any(clap::Arg::is_hide_set)
        || command.get_subcommands().any(hides_a_flag)
}

/// Writes the man page `imds-tun(1)`: clap's name, synopsis, description and options, what
/// imds-tun does to the machine, every `ctl` command, then exit status, environment, files.
pub fn man_page(out: &mut dyn Write) -> io::Result<()> {
    let man = Man::new(visible_command().disable_help_subcommand(true)).manual("imds-tun manual");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    how_it_works().to_writer(&mut page)?;
    // Every visible flag, grouped by its help heading, exactly as `--help` groups them.
    man.render_options_section(&mut page)?;
    commands_section().to_writer(&mut page)?;
    reference_sections().to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    out.write_all(&page)
}

/// A paragraph after clap's one-line description: what the program does to the machine.
fn how_it_works() -> Roff {
    let mut roff = Roff::default();
    roff.control("PP", []).text([roman(
        "imds-tun creates a TUN device whose point-to-point peer is 169.254.169.254, so the \
         kernel routes exactly that address into it, and answers the EC2 instance metadata \
         protocol (IMDSv1 and IMDSv2), and those of Google Compute Engine and Azure, through a \
         userspace TCP/IP stack. It adds no address to the loopback interface and no \
         packet-filter rule; the device and its route disappear when the process exits, also \
         after SIGKILL. Creating the device needs CAP_NET_ADMIN: run it as root (sudo \
         imds-tun), or as the systemd service imds-tun.service, which grants only that \
         capability to a dynamic user.",
    )]);
    roff
}

/// COMMANDS: every subcommand, nested ones (`ctl fault list`) included, with its synopsis and
/// options as its `--help` shows them.
fn commands_section() -> Roff {
    let mut roff = Roff::default();
    roff.control("SH", ["COMMANDS"]);
    let mut full = Cli::command().disable_help_subcommand(true);
    full.build();
    let mut pending: Vec<(String, clap::Command)> = full
        .get_subcommands()
        .map(|sub| (format!("{BIN} {}", sub.get_name()), sub.clone()))
        .collect();
    pending.reverse();
    while let Some((path, command)) = pending.pop() {
        roff.control("SS", [path.as_str()]);
        if let Some(about) = command.get_long_about().or_else(|| command.get_about()) {
            roff.text([roman(about.to_string())]);
        }
        let usage = command.clone().bin_name(&path).render_usage().to_string();
        let usage = usage.trim_start_matches("Usage:").trim();
        roff.control("PP", []).text([bold(usage)]);
        for arg in command
            .get_arguments()
            .filter(|arg| !arg.is_hide_set() && arg.get_id() != "help")
        {
            roff.control("TP", []);
            let name = match (arg.get_long(), arg.get_value_names()) {
                (Some(long), Some(values)) => {
                    vec![
                        bold(format!("--{long}")),
                        roman(" "),
                        italic(values.join(" ")),
                    ]
                }
                (Some(long), None) => vec![bold(format!("--{long}"))],
                (None, Some(values)) => vec![italic(values.join(" "))],
                (None, None) => vec![italic(arg.get_id().to_string())],
            };
            roff.text(name);
            let mut help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let possible: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|value| !value.is_hide_set())
                .map(|value| value.get_name().to_owned())
                .collect();
            if !possible.is_empty() {
                help.push_str(&format!(" [possible values: {}]", possible.join(", ")));
            }
            roff.text([roman(help)]);
        }
        let subs: Vec<_> = command
            .get_subcommands()
            .filter(|sub| !sub.is_hide_set())
            .map(|sub| (format!("{path} {}", sub.get_name()), sub.clone()))
            .collect();
        pending.extend(subs.into_iter().rev());
    }
    roff
}

/// EXIT STATUS, ENVIRONMENT, FILES and SEE ALSO, as the README states them.
fn reference_sections() -> Roff {
    let mut roff = Roff::default();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        (
            "0",
            "stopped by SIGINT, SIGTERM or SIGHUP after in-flight requests finished; with \
             --check, this machine can run imds-tun with these flags",
        ),
        (
            "1",
            "the service cannot start or failed (not root, no /dev/net/tun, the address is \
             already claimed, a port is busy); with --check, something it needs is missing",
        ),
        (
            "2",
            "bad settings: a malformed flag, command line or config file, a malformed \
             --role-arn, an unknown profile, an MFA serial without a code",
        ),
    ] {
        roff.control("TP", [])
            .text([bold(code)])
            .text([roman(meaning)]);
    }
    roff.control("PP", []).text([roman(
        "The reason for a failure is the last line on standard error, starting with imds-tun:.",
    )]);

    roff.control("SH", ["ENVIRONMENT"]);
    for (name, meaning) in [
        (
            "RUST_LOG",
            "log level (info by default; debug logs every request's method, path and status). \
             Logs go to standard error; credentials and tokens are never logged.",
        ),
        (
            "NO_COLOR",
            "set and not empty: no colours in the log even on a terminal (logs are coloured \
             only when standard error is a terminal).",
        ),
        (
            "AWS_PROFILE, AWS_REGION, AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE, \
             AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL",
            "honoured as by the AWS CLI when imds-tun obtains real role credentials.",
        ),
    ] {
        roff.control("TP", [])
            .text([bold(name)])
            .text([roman(meaning)]);
    }

    roff.control("SH", ["FILES"]);
    for (name, meaning) in [
        (
            "/etc/default/imds-tun",
            "IMDS_TUN_ARGS, the flags of the systemd service imds-tun.service, and any \
             variable the service should see, such as GOOGLE_ACCESS_TOKEN (mode 0600: readable \
             by root only; a configuration file of the Debian package, kept on upgrade, \
             removed on purge). Restart the service after editing it.",
        ),
        (
            "/dev/net/tun",
            "the TUN clone device imds-tun opens to create its interface.",
        ),
    ] {
        roff.control("TP", [])
            .text([bold(name)])
            .text([roman(meaning)]);
    }

    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1); every flag's default, the credential sources and the guides: "),
        bold("/usr/share/doc/imds-tun/README.md"),
        roman(" and the docs beside it (installed by the Debian package; in the source, "),
        bold("README.md"),
        roman(" and "),
        bold("docs/"),
        roman(")."),
    ]);
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn man() -> String {
        let mut page = Vec::new();
        man_page(&mut page).expect("rendering into memory");
        String::from_utf8(page).expect("roff is text")
    }

    #[test]
    fn the_man_page_documents_ctl_and_leaves_out_the_hidden_flags() {
        let page = man().replace("\\-", "-");
        for wanted in [
            ".SH COMMANDS",
            ".SS \"imds-tun ctl spot\"",
            ".SS \"imds-tun ctl fault list\"",
            "--credential-source",
            "[possible values: terminate, stop, hibernate]",
            ".SS \"imds-tun completions\"",
        ] {
            assert!(page.contains(wanted), "no {wanted:?} in\n{page}");
        }
        for hidden in ["--retry-base-ms", "--credentials-max-lifetime"] {
            assert!(!page.contains(hidden), "{hidden} in the man page");
        }
    }

    /// What bash offers on `imds-tun WORDS<TAB>`, through the function the script registers.
    fn bash_offers(words: &str) -> Vec<String> {
        let mut script = Vec::new();
        completions(Shell::Bash, &mut script).expect("rendering into memory");
        let dir = crate::temp_dir::TempDir::new();
        let path = dir.path().join("imds-tun.bash");
        std::fs::write(&path, &script).expect("writing the script");
        let output = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source '{}' && COMP_WORDS=({words}) && COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)) \
                 && _imds__tun imds-tun \"${{COMP_WORDS[COMP_CWORD]}}\" \
                 \"${{COMP_WORDS[COMP_CWORD-1]}}\" && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                path.display()
            ))
            .output()
            .expect("bash runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn bash_completes_under_ctl_too() {
        assert_eq!(bash_offers("imds-tun ctl sp"), ["spot"]);
        assert_eq!(
            bash_offers("imds-tun ctl spot --action ''"),
            ["terminate", "stop", "hibernate"]
        );
        assert_eq!(bash_offers("imds-tun ctl fault l"), ["list"]);
        assert_eq!(
            bash_offers("imds-tun --inst"),
            ["--instance-id", "--instance-type"]
        );
    }

    #[test]
    fn completions_offer_ctl_and_no_hidden_flag() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut script = Vec::new();
            completions(shell, &mut script).expect("rendering into memory");
            let script = String::from_utf8(script).expect("text");
            for wanted in ["lifecycle", "credential-source", "instance-id", "network"] {
                assert!(script.contains(wanted), "{shell}: no {wanted}");
            }
            for hidden in ["retry-base-ms", "credentials-max-lifetime"] {
                assert!(!script.contains(hidden), "{shell} offers {hidden}");
            }
        }
    }
}
