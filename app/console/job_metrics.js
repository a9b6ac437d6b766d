// A finished job's metrics: the task (read from which metrics it has), its scores first, and a
// multi-label job's per-label F1 folded away (28 labels would drown the line).

import { el, formatNumber } from "./dom.js";

/** regression (pearson/spearman), multi_label (micro/macro F1), else single_label. */
export function taskOf(metrics) {
  if ("pearson" in metrics) return "regression";
  if ("f1_micro" in metrics) return "multi_label";
  return "single_label";
}

/** Fill `node` with the job's task and metrics; hidden when it has none yet. */
export function showMetrics(node, job) {
  const metrics = Object.entries(job.metrics || {});
  node.hidden = !metrics.length;
  if (!metrics.length) return;
  const task = taskOf(job.metrics);
  const pair = job.config && job.config.text_pair_column ? ", sentence pairs" : "";
  const main = metrics.filter(([k]) => !k.includes("/"));
  const perLabel = metrics.filter(([k]) => k.startsWith("f1/"));
  const children = [
    el("span", { class: "job-task", dataset: { task }, text: `${task.replace("_", "-")}${pair}` }),
    " · ",
    el("span", { class: "job-scores",
      text: main.map(([k, v]) => `${k}: ${formatNumber(v)}`).join(", ") }),
  ];
  if (perLabel.length) {
    children.push(el("details", { class: "per-label" },
      el("summary", { text: `F1 per label (${perLabel.length}, at the tuned thresholds)` }),
      el("p", { text: perLabel.map(([k, v]) => `${k.slice(3)}: ${formatNumber(v)}`)
        .join(", ") })));
  }
  const open = node.querySelector("details.per-label[open]") !== null;
  node.replaceChildren(...children);
  if (open) node.querySelector("details.per-label").open = true;
}
