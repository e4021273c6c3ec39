//! `switchyard ctl`: the admin API from a terminal, as tables for people or `--json` for scripts.

use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

mod mesh_view;

/// `switchyard ctl [--admin ADDR] [--token T] [--json] COMMAND`
#[derive(Args)]
pub struct Ctl {
    /// The proxy's admin API.
    #[arg(long, default_value = "127.0.0.1:9901", env = "SWITCHYARD_ADMIN")]
    admin: String,
    /// Talk to the control plane's admin API instead (`[control] admin` in mesh.toml): `status`
    /// and `reload` then act on the whole mesh, and `weights` changes it.
    #[arg(long, env = "SWITCHYARD_CONTROL")]
    control: Option<String>,
    /// Bearer token for changes (`[admin] token` of the proxy, `admin_token` of the control
    /// plane).
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the admin API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Loaded plugins: sha256, calls, traps, hook-time percentiles.
    Plugins,
    /// Replace plugin NAME's binary with FILE, without dropping a request.
    Swap {
        name: String,
        file: std::path::PathBuf,
    },
    /// Read the config file again and apply it.
    Reload,
    /// Config version and the result of the last reload.
    Status,
    /// Set a traffic split mesh-wide (with --control): `weights canary v1=90 v2=10` sets those
    /// clusters' weights in plugin `canary` for every proxy, and holds them over mesh.toml's
    /// until `weights --clear canary` or a control-plane restart.
    Weights {
        plugin: String,
        /// CLUSTER=WEIGHT, one or more.
        #[arg(required_unless_present = "clear", conflicts_with = "clear", value_parser = parse_weight)]
        weights: Vec<(String, u32)>,
        /// Drop the weights held for PLUGIN: mesh.toml's apply again.
        #[arg(long)]
        clear: bool,
    },
    /// Per workload (with --control): requests per second, success rate, p50/p95/p99 latency
    /// and the share over mTLS, as its proxies served them.
    Stat {
        /// How far back: seconds or a duration ("60s", "5m"); default one minute.
        #[arg(long)]
        window: Option<String>,
    },
    /// Calls between workloads (with --control): source → destination with both identities.
    Edges {
        /// How far back, as for `stat`.
        #[arg(long)]
        window: Option<String>,
    },
    /// The busiest request paths right now (with --control; default the last 30 s).
    Top {
        /// How far back, as for `stat`.
        #[arg(long)]
        window: Option<String>,
    },
}

fn parse_weight(text: &str) -> Result<(String, u32), String> {
    let (cluster, weight) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected CLUSTER=WEIGHT, like v2=10"))?;
    let weight = weight
        .parse()
        .map_err(|_| format!("{text:?}: the weight must be a whole number"))?;
    Ok((cluster.to_owned(), weight))
}

impl Ctl {
    pub fn run(self) -> ExitCode {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        match runtime.block_on(self.execute()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }

    async fn execute(&self) -> anyhow::Result<()> {
        let (method, path, body) = match &self.command {
            CtlCommand::Plugins => (Method::GET, "/plugins".to_owned(), Bytes::new()),
            CtlCommand::Status => (Method::GET, "/status".to_owned(), Bytes::new()),
            CtlCommand::Reload => (Method::POST, "/reload".to_owned(), Bytes::new()),
            CtlCommand::Stat { window }
            | CtlCommand::Edges { window }
            | CtlCommand::Top { window } => {
                if self.control.is_none() {
                    bail!(
                        "stat, edges and top read the mesh: give the control plane's admin address with --control"
                    );
                }
                let view = match &self.command {
                    CtlCommand::Stat { .. } => "stat",
                    CtlCommand::Edges { .. } => "edges",
                    _ => "top",
                };
                let query = match window {
                    Some(w) => format!("?window={}", mesh_view::window_secs(w)?),
                    None => String::new(),
                };
                (Method::GET, format!("/mesh/{view}{query}"), Bytes::new())
            }
            CtlCommand::Swap { name, file } => {
                let bytes = std::fs::read(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                (Method::PUT, format!("/plugins/{name}"), Bytes::from(bytes))
            }
            CtlCommand::Weights {
                plugin,
                clear: true,
                ..
            } => (
                Method::DELETE,
                format!("/plugins/{plugin}/weights"),
                Bytes::new(),
            ),
            CtlCommand::Weights {
                plugin, weights, ..
            } => {
                let body: serde_json::Map<String, Value> = weights
                    .iter()
                    .map(|(cluster, weight)| (cluster.clone(), Value::from(*weight)))
                    .collect();
                (
                    Method::POST,
                    format!("/plugins/{plugin}/weights"),
                    Bytes::from(serde_json::to_vec(&body)?),
                )
            }
        };
        let (status, answer) = self.call(method, &path, body).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&answer)?);
        } else {
            print!("{}", render(&self.command, &answer));
        }
        if !status.is_success() {
            let reason = answer
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| answer.as_str().unwrap_or_default().trim().to_owned());
            bail!("{status}: {reason}");
        }
        Ok(())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let authority = self
            .control
            .as_ref()
            .unwrap_or(&self.admin)
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .with_context(|| format!("cannot reach the admin API at {authority}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &authority);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = sender.send_request(request.body(Full::new(body))?).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let answer = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, answer))
    }
}

/// A human-readable view of an answer.
fn render(command: &CtlCommand, answer: &Value) -> String {
    if let Value::String(text) = answer {
        return text.clone();
    }
    match command {
        CtlCommand::Plugins => plugins_table(answer),
        CtlCommand::Stat { .. } => mesh_view::stat_table(answer),
        CtlCommand::Edges { .. } => mesh_view::edges_table(answer),
        CtlCommand::Top { .. } => mesh_view::top_table(answer),
        CtlCommand::Status if answer.get("workloads").is_some() => mesh_status(answer),
        CtlCommand::Weights { plugin, clear, .. } => match answer["result"].as_str() {
            Some("ok") if !clear => format!(
                "weights of {plugin} set mesh-wide and held over mesh.toml's; mesh generation {}\n",
                answer["generation"]
            ),
            Some("ok") if answer["cleared"] == true => format!(
                "weights of {plugin} cleared: mesh.toml's apply; mesh generation {}\n",
                answer["generation"]
            ),
            Some("ok") => format!("no weights were held for {plugin}; nothing changed\n"),
            _ => format!("refused: {answer}\n"),
        },
        CtlCommand::Status => {
            let last = &answer["last_reload"];
            let mut out = format!(
                "config version  {}\nconfig file     {}\nlast reload     {}",
                answer["config_version"],
                answer["config_file"].as_str().unwrap_or("-"),
                last["result"].as_str().unwrap_or("-"),
            );
            if let Some(trigger) = last["trigger"].as_str() {
                out.push_str(&format!(" ({trigger})"));
            }
            out.push('\n');
            if let Some(error) = last["error"].as_str() {
                out.push_str(&format!("last error      {error}\n"));
            }
            if let Some(control) = answer.get("control") {
                out.push_str(&control_link(control));
            }
            out
        }
        CtlCommand::Reload | CtlCommand::Swap { .. } => match answer["result"].as_str() {
            Some("ok") => {
                let what = match answer["plugin"].as_str() {
                    Some(plugin) => format!(
                        "swapped {plugin} to sha256 {}",
                        short(answer["sha256"].as_str().unwrap_or("-"))
                    ),
                    None => "reloaded".to_owned(),
                };
                match answer.get("generation") {
                    Some(generation) => format!("mesh reloaded; generation {generation}\n"),
                    None => format!("{what}; config version {}\n", answer["version"]),
                }
            }
            _ => format!(
                "refused: {}\n",
                answer["error"].as_str().unwrap_or("unknown error")
            ),
        },
    }
}

/// A controlled proxy's `/status` `control` section: its control plane, bundle and identity.
fn control_link(control: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let ago = |v: &Value| {
        v.as_u64().map_or("never".to_owned(), |at| {
            format!("{}s ago", switchyard::unix_time::now().saturating_sub(at))
        })
    };
    let mut out = format!(
        "control plane   {} ({} since {}, last answer {})\n",
        text(&control["url"]),
        text(&control["connection"]),
        ago(&control["since_unix"]),
        ago(&control["last_contact_unix"]),
    );
    if let Some(error) = control["last_error"].as_str() {
        out.push_str(&format!("control error   {error}\n"));
    }
    out.push_str(&format!(
        "workload        {} (instance {})\n",
        text(&control["workload"]),
        text(&control["instance"])
    ));
    let bundle = &control["bundle"];
    out.push_str(&format!(
        "bundle          {} (mesh generation {}, applied {})\n",
        text(&bundle["etag"]),
        control["mesh_generation"]
            .as_u64()
            .map_or("-".to_owned(), |g| g.to_string()),
        ago(&bundle["applied_unix"]),
    ));
    if let Some(refused) = bundle["refused"].as_object() {
        out.push_str(&format!(
            "bundle refused  {}: {}\n",
            refused.get("etag").and_then(Value::as_str).unwrap_or("-"),
            refused.get("error").and_then(Value::as_str).unwrap_or("-"),
        ));
    }
    let identity = &control["identity"];
    match identity["spiffe_id"].as_str() {
        Some(id) => out.push_str(&format!(
            "identity        {id} (expires in {}s)\n",
            identity["expires_in_secs"]
        )),
        None => out.push_str("identity        none yet\n"),
    }
    out
}

/// The control plane's `/status`: each workload and whether its proxies run its bundle, when
/// each was last heard from, and the weights held over mesh.toml's.
fn mesh_status(answer: &Value) -> String {
    let mut rows = vec![[
        "WORKLOAD".to_owned(),
        "BUNDLE".to_owned(),
        "PROXY".to_owned(),
        "APPLIED".to_owned(),
        "IN SYNC".to_owned(),
        "LAST SEEN".to_owned(),
    ]];
    for w in answer["workloads"].as_array().into_iter().flatten() {
        let name = w["workload"].as_str().unwrap_or("-").to_owned();
        let etag = w["etag"].as_str().unwrap_or("-").to_owned();
        let proxies = w["proxies"].as_array().cloned().unwrap_or_default();
        if proxies.is_empty() {
            rows.push([
                name.clone(),
                etag.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for p in proxies {
            rows.push([
                name.clone(),
                etag.clone(),
                p["instance"].as_str().unwrap_or("-").to_owned(),
                p["etag"].as_str().unwrap_or("-").to_owned(),
                if p["in_sync"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                }
                .to_owned(),
                format!("{}s ago", p["seen_age_secs"]),
            ]);
        }
    }
    let mut out = table(rows);
    let held = answer["held_weights"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !held.is_empty() {
        out.push_str("\nweights held over mesh.toml's (clear with `weights --clear PLUGIN`):\n");
        let mut rows = vec![[
            "PLUGIN".to_owned(),
            "HELD".to_owned(),
            "MESH.TOML".to_owned(),
        ]];
        let weights = |v: &Value| {
            let pairs: Vec<String> = v
                .as_object()
                .into_iter()
                .flatten()
                .map(|(cluster, weight)| format!("{cluster}={weight}"))
                .collect();
            pairs.join(" ")
        };
        for h in held {
            rows.push([
                h["plugin"].as_str().unwrap_or("-").to_owned(),
                weights(&h["held"]),
                weights(&h["mesh_toml"]),
            ]);
        }
        out.push_str(&table(rows));
    }
    out
}

fn plugins_table(answer: &Value) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "SHA256".to_owned(),
        "CALLS".to_owned(),
        "TRAPS".to_owned(),
        "P50".to_owned(),
        "P99".to_owned(),
    ]];
    let micros = |v: &Value| v.as_f64().map_or("-".to_owned(), |us| format!("{us:.0}us"));
    let mut failures = String::new();
    for p in answer.as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("-");
        rows.push([
            name.to_owned(),
            short(p["sha256"].as_str().unwrap_or("-")).to_owned(),
            p["calls"].to_string(),
            p["traps"].to_string(),
            micros(&p["p50_us"]),
            micros(&p["p99_us"]),
        ]);
        let last = &p["last_failure"];
        if let (Some(at), Some(error)) = (last["at_unix"].as_u64(), last["error"].as_str()) {
            failures.push_str(&format!(
                "last failure of {name}: {}s ago in {}: {error}\n",
                switchyard::unix_time::now().saturating_sub(at),
                last["hook"].as_str().unwrap_or("-"),
            ));
        }
    }
    let mut out = table(rows);
    if !failures.is_empty() {
        out.push('\n');
        out.push_str(&failures);
    }
    out
}

/// Rows as columns aligned by the widest cell.
pub(super) fn table<const N: usize>(rows: Vec<[String; N]>) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}
