// The API client: one place that adds the key (Authorization header, never the URL) and turns
// every non-2xx answer into an ApiError carrying the server's {"error": {code, message}}.

const KEY_NAME = "adapter-serve.api-key";
const authListeners = [];

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_NAME) || "";
}

export function setKey(key) {
  sessionStorage.setItem(KEY_NAME, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_NAME);
}

/** Called with the ApiError of every 401 answer (the console then asks for a key). */
export function onUnauthorized(listener) {
  authListeners.push(listener);
}

function authHeaders() {
  const headers = new Headers();
  const key = getKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return headers;
}

async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.error) {
      code = String(body.error.code);
      message = String(body.error.message);
    }
  } catch {
    // not JSON: keep the status line
  }
  return raise(new ApiError(response.status, code, message));
}

function raise(error) {
  if (error.status === 401) for (const listener of authListeners) listener(error);
  return error;
}

/** fetch with the key; resolves to the Response when 2xx, else rejects with an ApiError. */
export async function request(method, path, { json } = {}) {
  const init = { method, headers: authHeaders(), cache: "no-store" };
  if (json !== undefined) {
    init.headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, "network_error", `could not reach the server (${error.message})`);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJSON(path) {
  return (await request("GET", path)).json();
}

export async function postJSON(path, json) {
  return (await request("POST", path, { json })).json();
}

/** POST a FormData with upload progress (XMLHttpRequest: fetch cannot report it). */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    const key = getKey();
    if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(body);
        return;
      }
      const error = body && body.error ? body.error : {};
      reject(raise(new ApiError(xhr.status, String(error.code || `http_${xhr.status}`),
        String(error.message || xhr.statusText || "upload failed"))));
    });
    xhr.addEventListener("error", () => {
      reject(new ApiError(0, "network_error", "the upload did not reach the server"));
    });
    xhr.send(form);
  });
}

/** Download a file that needs the key: fetch it, then save the blob under its own name. */
export async function download(path, fallbackName) {
  const response = await request("GET", path);
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="?([^";]+)"?/.exec(disposition);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = match ? match[1] : fallbackName;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
