//! `ctl stat`, `edges` and `top`: the control plane's mesh view (`/mesh/stat`, `/mesh/edges`,
//! `/mesh/top`) as tables, in the manner of `linkerd viz stat`, `edges` and `top`.

use anyhow::bail;
use serde_json::Value;

use super::table;

/// `--window` as whole seconds: a number, or a duration like `"60s"` or `"5m"`.
pub(super) fn window_secs(text: &str) -> anyhow::Result<u64> {
    let secs = text
        .parse::<u64>()
        .ok()
        .or_else(|| switchyard::config::parse_duration(text).map(|d| d.as_secs()));
    match secs {
        Some(secs) if secs > 0 => Ok(secs),
        _ => bail!("--window {text:?}: expected seconds or a duration, like 60s or 5m"),
    }
}

/// One row per workload.
pub(super) fn stat_table(answer: &Value) -> String {
    let mut rows = vec![
        [
            "WORKLOAD", "PROXIES", "SUCCESS", "RPS", "P50", "P95", "P99", "MTLS", "REQUESTS",
        ]
        .map(str::to_owned),
    ];
    for w in answer["workloads"].as_array().into_iter().flatten() {
        let stats = &w["stats"];
        rows.push([
            text(&w["workload"]),
            w["proxies"].to_string(),
            percent(&stats["success_rate"]),
            rate(&stats["rps"]),
            millis(&stats["p50_ms"]),
            millis(&stats["p95_ms"]),
            millis(&stats["p99_ms"]),
            percent(&stats["mtls_share"]),
            stats["requests"].to_string(),
        ]);
    }
    format!("{}{}", table(rows), window_line(answer))
}

/// One row per edge between workloads; calls to clusters outside the mesh are counted below.
pub(super) fn edges_table(answer: &Value) -> String {
    let mut rows = vec![
        [
            "SRC",
            "DST",
            "CLUSTER",
            "SRC IDENTITY",
            "DST IDENTITY",
            "SUCCESS",
            "RPS",
            "P99",
            "MTLS",
        ]
        .map(str::to_owned),
    ];
    let mut outside = 0;
    for e in answer["edges"].as_array().into_iter().flatten() {
        if e["destination"].is_null() {
            outside += 1;
            continue;
        }
        let stats = &e["stats"];
        rows.push([
            text(&e["source"]),
            text(&e["destination"]),
            text(&e["cluster"]),
            text(&e["source_spiffe_id"]),
            text(&e["destination_spiffe_id"]),
            percent(&stats["success_rate"]),
            rate(&stats["rps"]),
            millis(&stats["p99_ms"]),
            if e["mtls"] == true { "yes" } else { "no" }.to_owned(),
        ]);
    }
    let mut out = table(rows);
    if outside > 0 {
        out.push_str(&format!(
            "({outside} more to clusters outside the mesh: --json lists them)\n"
        ));
    }
    out.push_str(&window_line(answer));
    out
}

/// The busiest paths, busiest first.
pub(super) fn top_table(answer: &Value) -> String {
    let mut rows = vec![
        [
            "WORKLOAD", "METHOD", "PATH", "COUNT", "RPS", "SUCCESS", "P50", "P99",
        ]
        .map(str::to_owned),
    ];
    for p in answer["paths"].as_array().into_iter().flatten() {
        let stats = &p["stats"];
        rows.push([
            text(&p["workload"]),
            text(&p["method"]),
            text(&p["path"]),
            stats["requests"].to_string(),
            rate(&stats["rps"]),
            percent(&stats["success_rate"]),
            millis(&stats["p50_ms"]),
            millis(&stats["p99_ms"]),
        ]);
    }
    format!("{}{}", table(rows), window_line(answer))
}

fn window_line(answer: &Value) -> String {
    match answer["window_secs"].as_f64() {
        Some(secs) => format!("(over the last {secs:.0}s)\n"),
        None => String::new(),
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or("-").to_owned()
}

fn percent(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |v| format!("{:.2}%", v * 100.0))
}

fn rate(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

fn millis(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}ms"))
}
