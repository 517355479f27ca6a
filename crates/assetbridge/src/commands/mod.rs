pub mod check;
pub mod demo;
pub mod dlq;
pub mod emulate;
pub mod plan;
pub mod run;
pub mod status;
pub mod structure;
pub mod sync;

use std::path::PathBuf;

use clap::Args;

/// `--config FILE`, shared by the commands that need a configuration.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The configuration file (TOML). See docs/configuration.md and examples/assetbridge.toml.
    #[arg(short, long, env = "ASSETBRIDGE_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
}
