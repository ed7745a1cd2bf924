// Candidate tiles (pending / running / failed / finished) and the full-size lightbox, shared by
// the run page's candidates dialogs and the history pages.

import {
  failureLabel, formatDuration, formatNumber, formatTemperature, generationDuration, h, icon, LANG, openModal, statusLabel, t, timeEl,
} from "./common.js";

/** Replace a broken preview with a calm "unavailable" state instead of the browser's icon. */
export function guardedImage(src, { alt = "", className = "", width, height, loading = "lazy" } = {}) {
  const img = h(`img${className ? "." + className : ""}`, { src, alt, loading, decoding: "async", width, height });
  img.addEventListener("error", () => {
    const fallback = h("span.img-missing", {
      role: "img", "aria-label": alt ? t("%(image)s (preview unavailable)", { image: alt }) : t("Preview unavailable"),
    }, icon("image"), h("span", {}, t("Preview unavailable")));
    img.replaceWith(fallback);
  }, { once: true });
  return img;
}

function metaLine(gen) {
  const title = gen.seed !== null && gen.seed !== undefined ? t("Temperature, seed %(seed)s", { seed: gen.seed }) : t("Temperature");
  const parts = [h("span", { title }, t("t %(temperature)s", { temperature: formatTemperature(gen.temperature) }))];
  const ms = gen.status === "succeeded" || gen.status === "failed" ? generationDuration(gen) : null;
  if (ms !== null) parts.push(h("span", { title: t("Generation time") }, formatDuration(ms)));
  parts.push(timeEl(gen.created_at));
  return h("div.cand-meta", {}, parts);
}

/**
 * One candidate as a grid tile.
 * options: {adopted, label, onAdopt(gen), onRetry(gen), onView(gen), adoptBusy}
 */
export function candidateTile(gen, options = {}) {
  const { adopted = false, label = t("Candidate"), onAdopt, onRetry, onView } = options;
  // The label inside a sentence ("View candidate of Object full size").
  const inSentence = label.toLocaleLowerCase(LANG);
  const tile = h("li.cand", { dataset: { id: gen.id, status: gen.status } });
  if (adopted) tile.classList.add("is-adopted");

  if (gen.status === "succeeded" && gen.asset) {
    const thumb = h("button.cand-thumb", {
      type: "button",
      "aria-label": t("View %(image)s full size", { image: inSentence }),
      onclick: () => onView && onView(gen),
    }, guardedImage(gen.asset.thumbnail_url, {
      alt: t("%(image)s, temperature %(temperature)s", { image: label, temperature: formatTemperature(gen.temperature) }),
    }));
    tile.append(thumb);
    if (adopted) tile.append(h("span.cand-flag", {}, icon("check"), t("Adopted")));
  } else if (gen.status === "failed") {
    tile.append(h("div.cand-error", {},
      h("span.cand-error-head", {}, icon("alert"), h("strong", {}, gen.error ? failureLabel(gen.error.code) : t("Failed"))),
      h("p.cand-error-msg", {}, gen.error ? gen.error.message : t("The generation failed."))));
  } else {
    const waiting = gen.status === "pending" || gen.status === "running";
    tile.append(h(`div.cand-placeholder.is-${gen.status}`, { "aria-busy": waiting ? "true" : undefined },
      waiting ? h("span.spinner", { "aria-hidden": "true" }) : null,
      h("span", {}, gen.status === "running" ? t("Generating…") : statusLabel(gen.status))));
  }

  tile.append(metaLine(gen));

  const actions = h("div.cand-actions");
  if (gen.status === "succeeded" && gen.asset) {
    if (onAdopt) {
      actions.append(h(`button.btn.btn-sm${adopted ? ".btn-adopted" : ".btn-primary"}`, {
        type: "button",
        dataset: { action: "adopt" },
        disabled: adopted,
        onclick: () => onAdopt(gen),
      }, adopted ? [icon("check"), t("Adopted")] : t("Adopt")));
    }
    actions.append(h("a.btn.btn-sm.btn-ghost", {
      href: gen.asset.download_url, download: "", "aria-label": t("Download %(image)s", { image: inSentence }), title: t("Download"),
    }, icon("download")));
  } else if (gen.status === "failed" && onRetry) {
    actions.append(h("button.btn.btn-sm", {
      type: "button", dataset: { action: "retry" }, onclick: () => onRetry(gen),
    }, icon("retry"), t("Retry")));
  }
  if (actions.childElementCount) tile.append(actions);
  return tile;
}

/** The full-size viewer: one <dialog id="lightbox">, ←/→ to move, Esc to close. */
export class Lightbox {
  constructor(dialog) {
    this.dialog = dialog;
    this.items = [];
    this.index = 0;
    this.options = {};
    this.img = dialog.querySelector("[data-slot=img]");
    this.title = dialog.querySelector(".lightbox-title");
    this.position = dialog.querySelector("[data-slot=position]");
    this.caption = dialog.querySelector("[data-slot=caption]");
    this.download = dialog.querySelector("[data-slot=download]");
    this.adoptButton = dialog.querySelector("[data-action=adopt]");
    this.prevButton = dialog.querySelector("[data-action=prev]");
    this.nextButton = dialog.querySelector("[data-action=next]");
    this.prevButton.addEventListener("click", () => this.move(-1));
    this.nextButton.addEventListener("click", () => this.move(1));
    this.adoptButton.addEventListener("click", async () => {
      const gen = this.items[this.index];
      if (gen && this.options.onAdopt) {
        await this.options.onAdopt(gen);
        this.render();
      }
    });
    dialog.addEventListener("keydown", (event) => {
      if (event.key === "ArrowLeft") { event.preventDefault(); this.move(-1); }
      else if (event.key === "ArrowRight") { event.preventDefault(); this.move(1); }
    });
    this.img.addEventListener("click", () => this.dialog.close());
  }

  /** items: generations with an asset; options: {title, label(gen), isAdopted(gen), onAdopt(gen)} */
  open(items, index = 0, options = {}) {
    this.items = items.filter((g) => g.asset);
    if (!this.items.length) return;
    this.index = Math.max(0, Math.min(index, this.items.length - 1));
    this.options = options;
    this.render();
    openModal(this.dialog, this.dialog.querySelector("[data-action=close]"));
  }

  move(delta) {
    if (this.items.length < 2) return;
    this.index = (this.index + delta + this.items.length) % this.items.length;
    this.render();
  }

  render() {
    const gen = this.items[this.index];
    if (!gen) return;
    const label = this.options.label ? this.options.label(gen) : t("Image");
    this.title.textContent = this.options.title || label;
    this.img.src = gen.asset.url;
    this.img.alt = t("%(image)s — %(prompt)s", { image: label, prompt: gen.prompt.slice(0, 140) });
    this.img.width = gen.asset.width || 0;
    this.img.height = gen.asset.height || 0;
    this.dialog.dataset.id = gen.id;
    this.position.textContent = this.items.length > 1
      ? t("%(position)s / %(total)s", { position: formatNumber(this.index + 1), total: formatNumber(this.items.length) })
      : "";
    this.prevButton.hidden = this.nextButton.hidden = this.items.length < 2;
    this.download.href = gen.asset.download_url;
    const bits = [t("temperature %(temperature)s", { temperature: formatTemperature(gen.temperature) })];
    if (gen.seed !== null && gen.seed !== undefined) bits.push(t("seed %(seed)s", { seed: gen.seed }));
    bits.push(`${gen.asset.width}×${gen.asset.height}`);
    const ms = generationDuration(gen);
    if (ms !== null) bits.push(formatDuration(ms));
    this.caption.textContent = bits.join(" · ");
    if (this.options.onAdopt) {
      const adopted = this.options.isAdopted ? this.options.isAdopted(gen) : gen.adopted;
      this.adoptButton.hidden = false;
      this.adoptButton.disabled = adopted;
      this.adoptButton.textContent = adopted ? t("Adopted") : t("Adopt");
      this.adoptButton.classList.toggle("btn-primary", !adopted);
    } else {
      this.adoptButton.hidden = true;
    }
  }
}
