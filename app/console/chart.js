// Small SVG line charts of our own (no library): the training loss and the evaluation metrics.
// Also the tolerant reader of a job's points: `curve`/`history` lists when the API has them,
// else what `progress` shows at each poll.

import { svg } from "./dom.js";

const IGNORED = new Set(["eval_runtime", "eval_samples_per_second", "eval_steps_per_second",
  "eval_epoch"]);
const W = 320;
const H = 150;
const PAD = { left: 44, right: 12, top: 24, bottom: 24 };

function finite(value) {
  return typeof value === "number" && Number.isFinite(value);
}

/** Points {step, loss?, eval_*?} found in a job record (any of the known shapes). */
export function pointsOf(job) {
  const curves = job.curves || (job.progress || {}).curves;
  if (curves && (Array.isArray(curves.train) || Array.isArray(curves.eval))) {
    return curvePoints(curves);
  }
  const found = [];
  const visit = (source, depth) => {
    if (!source || depth > 2) return;
    if (Array.isArray(source)) {
      for (const item of source) {
        if (item && typeof item === "object" && finite(item.step)) found.push(flatten(item));
      }
    } else if (typeof source === "object") {
      for (const value of Object.values(source)) visit(value, depth + 1);
    }
  };
  const progress = job.progress || {};
  for (const source of [job.curve, job.history, job.curves, progress.curve, progress.history]) {
    visit(source, 0);
  }
  if (!found.length && finite(progress.step)) {
    if (finite(progress.loss) && progress.phase !== "eval") {
      found.push({ step: progress.step, loss: progress.loss });
    }
    if (progress.eval && typeof progress.eval === "object") {
      found.push(flatten({ step: progress.step, eval: progress.eval }));
    }
  }
  return found;
}

/** The API's own shape (GET /train-jobs/{id} `curves`): train loss points and eval points. */
function curvePoints(curves) {
  const found = [];
  for (const item of curves.train || []) {
    if (item && finite(item.step) && finite(item.loss)) {
      found.push({ step: item.step, loss: item.loss });
    }
  }
  for (const item of curves.eval || []) {
    if (!item || !finite(item.step)) continue;
    const point = { step: item.step };
    for (const [key, value] of Object.entries(item)) {
      if (key !== "step" && key !== "epoch" && finite(value)) point[`eval_${key}`] = value;
    }
    found.push(point);
  }
  return found;
}

function flatten(item) {
  const point = { ...item };
  if (item.eval && typeof item.eval === "object") {
    for (const [key, value] of Object.entries(item.eval)) {
      point[key.startsWith("eval_") ? key : `eval_${key}`] = value;
    }
    delete point.eval;
  }
  return point;
}

/** Accumulates a job's points across polls: {loss: Map(step->loss), evals: Map(name->Map)}. */
export class Curve {
  constructor() {
    this.loss = new Map();
    this.evals = new Map();
  }

  add(points) {
    for (const point of points) {
      if (finite(point.loss)) this.loss.set(point.step, point.loss);
      for (const [key, value] of Object.entries(point)) {
        if (!key.startsWith("eval_") || IGNORED.has(key) || !finite(value)) continue;
        if (!this.evals.has(key)) this.evals.set(key, new Map());
        this.evals.get(key).set(point.step, value);
      }
    }
  }

  get size() {
    let count = this.loss.size;
    for (const series of this.evals.values()) count += series.size;
    return count;
  }
}

function sortedPairs(map) {
  return [...map.entries()].sort((a, b) => a[0] - b[0]);
}

function ticks(min, max) {
  return [min, (min + max) / 2, max];
}

function label(value) {
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3);
}

/** One chart: series [{name, pairs: [[x, y]...]}] over x in [0, maxX]; `unit` fixes y to
 * [0, 1] when every value lies there (accuracy, F1). */
export function chart(title, series, maxX, { unit = false } = {}) {
  const all = series.flatMap((s) => s.pairs);
  const count = all.length;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
    "aria-label": `${title}: ${count} point(s)`, dataset: { points: count } },
  svg("title", { text: `${title}: ${count} point(s)` }),
  svg("text", { x: PAD.left, y: 14, class: "chart-title", text: title }));
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const xMax = Math.max(maxX || 0, ...xs, 1);
  let yMin = Math.min(...ys, Infinity);
  let yMax = Math.max(...ys, -Infinity);
  if (!count) {
    root.append(svg("text", { x: W / 2, y: H / 2, class: "chart-empty", "text-anchor": "middle",
      text: "no points yet" }));
    return root;
  }
  if (unit && yMin >= 0 && yMax <= 1) {
    yMin = 0;
    yMax = 1;
  }
  if (yMax - yMin < 1e-9) {
    yMin -= 0.5;
    yMax += 0.5;
  }
  const x = (v) => PAD.left + (v / xMax) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - ((v - yMin) / (yMax - yMin)) * (H - PAD.top - PAD.bottom);
  root.append(svg("line", { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right,
    y2: H - PAD.bottom, class: "axis" }));
  root.append(svg("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom,
    class: "axis" }));
  for (const tick of ticks(yMin, yMax)) {
    root.append(svg("text", { x: PAD.left - 4, y: y(tick) + 3, "text-anchor": "end",
      class: "tick", text: label(tick) }));
  }
  root.append(svg("text", { x: W - PAD.right, y: H - 6, "text-anchor": "end", class: "tick",
    text: `step ${xMax}` }));
  series.forEach((s, index) => {
    const cls = `series s${index % 4}`;
    if (s.pairs.length > 1) {
      root.append(svg("polyline", { class: cls,
        points: s.pairs.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(" ") }));
    }
    for (const [a, b] of s.pairs) {
      root.append(svg("circle", { class: cls, cx: x(a).toFixed(1), cy: y(b).toFixed(1), r: 2.5 },
        svg("title", { text: `${s.name} at step ${a}: ${b}` })));
    }
  });
  let left = PAD.left + 8 * title.length;
  series.forEach((s, index) => {
    root.append(svg("text", { x: left, y: 14, class: `legend s${index % 4}`, text: s.name }));
    left += 5 * s.name.length + 12;
  });
  return root;
}

/** The two charts of a job: training loss (with eval loss), and the other eval metrics. */
export function jobCharts(curve, totalSteps) {
  const lossSeries = [{ name: "train loss", pairs: sortedPairs(curve.loss) }];
  const metricSeries = [];
  for (const [name, values] of curve.evals) {
    const entry = { name, pairs: sortedPairs(values) };
    if (name === "eval_loss") lossSeries.push(entry);
    else metricSeries.push(entry);
  }
  const loss = chart("Loss", lossSeries, totalSteps);
  loss.classList.add("chart-loss");
  const evals = chart("Evaluation", metricSeries, totalSteps, { unit: true });
  evals.classList.add("chart-eval");
  return [loss, evals];
}
