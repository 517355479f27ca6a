//! Exit codes and how failures are shown.

use std::process::ExitCode;

/// Finished, but some assets failed (they are in the dead-letter store or waiting for a retry).
pub const PARTIAL: u8 = 3;

/// Why the command stopped.
#[derive(Debug)]
pub enum Failure {
    /// Usage or configuration error: exit code 2.
    Config(String),
    /// Anything else that stopped the command: exit code 1.
    Fatal(anyhow::Error),
}

impl Failure {
    pub fn report(self) -> ExitCode {
        match self {
            Failure::Config(m) => {
                eprintln!("error: {m}");
                ExitCode::from(2)
            }
            Failure::Fatal(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Fatal(e)
    }
}

impl From<assetbridge_config::ConfigError> for Failure {
    fn from(e: assetbridge_config::ConfigError) -> Self {
        Failure::Config(e.to_string())
    }
}
