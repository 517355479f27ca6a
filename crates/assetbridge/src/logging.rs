//! Structured logs: human or JSON, to stderr. Secrets never reach a log line: they are
//! `SecretString`s (their Debug prints `[REDACTED]`) and URLs are printed redacted
//! (`tests/log_redaction.rs` checks it at `trace` level, in both formats). Human logs are
//! coloured only on a terminal (and not with `NO_COLOR`): files and pipes get plain text.

use std::io::IsTerminal as _;

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogConfig, LogFormat};

/// Log settings from the command line (they win over the config file; `RUST_LOG` wins over both).
#[derive(Debug, Clone, Default)]
pub struct LogArgs {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
}

/// Installs the global subscriber once. Later calls are no-ops.
pub fn init(args: &LogArgs, file: Option<&LogConfig>) {
    let format = args.format.or(file.map(|f| f.format)).unwrap_or_default();
    let level = args
        .level
        .clone()
        .or_else(|| file.and_then(|f| f.level.clone()))
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_target(false).with_ansi(colour).try_init()
        }
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
