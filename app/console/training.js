// Training: the job form (dataset from /datasets, columns proposed from its first rows, the
// recipe's defaults from the API's own schema) and the live jobs list with progress and curves.

import { getJSON, postJSON, request } from "./api.js";
import { Curve, jobCharts, pointsOf } from "./chart.js";
import { showMetrics } from "./job_metrics.js";
import { $, el, formatBytes, formatError, formatNumber, formatTime, showError, status } from "./dom.js";

const RECIPE = [
  { key: "num_epochs", title: "Epochs", step: "any" },
  { key: "max_steps", title: "Max steps (empty: all epochs)", step: "1" },
  { key: "batch_size", title: "Batch size", step: "1" },
  { key: "learning_rate", title: "Learning rate", step: "any" },
  { key: "max_length", title: "Max tokens per text", step: "1" },
  { key: "eval_fraction", title: "Held-out eval fraction", step: "any" },
  { key: "max_train_samples", title: "Max training rows (empty: all)", step: "1" },
  { key: "seed", title: "Seed", step: "1" },
];
const FALLBACK = { num_epochs: 1, batch_size: 16, max_length: 100, eval_fraction: 0.1, seed: 42 };
const ACTIVE = new Set(["queued", "running"]);

export function createTraining(ctx) {
  let datasets = [];
  let defaults = null;
  let recipes = null;
  let timer = null;
  let inFlight = false;
  const curves = new Map();
  const nodes = new Map();
  const detailed = new Set();

  async function loadDefaults() {
    try {
      const schema = await getJSON("/openapi.json");
      const props = schema.components.schemas.TrainConfig.properties;
      defaults = Object.fromEntries(Object.entries(props).map(([k, v]) => [k, v.default ?? null]));
    } catch {
      defaults = { ...FALLBACK };
    }
    try {
      recipes = (await getJSON("/train-jobs/recipes")).recipes;
    } catch {
      recipes = null;  // the placeholders then say "recipe"
    }
    const fields = RECIPE.map((f) => {
      const id = `job-${f.key.replaceAll("_", "-")}`;
      const value = defaults[f.key];
      return [el("label", { for: id, text: f.title }),
        el("input", { id, type: "number", step: f.step, min: 0, dataset: { key: f.key },
          value: value ?? "", placeholder: value === null || value === undefined ? "default" : "" })];
    });
    $("recipe").replaceChildren(
      el("legend", { text: "Recipe (empty fields take the recipe's value, shown greyed)" }),
      ...fields.flat());
    if (recipes && recipes.default) {  // the server's registry of methods (full: not a method)
      const methods = Object.keys(recipes.default).filter((m) => m !== "full");
      $("job-method").replaceChildren(...methods.map((m) => el("option", { value: m, text: m })));
    }
    if (defaults.adapter_config) $("job-method").value = defaults.adapter_config;
    showRecipe();
  }

  /** Greyed placeholders: what the default recipe sets for the chosen method. */
  function showRecipe() {
    const method = $("job-method").value;
    const values = recipes && recipes.default ? recipes.default[method] || {} : {};
    for (const input of $("recipe").querySelectorAll("input[data-key]")) {
      if (!(input.dataset.key in values) && recipes) continue;
      const value = values[input.dataset.key];
      input.placeholder = value === null || value === undefined ? "recipe" : String(value);
    }
  }

  async function loadDatasets() {
    const line = $("train-status");
    try {
      const answer = await getJSON("/datasets");
      datasets = answer.datasets;
      const options = datasets.map((d, i) => el("option", { value: i,
        text: `${d.name} (${d.format}, ${formatBytes(d.size_bytes)})` }));
      if (!options.length) {
        // A key limited to some adapters is told no roots (the server's paths).
        const where = answer.roots.length ? ` (${answer.roots.join(", ")})` : "";
        options.push(el("option", { value: "", disabled: true, selected: true,
          text: `No dataset files in the data roots${where}` }));
      }
      $("job-dataset").replaceChildren(...options);
      chooseDataset();
    } catch (error) {
      showError(line, error);
    }
  }

  function options(select, values, chosen) {
    select.replaceChildren(...values.map((v) => el("option", { value: v, text: v,
      selected: v === chosen })));
  }

  function chooseDataset() {
    const d = datasets[Number($("job-dataset").value)];
    if (!d) return;
    options($("job-text-column"), d.columns, d.text_column);
    options($("job-label-column"), d.columns, d.label_column);
    options($("job-text-pair-column"), ["", ...d.columns],
      d.columns.includes("text_pair") ? "text_pair" : "");
    $("job-text-pair-column").options[0].textContent = "none (single texts)";
    const evals = [el("option", { value: "", text: "hold out a fraction of the training rows" })];
    for (const other of datasets) {
      if (other !== d) evals.push(el("option", { value: other.path, text: other.name }));
    }
    $("job-eval").replaceChildren(...evals);
    preview(d);
    if (d.error) status($("train-status"), `${d.name}: ${d.error}`, "error");
  }

  function preview(d) {
    const table = $("dataset-preview");
    table.tHead.replaceChildren(el("tr", {}, d.columns.map((c) => el("th", { scope: "col",
      text: c }))));
    table.tBodies[0].replaceChildren(...d.rows.map((row) => el("tr", {}, d.columns.map((c) =>
      el("td", { text: typeof row[c] === "string" ? row[c] : JSON.stringify(row[c] ?? null) })))));
  }

  function body() {
    const d = datasets[Number($("job-dataset").value)];
    const config = {
      name: $("job-name").value.trim(),
      dataset: d ? d.path : "",
      text_column: $("job-text-column").value,
      label_column: $("job-label-column").value,
      adapter_config: $("job-method").value,
      eval_split: $("job-eval").value || null,
    };
    const labels = $("job-label-names").value.split(",").map((s) => s.trim()).filter(Boolean);
    if (labels.length) config.label_names = labels;
    if ($("job-text-pair-column").value) config.text_pair_column = $("job-text-pair-column").value;
    if ($("job-task").value) config.task = $("job-task").value;
    for (const input of $("recipe").querySelectorAll("input[data-key]")) {
      if (input.value.trim() !== "") config[input.dataset.key] = Number(input.value);
    }
    return config;
  }

  async function submit(event) {
    event.preventDefault();
    const line = $("train-status");
    $("job-submit").disabled = true;
    status(line, "Submitting…", "busy");
    try {
      const job = await postJSON("/train-jobs", body());
      status(line, `Job ${job.id} ${job.status}.`, "ok");
      await poll();
    } catch (error) {
      status(line, `Refused: ${formatError(error)}`, "error");
    } finally {
      $("job-submit").disabled = false;
    }
  }

  async function poll() {
    clearTimeout(timer);
    if (inFlight) return; // the running poll schedules the next one
    inFlight = true;
    let active = false;
    try {
      const jobs = (await getJSON("/train-jobs?limit=50")).jobs;
      active = jobs.some((j) => ACTIVE.has(j.status));
      await details(jobs);
      renderJobs(jobs);
      status($("jobs-status"), jobs.length ? `${jobs.length} job(s)` : "No jobs yet.", "");
    } catch (error) {
      showError($("jobs-status"), error);
      if (error.status === 401 || error.status === 403) return;
    } finally {
      inFlight = false;
    }
    if (ctx.current === "training") timer = setTimeout(poll, active ? 300 : 3000);
  }

  /** Merge the points of GET /train-jobs/{id} (which may carry the whole curve) for running
   * jobs, and once for each finished job not yet seen in full. */
  async function details(jobs) {
    const wanted = jobs.filter((j) => j.status === "running"
      || (!ACTIVE.has(j.status) && !detailed.has(j.id))).slice(0, 10);
    await Promise.all(wanted.map(async (job) => {
      try {
        const full = await getJSON(`/train-jobs/${encodeURIComponent(job.id)}`);
        if (!curves.has(job.id)) curves.set(job.id, new Curve());
        curves.get(job.id).add(pointsOf(full));
        if (!ACTIVE.has(full.status)) detailed.add(job.id);
      } catch {
        // the list answer still draws what it has; the list's own error is shown by poll()
      }
    }));
  }

  function renderJobs(jobs) {
    const list = $("jobs");
    const items = jobs.map((job) => {
      if (!curves.has(job.id)) curves.set(job.id, new Curve());
      curves.get(job.id).add(pointsOf(job));
      let node = nodes.get(job.id);
      if (!node) {
        node = el("li", { class: "job card", dataset: { id: job.id } });
        nodes.set(job.id, node);
      }
      updateJob(node, job);
      return node;
    });
    const same = items.length === list.children.length
      && items.every((item, i) => list.children[i] === item);
    if (!same) list.replaceChildren(...items);
  }

  function progressText(job) {
    const p = job.progress || {};
    const parts = [];
    if (p.step != null) parts.push(`step ${p.step}${p.total_steps ? ` / ${p.total_steps}` : ""}`);
    if (p.epoch != null) parts.push(`epoch ${formatNumber(p.epoch)}`);
    if (p.loss != null) parts.push(`loss ${formatNumber(p.loss)}`);
    if (p.phase) parts.push(p.phase);
    return parts.join(" · ") || (job.status === "queued" ? "waiting for a worker" : "");
  }

  function parts(node) {
    if (!node.parts) {
      node.parts = {
        head: el("div", { class: "job-head" }),
        bar: el("progress", { class: "job-progress", max: 1, value: 0 }),
        text: el("p", { class: "job-progress-text" }),
        charts: el("div", { class: "charts" }),
        error: el("p", { class: "error job-error", hidden: true }),
        metrics: el("div", { class: "metrics", hidden: true }),
        actions: el("div", { class: "row job-actions" }),
      };
      node.append(...Object.values(node.parts));
    }
    return node.parts;
  }

  function updateJob(node, job) {
    const name = job.adapter.name;
    const p = job.progress || {};
    const part = parts(node);
    node.dataset.status = job.status;
    node.dataset.adapter = name;
    part.head.replaceChildren(el("strong", { class: "job-name", text: name }), " ",
      el("span", { class: `badge ${job.status}`, text: job.status }), " ",
      el("span", { class: "muted", text: `${job.id} · ${formatTime(job.created_at)}` }));
    part.bar.max = p.total_steps || 1;
    part.bar.value = job.status === "succeeded" ? p.total_steps || 1 : p.step || 0;
    part.bar.setAttribute("aria-label", `Progress of ${name}`);
    part.text.textContent = progressText(job);
    const curve = curves.get(job.id);
    part.charts.hidden = !curve.size && job.status !== "running";
    part.charts.replaceChildren(...(part.charts.hidden ? [] : jobCharts(curve, p.total_steps)));
    part.error.hidden = !job.error;
    part.error.textContent = job.error || "";
    showMetrics(part.metrics, job);
    const actionKey = `${job.status}/${job.cancel_requested}`;
    if (part.actions.dataset.key !== actionKey) {
      part.actions.dataset.key = actionKey;
      const hadFocus = part.actions.contains(document.activeElement);
      part.actions.replaceChildren(...jobActions(job));
      if (hadFocus && part.actions.firstElementChild) part.actions.firstElementChild.focus();
    }
  }

  function jobActions(job) {
    const name = job.adapter.name;
    const list = [];
    if (ACTIVE.has(job.status)) {
      const cancel = el("button", { type: "button", dataset: { action: "cancel" },
        disabled: job.cancel_requested, "aria-label": `Cancel the job training ${name}` },
      job.cancel_requested ? "Cancelling…" : "Cancel");
      cancel.addEventListener("click", () => onCancel(job, cancel));
      list.push(cancel);
    }
    if (job.status === "succeeded") {
      const link = el("a", { href: `?tab=playground&adapter=${encodeURIComponent(name)}`,
        dataset: { action: "try" } }, `Try ${name} in the playground`);
      link.addEventListener("click", (event) => {
        event.preventDefault();
        ctx.adaptersChanged();
        ctx.goto("playground", { params: new URLSearchParams({ adapter: name }) });
      });
      list.push(link);
    }
    return list;
  }

  async function onCancel(job, node) {
    node.disabled = true;
    try {
      await request("POST", `/train-jobs/${encodeURIComponent(job.id)}/cancel`);
      await poll();
    } catch (error) {
      showError($("jobs-status"), error);
      node.disabled = false;
    }
  }

  $("train-form").addEventListener("submit", submit);
  $("job-dataset").addEventListener("change", chooseDataset);
  $("job-method").addEventListener("change", showRecipe);

  return {
    reset() {
      datasets = [];
      defaults = null;
      clearTimeout(timer);
    },
    show() {
      if (!ctx.admin) return;
      if (defaults === null) loadDefaults();
      loadDatasets();
      poll();
    },
  };
}
