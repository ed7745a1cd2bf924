// Shared helpers for every page: the JSON API client (CSRF, problem details), DOM building,
// toasts, relative times, dialogs, and the sign-out button.

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `Request failed (${status})`);
    this.status = status;
    this.code = (problem && problem.code) || "error";
    this.problem = problem || {};
  }
}

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

export function randomId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

/** fetch() for the JSON API: sends the CSRF header, parses JSON, throws ApiError on failure. */
export async function api(method, url, { body, headers = {}, signal, redirectOn401 = true } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, signal, credentials: "same-origin" };
  if (!SAFE.has(method)) init.headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, { detail: "The server could not be reached. Check your connection and try again.", code: "network_error" });
  }
  if (response.status === 401 && redirectOn401) {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new ApiError(401, { detail: "Your session has ended; sign in again.", code: "unauthenticated" });
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** Build an element: h("button.btn.btn-sm", {type: "button", onclick}, "Text", child). */
export function h(tag, attrs = {}, ...children) {
  const [name, ...classes] = tag.split(".");
  const el = document.createElement(name || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "class") el.className += (el.className ? " " : "") + value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const ICONS = {
  check: "M5 12.5l4.5 4.5L19 7.5",
  download: "M12 4v11m0 0l-4.5-4.5M12 15l4.5-4.5M5 19h14",
  expand: "M9 4H4v5M15 4h5v5M9 20H4v-5M15 20h5v-5",
  retry: "M4 12a8 8 0 1 0 2.4-5.7M4 4v4.5h4.5",
  trash: "M5 7h14M10 11v6M14 11v6M7 7l1 12h8l1-12M10 7V4h4v3",
  alert: "M12 8v5m0 3.5v.01M10.3 3.9 2.6 17.5A2 2 0 0 0 4.3 20.5h15.4a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z",
  image: "M4 5h16v14H4zM4 16l5-5 4 4 3-3 4 4M15.5 9.5h.01",
};

export function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "icon");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

// -- time and numbers ---------------------------------------------------------------------------

const RTF = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const ABSOLUTE = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function relativeTime(iso) {
  if (!iso) return "";
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  const abs = Math.abs(seconds);
  if (abs < 45) return "just now";
  const units = [[60, "second", 1], [3600, "minute", 60], [86400, "hour", 3600], [604800, "day", 86400],
    [2629800, "week", 604800], [31557600, "month", 2629800], [Infinity, "year", 31557600]];
  for (const [limit, unit, size] of units) {
    if (abs < limit) return RTF.format(Math.round(seconds / size), unit);
  }
  return "";
}

export function absoluteTime(iso) {
  return iso ? ABSOLUTE.format(new Date(iso)) : "";
}

export function timeEl(iso, className = "reltime") {
  return h(`time.${className}`, { datetime: iso, title: absoluteTime(iso) }, relativeTime(iso));
}

export function refreshTimes(root = document) {
  for (const el of root.querySelectorAll("time.reltime")) {
    const iso = el.getAttribute("datetime");
    if (!iso) continue;
    el.textContent = relativeTime(iso);
    el.title = absoluteTime(iso);
  }
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function generationDuration(gen) {
  const total = gen.output && gen.output.timings && gen.output.timings.total_ms;
  if (typeof total === "number") return total;
  if (gen.started_at && gen.finished_at) return new Date(gen.finished_at) - new Date(gen.started_at);
  return null;
}

export function formatBytes(bytes) {
  if (!bytes && bytes !== 0) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(2)} MB`;
}

export function formatTemperature(t) {
  return t === null || t === undefined ? "—" : Number(t).toFixed(2).replace(/0$/, "");
}

export const STATUS_LABELS = {
  pending: "Queued",
  running: "Generating",
  succeeded: "Done",
  failed: "Failed",
  canceled: "Canceled",
};

export function statusBadge(status) {
  return h(`span.badge.badge-${status}`, {}, STATUS_LABELS[status] || status);
}

// -- toasts -------------------------------------------------------------------------------------

/** A toast; `action` = {label, run}. Returns a function that dismisses it. */
export function toast(message, { kind = "info", action, timeout = 5000 } = {}) {
  const region = document.getElementById("toasts");
  if (!region) return () => {};
  const item = h(`div.toast.toast-${kind}`, { role: kind === "error" ? "alert" : undefined });
  const dismiss = () => {
    clearTimeout(timer);
    item.classList.add("leaving");
    setTimeout(() => item.remove(), 180);
  };
  item.append(h("span.toast-text", {}, message));
  if (action) {
    item.append(h("button.btn.btn-sm.toast-action", {
      type: "button",
      onclick: async () => { dismiss(); await action.run(); },
    }, action.label));
  }
  item.append(h("button.icon-btn.toast-close", { type: "button", "aria-label": "Dismiss", onclick: dismiss }, "×"));
  region.append(item);
  const timer = timeout ? setTimeout(dismiss, timeout) : null;
  return dismiss;
}

export function errorToast(prefix, error) {
  const detail = error instanceof Error ? error.message : String(error);
  toast(prefix ? `${prefix}: ${detail}` : detail, { kind: "error", timeout: 8000 });
}

// -- dialogs ------------------------------------------------------------------------------------

/** Open a modal dialog and give focus back to whatever had it when the dialog closes. */
export function openModal(dialog, focusTarget) {
  const opener = document.activeElement;
  if (!dialog.open) dialog.showModal();
  const onClose = () => {
    dialog.removeEventListener("close", onClose);
    if (opener && opener.isConnected && typeof opener.focus === "function") opener.focus();
  };
  dialog.addEventListener("close", onClose);
  const target = focusTarget || dialog.querySelector("[autofocus]") || dialog.querySelector("[data-action=close]");
  if (target) target.focus();
}

/** Close a dialog when its backdrop (the dialog element itself, outside its content) is clicked. */
export function closeOnBackdrop(dialog) {
  dialog.addEventListener("click", (event) => {
    if (event.target !== dialog) return;
    const rect = dialog.getBoundingClientRect();
    const inside = event.clientX >= rect.left && event.clientX <= rect.right &&
      event.clientY >= rect.top && event.clientY <= rect.bottom;
    if (!inside) dialog.close();
  });
}

/** Ask with the shared #confirm-dialog; resolves true when confirmed. */
export function confirmDialog({ title, body, confirmLabel = "Delete" }) {
  const dialog = document.getElementById("confirm-dialog");
  if (!dialog) return Promise.resolve(window.confirm(body || title));
  dialog.querySelector("#confirm-title").textContent = title;
  dialog.querySelector("#confirm-body").textContent = body || "";
  dialog.querySelector("[data-slot=confirm]").textContent = confirmLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    const onClose = () => {
      dialog.removeEventListener("close", onClose);
      resolve(dialog.returnValue === "confirm");
    };
    dialog.addEventListener("close", onClose);
    openModal(dialog, dialog.querySelector("button[value=cancel]"));
  });
}

export function readJson(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
}

// -- page-wide behaviour ------------------------------------------------------------------------

function installLogout() {
  for (const button of document.querySelectorAll("[data-action=logout]")) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api("POST", "/api/auth/logout", { redirectOn401: false });
      } catch (error) {
        if (error.status !== 401) {
          button.disabled = false;
          errorToast("Could not sign out", error);
          return;
        }
      }
      location.assign("/login");
    });
  }
}

installLogout();
refreshTimes();
setInterval(() => refreshTimes(), 30000);
for (const dialog of document.querySelectorAll("dialog")) {
  closeOnBackdrop(dialog);
  for (const close of dialog.querySelectorAll("[data-action=close]")) {
    close.addEventListener("click", () => dialog.close());
  }
}
