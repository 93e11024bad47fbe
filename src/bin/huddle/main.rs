//! The `huddle` binary: parse the command line, then run a node (start
//! logging, build the node, serve until SIGTERM or SIGINT, drain, say how
//! the drain went) or one of the tools beside it.
//!
//! The library does the work; this binary holds what only the command line
//! needs: its arguments (`cli`), the load generator (`bench`) and the
//! container health check (`health`).

mod bench;
mod cli;
mod health;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use huddle::Config;
use huddle::service::sessions::{Claims, sign};

use crate::cli::{BenchArgs, Cli, Command, HealthArgs, TokenArgs};

/// Exit code for bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("bad arguments");
            eprintln!("huddle: {}", line.trim_start_matches("error: "));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        Command::Serve(config) => serve(*config),
        Command::Token(args) => token(&args),
        Command::Health(args) => health(&args),
        Command::Bench(args) => bench(*args),
    }
}

fn serve(config: Config) -> ExitCode {
    if let Err(problem) = config.validate() {
        eprintln!("huddle: {problem}");
        return ExitCode::from(EXIT_CONFIG);
    }
    huddle::telemetry::init(config.log_format);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let bind = config.bind;
        let backlog = config.accept_backlog;
        let gateway = match huddle::gateway::Gateway::build(config).await {
            Ok(gateway) => gateway,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let listener = match listen(bind, backlog) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%bind, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().unwrap_or(bind);
        tracing::info!(%addr, node = gateway.node_id(), "listening");
        // The one line on stdout: tools and tests read the port from it.
        println!("listening on {addr}");
        let _ = std::io::stdout().flush();
        let report = huddle::gateway::serve(gateway, listener, shutdown_signal()).await;
        if report.clean {
            tracing::info!(took_ms = report.took.as_millis() as u64, "drained; bye");
            ExitCode::SUCCESS
        } else {
            tracing::warn!(
                remaining = report.remaining,
                took_ms = report.took.as_millis() as u64,
                "grace period ended with connections still open"
            );
            ExitCode::FAILURE
        }
    })
}

/// Listens on `bind` with room for `backlog` connections waiting to be
/// accepted (the kernel caps it at `net.core.somaxconn`).
fn listen(bind: std::net::SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if bind.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's listener does: a restarted node can bind at once.
    socket.set_reuseaddr(true)?;
    socket.bind(bind)?;
    socket.listen(backlog)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

/// The multi-threaded tokio runtime, or `None` after saying why not.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("huddle: cannot start the runtime: {e}");
            None
        }
    }
}

fn bench(args: BenchArgs) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(bench::run(args)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("huddle bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn health(args: &HealthArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("huddle: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(health::check(&args.url, args.timeout)) {
        Ok(200) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("huddle: {} answered {status}", args.url);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("huddle: {}: {e}", args.url);
            ExitCode::FAILURE
        }
    }
}

fn token(args: &TokenArgs) -> ExitCode {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        sub: args.sub.clone(),
        name: args.name.clone(),
        image: args.image.clone(),
        exp: now + args.ttl.as_secs(),
        nbf: None,
        iat: Some(now),
    };
    match sign(&args.secret, &claims) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("huddle: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
