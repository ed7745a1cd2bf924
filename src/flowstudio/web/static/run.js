// The run page: step cards, the candidates dialog per step, live updates over the run's SSE
// stream, optimistic adoption, and the lightbox. The server is the source of truth: whatever this
// page shows can be rebuilt from GET /api/runs/{id} and the steps' candidate lists.

import {
  api, errorToast, formatList, formatNumber, h, icon, openModal, problemMessage, randomId, readJson, refreshTimes, t,
  timeEl, tn, toast, withNodes,
} from "./common.js";
import { candidateTile, guardedImage, Lightbox } from "./candidates.js";

const PAGE_SIZE = 50;

const state = {
  run: readJson("run-data"),
  candidates: new Map(), // step id -> Map(generation id -> generation)
  loaded: new Set(), // steps whose first page of candidates has been fetched
  cursors: new Map(), // step id -> next_cursor
  adopting: new Map(), // step id -> generation id being adopted (optimistic)
};
const lightbox = new Lightbox(document.getElementById("lightbox"));

// The page's run-data has the steps' titles in the page's language; the API names them as the
// flow file does (English). Keep the page's titles when the run is fetched again.
const STEP_TITLES = new Map(state.run.steps.map((s) => [s.id, s.title]));
function withPageTitles(run) {
  for (const step of run.steps) {
    if (STEP_TITLES.has(step.id)) step.title = STEP_TITLES.get(step.id);
  }
  return run;
}

const stepById = (id) => state.run.steps.find((s) => s.id === id);
const stepTitle = (id) => (stepById(id) || { title: id }).title;
const cardOf = (id) => document.getElementById(`step-${id}`);
const dialogOf = (id) => document.getElementById(`cands-${id}`);
const candidatesOf = (id) => {
  if (!state.candidates.has(id)) state.candidates.set(id, new Map());
  return state.candidates.get(id);
};
const slot = (root, name) => root.querySelector(`[data-slot="${name}"]`);

function sortedCandidates(stepId) {
  return [...candidatesOf(stepId).values()]
    .filter((g) => !g.deleted_at)
    .sort((a, b) => (a.created_at === b.created_at ? (a.id < b.id ? 1 : -1) : (a.created_at < b.created_at ? 1 : -1)));
}

// -- rendering ----------------------------------------------------------------------------------

function notReadyReason(step) {
  if (step.ready) return "";
  const names = step.waiting_for.map(stepTitle);
  return t("Adopt an image in %(steps)s first — this step builds on it.", { steps: formatList(names) });
}

function countsText(step) {
  const c = step.candidate_counts || {};
  const parts = [];
  if (c.pending) parts.push(tn("%(num)s queued", "%(num)s queued", c.pending));
  if (c.running) parts.push(tn("%(num)s generating", "%(num)s generating", c.running));
  if (c.succeeded) parts.push(tn("%(num)s done", "%(num)s done", c.succeeded));
  if (c.failed) parts.push(tn("%(num)s failed", "%(num)s failed", c.failed));
  return parts.join(" · ");
}

function renderStep(step) {
  const card = cardOf(step.id);
  if (!card) return;
  const adoptedId = state.adopting.get(step.id) || step.adopted_generation_id;
  const adopted = adoptedId ? (candidatesOf(step.id).get(adoptedId) || step.adopted) : null;

  const badge = slot(card, "badge");
  card.classList.toggle("is-adopted", Boolean(adopted));
  card.classList.toggle("is-invalidated", !adopted && Boolean(step.invalidated_at));
  card.classList.toggle("is-blocked", !step.ready);
  if (adopted) { badge.className = "badge badge-succeeded"; badge.textContent = t("Adopted"); }
  else if (step.invalidated_at) { badge.className = "badge badge-warn"; badge.textContent = t("Needs re-adoption"); }
  else if (!step.ready) { badge.className = "badge badge-muted"; badge.textContent = t("Waiting"); }
  else { badge.className = "badge badge-muted"; badge.textContent = t("No image yet"); }

  const media = slot(card, "media");
  media.replaceChildren();
  if (adopted && adopted.asset) {
    media.append(h("button.step-image", {
      type: "button",
      "aria-label": t("View the adopted image of %(step)s full size", { step: step.title }),
      onclick: () => lightbox.open([adopted], 0, {
        title: t("%(step)s · adopted", { step: step.title }),
        label: () => t("%(step)s (adopted)", { step: step.title }),
      }),
    }, guardedImage(adopted.asset.thumbnail_url, { alt: t("Adopted image of %(step)s", { step: step.title }), loading: "eager" })));
  } else {
    let text;
    if (!step.ready) text = t("Waiting for %(steps)s.", { steps: formatList(step.waiting_for.map(stepTitle)) });
    else if (step.candidates > 0 && step.invalidated_at) text = t("Pick a new candidate that fits the changed input, or generate fresh ones.");
    else if (step.candidates > 0) text = t("Open the candidates and adopt the one you like.");
    else text = t("Generate candidates, then adopt the one you like.");
    media.append(h("div.step-empty", {}, icon("image"), h("p", {}, text)));
  }

  const invalidated = slot(card, "invalidated");
  if (!adopted && step.invalidated_at) {
    const when = { time: timeEl(step.invalidated_at) };
    const text = step.inputs.length
      ? withNodes(t("%(steps)s changed %(time)s, so the image adopted here was released. Adopt a new one.", {
        steps: step.inputs.map(stepTitle).join(" / "),
      }), when)
      : withNodes(t("An earlier step changed %(time)s, so the image adopted here was released. Adopt a new one."), when);
    invalidated.replaceChildren(icon("alert"), h("span", {}, text));
    invalidated.hidden = false;
  } else {
    invalidated.hidden = true;
  }

  const reason = notReadyReason(step);
  for (const button of card.querySelectorAll("[data-action=generate]")) button.disabled = !step.ready;
  slot(card, "reason").textContent = reason;
  slot(card, "reason").hidden = !reason;
  slot(card, "count").textContent = formatNumber(step.candidates);
  const counts = countsText(step);
  slot(card, "counts").textContent = counts;
  slot(card, "counts").hidden = !counts;
  card.classList.toggle("is-busy", Boolean((step.candidate_counts || {}).pending || (step.candidate_counts || {}).running));

  renderDialog(step);
}

function renderDialog(step) {
  const dialog = dialogOf(step.id);
  if (!dialog) return;
  const adoptedId = state.adopting.get(step.id) || step.adopted_generation_id;
  const reason = notReadyReason(step);
  for (const button of dialog.querySelectorAll("[data-action=generate]")) button.disabled = !step.ready;
  slot(dialog, "reason").textContent = reason;
  slot(dialog, "reason").hidden = !reason;
  dialog.querySelector("[data-action=clear]").disabled = !adoptedId;
  const counts = countsText(step);
  let summary;
  if (adoptedId) summary = counts ? t("%(counts)s · one adopted", { counts }) : t("No candidates · one adopted");
  else summary = counts || t("No candidates yet");
  slot(dialog, "summary").textContent = summary;
  if (!state.loaded.has(step.id) && !candidatesOf(step.id).size) return;

  const grid = slot(dialog, "grid");
  const items = sortedCandidates(step.id);
  const finished = items.filter((g) => g.status === "succeeded" && g.asset);
  const focusedId = document.activeElement && dialog.contains(document.activeElement)
    ? (document.activeElement.closest(".cand") || {}).dataset?.id : null;
  const focusedAction = focusedId ? document.activeElement.dataset.action || (document.activeElement.classList.contains("cand-thumb") ? "view" : null) : null;
  const tiles = items.map((gen) => candidateTile(gen, {
    adopted: gen.id === adoptedId,
    label: t("Candidate of %(step)s", { step: step.title }),
    onAdopt: (g) => adopt(step.id, g.id),
    onRetry: (g) => retry(step.id, g),
    onView: (g) => lightbox.open(finished, finished.indexOf(g), {
      title: t("%(step)s · candidates", { step: step.title }),
      label: () => t("Candidate of %(step)s", { step: step.title }),
      isAdopted: (x) => x.id === (state.adopting.get(step.id) || stepById(step.id).adopted_generation_id),
      onAdopt: (x) => adopt(step.id, x.id),
    }),
  }));
  if (!tiles.length) {
    grid.replaceChildren(h("li.cand-empty", {}, step.ready ? t("No candidates yet. Generate one or three to compare.") : reason));
  } else {
    grid.replaceChildren(...tiles);
  }
  // Keep keyboard focus on the same control across live re-renders.
  if (focusedId) {
    const tile = grid.querySelector(`.cand[data-id="${focusedId}"]`);
    const target = tile && (focusedAction === "view" ? tile.querySelector(".cand-thumb") : tile.querySelector(`[data-action="${focusedAction}"]`));
    if (target && !target.disabled) target.focus();
    else if (tile) (tile.querySelector("button:not([disabled]), a") || dialog.querySelector("[data-action=close]")).focus();
  }
  slot(dialog, "more").hidden = !state.cursors.get(step.id);
  refreshTimes(grid);
}

function renderAll() {
  for (const step of state.run.steps) renderStep(step);
  const adopted = state.run.steps.filter((s) => s.adopted_generation_id).length;
  const progress = document.querySelector("[data-slot=run-progress]");
  if (progress) {
    progress.textContent = tn("%(adopted)s/%(num)s step adopted", "%(adopted)s/%(num)s steps adopted", state.run.steps.length, {
      adopted: formatNumber(adopted),
    });
  }
}

// -- loading ------------------------------------------------------------------------------------

async function loadCandidates(stepId, { more = false } = {}) {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (more && state.cursors.get(stepId)) params.set("cursor", state.cursors.get(stepId));
  const page = await api("GET", `/api/runs/${state.run.id}/steps/${encodeURIComponent(stepId)}/assets?${params}`);
  const map = candidatesOf(stepId);
  if (!more) {
    // A fresh first page replaces what we knew, except live rows newer than the page.
    const keep = [...map.values()].filter((g) => !page.items.some((i) => i.id === g.id) && page.items.length && g.created_at > page.items[0].created_at);
    map.clear();
    for (const g of keep) map.set(g.id, g);
  }
  for (const item of page.items) map.set(item.id, item);
  state.cursors.set(stepId, page.next_cursor);
  state.loaded.add(stepId);
}

let refreshTimer = null;
let refreshing = null;
function scheduleRunRefresh(delay = 120) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshRun, delay);
}

async function refreshRun() {
  if (refreshing) { scheduleRunRefresh(200); return; }
  refreshing = (async () => {
    try {
      const run = await api("GET", `/api/runs/${state.run.id}`);
      state.run = withPageTitles(run);
      renderAll();
    } catch (error) {
      if (error.status === 404) {
        toast(t("This run no longer exists."), { kind: "error", timeout: 0 });
      }
    } finally {
      refreshing = null;
    }
  })();
  await refreshing;
}

async function resync() {
  await refreshRun();
  await Promise.all([...state.loaded].map((id) => loadCandidates(id).catch(() => {})));
  renderAll();
}

// -- actions ------------------------------------------------------------------------------------

function promptOverride(stepId) {
  const field = slot(cardOf(stepId), "prompt");
  const value = field ? field.value.trim() : "";
  return value || undefined;
}

async function generate(stepId, count, extra = {}) {
  const step = stepById(stepId);
  if (!step.ready) { toast(notReadyReason(step), { kind: "error" }); return; }
  const body = { count, ...extra };
  if (body.prompt === undefined) {
    const prompt = promptOverride(stepId);
    if (prompt) body.prompt = prompt;
  }
  const dialog = dialogOf(stepId);
  if (!dialog.open) await openCandidates(stepId);
  const buttons = [...dialog.querySelectorAll("[data-action=generate]"), ...cardOf(stepId).querySelectorAll("[data-action=generate]")];
  buttons.forEach((b) => { b.disabled = true; });
  try {
    const result = await api("POST", `/api/runs/${state.run.id}/steps/${encodeURIComponent(stepId)}/generate`, {
      body, headers: { "Idempotency-Key": randomId() },
    });
    const map = candidatesOf(stepId);
    for (const gen of result.generations) {
      const known = map.get(gen.id);
      // An SSE event may already have delivered a newer status for this row.
      if (!known || known.updated_at <= gen.updated_at) map.set(gen.id, gen);
    }
    step.candidates += result.generations.length;
    step.candidate_counts.pending = (step.candidate_counts.pending || 0) + result.generations.length;
    renderStep(step);
    scheduleRunRefresh();
  } catch (error) {
    errorToast(t("Could not start the generation"), error);
    scheduleRunRefresh(0);
  } finally {
    renderStep(stepById(stepId));
  }
}

function retry(stepId, gen) {
  const extra = { prompt: gen.prompt };
  if (gen.seed !== null && gen.seed !== undefined) extra.seed = gen.seed;
  if (gen.temperature !== null && gen.temperature !== undefined) extra.temperature = gen.temperature;
  return generate(stepId, 1, extra);
}

function applyInvalidation(stepIds) {
  const now = new Date().toISOString();
  for (const id of stepIds) {
    const step = stepById(id);
    if (!step) continue;
    step.adopted_generation_id = null;
    step.adopted = null;
    step.invalidated_at = now;
  }
  // Readiness follows from adoptions.
  const adopted = new Set(state.run.steps.filter((s) => s.adopted_generation_id).map((s) => s.id));
  for (const step of state.run.steps) {
    step.waiting_for = step.inputs.filter((i) => !adopted.has(i));
    step.ready = step.waiting_for.length === 0;
  }
}

async function adopt(stepId, generationId) {
  const step = stepById(stepId);
  if (step.adopted_generation_id === generationId || state.adopting.get(stepId) === generationId) return;
  const before = JSON.parse(JSON.stringify(state.run));
  // Optimistic: show it adopted at once, then let the server confirm or refuse.
  state.adopting.set(stepId, generationId);
  const gen = candidatesOf(stepId).get(generationId);
  step.adopted_generation_id = generationId;
  if (gen) step.adopted = { ...gen, adopted: true };
  step.invalidated_at = null;
  applyInvalidation(state.run.steps.filter((s) => s.id !== stepId && downstreamOf(stepId).includes(s.id) && s.adopted_generation_id).map((s) => s.id));
  renderAll();
  try {
    const result = await api("POST", `/api/runs/${state.run.id}/steps/${encodeURIComponent(stepId)}/adopt`, {
      body: { generation_id: generationId },
    });
    state.adopting.delete(stepId);
    applyInvalidation(result.invalidated_steps.filter((id) => id !== stepId));
    renderAll();
    const others = result.invalidated_steps;
    toast(others.length
      ? tn("Adopted for %(step)s. %(steps)s needs a new adoption.", "Adopted for %(step)s. %(steps)s need a new adoption.",
        others.length, { step: step.title, steps: formatList(others.map(stepTitle)) })
      : t("Adopted for %(step)s.", { step: step.title }), { kind: "success" });
  } catch (error) {
    state.adopting.delete(stepId);
    state.run = before;
    renderAll();
    errorToast(t("Could not adopt this candidate for %(step)s", { step: step.title }), error);
  } finally {
    scheduleRunRefresh();
  }
}

function downstreamOf(stepId) {
  const affected = new Set([stepId]);
  const result = [];
  for (const step of state.run.steps) {
    if (step.id !== stepId && step.inputs.some((i) => affected.has(i))) {
      affected.add(step.id);
      result.push(step.id);
    }
  }
  return result;
}

async function clearAdoption(stepId) {
  const step = stepById(stepId);
  if (!step.adopted_generation_id) return;
  const before = JSON.parse(JSON.stringify(state.run));
  step.adopted_generation_id = null;
  step.adopted = null;
  applyInvalidation([]);
  renderAll();
  try {
    const result = await api("POST", `/api/runs/${state.run.id}/steps/${encodeURIComponent(stepId)}/clear`);
    applyInvalidation(result.invalidated_steps);
    renderAll();
    const others = result.invalidated_steps;
    toast(others.length
      ? tn("Cleared the adoption of %(step)s; its candidates are kept. %(steps)s needs a new adoption.",
        "Cleared the adoption of %(step)s; its candidates are kept. %(steps)s need a new adoption.",
        others.length, { step: step.title, steps: formatList(others.map(stepTitle)) })
      : t("Cleared the adoption of %(step)s; its candidates are kept.", { step: step.title }));
  } catch (error) {
    state.run = before;
    renderAll();
    errorToast(t("Could not clear %(step)s", { step: step.title }), error);
  } finally {
    scheduleRunRefresh();
  }
}

async function openCandidates(stepId) {
  const dialog = dialogOf(stepId);
  openModal(dialog);
  if (!state.loaded.has(stepId)) {
    slot(dialog, "grid").replaceChildren(h("li.cand-empty", { "aria-busy": "true" }, t("Loading candidates…")));
    try {
      await loadCandidates(stepId);
    } catch (error) {
      slot(dialog, "grid").replaceChildren(h("li.cand-empty", {}, t("Could not load the candidates: %(problem)s", { problem: problemMessage(error) })));
      return;
    }
  }
  renderDialog(stepById(stepId));
}

// -- live updates -------------------------------------------------------------------------------

const live = document.querySelector("[data-slot=live]");
function setLive(stateName, text) {
  if (!live) return;
  live.dataset.state = stateName;
  live.textContent = text;
}

function connectEvents() {
  const source = new EventSource(`/api/runs/${state.run.id}/events`);
  let hadError = false;
  source.addEventListener("open", () => {
    setLive("live", t("Live"));
    if (hadError) resync();
    hadError = false;
  });
  source.addEventListener("error", () => {
    hadError = true;
    setLive("offline", t("Reconnecting…"));
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up (e.g. the session ended): check the run (which sends us to sign in
      // on a 401) and try again a little later.
      setTimeout(() => { refreshRun(); connectEvents(); }, 5000);
    }
  });
  source.addEventListener("generation", (event) => {
    let gen;
    try { gen = JSON.parse(event.data); } catch { return; }
    const map = candidatesOf(gen.step_id);
    const known = map.get(gen.id);
    if (known && known.updated_at > gen.updated_at) return;
    map.set(gen.id, gen);
    const step = stepById(gen.step_id);
    if (step) renderDialog(step);
    scheduleRunRefresh();
  });
  // Another tab (or the history page) adopted or cleared a step: reload the run's truth.
  source.addEventListener("adoption", () => resync());
  // The server dropped events this page was too slow to take: reload the run's truth.
  source.addEventListener("resync", () => resync());
  // The server is stopping: it ends the stream, and the browser connects again (to another
  // process, or to this one once it is back), then resyncs on "open".
  source.addEventListener("reconnect", () => { hadError = true; setLive("offline", t("Reconnecting…")); });
  currentSource = source;
}
let currentSource = null;
window.addEventListener("pagehide", () => currentSource && currentSource.close());

// -- wiring -------------------------------------------------------------------------------------

for (const card of document.querySelectorAll(".step-card")) {
  const stepId = card.dataset.step;
  card.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    if (button.dataset.action === "generate") generate(stepId, Number(button.dataset.count));
    else if (button.dataset.action === "open-candidates") openCandidates(stepId);
  });
}
for (const dialog of document.querySelectorAll(".candidates-dialog")) {
  const stepId = dialog.dataset.step;
  dialog.querySelector(".dialog-toolbar").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    if (button.dataset.action === "generate") generate(stepId, Number(button.dataset.count));
    else if (button.dataset.action === "clear") clearAdoption(stepId);
  });
  dialog.querySelector("[data-action=more]").addEventListener("click", async (event) => {
    event.target.disabled = true;
    try {
      await loadCandidates(stepId, { more: true });
      renderDialog(stepById(stepId));
    } catch (error) {
      errorToast(t("Could not load more candidates"), error);
    } finally {
      event.target.disabled = false;
    }
  });
}

// Another tab may have adopted or cleared meanwhile (those are not generation events).
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") resync(); });

renderAll();
connectEvents();
document.body.dataset.ready = "true";
