// Shared helpers for every page: translations, the JSON API client (CSRF, problem details), DOM
// building, toasts, relative times, dialogs, and the sign-out button.

// -- language -----------------------------------------------------------------------------------
// The page embeds its language's messages (the catalogue's part that these modules use) as JSON;
// t() looks a message up by its English text, and English is what it gives when there is none.

/** The page's language (BCP 47, from <html lang>): "en", "zh-TW" or "zh-CN". */
export const LANG = document.documentElement.lang || "en";

const CATALOGUE = (() => {
  const node = document.getElementById("i18n-catalogue");
  try {
    return node ? JSON.parse(node.textContent) : {};
  } catch {
    return {};
  }
})();

function fill(text, vars) {
  if (!vars) return text;
  return text.replace(/%\((\w+)\)[sd]/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

/** The message in the page's language: t("Adopted"), t("%(n)s of %(total)s", {n, total}). */
export function t(message, vars) {
  const found = CATALOGUE[message];
  return fill(typeof found === "string" && found ? found : message, vars);
}

/** A message with a count: tn("%(num)s image", "%(num)s images", n). `num` is filled in. */
export function tn(singular, plural, n, vars = {}) {
  const forms = CATALOGUE[singular];
  let text;
  if (Array.isArray(forms) && forms.every(Boolean)) {
    text = forms.length === 1 ? forms[0] : forms[n === 1 ? 0 : Math.min(1, forms.length - 1)];
  } else {
    text = n === 1 ? singular : plural;
  }
  return fill(text, { num: formatNumber(n), ...vars });
}

/** A number in the page's language. */
export function formatNumber(value) {
  return new Intl.NumberFormat(LANG).format(value);
}

/** A list of names in a sentence: "Object", "Object and Scene", "Object, Scene, and Poster". */
export function formatList(items) {
  return new Intl.ListFormat(LANG, { style: "long", type: "conjunction" }).format(items.map(String));
}

/**
 * A translated text whose %(name)s placeholders are DOM nodes (a link, a <time>):
 * h("p", {}, withNodes(t("Start a run from %(flows)s."), { flows: link })).
 */
export function withNodes(text, nodes) {
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(/%\((\w+)\)s/g)) {
    if (!(match[1] in nodes)) continue;
    if (match.index > last) parts.push(text.slice(last, match.index));
    parts.push(nodes[match[1]]);
    last = match.index + match[0].length;
  }
  if (last < text.length) parts.push(text.slice(last));
  return parts;
}

// -- API problems -------------------------------------------------------------------------------
// The API's `detail` is English; people read a message chosen by the problem's stable `code`.

/** What went wrong, and what to do, in the page's language, for an ApiError (or any error). */
export function problemMessage(error) {
  const code = error && typeof error === "object" ? error.code : undefined;
  const status = error && typeof error === "object" ? error.status : undefined;
  switch (code) {
    case "not_found":
      return t("It could not be found; it may have been deleted. Reload the page and try again.");
    case "validation_error":
      return t("Some of what was sent is not valid. Check what you entered and try again.");
    case "step_not_ready":
      return t("An earlier step has no adopted image yet. Adopt one there first, then try again.");
    case "not_adoptable":
      return t("Only a finished image that has not been deleted can be adopted.");
    case "idempotency_key_reused":
      return t("This request was already sent with different content. Reload the page and try again.");
    case "queue_full":
      return t("Too many of your generations are waiting. Let some of them finish, then try again.");
    case "rate_limited":
      return t("Too many attempts. Wait a moment, then try again.");
    case "invalid_credentials":
      return t("Wrong email or password. Check them and try again.");
    case "email_taken":
      return t("That email already has an account. Sign in instead.");
    case "registration_closed":
      return t("Registration is closed on this server. Ask its administrator for an account.");
    case "csrf_failed":
      return t("The page's security check failed. Reload the page and try again.");
    case "unauthenticated":
      return t("Your session has ended. Sign in again.");
    case "payload_too_large":
      return t("What was sent is too large. Use a smaller file or a shorter text, then try again.");
    case "unsupported_media_type":
      return t("That file is not an image FlowStudio can store. Upload a PNG, JPEG or WebP image.");
    case "invalid_cursor":
      return t("The list could not continue where it left off. Reload the page.");
    case "conflict":
      return t("This changed in the meantime. Reload the page and try again.");
    case "unavailable":
      return t("The service is not ready yet. Try again in a moment.");
    case "database_unavailable":
      return t("The database is not answering right now. Try again in a few seconds.");
    case "internal_error":
      return t("Something went wrong on the server; it has been logged. Try again.");
    case "network_error":
      return t("The server could not be reached. Check your connection and try again.");
    default:
      if (status === 0) return t("The server could not be reached. Check your connection and try again.");
      if (status >= 500) return t("The server ran into a problem. Try again in a moment.");
      return t("Something went wrong. Reload the page and try again.");
  }
}

export class ApiError extends Error {
  constructor(status, problem) {
    const code = (problem && problem.code) || "error";
    super(problemMessage({ code, status }));
    this.status = status;
    this.code = code;
    this.problem = problem || {};
    // The API's own words (English), for debugging; never shown on the page.
    this.detail = (problem && (problem.detail || problem.title)) || `Request failed (${status})`;
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

const RTF = new Intl.RelativeTimeFormat(LANG, { numeric: "auto" });
const ABSOLUTE = new Intl.DateTimeFormat(LANG, { dateStyle: "medium", timeStyle: "short" });

export function relativeTime(iso) {
  if (!iso) return "";
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  const abs = Math.abs(seconds);
  if (abs < 45) return t("just now");
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
  if (ms < 1000) return t("%(ms)s ms", { ms: formatNumber(Math.round(ms)) });
  if (ms < 60000) return t("%(seconds)s s", { seconds: formatDecimal(ms / 1000, 1, 1) });
  return t("%(minutes)s min %(seconds)s s", {
    minutes: formatNumber(Math.floor(ms / 60000)), seconds: formatNumber(Math.round((ms % 60000) / 1000)),
  });
}

function formatDecimal(value, min, max) {
  return new Intl.NumberFormat(LANG, { minimumFractionDigits: min, maximumFractionDigits: max }).format(value);
}

export function generationDuration(gen) {
  const total = gen.output && gen.output.timings && gen.output.timings.total_ms;
  if (typeof total === "number") return total;
  if (gen.started_at && gen.finished_at) return new Date(gen.finished_at) - new Date(gen.started_at);
  return null;
}

export function formatBytes(bytes) {
  if (!bytes && bytes !== 0) return "";
  if (bytes < 1024) return t("%(size)s B", { size: formatNumber(bytes) });
  if (bytes < 1024 * 1024) return t("%(size)s KB", { size: formatDecimal(bytes / 1024, 1, 1) });
  return t("%(size)s MB", { size: formatDecimal(bytes / 1024 / 1024, 2, 2) });
}

export function formatTemperature(value) {
  return value === null || value === undefined ? "—" : formatDecimal(Number(value), 1, 2);
}

/** A generation's status (the API's word) as people read it. */
export const STATUS_LABELS = {
  pending: t("Queued"),
  running: t("Generating"),
  succeeded: t("Done"),
  failed: t("Failed"),
  canceled: t("Canceled"),
};

export function statusLabel(status) {
  return STATUS_LABELS[status] || status;
}

/** Why a generation failed, for a person (its error code stays in the API and the drawer). */
export function failureLabel(code) {
  const labels = {
    content_blocked: t("Blocked by the provider's content policy"),
    provider_timeout: t("The provider took too long"),
    rate_limited: t("The provider is busy; try again later"),
    invalid_request: t("The provider refused the request"),
    provider_unavailable: t("The provider is unavailable"),
    provider_error: t("The provider failed"),
    storage_error: t("The image could not be stored"),
  };
  return labels[code] || code || t("Failed");
}

export function statusBadge(status) {
  return h(`span.badge.badge-${status}`, {}, statusLabel(status));
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
  item.append(h("button.icon-btn.toast-close", { type: "button", "aria-label": t("Dismiss"), onclick: dismiss }, "×"));
  region.append(item);
  const timer = timeout ? setTimeout(dismiss, timeout) : null;
  return dismiss;
}

/** An error toast: `prefix` says what failed (translated), problemMessage(error) why. */
export function errorToast(prefix, error) {
  const problem = problemMessage(error);
  toast(prefix ? t("%(action)s: %(problem)s", { action: prefix, problem }) : problem, { kind: "error", timeout: 8000 });
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
export function confirmDialog({ title, body, confirmLabel = t("Delete") }) {
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
          errorToast(t("Could not sign out"), error);
          return;
        }
      }
      location.assign("/login");
    });
  }
}

/** The header's language picker: remembered in a cookie, and with the account when signed in. */
function installLanguageSwitch() {
  for (const select of document.querySelectorAll("select[data-action=language]")) {
    select.addEventListener("change", async () => {
      const lang = select.value;
      select.disabled = true;
      try {
        if (select.dataset.signedIn === "true") {
          await api("PUT", "/api/auth/me/language", { body: { language: lang } });
        } else {
          document.cookie = `flowstudio_lang=${encodeURIComponent(lang)}; path=/; max-age=31536000; samesite=lax`;
        }
        location.reload();
      } catch (error) {
        select.disabled = false;
        errorToast(t("Could not change the language"), error);
      }
    });
  }
}

installLogout();
installLanguageSwitch();
refreshTimes();
setInterval(() => refreshTimes(), 30000);
for (const dialog of document.querySelectorAll("dialog")) {
  closeOnBackdrop(dialog);
  for (const close of dialog.querySelectorAll("[data-action=close]")) {
    close.addEventListener("click", () => dialog.close());
  }
}
