//! The `switchyard` command line: run, validate, echo, ctl.
#![forbid(unsafe_code)]

mod ctl;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A WebAssembly plugin-driven proxy for service meshes and edge gateways.
#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file to run (same as `switchyard run --config FILE`).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic as the config file says.
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file without serving; prints every error and exits non-zero if any.
    Validate {
        /// The TOML config file.
        file: PathBuf,
    },
    /// A tiny upstream that answers every request with its name, method, path and headers as JSON.
    Echo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
        /// Name reported in every answer.
        #[arg(long, default_value = "echo")]
        name: String,
        /// Wait this long before every answer ("100ms"), to play a slow service.
        #[arg(long, value_parser = parse_duration)]
        delay: Option<std::time::Duration>,
        /// Answer every request with this status, to play a failing service.
        #[arg(long)]
        status: Option<u16>,
    },
    /// Talk to a running proxy's admin API: list plugins, swap one, reload, show status.
    Ctl(ctl::Ctl),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match (cli.command, cli.config) {
        (Some(command), _) => command,
        (None, Some(config)) => Command::Run { config },
        (None, None) => {
            eprintln!(
                "error: nothing to do; try `switchyard run --config FILE` or `switchyard --help`"
            );
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Run { config } => run(config),
        Command::Validate { file } => validate(&file),
        Command::Echo {
            listen,
            name,
            delay,
            status,
        } => echo(listen, name, delay, status),
        Command::Ctl(ctl) => ctl.run(),
    }
}

fn run(path: PathBuf) -> ExitCode {
    switchyard::telemetry::init_logging();
    let config = match switchyard::config::load(&path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("error: {} refused; not starting", path.display());
            return ExitCode::FAILURE;
        }
    };
    match switchyard::server::run(config, path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    match switchyard::config::load(path) {
        Ok(config) => {
            println!(
                "{}: ok ({} listeners, {} clusters, {} plugins)",
                path.display(),
                config.listeners.len(),
                config.clusters.len(),
                config.plugins.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    switchyard::config::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration like \"250ms\" or \"2s\""))
}

fn echo(
    listen: SocketAddr,
    name: String,
    delay: Option<std::time::Duration>,
    status: Option<u16>,
) -> ExitCode {
    switchyard::telemetry::init_logging();
    let status = match status.map(http::StatusCode::from_u16) {
        None => None,
        Some(Ok(status)) => Some(status),
        Some(Err(_)) => {
            eprintln!("error: --status must be an HTTP status code from 100 to 999");
            return ExitCode::from(2);
        }
    };
    let options = switchyard::echo::EchoOptions {
        name,
        delay,
        status,
    };
    match switchyard::echo::run_blocking(listen, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: echo server on {listen}: {e}");
            ExitCode::FAILURE
        }
    }
}
