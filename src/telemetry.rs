//! Logging: `tracing` to stderr, as text or JSON lines.
//!
//! The filter comes from `RUST_LOG` (default `info`). Peer disconnects and
//! client mistakes are logged at debug; internal errors at error, once, with
//! the correlation id the client sees.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    if let Err(e) = result {
        eprintln!("huddle: logging already initialised: {e}");
    }
}
