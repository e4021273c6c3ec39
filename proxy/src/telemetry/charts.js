// Time-series charts as inline SVG, for the proxy's dashboard and the control plane's mesh
// view: no library and nothing fetched from the network. Served as /charts.js by both.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes ?? {})) element.setAttribute(key, value);
  return element;
}

// Formats for axis labels and tooltips.
const chartFormats = {
  rps: v => v >= 100 ? v.toFixed(0) : v.toFixed(1),
  percent: v => `${(v * 100).toFixed(v >= 0.9995 || v === 0 ? 0 : 1)}%`,
  ms: v => v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(1)} ms`,
};

// A chart of one or more lines over the same times.
//   title: shown above; lines: [{ name, cls, values: [number|null] }]; times: [unix seconds];
//   format: a chartFormats entry; max: fixed top of the y axis (else the largest value).
// Gaps (null) break a line. Returns the <figure>, whose <svg> has one <polyline class="line">
// per run of known values.
function lineChart({ title, times, lines, format, max }) {
  const width = 320, height = 110, left = 44, right = 8, top = 8, bottom = 18;
  const figure = document.createElement("figure");
  figure.className = "chart";
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  figure.append(caption);
  const svg = svgElement("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title });
  figure.append(svg);
  const known = lines.flatMap(l => l.values).filter(v => v !== null && v !== undefined);
  const yMax = max ?? Math.max(1e-9, ...known) * 1.1;
  const x = i => left + (times.length <= 1 ? 0 : (i / (times.length - 1)) * (width - left - right));
  const y = v => top + (1 - Math.min(v, yMax) / yMax) * (height - top - bottom);
  svg.append(svgElement("line", { x1: left, y1: y(0), x2: width - right, y2: y(0), class: "axis" }));
  for (const v of [0, yMax / 2, yMax]) {
    const label = svgElement("text", { x: left - 4, y: y(v) + 3, class: "tick", "text-anchor": "end" });
    label.textContent = format(v);
    svg.append(label);
  }
  if (times.length > 0) {
    const when = t => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    for (const [i, anchor] of [[0, "start"], [times.length - 1, "end"]]) {
      const label = svgElement("text", { x: x(i), y: height - 4, class: "tick", "text-anchor": anchor });
      label.textContent = when(times[i]);
      svg.append(label);
    }
  }
  for (const line of lines) {
    let run = [];
    const flush = () => {
      if (run.length === 1) {
        svg.append(svgElement("circle", { cx: run[0][0], cy: run[0][1], r: 2, class: `dot ${line.cls}` }));
      } else if (run.length > 1) {
        svg.append(svgElement("polyline", { points: run.map(p => p.join(",")).join(" "), class: `line ${line.cls}` }));
      }
      run = [];
    };
    line.values.forEach((v, i) => {
      if (v === null || v === undefined) flush();
      else run.push([x(i).toFixed(1), y(v).toFixed(1)]);
    });
    flush();
  }
  if (lines.length > 1) {
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const line of lines) {
      const key = document.createElement("span");
      key.className = `key ${line.cls}`;
      key.textContent = line.name;
      legend.append(key);
    }
    figure.append(legend);
  }
  return figure;
}

// The three charts of a window of points ({t, rps, success_rate, p50_ms, p99_ms}).
function trafficCharts(points) {
  const times = points.map(p => p.t);
  const box = document.createElement("div");
  box.className = "charts";
  box.append(
    lineChart({ title: "requests / s", times, format: chartFormats.rps,
      lines: [{ name: "rps", cls: "rps", values: points.map(p => p.rps) }] }),
    lineChart({ title: "success rate", times, format: chartFormats.percent, max: 1,
      lines: [{ name: "success", cls: "success", values: points.map(p => p.success_rate) }] }),
    lineChart({ title: "latency", times, format: chartFormats.ms,
      lines: [
        { name: "p50", cls: "p50", values: points.map(p => p.p50_ms) },
        { name: "p99", cls: "p99", values: points.map(p => p.p99_ms) },
      ] }),
  );
  return box;
}

// Styles the charts need, added once.
(function chartStyles() {
  const style = document.createElement("style");
  style.textContent = `
    .charts { display: flex; flex-wrap: wrap; gap: 0.8rem; }
    figure.chart { margin: 0; width: 320px; }
    figure.chart figcaption { color: #6b7688; font-size: 0.78rem; }
    figure.chart svg { width: 320px; height: 110px; display: block; }
    figure.chart .axis { stroke: #cfd6e0; }
    figure.chart .tick { fill: #8a94a6; font-size: 9px; }
    figure.chart .line { fill: none; stroke-width: 1.6; }
    .rps { stroke: #2f6fde; fill: #2f6fde; } .success { stroke: #1a7f4b; fill: #1a7f4b; }
    .p50 { stroke: #7b61c9; fill: #7b61c9; } .p99 { stroke: #c77c11; fill: #c77c11; }
    .legend { font-size: 0.75rem; display: flex; gap: 0.8rem; }
    .legend .key::before { content: ""; display: inline-block; width: 10px; height: 3px; margin-right: 4px; vertical-align: middle; background: currentColor; }
    .legend .key.p50 { color: #7b61c9; } .legend .key.p99 { color: #c77c11; }
  `;
  document.head.append(style);
})();
