// Playground: pick adapters, paste texts (and, for sentence pairs, each text's second text), see
// every label's score per input, the version that answered and the latency. Multi-label
// adapters also show the labels at or over threshold; regression adapters show the number.
// The query string (?tab=playground&adapter=..&texts=..&pairs=..) re-runs it.

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

  function lines(id) {
    return $(id).value.split("\n").map((t) => t.trim());
  }

  /** The inputs: line n of the texts, paired with line n of the second texts when not blank. */
  function inputs() {
    const seconds = lines("text-pairs");
    return lines("texts").flatMap((text, i) => {
      if (!text) return [];
      return [seconds[i] ? { text, text_pair: seconds[i] } : text];
    });
  }

  function permalink(names, topK, threshold) {
    const params = new URLSearchParams({ tab: "playground" });
    for (const name of names) params.append("adapter", name);
    params.set("texts", $("texts").value);
    if ($("text-pairs").value.trim()) params.set("pairs", $("text-pairs").value);
    if (topK !== "all") params.set("top_k", topK);
    if (threshold !== "") params.set("threshold", threshold);
    return `?${params}`;
  }

  function body(names, items, topK, threshold) {
    const json = { adapters: names, inputs: items, top_k: topK === "all" ? null : Number(topK) };
    if (threshold !== "") json.threshold = Number(threshold);
    return json;
  }

  async function run() {
    const names = checked();
    const items = inputs();
    const line = $("classify-status");
    if (!names.length) return status(line, "Choose at least one adapter.", "error");
    if (!items.length) return status(line, "Type at least one text (one per line).", "error");
    const topK = $("top-k").value;
    const threshold = $("threshold").value.trim();
    const link = permalink(names, topK, threshold);
    history.replaceState(null, "", link);
    $("permalink").href = link;
    $("permalink").hidden = false;
    status(line, `Classifying ${items.length} input(s) with ${names.length} adapter(s)…`, "busy");
    $("classify-button").disabled = true;
    const started = performance.now();
    try {
      const response = await request("POST", "/classify", {
        json: body(names, items, topK, threshold),
      });
      const timing = {
        total: performance.now() - started,
        queue: Number(response.headers.get("x-queue-time")),
        inference: Number(response.headers.get("x-inference-time")),
      };
      render((await response.json()).results, items, timing);
      status(line, `Done in ${timing.total.toFixed(0)} ms.`, "ok");
    } catch (error) {
      $("results").replaceChildren();
      showError(line, error);
    } finally {
      $("classify-button").disabled = false;
    }
  }

  function render(results, items, timing) {
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
      inputCell(items[i]),
      el("td", {}, answer(result, predictions, i))))))));
    $("results").replaceChildren(...sections);
  }

  function inputCell(item) {
    if (typeof item === "string") return el("td", { class: "text", text: item });
    return el("td", { class: "text" }, item.text,
      el("span", { class: "pair muted", text: `\n+ ${item.text_pair}` }));
  }

  /** One input's answer, by the adapter's task. */
  function answer(result, predictions, i) {
    if (result.task === "regression") {
      return el("p", { class: "number" }, "value ",
        el("span", { class: "score", text: formatScore(predictions.score),
          dataset: { score: String(predictions.score) } }));
    }
    const bars = el("ul", { class: "bars" }, predictions.map(scoreItem));
    if (result.task !== "multi_label") return bars;
    const chosen = result.labels[i];
    for (const item of bars.children) {
      if (chosen.includes(item.dataset.label)) item.classList.add("over");
    }
    const names = chosen.length ? chosen.join(", ") : "none";
    return [el("p", { class: "over-threshold", dataset: { labels: JSON.stringify(chosen) } },
      "Over threshold: ", el("strong", { text: names })), bars];
  }

  function formatScore(score) {
    return Math.abs(score) >= 1000 ? score.toExponential(4) : score.toFixed(4);
  }

  function scoreItem(prediction) {
    return el("li", { class: "bar", dataset: { label: prediction.label } },
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
    $("text-pairs").value = params.get("pairs") || "";
    if (params.has("top_k")) $("top-k").value = params.get("top_k");
    $("threshold").value = params.get("threshold") || "";
    return names.length > 0 && inputs().length > 0;
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
