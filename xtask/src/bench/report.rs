//! The benchmark's results: the median over rounds of each server and load, each figure as a
//! ratio to nginx in the same run; printed as a table, saved as JSON and as a PNG chart.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use serde::Serialize;

use super::load::Sample;
use super::servers::Server;

/// One server under one load: medians over the rounds, and ratios to nginx.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub server: String,
    pub load: String,
    pub requests_per_second: f64,
    pub p50_us: f64,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub cpu_us_per_request: f64,
    /// Resident memory right after this load, in KiB.
    pub rss_kib: u64,
    pub errors: u64,
    pub rounds: usize,
    /// Each figure divided by nginx's under the same load.
    pub vs_nginx: Ratios,
    /// Plugins (or script blocks) run per request, and the server without them.
    pub plugins: usize,
    pub base: String,
    /// (CPU per request - the base's) / plugins, in microseconds: what each plugin costs.
    pub plugin_tax_us: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Ratios {
    pub requests_per_second: f64,
    pub p50: f64,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub cpu_per_request: f64,
    pub rss: f64,
}

/// Medians of the rounds of one server and load.
pub fn summarize(server: &Server, load: &str, samples: &[Sample], rss_kib: &[u64]) -> Row {
    let median_of = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    let optional = |f: &dyn Fn(&Sample) -> Option<f64>| {
        let values: Vec<f64> = samples.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| median(values))
    };
    Row {
        server: server.name.to_owned(),
        load: load.to_owned(),
        requests_per_second: median_of(&|s| s.requests_per_second),
        p50_us: median_of(&|s| s.p50_us),
        p99_us: optional(&|s| s.p99_us),
        p999_us: optional(&|s| s.p999_us),
        cpu_us_per_request: median_of(&|s| s.cpu_us_per_request),
        rss_kib: rss_kib.iter().copied().max().unwrap_or(0),
        errors: samples.iter().map(|s| s.errors).sum(),
        rounds: samples.len(),
        vs_nginx: Ratios::default(),
        plugins: server.plugins,
        base: server.base.to_owned(),
        plugin_tax_us: None,
    }
}

/// Fills in the per-plugin tax of every row with plugins, against its base under the same load.
pub fn add_plugin_tax(rows: &mut [Row]) {
    let bases: Vec<(String, String, f64)> = rows
        .iter()
        .filter(|r| r.plugins == 0)
        .map(|r| (r.server.clone(), r.load.clone(), r.cpu_us_per_request))
        .collect();
    for row in rows.iter_mut().filter(|r| r.plugins > 0) {
        row.plugin_tax_us = bases
            .iter()
            .find(|(server, load, _)| *server == row.base && *load == row.load)
            .map(|(_, _, base)| (row.cpu_us_per_request - base) / row.plugins as f64);
    }
}

/// Fills in every row's ratios against the nginx row of the same load.
pub fn add_ratios(rows: &mut [Row]) {
    let bases: Vec<Row> = rows
        .iter()
        .filter(|r| r.server == "nginx")
        .cloned()
        .collect();
    for row in rows.iter_mut() {
        let Some(base) = bases.iter().find(|b| b.load == row.load) else {
            continue;
        };
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        row.vs_nginx = Ratios {
            requests_per_second: ratio(row.requests_per_second, base.requests_per_second),
            p50: ratio(row.p50_us, base.p50_us),
            p99: row.p99_us.zip(base.p99_us).map(|(a, b)| ratio(a, b)),
            p999: row.p999_us.zip(base.p999_us).map(|(a, b)| ratio(a, b)),
            cpu_per_request: ratio(row.cpu_us_per_request, base.cpu_us_per_request),
            rss: ratio(row.rss_kib as f64, base.rss_kib as f64),
        };
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// The table printed at the end of a run.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<21} {:<16} {:>16} {:>15} {:>15} {:>15} {:>14} {:>12} {:>13} {:>6}",
        "server",
        "load",
        "req/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "CPU us/req",
        "tax us/plug",
        "RSS MiB",
        "errors"
    );
    for r in rows {
        let cell = |value: Option<f64>, ratio: Option<f64>, digits: usize| match value {
            Some(v) => format!("{v:.digits$} ({:.2}x)", ratio.unwrap_or(0.0)),
            None => "-".to_owned(),
        };
        let tax = r
            .plugin_tax_us
            .map_or_else(|| "-".to_owned(), |t| format!("{t:.1} (x{})", r.plugins));
        let _ = writeln!(
            out,
            "{:<21} {:<16} {:>16} {:>15} {:>15} {:>15} {:>14} {:>12} {:>13} {:>6}",
            r.server,
            r.load,
            cell(
                Some(r.requests_per_second),
                Some(r.vs_nginx.requests_per_second),
                0
            ),
            cell(Some(r.p50_us), Some(r.vs_nginx.p50), 0),
            cell(r.p99_us, r.vs_nginx.p99, 0),
            cell(r.p999_us, r.vs_nginx.p999, 0),
            cell(
                Some(r.cpu_us_per_request),
                Some(r.vs_nginx.cpu_per_request),
                1
            ),
            tax,
            cell(Some(r.rss_kib as f64 / 1024.0), Some(r.vs_nginx.rss), 1),
            r.errors,
        );
    }
    out.push_str("(each figure: median over rounds; in parentheses, the ratio to nginx under the same load; tax: (CPU per request - the same proxy's without plugins) / plugins, with the plugin count)\n");
    out
}

/// A grouped bar chart of requests/s per load, as an SVG page; rendered to PNG by headless
/// Chromium when it is installed.
pub fn chart(rows: &[Row], title: &str, out_dir: &Path) -> Result<Option<std::path::PathBuf>> {
    let loads: Vec<String> = unique(rows.iter().map(|r| r.load.clone()));
    let servers: Vec<String> = unique(rows.iter().map(|r| r.server.clone()));
    let colors = [
        "#8a8f98", "#c99a2e", "#2f6fde", "#6d9eeb", "#a4c2f4", "#4aa36b", "#9b59b6", "#5b5f66",
        "#b8860b", "#e0a96d", "#d35400",
    ];
    let max = rows
        .iter()
        .map(|r| r.requests_per_second)
        .fold(1.0, f64::max);
    let main_load = "h1 x64";
    let cpu_rows: Vec<&Row> = rows.iter().filter(|r| r.load == main_load).collect();
    let cpu_panel = 60.0 + 26.0 * cpu_rows.len() as f64;
    let (width, height, left, top, bottom) =
        (1200.0, 700.0 + cpu_panel, 80.0, 70.0, 150.0 + cpu_panel);
    let plot_h = height - top - bottom;
    let group_w = (width - left - 20.0) / loads.len().max(1) as f64;
    let bar_w = (group_w - 30.0) / servers.len().max(1) as f64;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="30" font-size="18" font-weight="bold">{title}</text>
<text x="{left}" y="52" fill="#555">requests/s (median of rounds); label: ratio to nginx under the same load</text>
"##
    );
    for i in 0..=4 {
        let value = max * f64::from(i) / 4.0;
        let y = top + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#e3e7ee"/><text x="{}" y="{}" text-anchor="end" fill="#555">{:.0}k</text>"##,
            width - 20.0,
            left - 8.0,
            y + 4.0,
            value / 1000.0
        );
    }
    for (g, load) in loads.iter().enumerate() {
        let x0 = left + g as f64 * group_w + 15.0;
        for (s, server) in servers.iter().enumerate() {
            let Some(row) = rows.iter().find(|r| &r.load == load && &r.server == server) else {
                continue;
            };
            let h = plot_h * row.requests_per_second / max;
            let x = x0 + s as f64 * bar_w;
            let y = top + plot_h - h;
            let _ = writeln!(
                svg,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{:.2}x</text>"##,
                bar_w - 4.0,
                colors[s % colors.len()],
                x + (bar_w - 4.0) / 2.0,
                y - 4.0,
                row.vs_nginx.requests_per_second
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" font-weight="bold">{load}</text>"#,
            x0 + (group_w - 30.0) / 2.0,
            top + plot_h + 22.0
        );
    }
    // The legend, six servers a line.
    for (s, server) in servers.iter().enumerate() {
        let x = left + (s % 6) as f64 * 180.0;
        let y = top + plot_h + 55.0 + (s / 6) as f64 * 22.0;
        let _ = writeln!(
            svg,
            r##"<rect x="{x}" y="{}" width="14" height="14" fill="{}"/><text x="{}" y="{y}">{server}</text>"##,
            y - 12.0,
            colors[s % colors.len()],
            x + 20.0
        );
    }
    // CPU per request under the main load, with each row's per-plugin tax.
    let panel_top = height - cpu_panel + 10.0;
    let _ = writeln!(
        svg,
        r#"<text x="{left}" y="{panel_top}" font-size="15" font-weight="bold">CPU us per request at {main_load} (lower is better); tax: extra CPU per plugin or script block</text>"#
    );
    let cpu_max = cpu_rows
        .iter()
        .map(|r| r.cpu_us_per_request)
        .fold(1.0, f64::max);
    for (i, row) in cpu_rows.iter().enumerate() {
        let y = panel_top + 16.0 + i as f64 * 26.0;
        let bar = (width - 520.0) * row.cpu_us_per_request / cpu_max;
        let color = servers
            .iter()
            .position(|s| *s == row.server)
            .map_or(colors[0], |s| colors[s % colors.len()]);
        let tax = row.plugin_tax_us.map_or_else(String::new, |t| {
            format!("  tax {t:.1} us x {}", row.plugins)
        });
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{:.1}" text-anchor="end">{}</text><rect x="{}" y="{y:.1}" width="{bar:.1}" height="18" fill="{color}"/><text x="{:.1}" y="{:.1}">{:.1} us{tax}</text>"##,
            left + 130.0,
            y + 14.0,
            row.server,
            left + 140.0,
            left + 146.0 + bar,
            y + 14.0,
            row.cpu_us_per_request
        );
    }
    svg.push_str("</svg>\n");
    let svg_path = out_dir.join("chart.svg");
    std::fs::write(&svg_path, &svg)?;
    let html_path = out_dir.join("chart.html");
    std::fs::write(
        &html_path,
        format!("<!doctype html><html><body style=\"margin:0\">{svg}</body></html>"),
    )?;
    let png = out_dir.join("chart.png");
    let profile = out_dir.join("chromium-profile");
    let rendered = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html_path.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run chromium to render the chart")?;
    let _ = std::fs::remove_dir_all(&profile);
    Ok((rendered.success() && png.exists()).then_some(png))
}

fn unique(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}
