// Adapters: the table of /adapters, PAGE rows at a time ("Load more" follows next_cursor), a
// name-prefix search (the server filters), sortable by any column (the rows shown); upload (drag
// and drop or file picker), download, delete with confirmation, load and unload. Upload errors
// are the server's, word for word.

import { download, getJSON, request, upload } from "./api.js";
import { $, el, formatBytes, formatError, formatNumber, formatTime, showError, status } from "./dom.js";

const PAGE = 50;
const SEARCH_DELAY_MS = 250;

const COLUMNS = [
  { key: "name", title: "Name", value: (a) => a.name },
  { key: "version", title: "Version", value: (a) => a.version },
  { key: "method", title: "Method", value: (a) => a.adapter_config },
  { key: "labels", title: "Labels", value: (a) => Object.values(a.labels).join(", ") },
  { key: "base", title: "Base model", value: (a) => a.base_model.id },
  { key: "size", title: "Size", value: (a) => a.size_bytes, show: (a) => formatBytes(a.size_bytes) },
  { key: "metrics", title: "Metrics", value: (a) => metricsText(a.metrics) },
  { key: "resident", title: "Resident", value: (a) => (a.resident ? 1 : 0),
    show: (a) => (a.resident ? "yes" : "no") },
  { key: "last_used", title: "Last used", value: (a) => a.last_used || "",
    show: (a) => formatTime(a.last_used) || "never" },
];

function metricsText(metrics) {
  return Object.entries(metrics || {}).map(([k, v]) => `${k}: ${formatNumber(v)}`).join(", ");
}

/** The path of an adapter's routes: a namespaced name (`team-a/sentiment`) keeps its `/`
 * (the server reads one namespace level), each part URL-encoded. */
export function adapterPath(name, ...rest) {
  return ["/adapters", ...name.split("/").map(encodeURIComponent), ...rest].join("/");
}

function nameFromFile(fileName) {
  const stem = fileName.replace(/\.(zip|tar\.gz|tgz)$/i, "").toLowerCase();
  return stem.replace(/[^a-z0-9._-]+/g, "-").replace(/^[^a-z0-9]+/, "").slice(0, 64);
}

export function createAdapters(ctx) {
  let rows = [];
  let loaded = false;
  let next = null; // the cursor of the next page; null when every match is shown
  let total = 0; // the adapters that match the search
  let query = ""; // the name prefix searched
  let asked = 0; // the answer of an older search or refresh is dropped
  let searchTimer = null;
  const sort = { key: "name", dir: 1 };
  let file = null;
  let autoName = "";

  /** The page after `cursor` (the first page without one); null when a newer load began. */
  async function fetchPage(cursor) {
    const ticket = asked;
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (query) params.set("prefix", query);
    if (cursor) params.set("cursor", cursor);
    const page = await getJSON(`/adapters?${params}`);
    if (ticket !== asked) return null;
    total = page.total;
    next = page.next_cursor;
    return page.adapters;
  }

  async function load() {
    asked += 1;
    const line = $("adapters-status");
    status(line, "Loading…", "busy");
    try {
      const first = await fetchPage(null);
      if (first === null) return;
      rows = first;
      loaded = true;
      status(line, "", "");
    } catch (error) {
      showError(line, error);
    }
    render();
  }

  async function more() {
    const button = $("adapters-more");
    button.disabled = true;
    try {
      const page = await fetchPage(next);
      if (page !== null) {
        const shown = new Set(rows.map((a) => a.name));
        rows.push(...page.filter((a) => !shown.has(a.name)));
      }
    } catch (error) {
      showError($("adapters-status"), error);
    }
    button.disabled = false;
    render();
  }

  function search() {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      const wanted = $("adapters-search").value.trim().toLowerCase();
      if (wanted === query && loaded) return;
      query = wanted;
      load();
    }, SEARCH_DELAY_MS);
  }

  function header() {
    const cells = COLUMNS.map((column) => {
      const active = sort.key === column.key;
      const th = el("th", { scope: "col",
        "aria-sort": active ? (sort.dir > 0 ? "ascending" : "descending") : "none" },
      el("button", { type: "button", class: "sort", dataset: { key: column.key } },
        column.title, active ? (sort.dir > 0 ? " ▲" : " ▼") : ""));
      return th;
    });
    cells.push(el("th", { scope: "col", text: "Actions" }));
    $("adapters-head").replaceChildren(...cells);
  }

  function sorted() {
    const column = COLUMNS.find((c) => c.key === sort.key) || COLUMNS[0];
    return [...rows].sort((a, b) => {
      const x = column.value(a);
      const y = column.value(b);
      const order = typeof x === "number" && typeof y === "number"
        ? x - y : String(x).localeCompare(String(y));
      return order * sort.dir;
    });
  }

  function render() {
    header();
    const body = sorted().map((a) => el("tr", { dataset: { name: a.name } },
      COLUMNS.map((c) => el(c.key === "name" ? "th" : "td", {
        class: `col-${c.key}`, scope: c.key === "name" ? "row" : null,
        text: c.show ? c.show(a) : c.value(a) })),
      el("td", { class: "actions" }, actions(a))));
    if (!body.length && loaded) {
      body.push(el("tr", {}, el("td", { colspan: COLUMNS.length + 1,
        text: query ? `No adapter's name starts with “${query}”.`
          : "The store is empty: upload an archive above, or train an adapter." })));
    }
    $("adapters-body").replaceChildren(...body);
    $("adapters-more").hidden = !next;
    const matching = query ? ` whose name starts with “${query}”` : "";
    $("adapters-count").textContent = loaded
      ? `Showing ${rows.length} of ${total} adapter(s)${matching}.` : "";
  }

  /** Put the server's answer for one adapter in place of its row (or drop the row). */
  function replaceRow(name, entry) {
    const before = rows.length;
    rows = rows.flatMap((a) => (a.name !== name ? [a] : entry ? [entry] : []));
    total -= before - rows.length;
    render();
  }

  function button(text, action, a, handler, extra = {}) {
    const node = el("button", { type: "button", dataset: { action, name: a.name },
      "aria-label": `${text} ${a.name}`, ...extra }, text);
    node.addEventListener("click", () => handler(a, node));
    return node;
  }

  function actions(a) {
    const tryLink = el("a", { href: `?tab=playground&adapter=${encodeURIComponent(a.name)}`,
      dataset: { action: "try", name: a.name }, "aria-label": `Try ${a.name} in the playground` },
    "Try");
    tryLink.addEventListener("click", (event) => {
      event.preventDefault();
      ctx.goto("playground", { params: new URLSearchParams({ adapter: a.name }) });
    });
    const list = [tryLink, button("Download", "download", a, onDownload)];
    if (ctx.admin) {
      list.push(a.resident ? button("Unload", "unload", a, onResidency)
        : button("Load", "load", a, onResidency));
      list.push(button("Versions", "versions", a, () => ctx.showVersions(a.name)));
      list.push(button("Delete", "delete", a, askDelete));
    }
    return list;
  }

  async function onDownload(a) {
    status($("adapters-status"), `Downloading ${a.name}…`, "busy");
    try {
      await download(adapterPath(a.name, "archive"), `${a.name.replace("/", "~")}.zip`);
      status($("adapters-status"), `Downloaded ${a.name}.`, "ok");
    } catch (error) {
      showError($("adapters-status"), error);
    }
  }

  async function onResidency(a, node) {
    const verb = a.resident ? "unload" : "load";
    node.disabled = true;
    status($("adapters-status"), `${verb === "load" ? "Loading" : "Unloading"} ${a.name}…`, "busy");
    try {
      const answer = await request("POST", adapterPath(a.name, verb));
      replaceRow(a.name, await answer.json());
      status($("adapters-status"), `${a.name} ${verb}ed.`, "ok");
    } catch (error) {
      showError($("adapters-status"), error);
      node.disabled = false;
    }
  }

  function askDelete(a, node) {
    const cell = node.closest("td");
    const yes = button("Delete", "confirm-delete", a, onDelete, { class: "danger" });
    const no = button("Keep", "cancel-delete", a, () => render());
    cell.replaceChildren(el("span", { class: "confirm", text: `Delete ${a.name}?` }), yes, no);
    no.focus();
  }

  async function onDelete(a) {
    status($("adapters-status"), `Deleting ${a.name}…`, "busy");
    try {
      await request("DELETE", adapterPath(a.name));
      replaceRow(a.name, null);
      status($("adapters-status"), `Deleted ${a.name}.`, "ok");
      ctx.adaptersChanged();
    } catch (error) {
      showError($("adapters-status"), error);
    }
  }

  function choose(chosen) {
    file = chosen;
    const nameInput = $("upload-name");
    if (file && (!nameInput.value || nameInput.value === autoName)) {
      autoName = nameFromFile(file.name);
      nameInput.value = autoName;
    }
    status($("upload-status"), file ? `Selected ${file.name} (${formatBytes(file.size)}).` : "");
  }

  async function onUpload(event) {
    event.preventDefault();
    const line = $("upload-status");
    const name = $("upload-name").value.trim();
    if (!file) return status(line, "Choose or drop an archive first.", "error");
    if (!name) return status(line, "Give the adapter a name.", "error");
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("name", name);
    form.append("overwrite", $("upload-overwrite").checked ? "true" : "false");
    const bar = $("upload-progress");
    bar.hidden = false;
    bar.value = 0;
    $("upload-button").disabled = true;
    status(line, `Uploading ${file.name}…`, "busy");
    try {
      const info = await upload("/adapters", form, (fraction) => {
        bar.value = fraction;
        if (fraction >= 1) status(line, "Checking the adapter on the server…", "busy");
      });
      status(line, `Uploaded ${info.name} (version ${info.version}).`, "ok");
      await load();
      ctx.adaptersChanged();
    } catch (error) {
      status(line, `Upload refused: ${formatError(error)}`, "error");
    } finally {
      bar.hidden = true;
      $("upload-button").disabled = false;
    }
  }

  function wire() {
    $("adapters-head").addEventListener("click", (event) => {
      const target = event.target.closest("button.sort");
      if (!target) return;
      const key = target.dataset.key;
      sort.dir = sort.key === key ? -sort.dir : 1;
      sort.key = key;
      render();
      $("adapters-head").querySelector(`button[data-key="${key}"]`).focus();
    });
    $("adapters-refresh").addEventListener("click", load);
    $("adapters-more").addEventListener("click", more);
    $("adapters-search").addEventListener("input", search);
    $("upload-file").addEventListener("change", (e) => choose(e.target.files[0] || null));
    const zone = $("drop-zone");
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      const dropped = event.dataTransfer && event.dataTransfer.files[0];
      if (!dropped) return;
      $("upload-file").value = ""; // the picker no longer names the file that will go
      choose(dropped);
    });
    $("upload-form").addEventListener("submit", onUpload);
  }

  wire();
  return {
    reset() {
      loaded = false;
      rows = [];
      next = null;
    },
    show() {
      load();
    },
  };
}
