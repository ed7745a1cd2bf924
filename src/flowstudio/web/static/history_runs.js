// History by run: each step's candidates load when the step is opened; adopt and download work
// as in the run page's candidates dialog.

import { api, errorToast, formatList, h, problemMessage, refreshTimes, t, tn, toast } from "./common.js";
import { candidateTile, Lightbox } from "./candidates.js";

const lightbox = new Lightbox(document.getElementById("lightbox"));
const steps = new Map(); // details element -> {items: Map, cursor, adopted}

function info(details) {
  if (!steps.has(details)) steps.set(details, { items: new Map(), cursor: null, adopted: details.dataset.adopted || null, loaded: false });
  return steps.get(details);
}

function render(details) {
  const data = info(details);
  const title = details.dataset.stepTitle;
  const grid = details.querySelector("[data-slot=grid]");
  const items = [...data.items.values()];
  const finished = items.filter((g) => g.status === "succeeded" && g.asset);
  const tiles = items.map((gen) => candidateTile(gen, {
    adopted: gen.id === data.adopted,
    label: t("Candidate of %(step)s", { step: title }),
    onAdopt: (g) => adopt(details, g),
    onView: (g) => lightbox.open(finished, finished.indexOf(g), {
      title: t("%(step)s · candidates", { step: title }),
      label: () => t("Candidate of %(step)s", { step: title }),
      isAdopted: (x) => x.id === info(details).adopted,
      onAdopt: (x) => adopt(details, x),
    }),
  }));
  grid.replaceChildren(...(tiles.length ? tiles : [h("li.cand-empty", {}, t("No candidates in this step yet."))]));
  details.querySelector("[data-slot=more]").hidden = !data.cursor;
  refreshTimes(grid);
}

async function load(details, { more = false } = {}) {
  const data = info(details);
  const params = new URLSearchParams({ limit: "24" });
  if (more && data.cursor) params.set("cursor", data.cursor);
  const grid = details.querySelector("[data-slot=grid]");
  if (!more) grid.replaceChildren(h("li.cand-empty", { "aria-busy": "true" }, t("Loading candidates…")));
  try {
    const page = await api("GET", `/api/runs/${details.dataset.run}/steps/${encodeURIComponent(details.dataset.step)}/assets?${params}`);
    for (const item of page.items) data.items.set(item.id, item);
    data.cursor = page.next_cursor;
    data.adopted = page.adopted_generation_id;
    data.loaded = true;
    render(details);
  } catch (error) {
    grid.replaceChildren(h("li.cand-empty", {}, t("Could not load the candidates: %(problem)s", { problem: problemMessage(error) })));
  }
}

async function adopt(details, gen) {
  const data = info(details);
  if (data.adopted === gen.id) return;
  const previous = data.adopted;
  data.adopted = gen.id; // optimistic
  render(details);
  try {
    const result = await api("POST", `/api/runs/${details.dataset.run}/steps/${encodeURIComponent(details.dataset.step)}/adopt`, {
      body: { generation_id: gen.id },
    });
    const run = details.closest(".run-block");
    for (const other of run.querySelectorAll(".run-step")) {
      if (result.invalidated_steps.includes(other.dataset.step)) {
        const otherInfo = info(other);
        otherInfo.adopted = null;
        if (otherInfo.loaded) render(other);
      }
    }
    const step = details.dataset.stepTitle;
    const others = result.invalidated_steps.map((id) => {
      const other = [...run.querySelectorAll(".run-step")].find((d) => d.dataset.step === id);
      return (other && other.dataset.stepTitle) || id;
    });
    toast(others.length
      ? tn("Adopted for %(step)s. %(steps)s needs a new adoption.", "Adopted for %(step)s. %(steps)s need a new adoption.",
        others.length, { step, steps: formatList(others) })
      : t("Adopted for %(step)s.", { step }), { kind: "success" });
  } catch (error) {
    data.adopted = previous;
    render(details);
    errorToast(t("Could not adopt"), error);
  }
}

for (const details of document.querySelectorAll(".run-step")) {
  details.addEventListener("toggle", () => {
    if (details.open && !info(details).loaded) load(details);
  });
  details.querySelector("[data-action=more]").addEventListener("click", () => load(details, { more: true }));
}
for (const select of document.querySelectorAll("[data-autosubmit]")) {
  select.addEventListener("change", () => select.form.requestSubmit());
}
document.body.dataset.ready = "true";
