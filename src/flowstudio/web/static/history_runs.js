// History by run: each step's candidates load when the step is opened; adopt and download work
// as in the run page's candidates dialog.

import { api, errorToast, h, refreshTimes, toast } from "./common.js";
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
    label: `Candidate of ${title}`,
    onAdopt: (g) => adopt(details, g),
    onView: (g) => lightbox.open(finished, finished.indexOf(g), {
      title: `${title} · candidates`,
      label: () => `Candidate of ${title}`,
      isAdopted: (x) => x.id === info(details).adopted,
      onAdopt: (x) => adopt(details, x),
    }),
  }));
  grid.replaceChildren(...(tiles.length ? tiles : [h("li.cand-empty", {}, "No candidates in this step yet.")]));
  details.querySelector("[data-slot=more]").hidden = !data.cursor;
  refreshTimes(grid);
}

async function load(details, { more = false } = {}) {
  const data = info(details);
  const params = new URLSearchParams({ limit: "24" });
  if (more && data.cursor) params.set("cursor", data.cursor);
  const grid = details.querySelector("[data-slot=grid]");
  if (!more) grid.replaceChildren(h("li.cand-empty", { "aria-busy": "true" }, "Loading candidates…"));
  try {
    const page = await api("GET", `/api/runs/${details.dataset.run}/steps/${encodeURIComponent(details.dataset.step)}/assets?${params}`);
    for (const item of page.items) data.items.set(item.id, item);
    data.cursor = page.next_cursor;
    data.adopted = page.adopted_generation_id;
    data.loaded = true;
    render(details);
  } catch (error) {
    grid.replaceChildren(h("li.cand-empty", {}, `Could not load the candidates: ${error.message}`));
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
    const others = result.invalidated_steps.length ? ` ${result.invalidated_steps.join(", ")} need a new adoption.` : "";
    toast(`Adopted for ${details.dataset.stepTitle}.${others}`, { kind: "success" });
  } catch (error) {
    data.adopted = previous;
    render(details);
    errorToast("Could not adopt", error);
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
