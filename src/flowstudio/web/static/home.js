// The flows page: each flow card's form starts a run and opens it.

import { api, problemMessage, t } from "./common.js";

for (const form of document.querySelectorAll(".start-run-form")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const errorBox = form.querySelector(".form-error");
    errorBox.hidden = true;
    const inputs = {};
    let title;
    for (const field of form.querySelectorAll("input, textarea")) {
      field.removeAttribute("aria-invalid");
      if (field.name === "__title") title = field.value.trim() || undefined;
      else if (field.name) inputs[field.name] = field.value;
    }
    const missing = [...form.querySelectorAll("[required]")].find((f) => !f.value.trim());
    if (missing) {
      missing.setAttribute("aria-invalid", "true");
      const field = form.querySelector(`label[for="${missing.id}"]`).textContent.trim();
      errorBox.textContent = t("Fill in “%(field)s” to start a run.", { field });
      errorBox.hidden = false;
      missing.focus();
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    button.textContent = t("Starting…");
    try {
      const run = await api("POST", `/api/flows/${encodeURIComponent(form.dataset.flow)}/runs`, { body: { inputs, title } });
      location.assign(`/runs/${run.id}`);
    } catch (error) {
      errorBox.textContent = problemMessage(error);
      errorBox.hidden = false;
      button.disabled = false;
      button.textContent = t("Start run");
    }
  });
}
