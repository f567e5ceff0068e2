// report.html's behaviour: tables that sort, a method filter, the Pareto plot and memory timelines as
// SVG, the summary.csv download. No library and no network: everything comes from the inlined JSON.
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const SVG = "http://www.w3.org/2000/svg";
const PHASES = {startup: "#eeeeee", setup: "#fde2b8", cache_build: "#f7b6b2", train: "#c8e6c9",
                eval: "#bbdefb", trace: "#e1bee7"};
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf"];
const world = Math.min(...D.rows.filter(r => r.world_size !== undefined).map(r => r.world_size));
const main = D.rows.filter(r => r.world_size === world && r.status === "ok");
const colour = {};
D.rows.filter(r => r.world_size !== undefined).forEach(r => {
  if (!(r.method in colour)) colour[r.method] = PALETTE[Object.keys(colour).length % PALETTE.length];
});
const hidden = new Set();

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
const num = v => v !== "" && v !== null && v !== undefined && !isNaN(Number(v));
function sig(x, d = 3) {
  if (!num(x)) return "—";
  x = Number(x);
  if (x === 0) return "0";
  const mag = Math.floor(Math.log10(Math.abs(x)));
  return x.toFixed(Math.max(0, d - 1 - mag));
}
const FMT = {
  s: v => !num(v) ? "—" : v >= 1 ? sig(v) + " s" : sig(v * 1000) + " ms",
  mb: v => !num(v) ? "—" : v >= 1024 ? sig(v / 1024) + " GB" : sig(v) + " MB",
  n: v => !num(v) ? "—" : v >= 1e6 ? sig(v / 1e6) + "M" : v >= 1e3 ? sig(v / 1e3) + "K" : String(v),
  pct: v => !num(v) ? "—" : sig(v, 2) + "%",
  m: v => !num(v) ? "—" : Number(v).toFixed(4),
  x: v => !num(v) ? "—" : Number(v).toFixed(3),
  t: v => (v === undefined || v === null || v === "") ? "—" : String(v),
};

// ------------------------------------------------------------------ sortable tables

function table(host, cols, rows) {
  if (!rows.length) { host.appendChild(el("p", {}, "Nothing recorded.")); return; }
  const t = el("table", {class: "sortable"});
  const head = el("tr");
  cols.forEach((c, i) => {
    const th = el("th", {"data-col": c.key, tabindex: "0", title: "sort by " + c.label}, c.label);
    th.addEventListener("click", () => sortBy(t, i, th));
    head.appendChild(th);
  });
  t.appendChild(el("thead")).appendChild(head);
  const body = t.appendChild(el("tbody"));
  rows.forEach(r => {
    const tr = el("tr", {"data-method": r.method});
    cols.forEach(c => {
      const v = r[c.key];
      const td = el("td", {"data-col": c.key, "data-value": v === undefined || v === null ? "" : String(v)},
                    (c.fmt || FMT.t)(v));
      if (c.fmt && c.fmt !== FMT.t) td.className = "num";
      tr.appendChild(td);
    });
    body.appendChild(tr);
  });
  host.appendChild(t);
}

function sortBy(t, i, th) {
  const asc = th.getAttribute("aria-sort") !== "ascending";
  t.querySelectorAll("th").forEach(h => h.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  const rows = [...t.tBodies[0].rows];
  const key = r => r.cells[i].dataset.value;
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === "" || y === "") return (x === "") - (y === "");  // blanks last either way
    const c = num(x) && num(y) ? Number(x) - Number(y) : x.localeCompare(y);
    return asc ? c : -c;
  });
  rows.forEach(r => t.tBodies[0].appendChild(r));
}

// ------------------------------------------------------------------ the method filter

function applyFilter() {
  document.querySelectorAll("[data-method]").forEach(e => {
    e.style.display = hidden.has(e.dataset.method) ? "none" : "";
  });
}

function filter() {
  const host = document.getElementById("filter");
  host.appendChild(document.createTextNode("Methods: "));
  Object.keys(colour).forEach(m => {
    const lab = el("label", {class: "method", style: "border-color:" + colour[m]});
    const box = el("input", {type: "checkbox", value: m});
    box.checked = true;
    box.addEventListener("change", () => { box.checked ? hidden.delete(m) : hidden.add(m); applyFilter(); });
    lab.appendChild(box);
    lab.appendChild(document.createTextNode(" " + m));
    host.appendChild(lab);
  });
}

// ------------------------------------------------------------------ SVG plots

function axes(svg, w, h, pad, xmax, ymax, xlabel, ylabel, xmin = 0, xticks = null) {
  const X = v => pad.l + (v - xmin) / (xmax - xmin) * (w - pad.l - pad.r);
  const Y = v => h - pad.b - v / ymax * (h - pad.t - pad.b);
  svg.appendChild(el("svg:line", {x1: pad.l, y1: h - pad.b, x2: w - pad.r, y2: h - pad.b, class: "axis"}));
  svg.appendChild(el("svg:line", {x1: pad.l, y1: pad.t, x2: pad.l, y2: h - pad.b, class: "axis"}));
  for (let i = 0; i <= 4; i++) {
    const yv = ymax * i / 4, xv = xticks ? xticks[i] : xmin + (xmax - xmin) * i / 4;
    svg.appendChild(el("svg:text", {x: pad.l - 4, y: Y(yv) + 3, class: "tick", "text-anchor": "end"}, sig(yv, 2)));
    svg.appendChild(el("svg:text", {x: X(xv), y: h - pad.b + 12, class: "tick", "text-anchor": "middle"}, sig(xv, 2)));
  }
  svg.appendChild(el("svg:text", {x: (w + pad.l) / 2, y: h - 4, class: "label", "text-anchor": "middle"}, xlabel));
  svg.appendChild(el("svg:text", {x: 12, y: (h - pad.b + pad.t) / 2, class: "label", "text-anchor": "middle",
                                  transform: `rotate(-90 12 ${(h - pad.b + pad.t) / 2})`}, ylabel));
  return [X, Y];
}

function pareto() {
  const host = document.getElementById("pareto");
  const key = D.metric ? "test_" + D.metric : null;
  const pts = main.filter(r => key && num(r.tpme) && num(r[key])).map(r => [r.method, r.tpme, r[key]]);
  if (!pts.length) { host.appendChild(el("p", {}, "No method has both a TPME and a test metric.")); return; }
  const w = 640, h = 400, pad = {l: 60, r: 20, t: 16, b: 44};
  const ymax = Math.max(...pts.map(p => p[2]), num(D.popularity) ? D.popularity : 0) * 1.15 || 1;
  const svg = el("svg:svg", {width: w, height: h, viewBox: `0 0 ${w} ${h}`, id: "pareto-svg"});
  const [X, Y] = axes(svg, w, h, pad, 1.08, ymax, "TPME (0 = cheapest here, 1 = dearest) ← better",
                      "test " + D.metric + " (from 0) → better", -0.08, [0, 0.25, 0.5, 0.75, 1]);
  // the attainable frontier: a step (quality held until a dearer method does better)
  const sorted = [...pts].sort((a, b) => a[1] - b[1] || b[2] - a[2]);
  const front = [];
  sorted.forEach(p => { if (!front.length || p[2] > front[front.length - 1][2]) front.push(p); });
  let d = "";
  front.forEach((p, i) => {
    const next = i + 1 < front.length ? front[i + 1][1] : 1.08;
    d += `${i ? "L" : "M"}${X(p[1])},${Y(p[2])} L${X(next)},${Y(p[2])} `;
  });
  svg.appendChild(el("svg:path", {d, class: "frontier"}));
  if (num(D.popularity)) {
    svg.appendChild(el("svg:line", {x1: X(-0.08), x2: X(1.08), y1: Y(D.popularity), y2: Y(D.popularity),
                                    class: "floor"}));
  }
  const tip = el("div", {class: "tip", id: "tip"});
  pts.forEach(([m, x, y]) => {
    const c = el("svg:circle", {cx: X(x), cy: Y(y), r: front.some(f => f[0] === m) ? 7 : 5,
                                fill: colour[m], "data-method": m, class: "point"});
    c.appendChild(el("svg:title", {}, `${m}: TPME ${FMT.x(x)}, ${D.metric} ${FMT.m(y)}`));
    c.addEventListener("mouseenter", ev => {
      tip.textContent = `${m} — TPME ${FMT.x(x)}, test ${D.metric} ${FMT.m(y)}`;
      tip.style.display = "block";
      tip.style.left = (ev.pageX + 10) + "px";
      tip.style.top = (ev.pageY + 10) + "px";
    });
    c.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    svg.appendChild(c);
    svg.appendChild(el("svg:text", {x: X(x) + 8, y: Y(y) - 6, class: "name", "data-method": m}, m));
  });
  host.appendChild(svg);
  document.body.appendChild(tip);
  host.appendChild(el("p", {class: "note"}, "Frontier: " + front.map(p => p[0]).join(", ") +
    (num(D.popularity) ? ". Dotted: the popularity floor." : ".")));
}

function memory() {
  const host = document.getElementById("memory");
  const series = Object.entries(D.timelines);
  if (!series.length) { host.appendChild(el("p", {}, "No memory timeline recorded.")); return; }
  const top = Math.max(...series.map(([, s]) => Math.max(...s.mb))) * 1.08;  // one y scale for every panel
  series.forEach(([m, s]) => {
    const w = 640, h = 130, pad = {l: 60, r: 20, t: 8, b: 30};
    const svg = el("svg:svg", {width: w, height: h, "data-method": m, class: "timeline"});
    const tmax = Math.max(...s.t) || 1;
    const [X, Y] = axes(svg, w, h, pad, tmax, top, "seconds since " + m + "'s start", "MB");
    let start = 0;
    for (let i = 1; i <= s.t.length; i++) {
      if (i === s.t.length || s.phase[i] !== s.phase[start]) {
        const end = i < s.t.length ? s.t[i] : s.t[i - 1];
        svg.insertBefore(el("svg:rect", {x: X(s.t[start]), y: pad.t, width: Math.max(0, X(end) - X(s.t[start])),
          height: h - pad.t - pad.b, fill: PHASES[s.phase[start]] || "#fafafa"}, ), svg.firstChild)
          .appendChild(el("svg:title", {}, s.phase[start] || "unknown phase"));
        start = i;
      }
    }
    svg.appendChild(el("svg:polyline", {points: s.t.map((t, i) => `${X(t)},${Y(s.mb[i])}`).join(" "),
                                        stroke: colour[m] || "#333", class: "series"}));
    host.appendChild(svg);
  });
  host.appendChild(el("p", {class: "note"}, "Shading: " + Object.keys(PHASES).join(", ") +
                      ". Every panel shares one y scale, from 0 MB."));
}

// ------------------------------------------------------------------ the page

function build() {
  const ul = document.getElementById("header");
  D.header.forEach(line => {
    const li = el("li");
    line.split(/\*\*(.+?)\*\*/).forEach((part, i) => li.appendChild(i % 2 ? el("b", {}, part) : document.createTextNode(part.replace(/`/g, ""))));
    ul.appendChild(li);
  });
  filter();
  table(document.getElementById("efficiency"), [
    {key: "method", label: "Method"}, {key: "params_trainable", label: "Trainable params", fmt: FMT.n},
    {key: "time_epoch_s_median", label: "Time / epoch", fmt: FMT.s},
    {key: "time_epoch_s_ci95_low", label: "95% low", fmt: FMT.s},
    {key: "time_epoch_s_ci95_high", label: "95% high", fmt: FMT.s},
    {key: "peak_mb_median", label: "Peak memory (training)", fmt: FMT.mb},
    {key: "peak_mb_ci95_low", label: "95% low", fmt: FMT.mb}, {key: "peak_mb_ci95_high", label: "95% high", fmt: FMT.mb},
    {key: "tpme", label: "TPME ↓", fmt: FMT.x}, {key: "rel_cost_pct", label: "Relative cost ↓", fmt: FMT.pct},
    {key: "repeats", label: "Repeats", fmt: FMT.t}], main);
  const metrics = D.fields.filter(f => /^(valid|test)_.+@\d+$/.test(f));
  table(document.getElementById("quality"), [{key: "method", label: "Method"}].concat(
    metrics.map(f => ({key: f, label: f.replace("_", " "), fmt: FMT.m}))),
    D.rows.filter(r => (r.world_size === world && r.status === "ok") || r.status === "floor"));
  table(document.getElementById("steps"), [{key: "method", label: "Method"}, {key: "repeat", label: "Repeat", fmt: FMT.t},
    {key: "steps", label: "Steps", fmt: FMT.t}, {key: "p50_s", label: "p50", fmt: FMT.s},
    {key: "p90_s", label: "p90", fmt: FMT.s}, {key: "p99_s", label: "p99", fmt: FMT.s},
    {key: "max_s", label: "Max", fmt: FMT.s}, {key: "flags", label: "Flags"}], D.steps);
  table(document.getElementById("ranks"), [{key: "method", label: "Method"},
    {key: "world_size", label: "World size", fmt: FMT.t}, {key: "rank", label: "Rank", fmt: FMT.t},
    {key: "epoch_s_median", label: "Epoch (median)", fmt: FMT.s}, {key: "peak_mb", label: "Peak", fmt: FMT.mb},
    {key: "allreduce_s_per_epoch", label: "All-reduce / epoch", fmt: FMT.s}, {key: "status", label: "Status"}], D.ranks);
  pareto();
  memory();
  document.getElementById("csv").addEventListener("click", () => {
    const a = el("a", {href: URL.createObjectURL(new Blob([D.csv], {type: "text/csv"})), download: "summary.csv"});
    document.body.appendChild(a);
    a.click();
    a.remove();
  });
}
build();
