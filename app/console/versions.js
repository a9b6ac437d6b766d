// Versions of one adapter (admin): the versions the store keeps, newest first, with their
// aliases and their share of the bare name's traffic; point an alias at a version (create it or
// move it: a rollback, nothing re-uploaded) and clear the traffic split. The answers of
// /adapters/{name}/versions, /aliases/{alias} and /split are shown as the server gives them.

import { getJSON, request } from "./api.js";
import { $, el, formatBytes, formatTime, showError, status } from "./dom.js";

const path = (name, rest = "") =>
  `/adapters/${name.split("/").map(encodeURIComponent).join("/")}/${rest}`;

export function createVersions() {
  let name = null;
  let shown = null; // the server's last answer for `name`

  function percent(share) {
    return `${Math.round(share * 1000) / 10}%`;
  }

  function splitText(info) {
    if (!info.split.length) return `No split: “${info.name}” serves the latest, version ${info.latest}.`;
    const parts = info.split.map((s) => `${s.target}${s.version !== null && s.target !== String(s.version)
      ? ` (v${s.version})` : ""} ${percent(s.share)}`);
    return `Split of “${info.name}”: ${parts.join(" · ")}`;
  }

  function render(info) {
    shown = info;
    $("versions-title").textContent = `Versions of ${info.name}`;
    const rows = info.versions.map((v) => el("tr", { dataset: { version: String(v.version) } },
      el("th", { scope: "row", text: `v${v.version}${v.version === info.latest ? " (latest)" : ""}` }),
      el("td", { text: formatTime(v.created_at) || v.created_at }),
      el("td", { text: formatBytes(v.size_bytes) }),
      el("td", { class: "col-aliases", text: v.aliases.join(", ") }),
      el("td", { class: "col-share", text: percent(v.share) })));
    $("versions-body").replaceChildren(...rows);
    $("versions-split").textContent = splitText(info);
    $("versions-clear-split").hidden = !info.split.length;
    const select = $("alias-version");
    select.replaceChildren(...info.versions.map((v) =>
      el("option", { value: String(v.version), text: `v${v.version}` })));
    const aliases = $("alias-known");
    aliases.replaceChildren(...Object.keys(info.aliases).map((a) => el("option", { value: a })));
  }

  async function open(adapter) {
    name = adapter;
    const card = $("versions-card");
    card.hidden = false;
    status($("versions-status"), "Loading…", "busy");
    try {
      render(await getJSON(path(name, "versions")));
      status($("versions-status"), "", "");
      card.scrollIntoView({ block: "nearest" });
    } catch (error) {
      showError($("versions-status"), error);
    }
  }

  async function change(method, rest, json, done) {
    const line = $("versions-status");
    status(line, "Saving…", "busy");
    try {
      const answer = await request(method, path(name, rest), { json });
      render(await answer.json());
      status(line, done, "ok");
    } catch (error) {
      showError(line, error);
    }
  }

  function onAlias(event) {
    event.preventDefault();
    const alias = $("alias-name").value.trim();
    const version = Number($("alias-version").value);
    if (!alias || !version) return status($("versions-status"), "Give an alias and a version.", "error");
    const before = shown && shown.aliases[alias];
    const verb = before ? `Moved ${alias} from v${before} to v${version}` : `${alias} now points at v${version}`;
    change("PUT", `aliases/${encodeURIComponent(alias)}`, { version }, `${verb}.`);
  }

  $("alias-form").addEventListener("submit", onAlias);
  $("versions-clear-split").addEventListener("click", () =>
    change("DELETE", "split", undefined, "Split cleared: the latest version serves every request."));
  $("versions-close").addEventListener("click", () => {
    $("versions-card").hidden = true;
    name = null;
  });
  return { open };
}
