//! The `switchyard` command line: run, validate, echo, ctl, certs.
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
    /// The control plane: serves every proxy of the mesh its config bundle and its identity.
    Control {
        /// The mesh file (mesh.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Talk to a running proxy's admin API: list plugins, swap one, reload, show status.
    Ctl(ctl::Ctl),
    /// Make a new plugin crate, or build one to Wasm.
    Plugin {
        #[command(subcommand)]
        command: switchyard::authoring::PluginCommand,
    },
    /// A mesh CA and workload certificates for mTLS, in two commands.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// The iptables rules that send a pod's TCP through the proxy (as an init container runs
    /// them); printed in iptables-restore format, or applied with --apply.
    Iptables(IptablesArgs),
}

#[derive(clap::Args)]
struct IptablesArgs {
    /// The proxy's inbound capture listener port.
    #[arg(long)]
    inbound_port: u16,
    /// The proxy's outbound capture listener port (`original_destination = true`).
    #[arg(long)]
    outbound_port: u16,
    /// The proxy's user id: its own connections are not captured (repeat for more).
    #[arg(long = "exclude-uid")]
    exclude_uids: Vec<u32>,
    /// Capture inbound connections only to these ports (repeat); default: all.
    #[arg(long = "inbound-ports", value_delimiter = ',')]
    inbound_ports: Vec<u16>,
    /// Never capture inbound connections to these ports (repeat or comma-separate).
    #[arg(long = "exclude-inbound-ports", value_delimiter = ',')]
    exclude_inbound_ports: Vec<u16>,
    /// Never capture outbound connections to these ports.
    #[arg(long = "exclude-outbound-ports", value_delimiter = ',')]
    exclude_outbound_ports: Vec<u16>,
    /// Never capture outbound connections to these IPv4 CIDRs.
    #[arg(long = "exclude-outbound-cidrs", value_delimiter = ',')]
    exclude_outbound_cidrs: Vec<String>,
    /// Apply the rules with `iptables-restore --noflush` instead of printing them.
    #[arg(long)]
    apply: bool,
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Make a CA: writes ca.pem and ca-key.pem into --out.
    Ca {
        #[arg(long)]
        out: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "switchyard mesh CA")]
        name: String,
        /// How long the CA is valid ("8760h" is a year).
        #[arg(long, default_value = "87600h", value_parser = parse_duration)]
        valid_for: std::time::Duration,
    },
    /// Issue a workload certificate signed by the CA in --ca: writes cert.pem (with the CA) and
    /// key.pem into --out.
    Issue {
        /// The directory `certs ca` wrote.
        #[arg(long)]
        ca: PathBuf,
        /// e.g. spiffe://cluster.local/ns/default/sa/frontend
        #[arg(long)]
        spiffe_id: Option<String>,
        /// A DNS name the certificate is valid for (repeat for more).
        #[arg(long)]
        dns: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        /// How long the certificate is valid (short-lived is the point: rotate).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        valid_for: std::time::Duration,
    },
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
        Command::Control { config } => control(config),
        Command::Ctl(ctl) => ctl.run(),
        Command::Plugin { command } => match command.run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Certs { command } => certs(command),
        Command::Iptables(args) => iptables(args),
    }
}

fn run(path: PathBuf) -> ExitCode {
    switchyard::telemetry::init_logging();
    if is_controlled(&path) {
        return controlled(&path);
    }
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
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the file has `[control]`: its listeners, clusters and plugins come from there.
fn is_controlled(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| switchyard::mesh::agent::is_controlled(&s))
}

fn controlled(path: &std::path::Path) -> ExitCode {
    match switchyard::mesh::agent::run(path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("error: {} refused; not starting", path.display());
            ExitCode::FAILURE
        }
    }
}

fn control(path: PathBuf) -> ExitCode {
    switchyard::telemetry::init_logging();
    match switchyard::mesh::control::run(path.clone()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("error: {} refused; not starting", path.display());
            ExitCode::FAILURE
        }
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    if is_controlled(path) {
        return match switchyard::mesh::agent::load(path) {
            Ok(_) => {
                println!(
                    "{}: ok (controlled: listeners, clusters and plugins come from the control plane)",
                    path.display()
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
        };
    }
    match switchyard::config::load(path) {
        Ok(config) => {
            // Plugins are checked as the proxy would at start: compiled (and cached, so the
            // next start is quick), instantiated, and given their config.
            if let Err(e) = load_plugins(&config) {
                eprintln!("error: {e}");
                eprintln!("{}: 1 error(s)", path.display());
                return ExitCode::FAILURE;
            }
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

/// Loads every plugin of `config` once, on a throwaway runtime.
fn load_plugins(config: &switchyard::config::Config) -> Result<(), String> {
    if config.plugins.is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime to load the plugins: {e}"))?;
    runtime
        .block_on(switchyard::plugin::Plugins::load(config))
        .map(drop)
        .map_err(|e| e.to_string())
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

fn certs(command: CertsCommand) -> ExitCode {
    use switchyard::tls::issue;
    let (result, done) = match command {
        CertsCommand::Ca {
            out,
            name,
            valid_for,
        } => (
            issue::make_ca(&out, &name, valid_for),
            format!(
                "wrote {0}/ca.pem and {0}/ca-key.pem (keep the key secret)",
                out.display()
            ),
        ),
        CertsCommand::Issue {
            ca,
            spiffe_id,
            dns,
            out,
            valid_for,
        } => {
            let workload = issue::Workload {
                spiffe_id,
                dns_names: dns,
                valid_for,
            };
            (
                issue::issue(&ca, &workload, &out),
                format!("wrote {0}/cert.pem and {0}/key.pem", out.display()),
            )
        }
    };
    match result {
        Ok(()) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn iptables(args: IptablesArgs) -> ExitCode {
    let rules = switchyard::listener::capture::CaptureRules {
        inbound_port: args.inbound_port,
        outbound_port: args.outbound_port,
        exclude_uids: args.exclude_uids,
        inbound_ports: args.inbound_ports,
        exclude_inbound_ports: args.exclude_inbound_ports,
        exclude_outbound_ports: args.exclude_outbound_ports,
        exclude_outbound_cidrs: args.exclude_outbound_cidrs,
    };
    if let Err(e) = rules.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let input = rules.to_restore_input();
    if !args.apply {
        print!("{input}");
        return ExitCode::SUCCESS;
    }
    match apply_rules(&input) {
        Ok(()) => {
            eprintln!("applied the switchyard capture rules (iptables nat table)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: iptables-restore: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Feeds the rules to `iptables-restore --noflush`, which applies them all or none.
fn apply_rules(input: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}
