// Graft task dashboard: plain JavaScript, plots drawn as SVG from the JSON the /v1 API returns.
// Everything tenant-supplied (task names, labels, metrics) is set with textContent or as SVG
// attributes, never parsed as HTML.
"use strict";

const KEY = "graft.apiKey";
const SVG_NS = "http://www.w3.org/2000/svg";
// Version metrics shown in the summary table; the plotted ones are added per version (see
// renderVersion), and every other key goes to "Other metrics".
const SUMMARY = new Set([
  "warnings", "accuracy", "macro_f1", "log_loss", "ece", "head", "evaluation", "folds", "majority_baseline_accuracy",
  "examples_per_label", "selection", "selected", "precision", "recall", "f1", "exact_match", "auto_finetune",
]);

const $ = (selector) => document.querySelector(selector);
const state = { task: null, versions: [] };

// -- API --------------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}`, ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401) {
    logout("Your API key was not accepted; log in again.");
    throw new Error("unauthorized");
  }
  if (!response.ok) {
    throw new Error(body && body.error ? body.error.message : `HTTP ${response.status}`);
  }
  return body;
}

// -- small DOM and SVG helpers ---------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function canvas(width, height) {
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
}

const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
const num = (x) => (typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toFixed(4)) : String(x));
const short = (s, n = 14) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

function showError(message) {
  const box = $("#error");
  box.textContent = message || "";
  box.hidden = !message;
}

function show(id) {
  for (const section of ["login", "tasks", "task"]) $(`#${section}`).hidden = section !== id;
}

// -- plots -------------------------------------------------------------------------------

function empty(target, message) {
  target.replaceChildren(el("p", { class: "empty" }, message));
}

function axes(root, x0, y0, width, height, yTicks = [0, 0.25, 0.5, 0.75, 1], yFormat = pct) {
  for (const t of yTicks) {
    const y = y0 + height - t * height;
    root.append(svg("line", { class: "grid", x1: x0, x2: x0 + width, y1: y, y2: y }));
    root.append(svg("text", { x: x0 - 6, y: y + 4, "text-anchor": "end" }, yFormat(t)));
  }
  root.append(svg("line", { class: "axis", x1: x0, x2: x0, y1: y0, y2: y0 + height }));
  root.append(svg("line", { class: "axis", x1: x0, x2: x0 + width, y1: y0 + height, y2: y0 + height }));
}

// Past this many labels the matrix is unreadable: list the most frequent confusions instead.
const MAX_DRAWN_LABELS = 40;

function cellsOf(cm) {
  if (cm.matrix) return cm.matrix.flatMap((row, i) => row.map((count, j) => [i, j, count]));
  return cm.cells || [];
}

function drawTopConfusions(target, cm) {
  const support = new Array(cm.labels.length).fill(0);
  const cells = cellsOf(cm);
  for (const [i, , count] of cells) support[i] += count;
  const top = cells.filter(([i, j, count]) => i !== j && count > 0).sort((a, b) => b[2] - a[2]).slice(0, 20);
  const rows = top.map(([i, j, count]) => el("tr", { class: "confusion-pair" },
    el("td", {}, cm.labels[i]), el("td", {}, cm.labels[j]), el("td", {}, `${count} (${pct(count / support[i])})`)));
  target.replaceChildren(
    el("p", { class: "empty" }, `${cm.labels.length} labels: too many to draw; the most frequent confusions:`),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "true"), el("th", {}, "predicted as"), el("th", {}, "examples"))),
      el("tbody", {}, ...rows)));
}

function drawConfusion(target, cm) {
  if (!cm || !cm.labels || !(cm.matrix || cm.cells)) return empty(target, "Not available for this version (needs cross-validation).");
  if (!cm.matrix || cm.labels.length > MAX_DRAWN_LABELS) return drawTopConfusions(target, cm);
  const k = cm.labels.length;
  const cell = Math.max(18, Math.min(56, Math.floor(440 / k)));
  const left = 110, top = 20, size = cell * k;
  const root = canvas(left + size + 20, top + size + 90);
  root.classList.add("confusion");
  const rowTotals = cm.matrix.map((row) => row.reduce((a, b) => a + b, 0));
  cm.matrix.forEach((row, i) => {
    row.forEach((count, j) => {
      const share = rowTotals[i] ? count / rowTotals[i] : 0;
      const rect = svg("rect", {
        class: "cm-cell", x: left + j * cell, y: top + i * cell, width: cell - 1, height: cell - 1,
        fill: i === j ? `rgba(47,111,222,${0.08 + 0.92 * share})` : `rgba(224,123,57,${count ? 0.12 + 0.88 * share : 0.03})`,
        "data-true": cm.labels[i], "data-pred": cm.labels[j], "data-count": count,
      });
      rect.append(svg("title", {}, `true ${cm.labels[i]}, predicted ${cm.labels[j]}: ${count} (${pct(share)} of the row)`));
      root.append(rect);
      if (cell >= 22) {
        root.append(svg("text", {
          x: left + j * cell + cell / 2, y: top + i * cell + cell / 2 + 4, "text-anchor": "middle",
          "pointer-events": "none", class: share > 0.6 ? "on-dark" : "",
        }, String(count)));
      }
    });
    root.append(svg("text", { x: left - 6, y: top + i * cell + cell / 2 + 4, "text-anchor": "end" }, short(cm.labels[i])));
  });
  cm.labels.forEach((label, j) => {
    const x = left + j * cell + cell / 2, y = top + size + 8;
    root.append(svg("text", { x, y, "text-anchor": "end", transform: `rotate(-45 ${x} ${y})` }, short(label)));
  });
  root.append(svg("text", { class: "legend", x: left + size / 2, y: top + size + 84, "text-anchor": "middle" }, "predicted label"));
  root.append(svg("text", { class: "legend", x: 12, y: top + size / 2, transform: `rotate(-90 12 ${top + size / 2})`, "text-anchor": "middle" }, "true label"));
  target.replaceChildren(root);
}

function drawPerLabel(target, perLabel) {
  const labels = perLabel ? Object.keys(perLabel) : [];
  if (!labels.length) return empty(target, "Not available for this version.");
  const left = 110, top = 24, band = 26, width = 300;
  const root = canvas(left + width + 60, top + band * labels.length + 30);
  const legend = [["precision", "bar"], ["recall", "bar alt"]];
  legend.forEach(([name, cls], i) => {
    root.append(svg("rect", { class: cls, x: left + i * 110, y: 4, width: 10, height: 10 }));
    root.append(svg("text", { x: left + i * 110 + 14, y: 13 }, name));
  });
  labels.forEach((label, i) => {
    const s = perLabel[label], y = top + i * band;
    root.append(svg("text", { x: left - 6, y: y + 15, "text-anchor": "end" }, short(label)));
    [["precision", "bar"], ["recall", "bar alt"]].forEach(([key, cls], j) => {
      const bar = svg("rect", { class: `${cls} pr-${key}`, x: left, y: y + 2 + j * 11, width: Math.max(1, s[key] * width), height: 10, "data-label": label });
      bar.append(svg("title", {}, `${label} ${key}: ${pct(s[key])} (support ${s.support})`));
      root.append(bar);
      root.append(svg("text", { x: left + s[key] * width + 4, y: y + 11 + j * 11, class: "legend" }, pct(s[key])));
    });
  });
  root.append(svg("line", { class: "axis", x1: left, x2: left, y1: top, y2: top + band * labels.length }));
  target.replaceChildren(root);
}

function drawLearningCurve(target, curve, majority) {
  const points = curve && curve.points ? curve.points : [];
  if (points.length < 2) return empty(target, "Not enough examples per label to draw a learning curve.");
  const left = 50, top = 14, width = 360, height = 200;
  const root = canvas(left + width + 20, top + height + 44);
  axes(root, left, top, width, height);
  const xs = points.map((p) => Math.log2(Math.max(1, p.examples_per_label)));
  const xMax = Math.max(...xs) || 1;
  const px = (p) => left + (Math.log2(Math.max(1, p.examples_per_label)) / xMax) * width;
  const py = (a) => top + height - a * height;
  if (typeof majority === "number") {
    root.append(svg("line", { class: "ideal", x1: left, x2: left + width, y1: py(majority), y2: py(majority) }));
    root.append(svg("text", { class: "legend", x: left + width - 4, y: py(majority) - 4, "text-anchor": "end" }, "majority-label baseline"));
  }
  root.append(svg("polyline", { class: "line", points: points.map((p) => `${px(p)},${py(p.accuracy)}`).join(" ") }));
  for (const p of points) {
    const dot = svg("circle", { class: "dot lc-point", cx: px(p), cy: py(p.accuracy), r: p.all ? 5 : 4, "data-examples": p.examples_per_label });
    dot.append(svg("title", {}, `${p.examples_per_label} per label${p.all ? " (all examples)" : ""}: ${pct(p.accuracy)}`));
    root.append(dot);
    root.append(svg("text", { x: px(p), y: top + height + 16, "text-anchor": "middle" }, `${p.examples_per_label}${p.all ? " (all)" : ""}`));
  }
  root.append(svg("text", { class: "legend", x: left + width / 2, y: top + height + 36, "text-anchor": "middle" }, "examples per label (log scale)"));
  target.replaceChildren(root);
}

function drawReliability(target, reliability, ece) {
  const bins = reliability && reliability.bins ? reliability.bins : [];
  if (!bins.length) return empty(target, "Not available for this version.");
  const left = 50, top = 14, size = 220;
  const root = canvas(left + size + 170, top + size + 44);
  axes(root, left, top, size, size);
  root.append(svg("line", { class: "ideal", x1: left, y1: top + size, x2: left + size, y2: top }));
  const total = bins.reduce((a, b) => a + b.count, 0) || 1;
  for (const b of bins) {
    if (!b.count) continue;
    const x = left + b.lower * size, w = (b.upper - b.lower) * size - 1;
    const bar = svg("rect", { class: "bar rel-bin", x, y: top + size - b.accuracy * size, width: w, height: b.accuracy * size });
    bar.append(svg("title", {}, `confidence ${pct(b.lower)}–${pct(b.upper)}: ${b.count} predictions, accuracy ${pct(b.accuracy)}, mean confidence ${pct(b.confidence)}`));
    root.append(bar);
    const lo = Math.min(b.accuracy, b.confidence), hi = Math.max(b.accuracy, b.confidence);
    root.append(svg("rect", { class: "gap", x, y: top + size - hi * size, width: w, height: (hi - lo) * size }));
    root.append(svg("rect", { class: "bar muted", x, y: top + size + 2, width: w, height: Math.max(1, 6 * b.count / total) }));
  }
  root.append(svg("text", { class: "legend", x: left + size / 2, y: top + size + 30, "text-anchor": "middle" }, "confidence of the top label"));
  const lx = left + size + 16;
  root.append(svg("rect", { class: "bar", x: lx, y: top + 4, width: 10, height: 10 }));
  root.append(svg("text", { x: lx + 14, y: top + 13 }, "accuracy in bin"));
  root.append(svg("rect", { class: "gap", x: lx, y: top + 22, width: 10, height: 10 }));
  root.append(svg("text", { x: lx + 14, y: top + 31 }, "gap to confidence"));
  root.append(svg("line", { class: "ideal", x1: lx, x2: lx + 10, y1: top + 45, y2: top + 45 }));
  root.append(svg("text", { x: lx + 14, y: top + 49 }, "perfect calibration"));
  if (typeof ece === "number") root.append(svg("text", { x: lx, y: top + 72 }, `ECE ${pct(ece)}`));
  target.replaceChildren(root);
}

function hbars(target, rows, format, note) {
  // rows: [{name, value, highlight, title}]; values may be negative (LogME).
  if (!rows.length) return empty(target, "Not available for this version.");
  const left = 120, top = 6, band = 24, width = 260;
  const root = canvas(left + width + 70, top + band * rows.length + (note ? 26 : 8));
  const lo = Math.min(0, ...rows.map((r) => r.value)), hi = Math.max(0, ...rows.map((r) => r.value));
  const scale = (v) => ((v - lo) / (hi - lo || 1)) * width;
  rows.forEach((r, i) => {
    const y = top + i * band, x0 = left + scale(Math.min(0, r.value)), w = Math.abs(scale(r.value) - scale(0));
    root.append(svg("text", { x: left - 6, y: y + 15, "text-anchor": "end", "font-weight": r.highlight ? "bold" : "normal" }, short(r.name, 18)));
    const bar = svg("rect", { class: r.highlight ? "bar" : "bar muted", x: x0, y: y + 4, width: Math.max(1, w), height: 14, "data-name": r.name });
    bar.append(svg("title", {}, r.title || `${r.name}: ${format(r.value)}`));
    root.append(bar);
    root.append(svg("text", { class: "legend", x: left + Math.max(scale(r.value), scale(0)) + 4, y: y + 15 }, format(r.value)));
  });
  root.append(svg("line", { class: "axis", x1: left + scale(0), x2: left + scale(0), y1: top, y2: top + band * rows.length }));
  if (note) root.append(svg("text", { class: "legend", x: left, y: top + band * rows.length + 18 }, note));
  target.replaceChildren(root);
}

function drawBaselines(target, metrics) {
  const heads = metrics.heads || {};
  const rows = Object.entries(heads)
    .map(([kind, h]) => ({ name: kind, value: h.accuracy, highlight: kind === metrics.head, title: `${kind}: ${pct(h.accuracy)} CV accuracy, macro-F1 ${pct(h.macro_f1)}` }))
    .sort((a, b) => b.value - a.value);
  if (typeof metrics.majority_baseline_accuracy === "number") {
    rows.push({ name: "majority label", value: metrics.majority_baseline_accuracy, highlight: false });
  }
  hbars(target, rows, pct, metrics.head ? `bold: the served head (${metrics.head})` : "");
}

function drawTransfer(target, transfer) {
  const scores = transfer && transfer.scores ? transfer.scores : {};
  const rows = Object.entries(scores).map(([name, v]) => ({ name, value: v, highlight: name === transfer.chosen }));
  hbars(target, rows, (v) => v.toFixed(3), transfer ? `${transfer.method || "LogME"} on ${transfer.examples} examples; bold: the backbone used` : "");
}

// -- tables ------------------------------------------------------------------------------

function folded(value) {
  const size = Array.isArray(value) ? `${value.length} items` : `${Object.keys(value).length} fields`;
  const text = JSON.stringify(value, null, 1);
  if (text.length < 160) return el("code", {}, JSON.stringify(value));
  return el("details", {}, el("summary", {}, size), el("pre", {}, text));
}

function kvRows(table, entries) {
  table.replaceChildren(...entries.map(([k, v]) => {
    const cell = typeof v === "object" && v !== null ? folded(v) : num(v);
    return el("tr", {}, el("th", {}, k), el("td", {}, cell));
  }));
}

function renderSummary(version) {
  const m = version.metrics || {};
  const rows = [
    ["head", `${m.head || version.head}${m.selection ? ` (${m.selection})` : ""}`],
    ["backbone", `${version.backbone} (${version.runtime})`],
    ["evaluation", m.evaluation === "cv" ? `${m.folds}-fold cross-validation` : (m.evaluation || "–")],
  ];
  if (typeof m.accuracy === "number") rows.push(["accuracy", pct(m.accuracy)]);
  if (typeof m.macro_f1 === "number") rows.push(["macro F1", pct(m.macro_f1)]);
  if (typeof m.log_loss === "number") rows.push(["log loss", m.log_loss.toFixed(4)]);
  if (typeof m.ece === "number") rows.push(["ECE (calibrated)", pct(m.ece)]);
  if (typeof m.majority_baseline_accuracy === "number") rows.push(["majority-label accuracy", pct(m.majority_baseline_accuracy)]);
  // token kinds: entities (entity-level P/R/F1) and answers (exact match, token F1), each next to its baseline
  const baseline = m.baseline && typeof m.baseline.f1 === "number" ? ` (baseline ${m.baseline.head}: ${pct(m.baseline.f1)})` : "";
  if (m.kind === "entities" && typeof m.f1 === "number") {
    rows.push(["entity F1", `${pct(m.f1)}${baseline}`]);
    rows.push(["entity precision / recall", `${pct(m.precision)} / ${pct(m.recall)}`]);
  }
  if (m.kind === "detection" && typeof m.map_50 === "number") {
    const base = m.baseline ? ` (baseline ${m.baseline.head}: ${pct(m.baseline.map_50)})` : "";
    rows.push(["mAP@0.5", `${pct(m.map_50)}${base}`]);
    rows.push(["mAP@0.5:0.95", pct(m.map)]);
  }
  if (m.kind === "answers" && typeof m.exact_match === "number") {
    rows.push(["exact match", pct(m.exact_match)]);
    rows.push(["token F1", `${pct(m.f1)}${baseline}`]);
  }
  if (m.kind === "generation" && typeof m.adapter_loss === "number") {  // a LoRA adapter against the base model
    rows[2] = ["evaluation", `${m.heldout_examples} held-out examples (trained on ${m.train_examples})`];
    rows.push(["held-out loss (adapter / base)", `${m.adapter_loss.toFixed(4)} / ${m.base_loss.toFixed(4)}`]);
    rows.push(["held-out perplexity (adapter / base)", `${num(m.adapter_perplexity)} / ${num(m.base_perplexity)}`]);
    rows.push(["training steps", `${m.steps} (best ${m.best_step}; stopped: ${m.stopped})`]);
  }
  rows.push(["examples", String(version.n_examples)]);
  if (m.examples_per_label) rows.push(["examples per label", Object.entries(m.examples_per_label).map(([k, v]) => `${k}: ${v}`).join(", ")]);
  if (m.selected) rows.push(["hyper-parameters", JSON.stringify(m.selected)]);
  // head "auto" on text: whether fine-tuning was tried, and how it fared against the frozen heads' choice
  if (m.auto_finetune && typeof m.auto_finetune.summary === "string") rows.push(["fine-tuning (auto)", m.auto_finetune.summary]);
  kvRows($("#summary"), rows);
  $("#warnings").replaceChildren(...(version.warnings || m.warnings || []).map((w) => el("li", {}, w)));
}

// The plots are for classification and speaker identification (closed-set confusion and per-speaker
// scores); other kinds report other metrics, listed in the table.
const isClassification = (m) => m.kind === undefined || m.kind === "classification" || m.kind === "speakers";
const hasPrecisionRecall = (perLabel) =>
  perLabel && Object.values(perLabel).every((s) => typeof s.precision === "number" && typeof s.recall === "number");

function renderVersion(number) {
  const version = state.versions.find((v) => v.version === number);
  if (!version) return;
  const m = version.metrics || {};
  const cv = isClassification(m);
  const transfer = version.transferability || m.transferability;
  // [figure, whether the version has its data, the metrics keys it shows, how to draw it]: a figure
  // without its data is hidden, and keys no figure shows stay in the "Other metrics" table.
  const figures = [
    ["plot-confusion", cv && m.confusion_matrix, ["confusion_matrix"], (t) => drawConfusion(t, m.confusion_matrix)],
    ["plot-per-label", cv && hasPrecisionRecall(m.per_label), ["per_label"], (t) => drawPerLabel(t, m.per_label)],
    ["plot-learning", cv && m.learning_curve, ["learning_curve"], (t) => drawLearningCurve(t, m.learning_curve, m.majority_baseline_accuracy)],
    ["plot-reliability", cv && m.reliability, ["reliability"], (t) => drawReliability(t, m.reliability, m.ece)],
    ["plot-baselines", cv && m.heads, ["heads"], (t) => drawBaselines(t, m)],
    ["plot-transfer", transfer, ["transferability"], (t) => drawTransfer(t, transfer)],
  ];
  const plotted = new Set();
  for (const [id, has, keys, draw] of figures) {
    const figure = $(`#${id}`);
    figure.hidden = !has;
    if (has) {
      draw(figure.querySelector(".plot"));
      keys.forEach((k) => plotted.add(k));
    }
  }
  $("#plots").hidden = plotted.size === 0;
  $("#version-status").textContent = version.status || (version.active ? "active" : "");
  renderSummary(version);
  kvRows($("#other-metrics"), Object.entries(m).filter(([k]) => !SUMMARY.has(k) && !plotted.has(k)));
}

function drawDrift(target, drift, expected) {
  // One bar per window (oldest left): the share of scored inputs flagged out of distribution; the dashed
  // line is the version's calibrated rate. A window with no scored inputs draws no bar.
  const windows = drift.windows || [];
  if (!windows.some((w) => w.scored > 0)) return empty(target, "No predictions scored in the last windows.");
  const left = 50, top = 14, width = 360, height = 160;
  const root = canvas(left + width + 20, top + height + 44);
  const yMax = Math.max(0.1, ...windows.map((w) => w.flag_rate || 0), expected || 0);
  const ticks = [0, yMax / 4, yMax / 2, (3 * yMax) / 4, yMax];
  axes(root, left, top, width, height, ticks.map((t) => t / yMax), (t) => pct(t * yMax));
  const step = width / windows.length;
  windows.forEach((w, i) => {
    if (!w.scored) return;
    const h = ((w.flag_rate || 0) / yMax) * height;
    const bar = svg("rect", { class: `bar drift-window${w.z !== null && w.z > 3 ? " alt" : ""}`, x: left + i * step + 2,
      y: top + height - h, width: Math.max(1, step - 4), height: Math.max(1, h), "data-flagged": w.flagged, "data-scored": w.scored });
    bar.append(svg("title", {}, `ended ${Math.round(w.ends_s_ago / 60)} min ago: ${w.flagged} of ${w.scored} flagged (${pct(w.flag_rate)}), z ${w.z === null ? "–" : w.z.toFixed(1)}`));
    root.append(bar);
  });
  if (typeof expected === "number") {
    const y = top + height - (expected / yMax) * height;
    root.append(svg("line", { class: "ideal", x1: left, x2: left + width, y1: y, y2: y }));
    root.append(svg("text", { class: "legend", x: left + width - 4, y: y - 4, "text-anchor": "end" }, "expected rate"));
  }
  root.append(svg("text", { class: "legend", x: left + width / 2, y: top + height + 30, "text-anchor": "middle" },
    `${Math.round(drift.window_s / 60)}-minute windows, oldest left`));
  target.replaceChildren(root);
}

async function showMonitoring(path) {
  // Feedback accuracy, shadow agreement, the retrain policy and drift of the task's active version.
  const section = $("#monitoring");
  let m;
  try {
    m = await api(`${path}/monitoring`);
  } catch (error) {
    section.hidden = true;  // kinds without monitoring (generation) or a task without a version
    return;
  }
  const shadow = m.shadow.versions.find((v) => v.version === m.shadow.version);
  kvRows($("#monitoring-summary"), [
    ["feedback", `${m.feedback.count} labels${m.feedback.accuracy === null ? "" : `, accuracy ${pct(m.feedback.accuracy)}`}`],
    ["out of distribution", m.ood.flag_rate === null ? "nothing scored yet"
      : `${pct(m.ood.flag_rate)} of ${m.ood.scored} inputs (expected ${pct(m.ood.expected_rate)})`],
    ["drift", m.drift.shifted ? "shifted: the latest window flags far more inputs than expected" : "no shift detected"],
    ["shadow", m.shadow.version === null ? "none"
      : `v${m.shadow.version} on ${pct(m.shadow.share)} of requests${shadow ? `, agreement ${pct(shadow.agreement)} over ${shadow.predictions}` : ""}`],
    ["retrain", m.retrain.after_feedback ? `after ${m.retrain.after_feedback} labels (${m.retrain.pending_feedback} waiting)` : "manual"],
  ]);
  drawDrift($("#plot-drift .plot"), m.drift, m.ood.expected_rate);
  section.hidden = false;
}

// -- views -------------------------------------------------------------------------------

async function showTasks() {
  show("tasks");
  const { tasks } = await api("/v1/tasks");
  const rows = tasks.map((t) => {
    const link = el("a", { href: `#/tasks/${encodeURIComponent(t.name)}`, class: "task-link" }, t.name);
    const row = el("tr", { "data-task": t.name },
      el("td", {}, link), el("td", {}, t.modality), el("td", {}, t.backbone), el("td", {}, t.head),
      el("td", {}, t.active_version === null ? "training…" : `v${t.active_version}`),
      el("td", {}, new Date(t.updated_at).toLocaleString()));
    row.addEventListener("click", () => { location.hash = `#/tasks/${encodeURIComponent(t.name)}`; });
    return row;
  });
  $("#task-table tbody").replaceChildren(...rows);
  $("#no-tasks").hidden = tasks.length > 0;
}

async function showTask(name) {
  show("task");
  const path = `/v1/tasks/${encodeURIComponent(name)}`;
  const [task, list] = await Promise.all([api(path), api(`${path}/versions`)]);
  state.task = task;
  state.versions = list.versions;
  $("#task-name").textContent = task.name;
  $("#task-meta").textContent = `${task.kind && task.kind !== "classification" ? `${task.kind} · ` : ""}${task.modality} task · backbone ${task.backbone} · head ${task.head} · ` +
    `${Object.values(task.examples_per_label).reduce((a, b) => a + b, 0)} examples, ${Object.keys(task.examples_per_label).length} labels`;
  const hasVersions = state.versions.length > 0;
  $("#task-pending").hidden = hasVersions;
  $("#version-bar").hidden = !hasVersions;
  $("#plots").hidden = !hasVersions;
  $("#try").hidden = task.active_version === null;
  const file = task.modality !== "text";  // images and WAV clips are sent as files
  $("#try-text").hidden = file;
  $("#try-text").placeholder = task.kind === "answers" ? "First line: the question; then the context"
    : task.kind === "entities" ? "Type a text to find its entities"
    : task.kind === "generation" ? "Type a prompt to complete" : "Type a text to classify";
  $("#try-file").hidden = !file;
  $("#try-file").accept = task.modality === "audio" ? "audio/wav,audio/x-wav,.wav" : "image/png,image/jpeg,image/webp";
  $("#try-preview").hidden = true;
  $("#prediction").replaceChildren();
  const select = $("#version");
  select.replaceChildren(...[...state.versions].reverse().map((v) =>
    el("option", { value: String(v.version) }, `v${v.version}${v.active ? " (active)" : ` (${v.status})`}`)));
  if (hasVersions) {
    const current = task.active_version ?? state.versions[state.versions.length - 1].version;
    select.value = String(current);
    renderVersion(current);
  } else {
    for (const id of ["#summary", "#other-metrics", "#warnings"]) $(id).replaceChildren();
  }
  await showMonitoring(path);
}

function meterRow(label, value, text, attrs = {}) {
  const meter = el("div", { class: "meter" }, el("span"));
  meter.firstChild.style.width = `${(100 * Math.max(0, Math.min(1, value))).toFixed(1)}%`;
  return el("li", { "data-label": label, ...attrs }, el("span", { class: "label" }, label), meter, el("span", { class: "pct" }, text));
}

function detectionFigure(objects) {
  // The image being tried with each object's box over it: the SVG's coordinates are the image's own pixels,
  // which are the boxes' (the server maps them back from its letterbox).
  const preview = $("#try-preview");
  const width = preview.naturalWidth || 1, height = preview.naturalHeight || 1;
  const figure = svg("svg", { class: "detections", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `${objects.length} objects found` });
  figure.append(svg("image", { href: preview.src, width, height }));
  for (const o of objects) {
    const [x0, y0, x1, y1] = o.box;
    const group = svg("g", { class: "det" });
    group.append(svg("rect", { class: "det-box", x: x0, y: y0, width: x1 - x0, height: y1 - y0 }));
    group.append(svg("text", { class: "det-label", x: x0 + 2, y: Math.max(y0 - 3, 10) }, `${o.label} ${pct(o.score)}`));
    group.append(svg("title", {}, `${o.label} ${pct(o.score)}: ${o.box.join(", ")}`));
    figure.append(group);
  }
  return figure;
}

function renderPrediction(response) {
  // One input; the answer's shape follows the task's kind (classification, multilabel, regression, speakers).
  if (Array.isArray(response.outputs)) {  // generation: the completion
    const out = response.outputs[0];
    $("#prediction").replaceChildren(el("p", { class: "meta" }, `version ${response.version} generates `,
      el("strong", { id: "predicted-label" }, out.text), ` (${out.tokens} tokens, ${out.finish_reason})`));
    return;
  }
  const p = response.predictions[0];
  const head = (...parts) => el("p", { class: "meta" }, `version ${response.version} predicts `, ...parts);
  if ("speaker" in p) {  // speakers: cosine similarities against the open-set threshold
    const items = p.labels.map((s) => meterRow(s.label, s.score, num(s.score),
      { title: `threshold ${num(p.threshold)}`, class: s.label === p.speaker ? "chosen" : "" }));
    $("#prediction").replaceChildren(
      head(el("strong", { id: "predicted-label" }, p.speaker ?? "unknown speaker"), ` (similarity ${num(p.score)})`),
      el("ol", { class: "multi" }, ...items));
    return;
  }
  if (Array.isArray(p.entities)) {
    const items = p.entities.map((e) => meterRow(`${e.text} · ${e.label}`, e.score, pct(e.score), { title: `characters ${e.start}–${e.end}` }));
    $("#prediction").replaceChildren(
      head(el("strong", { id: "predicted-label" }, p.entities.length ? `${p.entities.length} entities` : "no entity")),
      el("ol", { class: "multi" }, ...items));
    return;
  }
  if (Array.isArray(p.objects)) {  // detection: the boxes drawn on the image sent, in its own pixels
    const items = p.objects.map((o) => meterRow(o.label, o.score, pct(o.score), { title: `box ${o.box.join(", ")}` }));
    $("#prediction").replaceChildren(
      head(el("strong", { id: "predicted-label" }, p.objects.length === 1 ? "1 object" : p.objects.length ? `${p.objects.length} objects` : "no object")),
      detectionFigure(p.objects), el("ol", { class: "multi" }, ...items));
    return;
  }
  if ("answer" in p) {
    const text = p.answer === null ? "no answer" : p.answer;
    $("#prediction").replaceChildren(head(el("strong", { id: "predicted-label" }, text), ` (${pct(p.score)})`));
    return;
  }
  if (typeof p.value === "number") {
    $("#prediction").replaceChildren(head(el("strong", { id: "predicted-label" }, num(p.value))));
    return;
  }
  if (Array.isArray(p.labels)) {
    const items = p.scores.map((s) => meterRow(s.label, s.probability, `${pct(s.probability)}${s.chosen ? " ✓" : ""}`,
      { title: `threshold ${pct(s.threshold)}`, class: s.chosen ? "chosen" : "" }));
    $("#prediction").replaceChildren(
      head(el("strong", { id: "predicted-label" }, p.labels.length ? p.labels.join(", ") : "no label")),
      el("ol", { class: "multi" }, ...items));
    return;
  }
  // JS objects list integer-like keys ("3") first and in numeric order: sort by probability again.
  const ranked = Object.entries(p.scores).sort((a, b) => b[1] - a[1]);
  $("#prediction").replaceChildren(
    head(el("strong", { id: "predicted-label" }, p.label), ` (${pct(p.score)})`),
    el("ol", {}, ...ranked.map(([label, score]) => meterRow(label, score, pct(score)))));
}

async function predict(event) {
  event.preventDefault();
  showError("");
  const name = state.task.name;
  const path = `/v1/tasks/${encodeURIComponent(name)}/predict`;
  let response;
  if (state.task.modality !== "text") {
    const file = $("#try-file").files[0];
    if (!file) return showError(state.task.modality === "audio" ? "Choose a WAV file first." : "Choose an image first.");
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("top_k", "5");
    response = await api(`${path}/files`, { method: "POST", body: form });
  } else {
    const text = $("#try-text").value;
    if (!text.trim()) return showError("Type a text first.");
    let input = text;
    if (state.task.kind === "answers") {  // the first line is the question, the rest the context
      const [question, ...rest] = text.split("\n");
      if (!question.trim() || !rest.join("\n").trim()) return showError("Type a question on the first line, then the context.");
      input = { question, context: rest.join("\n") };
    }
    const generates = state.task.kind === "generation";
    const body = generates ? { inputs: [text], max_tokens: 64 }
      : state.task.kind === "entities" || state.task.kind === "answers" ? { inputs: [input] } : { inputs: [text], top_k: 5 };
    response = await api(generates ? path.replace(/\/predict$/, "/generate") : path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  }
  renderPrediction(response);
}

// -- session and routing ------------------------------------------------------------------

function logout(message) {
  sessionStorage.removeItem(KEY);
  $("#logout").hidden = true;
  $("#whoami").textContent = "";
  show("login");
  showError(message || "");
}

async function route() {
  showError("");
  if (!sessionStorage.getItem(KEY)) return logout();
  $("#logout").hidden = false;
  $("#whoami").textContent = "logged in with an API key";
  const match = location.hash.match(/^#\/tasks\/(.+)$/);
  try {
    if (match) await showTask(decodeURIComponent(match[1])); else await showTasks();
  } catch (error) {
    if (error.message !== "unauthorized") showError(error.message);
  }
}

async function login(event) {
  event.preventDefault();
  const key = $("#api-key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY, key);
  $("#api-key").value = "";
  try {
    await api("/v1/tasks");
  } catch (error) {
    if (error.message !== "unauthorized") logout(error.message);
    return;
  }
  await route();
}

function guard(handler) {
  return (event) => handler(event).catch((error) => { if (error.message !== "unauthorized") showError(error.message); });
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", guard(login));
  $("#logout").addEventListener("click", () => { location.hash = "#/"; logout(); });
  $("#try-form").addEventListener("submit", guard(predict));
  $("#refresh").addEventListener("click", guard(route));
  $("#version").addEventListener("change", (e) => renderVersion(Number(e.target.value)));
  $("#try-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    const preview = $("#try-preview");
    if (preview.src) URL.revokeObjectURL(preview.src);
    const image = Boolean(file) && file.type.startsWith("image/");
    preview.hidden = !image;
    if (image) preview.src = URL.createObjectURL(file);
  });
  window.addEventListener("hashchange", route);
  route();
});
