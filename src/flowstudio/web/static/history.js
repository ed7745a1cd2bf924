// The history page: filters kept in the URL, cursor pagination with infinite scroll, the detail
// drawer, delete with confirmation + optimistic removal + undo, multi-select batch delete, and the
// trash view with restore.

import {
  absoluteTime, api, confirmDialog, errorToast, failureLabel, formatBytes, formatDuration, formatList, formatNumber, formatTemperature,
  generationDuration, h, icon, openModal, problemMessage, readJson, refreshTimes, statusBadge, statusLabel, t, timeEl, tn,
  toast, withNodes,
} from "./common.js";
import { guardedImage, Lightbox } from "./candidates.js";

const PAGE_SIZE = 30;
const FILTERS = ["q", "flow", "status", "since", "until", "adopted", "run_id", "step_id", "deleted"];

const flows = readJson("flows-data") || [];
// The API names flows and steps as their flow files do (English); the page's flows-data has
// those titles in the page's language, so they win when the flow is known.
const flowOf = (slug) => flows.find((f) => f.slug === slug);
const stepTitleOf = (slug, stepId) => {
  const step = ((flowOf(slug) || {}).steps || []).find((s) => s.id === stepId);
  return step ? step.title : null;
};
const flowName = (gen) => (flowOf(gen.flow) || {}).title || gen.flow_title || gen.flow;
const stepName = (gen, stepId = gen.step_id) =>
  stepTitleOf(gen.flow, stepId) || (stepId === gen.step_id && gen.step_title) || stepId;

const form = document.getElementById("filters");
const grid = document.getElementById("history-grid");
const moreButton = document.querySelector("[data-action=more]");
const endNote = document.querySelector("[data-slot=end]");
const emptyBox = document.querySelector("[data-slot=empty]");
const countNote = document.querySelector("[data-slot=count]");
const chips = document.querySelector("[data-slot=chips]");
const selectionBar = document.getElementById("selection-bar");
const drawer = document.getElementById("drawer");
const lightbox = new Lightbox(document.getElementById("lightbox"));

const state = {
  filters: {},
  items: [], // loaded generations, in display order
  cursor: null,
  loading: null,
  generation: 0, // bumps when filters change, so stale pages are dropped
  selected: new Set(),
  drawerId: null,
};

const isTrash = () => state.filters.deleted === "true";
const byId = (id) => state.items.find((g) => g.id === id);

// -- filters <-> URL ----------------------------------------------------------------------------

function filtersFromUrl() {
  const params = new URLSearchParams(location.search);
  const filters = {};
  for (const name of FILTERS) {
    const value = params.get(name);
    if (value) filters[name] = value;
  }
  return filters;
}

function fillForm(filters) {
  for (const name of FILTERS) {
    const field = form.elements[name];
    if (!field) continue;
    if (field.type === "checkbox") field.checked = filters[name] === "true";
    else field.value = filters[name] || "";
  }
}

function filtersFromForm() {
  const filters = {};
  for (const name of FILTERS) {
    const field = form.elements[name];
    if (!field) continue;
    const value = field.type === "checkbox" ? (field.checked ? "true" : "") : field.value.trim();
    if (value) filters[name] = value;
  }
  return filters;
}

function urlFor(filters) {
  const params = new URLSearchParams(filters);
  const query = params.toString();
  return query ? `/history?${query}` : "/history";
}

// Dates from <input type=date> are local days; the API wants instants.
function dayStart(value) {
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d).toISOString();
}
function dayEnd(value) {
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d + 1).toISOString();
}

function apiQuery(filters, cursor) {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  for (const [name, value] of Object.entries(filters)) {
    if (name === "since") params.set("since", dayStart(value));
    else if (name === "until") params.set("until", dayEnd(value));
    else params.set(name, value);
  }
  if (cursor) params.set("cursor", cursor);
  return params.toString();
}

function applyFilters(filters, { push = true } = {}) {
  state.filters = filters;
  if (push) history.pushState(null, "", urlFor(filters));
  renderChrome();
  reload();
}

function renderFilterToggle() {
  const active = ["flow", "status", "since", "until", "adopted"].filter((n) => state.filters[n]).length;
  const pill = form.querySelector("[data-slot=filter-count]");
  pill.textContent = formatNumber(active);
  pill.hidden = active === 0;
}

function renderChrome() {
  renderFilterToggle();
  const trash = isTrash();
  for (const seg of document.querySelectorAll(".segmented .seg")) {
    const active = (seg.dataset.view === "trash") === trash;
    seg.classList.toggle("active", active);
    if (active) seg.setAttribute("aria-current", "page"); else seg.removeAttribute("aria-current");
  }
  document.querySelector("[data-slot=heading]").textContent = trash ? t("Trash") : t("History");
  document.querySelector("[data-slot=subheading]").textContent = trash
    ? t("Deleted generations. Restore them before they are purged for good.")
    : t("Every image you generated, newest first.");
  selectionBar.querySelector("[data-action=delete-selected]").hidden = trash;
  selectionBar.querySelector("[data-action=restore-selected]").hidden = !trash;

  const chipList = [];
  if (state.filters.run_id) {
    const known = state.items.find((g) => g.run_id === state.filters.run_id);
    chipList.push(["run_id", known && known.run_title ? t("Run: %(title)s", { title: known.run_title }) : t("One run")]);
  }
  if (state.filters.step_id) chipList.push(["step_id", t("Step %(step)s", { step: state.filters.step_id })]);
  chips.replaceChildren(...chipList.map(([name, label]) => h("span.chip", {}, label,
    h("button.icon-btn.chip-x", {
      type: "button", "aria-label": t("Remove filter %(filter)s", { filter: label }),
      onclick: () => { const next = { ...state.filters }; delete next[name]; fillForm(next); applyFilters(next); },
    }, "×"))));
  chips.hidden = !chipList.length;
}

// -- loading ------------------------------------------------------------------------------------

async function loadPage() {
  if (state.loading) return state.loading.catch(() => {});
  const generation = state.generation;
  grid.setAttribute("aria-busy", "true");
  moreButton.disabled = true;
  state.loading = (async () => {
    try {
      const page = await api("GET", `/api/history?${apiQuery(state.filters, state.cursor)}`);
      if (generation !== state.generation) return;
      const known = new Set(state.items.map((g) => g.id));
      const fresh = page.items.filter((g) => !known.has(g.id));
      state.items.push(...fresh);
      state.cursor = page.next_cursor;
      grid.append(...fresh.map(card));
      refreshTimes(grid);
      if (state.filters.run_id && fresh.length) renderChrome();
    } catch (error) {
      if (generation !== state.generation) return;
      state.cursor = null;
      const message = error.status === 404 && error.code === "not_found"
        ? t("History is not available on this server yet.")
        : error.code === "validation_error" || error.code === "invalid_cursor"
          ? t("These filters don't work: %(problem)s", { problem: problemMessage(error) })
          : t("Could not load history: %(problem)s", { problem: problemMessage(error) });
      emptyBox.replaceChildren(h("p", {}, h("strong", {}, message)),
        h("p", {}, h("button.btn.btn-sm", { type: "button", onclick: () => reload() }, t("Try again"))));
      emptyBox.hidden = false;
      throw error;
    } finally {
      if (generation === state.generation) {
        state.loading = null;
        grid.setAttribute("aria-busy", "false");
        moreButton.disabled = false;
        renderFooter();
      }
    }
  })();
  return state.loading.catch(() => {});
}

function reload() {
  state.generation += 1;
  state.loading = null;
  state.items = [];
  state.cursor = null;
  state.selected.clear();
  grid.replaceChildren();
  emptyBox.hidden = true;
  renderSelection();
  return loadPage();
}

function renderFooter() {
  const filtered = Object.keys(state.filters).some((k) => k !== "deleted");
  moreButton.hidden = !state.cursor;
  endNote.hidden = Boolean(state.cursor) || state.items.length === 0;
  const shown = state.items.length;
  countNote.textContent = !shown ? ""
    : state.cursor ? tn("%(num)s+ generation", "%(num)s+ generations", shown)
      : tn("%(num)s generation", "%(num)s generations", shown);
  if (!state.items.length && emptyBox.hidden) {
    if (isTrash()) {
      emptyBox.replaceChildren(h("p", {}, h("strong", {}, t("The trash is empty."))),
        h("p.muted", {}, t("Deleted generations stay here for a while, ready to restore.")));
    } else if (filtered) {
      emptyBox.replaceChildren(h("p", {}, h("strong", {}, t("Nothing matches these filters."))),
        h("p", {}, h("button.btn.btn-sm", { type: "button", onclick: resetFilters }, t("Reset filters"))));
    } else {
      emptyBox.replaceChildren(h("p", {}, h("strong", {}, t("No generations yet."))),
        h("p.muted", {}, withNodes(t("Start a run from %(flows)s; every candidate lands here."), {
          flows: h("a", { href: "/" }, t("your flows")),
        })));
    }
    emptyBox.hidden = false;
  } else if (state.items.length) {
    emptyBox.hidden = true;
  }
}

function resetFilters() {
  const next = isTrash() ? { deleted: "true" } : {};
  fillForm(next);
  applyFilters(next);
}

// -- cards --------------------------------------------------------------------------------------

function label(gen) {
  return `${stepName(gen)} · ${flowName(gen)}`;
}

function card(gen) {
  const checkbox = h("input.select-check", {
    type: "checkbox", "aria-label": t("Select %(item)s, %(time)s", { item: label(gen), time: absoluteTime(gen.created_at) }),
    checked: state.selected.has(gen.id),
    onchange: (event) => {
      if (event.target.checked) state.selected.add(gen.id); else state.selected.delete(gen.id);
      event.target.closest(".hist-card").classList.toggle("is-selected", event.target.checked);
      renderSelection();
    },
  });
  let preview;
  if (gen.status === "succeeded" && gen.asset) {
    preview = guardedImage(gen.asset.thumbnail_url, { alt: "" });
  } else if (gen.status === "failed") {
    preview = h("span.hist-placeholder.is-failed", {}, icon("alert"), h("span", {}, gen.error ? failureLabel(gen.error.code) : statusLabel("failed")));
  } else {
    preview = h(`span.hist-placeholder.is-${gen.status}`, {},
      gen.status === "pending" || gen.status === "running" ? h("span.spinner", { "aria-hidden": "true" }) : null,
      h("span", {}, statusLabel(gen.status)));
  }
  const el = h("li.hist-card", { dataset: { id: gen.id, status: gen.status } },
    h("button.hist-thumb", {
      type: "button",
      "aria-label": t("Details of %(item)s, %(status)s, %(time)s", {
        item: label(gen), status: statusLabel(gen.status), time: absoluteTime(gen.created_at),
      }),
      onclick: () => openDrawer(gen.id),
    }, preview),
    h("label.select-box", {}, checkbox),
    gen.adopted ? h("span.hist-adopted", { title: t("Adopted in its run") }, icon("check"), h("span.visually-hidden", {}, t("Adopted"))) : null,
    h("div.hist-meta", {},
      h("div.hist-line", {}, h("span.hist-step", {}, stepName(gen)), statusBadge(gen.status)),
      h("div.hist-line", {}, h("span.tag", {}, flowName(gen)), timeEl(gen.created_at)),
      gen.run_title ? h("div.hist-run.muted.small", { title: gen.run_title }, gen.run_title) : null));
  if (state.selected.has(gen.id)) el.classList.add("is-selected");
  return el;
}

function cardEl(id) {
  return grid.querySelector(`.hist-card[data-id="${id}"]`);
}

function renderSelection() {
  const count = state.selected.size;
  selectionBar.hidden = count === 0;
  selectionBar.querySelector("[data-slot=selected-count]").textContent = tn("%(num)s selected", "%(num)s selected", count);
}

// -- drawer -------------------------------------------------------------------------------------

/** What the drawer says about a generation that has no image (yet). */
function stateSentence(status) {
  switch (status) {
    case "pending": return t("This generation is queued.");
    case "running": return t("This generation is being generated.");
    case "canceled": return t("This generation was canceled.");
    case "succeeded": return t("This generation has no image.");
    default: return t("This generation is %(status)s.", { status: statusLabel(status) });
  }
}

/** The worker's timings (output.timings), as people read them. */
function timingLabels() {
  return {
    inputs_ms: t("inputs"),
    provider_ms: t("provider"),
    processing_ms: t("processing"),
    storage_ms: t("storage"),
  };
}

function adoptedMessage(gen, invalidated) {
  const steps = formatList(invalidated.map((id) => stepName(gen, id)));
  const n = invalidated.length;
  if (gen.run_title) {
    return n
      ? tn("Adopted in “%(run)s”. %(steps)s needs a new adoption.", "Adopted in “%(run)s”. %(steps)s need a new adoption.", n,
        { run: gen.run_title, steps })
      : t("Adopted in “%(run)s”.", { run: gen.run_title });
  }
  return n
    ? tn("Adopted in its run. %(steps)s needs a new adoption.", "Adopted in its run. %(steps)s need a new adoption.", n, { steps })
    : t("Adopted in its run.");
}

function row(term, ...value) {
  return [h("dt", {}, term), h("dd", {}, ...value)];
}

function drawerContent(gen) {
  const body = [];
  if (gen.status === "succeeded" && gen.asset) {
    body.push(h("button.drawer-image", {
      type: "button", "aria-label": t("View full size"),
      onclick: () => {
        const viewable = state.items.filter((g) => g.status === "succeeded" && g.asset);
        const index = viewable.findIndex((g) => g.id === gen.id);
        lightbox.open(index >= 0 ? viewable : [gen], Math.max(index, 0), { label });
      },
    }, guardedImage(gen.asset.url, {
      alt: t("%(item)s: %(prompt)s", { item: label(gen), prompt: gen.prompt.slice(0, 120) }), loading: "eager",
    })));
  } else if (gen.status === "failed") {
    body.push(h("div.notice.notice-error", { role: "note" }, icon("alert"),
      h("div", {}, h("strong", {}, t("Failed: %(code)s", { code: gen.error ? gen.error.code : "error" })),
        h("p", {}, gen.error ? gen.error.message : ""))));
  } else {
    body.push(h("div.notice", {}, stateSentence(gen.status)));
  }

  const actions = h("div.drawer-actions.row.gap.wrap");
  if (gen.deleted_at) {
    actions.append(h("button.btn.btn-primary", { type: "button", dataset: { action: "restore" }, onclick: () => restore([gen.id]) }, t("Restore")));
  } else {
    if (gen.status === "succeeded" && gen.asset) {
      actions.append(h(`button.btn${gen.adopted ? ".btn-adopted" : ".btn-primary"}`, {
        type: "button", dataset: { action: "adopt" }, disabled: gen.adopted, onclick: () => adoptFromDrawer(gen),
      }, gen.adopted ? [icon("check"), t("Adopted")] : t("Adopt in its run")));
      actions.append(h("a.btn", { href: gen.asset.download_url, download: "" }, icon("download"), t("Download")));
    }
    actions.append(h("button.btn.btn-danger-ghost", { type: "button", dataset: { action: "delete" }, onclick: () => deleteOne(gen) }, icon("trash"), t("Delete")));
  }
  body.push(actions);

  body.push(h("section.drawer-section", {}, h("h3", {}, t("Prompt")), h("p.prompt-text", {}, gen.prompt)));

  const params = gen.params || {};
  const settings = [
    ...row(t("Status"), statusBadge(gen.status)),
    ...row(t("Flow"), flowName(gen)),
    ...row(t("Step"), stepName(gen)),
    ...row(t("Run"), h("a", { href: `/runs/${gen.run_id}#step-${gen.step_id}`, dataset: { link: "run" } }, gen.run_title || t("Open the run"))),
    ...row(t("Temperature"), formatTemperature(gen.temperature)),
    ...row(t("Seed"), gen.seed ?? "—"),
  ];
  if (params.width && params.height) settings.push(...row(t("Requested size"), `${params.width}×${params.height}`));
  if (params.kind) {
    const kinds = { generate: t("generate"), edit: t("edit") };
    settings.push(...row(t("Kind"), kinds[params.kind] || params.kind));
  }
  if (params.inputs && params.inputs.length) settings.push(...row(t("Input images"), params.inputs.map((i) => i.step_id).join(", ")));
  if (params.options && Object.keys(params.options).length) settings.push(...row(t("Options"), h("code", {}, JSON.stringify(params.options))));
  body.push(h("section.drawer-section", {}, h("h3", {}, t("Settings")), h("dl.kv", {}, settings)));

  const provider = [
    ...row(t("Provider"), gen.provider),
    ...row(t("Model"), gen.model),
  ];
  if (gen.provider_request_id) provider.push(...row(t("Request id"), h("code", {}, gen.provider_request_id)));
  if (gen.attempts) provider.push(...row(t("Attempts"), formatNumber(gen.attempts)));
  body.push(h("section.drawer-section", {}, h("h3", {}, t("Provider")), h("dl.kv", {}, provider)));

  const timings = (gen.output && gen.output.timings) || {};
  const times = [...row(t("Requested"), absoluteTime(gen.created_at))];
  if (gen.started_at) times.push(...row(t("Started"), absoluteTime(gen.started_at)));
  if (gen.finished_at) times.push(...row(t("Finished"), absoluteTime(gen.finished_at)));
  const total = generationDuration(gen);
  if (total !== null) times.push(...row(t("Duration"), formatDuration(total)));
  const timingNames = timingLabels();
  for (const [name, value] of Object.entries(timings)) {
    if (name === "total_ms" || typeof value !== "number") continue;
    times.push(...row(timingNames[name] || name.replace(/_ms$/, "").replace(/_/g, " "), formatDuration(value)));
  }
  if (gen.deleted_at) times.push(...row(t("Deleted"), absoluteTime(gen.deleted_at)));
  body.push(h("section.drawer-section", {}, h("h3", {}, t("Timings")), h("dl.kv", {}, times)));

  if (gen.asset) {
    body.push(h("section.drawer-section", {}, h("h3", {}, t("Output")), h("dl.kv", {},
      ...row(t("Dimensions"), `${gen.asset.width}×${gen.asset.height}`),
      ...row(t("Size"), formatBytes(gen.asset.size_bytes)),
      ...row(t("Type"), gen.asset.mime),
      ...row("SHA-256", h("code.hash", {}, gen.asset.sha256)))));
  }
  return body;
}

async function openDrawer(id) {
  const summary = byId(id);
  state.drawerId = id;
  const body = drawer.querySelector("[data-slot=body]");
  drawer.querySelector("#drawer-title").textContent = summary ? label(summary) : t("Generation");
  body.replaceChildren(...(summary ? drawerContent(summary) : [h("p.muted", {}, t("Loading…"))]));
  openModal(drawer);
  try {
    const full = await api("GET", `/api/history/${id}`);
    if (state.drawerId !== id) return;
    const index = state.items.findIndex((g) => g.id === id);
    if (index >= 0) state.items[index] = { ...state.items[index], ...full };
    body.replaceChildren(...drawerContent(index >= 0 ? state.items[index] : full));
  } catch (error) {
    if (!summary) body.replaceChildren(h("p", {}, t("Could not load this generation: %(problem)s", { problem: problemMessage(error) })));
  }
}

async function adoptFromDrawer(gen) {
  const button = drawer.querySelector("[data-action=adopt]");
  if (button) { button.disabled = true; button.replaceChildren(icon("check"), t("Adopted")); }
  try {
    const result = await api("POST", `/api/runs/${gen.run_id}/steps/${encodeURIComponent(gen.step_id)}/adopt`, {
      body: { generation_id: gen.id },
    });
    for (const item of state.items) {
      if (item.run_id === gen.run_id && item.step_id === gen.step_id) item.adopted = item.id === gen.id;
      if (item.run_id === gen.run_id && result.invalidated_steps.includes(item.step_id)) item.adopted = false;
    }
    for (const item of state.items.filter((i) => i.run_id === gen.run_id)) cardEl(item.id)?.replaceWith(card(item));
    toast(adoptedMessage(gen, result.invalidated_steps), { kind: "success" });
    drawer.querySelector("[data-slot=body]").replaceChildren(...drawerContent(byId(gen.id) || { ...gen, adopted: true }));
  } catch (error) {
    if (button) { button.disabled = false; button.textContent = t("Adopt in its run"); }
    errorToast(t("Could not adopt"), error);
  }
}

// -- delete, undo, restore ----------------------------------------------------------------------

function removeCards(ids) {
  const removed = [];
  for (const id of ids) {
    const index = state.items.findIndex((g) => g.id === id);
    if (index < 0) continue;
    removed.push({ gen: state.items[index], index });
    state.items.splice(index, 1);
    cardEl(id)?.remove();
    state.selected.delete(id);
  }
  renderSelection();
  renderFooter();
  return removed;
}

function putBack(removed) {
  for (const { gen, index } of [...removed].sort((a, b) => a.index - b.index)) {
    if (byId(gen.id)) continue;
    const at = Math.min(index, state.items.length);
    state.items.splice(at, 0, gen);
    const next = state.items[at + 1] ? cardEl(state.items[at + 1].id) : null;
    grid.insertBefore(card(gen), next);
  }
  emptyBox.hidden = true;
  renderFooter();
  refreshTimes(grid);
}

async function undoDelete(ids, removed) {
  try {
    const results = await Promise.allSettled(ids.map((id) => api("POST", `/api/history/${id}/restore`)));
    const failed = results.filter((r) => r.status === "rejected");
    if (!isTrash()) putBack(removed.map((r) => {
      const ok = results[ids.indexOf(r.gen.id)];
      return ok && ok.status === "fulfilled" && ok.value ? { ...r, gen: { ...r.gen, ...ok.value, deleted_at: null } } : r;
    }).filter((r) => results[ids.indexOf(r.gen.id)].status === "fulfilled"));
    if (failed.length) {
      errorToast(tn("Could not restore %(num)s generation", "Could not restore %(num)s generations", failed.length), failed[0].reason);
    } else {
      toast(ids.length === 1 ? t("Restored.") : tn("Restored %(num)s generation.", "Restored %(num)s generations.", ids.length),
        { kind: "success" });
    }
  } catch (error) {
    errorToast(t("Could not undo"), error);
  }
}

async function deleteOne(gen) {
  const ok = await confirmDialog({
    title: t("Delete this generation?"),
    body: gen.adopted
      ? t("It is adopted in its run: deleting it clears that adoption and the steps after it need a new one. You can undo right after, or restore it from the trash.")
      : t("It moves to the trash; you can undo right after, or restore it from the trash later."),
  });
  if (!ok) return;
  if (drawer.open) drawer.close();
  const removed = removeCards([gen.id]);
  try {
    const result = await api("DELETE", `/api/history/${gen.id}`);
    const lost = (result && result.invalidated_steps) || [];
    const message = lost.length
      ? tn("Deleted. %(steps)s lost its adoption.", "Deleted. %(steps)s lost their adoption.", lost.length,
        { steps: formatList(lost.map((id) => stepName(gen, id))) })
      : t("Deleted.");
    toast(message, { action: { label: t("Undo"), run: () => undoDelete([gen.id], removed) }, timeout: 8000 });
  } catch (error) {
    putBack(removed);
    errorToast(t("Could not delete"), error);
  }
}

async function deleteSelected() {
  const ids = [...state.selected];
  if (!ids.length) return;
  const ok = await confirmDialog({
    title: tn("Delete %(num)s generation?", "Delete %(num)s generations?", ids.length),
    body: t("They move to the trash. Adopted ones are un-adopted in their runs. You can undo right after."),
    confirmLabel: t("Delete %(count)s", { count: formatNumber(ids.length) }),
  });
  if (!ok) return;
  const removed = removeCards(ids);
  try {
    const result = await api("POST", "/api/history/delete", { body: { ids } });
    const deleted = result.deleted.map((d) => (typeof d === "string" ? d : d.id));
    toast(tn("Deleted %(num)s generation.", "Deleted %(num)s generations.", deleted.length), {
      action: { label: t("Undo"), run: () => undoDelete(deleted, removed.filter((r) => deleted.includes(r.gen.id))) },
      timeout: 8000,
    });
  } catch (error) {
    putBack(removed);
    errorToast(t("Could not delete"), error);
  }
}

async function restore(ids) {
  if (drawer.open) drawer.close();
  const removed = removeCards(ids);
  const results = await Promise.allSettled(ids.map((id) => api("POST", `/api/history/${id}/restore`)));
  const failed = removed.filter((r) => results[ids.indexOf(r.gen.id)].status === "rejected");
  if (failed.length) {
    putBack(failed);
    errorToast(tn("Could not restore %(num)s generation", "Could not restore %(num)s generations", failed.length),
      results.find((r) => r.status === "rejected").reason);
  }
  const restored = ids.length - failed.length;
  if (restored) {
    toast(restored === 1 ? t("Restored to history.")
      : tn("Restored %(num)s generation to history.", "Restored %(num)s generations to history.", restored), { kind: "success" });
  }
}

// -- wiring -------------------------------------------------------------------------------------

form.addEventListener("submit", (event) => {
  event.preventDefault();
  applyFilters(filtersFromForm());
});
for (const name of ["flow", "status", "since", "until", "adopted"]) {
  form.elements[name].addEventListener("change", () => applyFilters(filtersFromForm()));
}
let searchTimer = null;
form.elements.q.addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    const filters = filtersFromForm();
    if ((filters.q || "") === (state.filters.q || "")) return;
    state.filters = filters;
    history.replaceState(null, "", urlFor(filters));
    renderChrome();
    reload();
  }, 300);
});
form.querySelector("[data-action=reset]").addEventListener("click", resetFilters);
form.querySelector("[data-action=toggle-filters]").addEventListener("click", (event) => {
  const open = form.classList.toggle("filters-open");
  event.currentTarget.setAttribute("aria-expanded", String(open));
  if (open) form.elements.flow.focus();
});
window.addEventListener("popstate", () => {
  const filters = filtersFromUrl();
  fillForm(filters);
  applyFilters(filters, { push: false });
});

for (const seg of document.querySelectorAll(".segmented .seg")) {
  seg.addEventListener("click", (event) => {
    event.preventDefault();
    const next = { ...filtersFromForm() };
    if (seg.dataset.view === "trash") next.deleted = "true"; else delete next.deleted;
    fillForm(next);
    applyFilters(next);
  });
}

moreButton.addEventListener("click", () => loadPage());
const sentinel = document.getElementById("scroll-sentinel");
if ("IntersectionObserver" in window) {
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && state.cursor && !state.loading) loadPage();
  }, { rootMargin: "600px" }).observe(sentinel);
}

selectionBar.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const action = button.dataset.action;
  if (action === "select-all") {
    for (const gen of state.items) state.selected.add(gen.id);
    for (const box of grid.querySelectorAll(".select-check")) { box.checked = true; box.closest(".hist-card").classList.add("is-selected"); }
    renderSelection();
  } else if (action === "select-none") {
    state.selected.clear();
    for (const box of grid.querySelectorAll(".select-check")) { box.checked = false; box.closest(".hist-card").classList.remove("is-selected"); }
    renderSelection();
  } else if (action === "delete-selected") {
    deleteSelected();
  } else if (action === "restore-selected") {
    restore([...state.selected]);
  }
});

drawer.addEventListener("close", () => { state.drawerId = null; });

state.filters = filtersFromUrl();
fillForm(state.filters);
renderChrome();
loadPage().then(() => { document.body.dataset.ready = "true"; });
