//! Writes the files the .deb ships that are derived from the command line: the man page
//! `imds-tun.1` and the bash, zsh and fish completions, all rendered from the real
//! [`imds_tun::cli::Cli`], so they can only list the flags the binary parses.
//!
//! `scripts/package.sh` runs it (`cargo run --example packaging_assets -- OUT_DIR`) before
//! `cargo deb`; `tests/deploy/package_artifacts.rs` checks the packaged man page against the
//! packaged binary's `--help`. It is an example rather than a `[[bin]]` because `cargo install --path .`
//! installs every binary target, and nobody who installs imds-tun wants this one on their PATH;
//! examples are built by `cargo test` (so this cannot rot) and never installed.
//!
//! What the man page adds to what clap knows (exit status, environment, files) restates the
//! README's "Flags" section, the one place those facts are documented and tested.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};
use imds_tun::cli::Cli;

/// The name users type, and so the name completions register for.
const BIN: &str = "imds-tun";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out_dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: cargo run --example packaging_assets -- OUT_DIR");
        return ExitCode::from(2);
    };
    match write_all(Path::new(&out_dir)) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("packaging_assets: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the man page and the three completion scripts into `out_dir`; returns their paths.
fn write_all(out_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fs::create_dir_all(out_dir)?;
    let mut written = vec![write_man_page(out_dir)?];
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        // Named as each shell looks them up: imds-tun.bash, _imds-tun, imds-tun.fish.
        written.push(clap_complete::generate_to(
            shell,
            &mut visible_command(),
            BIN,
            out_dir,
        )?);
    }
    Ok(written)
}

/// `Cli`'s command without its hidden flags. clap_complete offers hidden flags too (hidden means
/// "not in --help", not "not accepted"), and imds-tun's hidden flags exist only for its tests
/// (`--retry-base-ms`, `--credentials-max-lifetime`): no user should be offered them. clap
/// cannot remove an argument, so this builds a command from the visible ones; in this debug
/// build clap's own checks would reject it if a visible flag referred to a hidden one.
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let visible: Vec<clap::Arg> = full
        .get_arguments()
        .filter(|arg| !arg.is_hide_set())
        .cloned()
        .collect();
    clap::Command::new(BIN)
        .version(env!("CARGO_PKG_VERSION"))
        .args(visible)
}

fn write_man_page(out_dir: &Path) -> std::io::Result<PathBuf> {
    let man = Man::new(Cli::command()).manual("imds-tun manual");
    let path = out_dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    how_it_works().to_writer(&mut page)?;
    // Every visible flag, grouped by its help heading, exactly as `--help` groups them.
    man.render_options_section(&mut page)?;
    reference_sections().to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    let mut file = fs::File::create(&path)?;
    file.write_all(&page)?;
    Ok(path)
}

/// A paragraph after clap's one-line description: what the program does to the machine.
fn how_it_works() -> Roff {
    let mut roff = Roff::default();
    roff.control("PP", []).text([roman(
        "imds-tun creates a TUN device whose point-to-point peer is 169.254.169.254, so the \
         kernel routes exactly that address into it, and answers the EC2 instance metadata \
         protocol (IMDSv1 and IMDSv2) through a userspace TCP/IP stack. It adds no address to \
         the loopback interface and no packet-filter rule; the device and its route disappear \
         when the process exits, also after SIGKILL. Creating the device needs CAP_NET_ADMIN: \
         run it as root (sudo imds-tun), or as the systemd service imds-tun.service, which \
         grants only that capability to a dynamic user.",
    )]);
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
            "bad settings: a malformed flag or config file, a malformed --role-arn, an unknown \
             profile, an MFA serial without a code",
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
            "IMDS_TUN_ARGS, the flags of the systemd service imds-tun.service (a configuration \
             file of the Debian package, kept on upgrade, removed on purge). Restart the \
             service after editing it.",
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
        roman("(1); every flag's default and the credential sources: "),
        bold("/usr/share/doc/imds-tun/README.md"),
        roman(" (installed by the Debian package)."),
    ]);
    roff
}
