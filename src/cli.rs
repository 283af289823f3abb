//! The command line (clap derive) and its translation into [`crate::config::Settings`].
//!
//! CONTRACT (owned by the config/imds helper): `Cli` (clap Parser) and
//! `Cli::into_settings(self) -> Result<Settings, ConfigError>`.

use crate::config::{ConfigError, Imdsv2Mode, Settings, TunSettings};

/// Command-line arguments.
#[derive(Debug, clap::Parser)]
#[command(name = "imds-tun", version, about)]
pub struct Cli {
    /// Also serve on a kernel TCP socket (repeatable).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<std::net::SocketAddr>,
    /// Do not create a TUN device; serve only the --listen sockets.
    #[arg(long)]
    pub no_tun: bool,
}

impl Cli {
    /// Resolves flags, the config file and defaults into one validated `Settings`.
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        Ok(Settings {
            tun: (!self.no_tun).then(|| TunSettings {
                name: "imds%d".into(),
                mtu: 1500,
            }),
            listen: self.listen,
            max_connections: 1024,
            shutdown_grace: std::time::Duration::from_secs(5),
            imdsv2: Imdsv2Mode::Optional,
        })
    }
}
