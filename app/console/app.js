// The console's entry point: tabs, the API key, the key's scope; each tab is its own module.

import { ApiError, forgetKey, getJSON, getKey, onUnauthorized, setKey } from "./api.js";
import { $, formatError } from "./dom.js";
import { createAdapters } from "./adapters.js";
import { createPlayground } from "./playground.js";
import { createTraining } from "./training.js";
import { createVersions } from "./versions.js";

const TABS = ["playground", "adapters", "training"];
const ctx = {
  admin: false,
  keysOn: false,
  current: "playground",
  goto: selectTab,
  adaptersChanged: () => {},
};
const panels = {};

function notice(text) {
  const box = $("notice");
  box.textContent = text;
  box.hidden = !text;
}

function selectTab(name, { focus = false, params = null } = {}) {
  const tab = TABS.includes(name) ? name : "playground";
  ctx.current = tab;
  for (const other of TABS) {
    const button = $(`tab-${other}`);
    const selected = other === tab;
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(`panel-${other}`).hidden = !selected;
  }
  if (focus) $(`tab-${tab}`).focus();
  const query = params || new URLSearchParams(tab === "playground" ? location.search : "");
  query.set("tab", tab);
  history.replaceState(null, "", `?${query}`);
  if (panels[tab]) panels[tab].show(params);
}

function wireTabs() {
  for (const name of TABS) {
    $(`tab-${name}`).addEventListener("click", () => selectTab(name));
  }
  $("tabs").addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    const index = TABS.indexOf(ctx.current);
    if (step) selectTab(TABS[(index + step + TABS.length) % TABS.length], { focus: true });
    else if (event.key === "Home") selectTab(TABS[0], { focus: true });
    else if (event.key === "End") selectTab(TABS[TABS.length - 1], { focus: true });
    else return;
    event.preventDefault();
  });
}

function showKeyPanel(reason, { cancellable = false } = {}) {
  $("key-reason").textContent = reason;
  $("key-cancel").hidden = !cancellable;
  $("key-panel").hidden = false;
  document.body.classList.add("needs-key");
  $("key-input").focus();
}

function hideKeyPanel() {
  $("key-panel").hidden = true;
  document.body.classList.remove("needs-key");
}

/** Which scopes the key (or no key) has: classify via /adapters, admin via /train-jobs. */
async function probe() {
  try {
    await getJSON("/adapters?limit=1");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return false; // the listener asks
    notice(`The server answered: ${formatError(error)}`);
  }
  ctx.keysOn = Boolean(getKey());
  try {
    await getJSON("/train-jobs?limit=1");
    ctx.admin = true;
  } catch (error) {
    ctx.admin = !(error instanceof ApiError && (error.status === 403 || error.status === 401));
  }
  applyScope();
  return true;
}

function applyScope() {
  for (const node of document.querySelectorAll(".admin-only")) node.hidden = !ctx.admin;
  $("training-locked").hidden = ctx.admin;
  let text = "No key needed";
  if (ctx.keysOn) text = ctx.admin ? "Key: admin" : "Key: classify only";
  $("key-status").textContent = text;
  $("key-change").textContent = ctx.keysOn ? "Change key" : "Set key";
  $("key-forget").hidden = !ctx.keysOn;
}

async function start() {
  notice("");
  if (!(await probe())) return;
  hideKeyPanel();
  for (const panel of Object.values(panels)) panel.reset();
  const params = new URLSearchParams(location.search);
  selectTab(params.get("tab") || "playground", { params });
}

function wireKey() {
  onUnauthorized((error) => {
    const reason = getKey()
      ? `The server refused this key (${formatError(error)}). Enter another one.`
      : `This server needs an API key (${formatError(error)}).`;
    showKeyPanel(reason);
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("key-input").value.trim();
    $("key-input").value = "";
    if (!value) return;
    setKey(value);
    start();
  });
  $("key-cancel").addEventListener("click", hideKeyPanel);
  $("key-change").addEventListener("click", () => {
    showKeyPanel("Enter an API key for this tab.", { cancellable: true });
  });
  $("key-forget").addEventListener("click", () => {
    forgetKey();
    start();
  });
}

function reportUnexpected(error) {
  notice(`Unexpected error in the page: ${formatError(error)}`);
}

function main() {
  window.addEventListener("error", (event) => reportUnexpected(event.error || event.message));
  window.addEventListener("unhandledrejection", (event) => reportUnexpected(event.reason));
  panels.playground = createPlayground(ctx);
  panels.adapters = createAdapters(ctx);
  panels.training = createTraining(ctx);
  ctx.adaptersChanged = () => panels.playground.reset();
  ctx.showVersions = createVersions().open;
  wireTabs();
  wireKey();
  start();
}

main();
