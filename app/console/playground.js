// Playground: pick adapters, paste texts, see every label's score per text, the version that
// answered and the latency. The query string (?tab=playground&adapter=..&texts=..) re-runs it.

import { getJSON, request } from "./api.js";
import { $, el, formatError, formatNumber, showError, status } from "./dom.js";

export function createPlayground(ctx) {
  let adapters = null; // the last /adapters answer
  let wanted = new Set(); // adapters to tick once the list arrives (from a permalink)
  let pendingRun = false;

  async function loadAdapters() {
    const box = $("adapter-picks");
    const chosen = wanted.size ? wanted : new Set(checked());
    try {
      adapters = (await getJSON("/adapters")).adapters;
    } catch (error) {
      box.replaceChildren(el("legend", { text: "Adapters" }),
        el("p", { class: "error", text: `Could not list adapters: ${formatError(error)}` }));
      adapters = null;
      return;
    }
    const items = adapters.map((a) => {
      const id = `pick-${a.name}`;
      return el("label", { class: "pick", for: id },
        el("input", { type: "checkbox", id, value: a.name, checked: chosen.has(a.name) }),
        ` ${a.name} `, el("span", { class: "muted", text: `v${a.version}` }));
    });
    const empty = el("p", { class: "hint", text: "No adapters in the store yet: upload or train one." });
    box.replaceChildren(el("legend", { text: "Adapters" }), ...(items.length ? items : [empty]));
    wanted = new Set();
    if (pendingRun) {
      pendingRun = false;
      run();
    }
  }

  function checked() {
    return [...$("adapter-picks").querySelectorAll("input[type=checkbox]:checked")].map(
      (input) => input.value);
  }

  function texts() {
    return $("texts").value.split("\n").map((t) => t.trim()).filter(Boolean);
  }

  function permalink(names, lines, topK) {
    const params = new URLSearchParams({ tab: "playground" });
    for (const name of names) params.append("adapter", name);
    params.set("texts", lines.join("\n"));
    if (topK !== "all") params.set("top_k", topK);
    return `?${params}`;
  }

  async function run() {
    const names = checked();
    const lines = texts();
    const line = $("classify-status");
    if (!names.length) return status(line, "Choose at least one adapter.", "error");
    if (!lines.length) return status(line, "Type at least one text (one per line).", "error");
    const topK = $("top-k").value;
    const link = permalink(names, lines, topK);
    history.replaceState(null, "", link);
    $("permalink").href = link;
    $("permalink").hidden = false;
    status(line, `Classifying ${lines.length} text(s) with ${names.length} adapter(s)…`, "busy");
    $("classify-button").disabled = true;
    const started = performance.now();
    try {
      const response = await request("POST", "/classify", {
        json: { adapters: names, inputs: lines, top_k: topK === "all" ? null : Number(topK) },
      });
      const body = await response.json();
      const timing = {
        total: performance.now() - started,
        queue: Number(response.headers.get("x-queue-time")),
        inference: Number(response.headers.get("x-inference-time")),
      };
      render(body.results, lines, timing);
      status(line, `Done in ${timing.total.toFixed(0)} ms.`, "ok");
    } catch (error) {
      $("results").replaceChildren();
      showError(line, error);
    } finally {
      $("classify-button").disabled = false;
    }
  }

  function render(results, lines, timing) {
    const latency = `${timing.total.toFixed(1)} ms round trip (queue ${formatNumber(timing.queue)} ms, `
      + `inference ${formatNumber(timing.inference)} ms)`;
    const sections = results.map((result) => el("section", {
      class: "result card", dataset: { adapter: result.adapter, version: result.version } },
    el("h3", {}, el("span", { class: "adapter-name", text: result.adapter }), " ",
      el("span", { class: "version", text: `version ${result.version}` })),
    el("p", { class: "muted latency", text: latency }),
    el("table", { class: "scores" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Text" }),
        el("th", { scope: "col", text: "Labels and scores" }))),
      el("tbody", {}, result.predictions.map((predictions, i) => el("tr", {
        dataset: { index: i } },
      el("td", { class: "text", text: lines[i] }),
      el("td", {}, el("ul", { class: "bars" }, predictions.map(scoreItem)))))))));
    $("results").replaceChildren(...sections);
  }

  function scoreItem(prediction) {
    return el("li", { class: "bar" },
      el("span", { class: "label", text: prediction.label }),
      el("meter", { min: 0, max: 1, value: prediction.score,
        "aria-label": `score of ${prediction.label}` }),
      el("span", { class: "score", text: prediction.score.toFixed(4),
        dataset: { score: String(prediction.score) } }));
  }

  function applyParams(params) {
    const names = params.getAll("adapter");
    if (!names.length && !params.has("texts")) return false;
    wanted = new Set(names);
    for (const input of $("adapter-picks").querySelectorAll("input[type=checkbox]")) {
      input.checked = wanted.has(input.value);
    }
    if (params.has("texts")) $("texts").value = params.get("texts");
    if (params.has("top_k")) $("top-k").value = params.get("top_k");
    return names.length > 0 && texts().length > 0;
  }

  $("classify-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });

  return {
    reset() {
      adapters = null;
    },
    show(params) {
      pendingRun = params ? applyParams(params) : false;
      loadAdapters();
    },
  };
}
