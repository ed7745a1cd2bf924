// API tokens: create (the secret is shown once), list, revoke.

import {
  api, absoluteTime, confirmDialog, errorToast, h, problemMessage, relativeTime, t, toast, withNodes,
} from "./common.js";

const list = document.getElementById("token-list");
const form = document.getElementById("token-form");
const created = document.getElementById("token-created");

function row(token) {
  return h("li.token-row", { dataset: { id: token.id } },
    h("div.token-main", {},
      h("strong.token-name", {}, token.name),
      h("span.muted.small", {}, h("code", {}, `${token.token_prefix}…`), " · ",
        withNodes(t("created %(time)s"), {
          time: h("time", { datetime: token.created_at, title: absoluteTime(token.created_at) }, relativeTime(token.created_at)),
        }),
        " · ", token.last_used_at ? t("last used %(time)s", { time: relativeTime(token.last_used_at) }) : t("never used"))),
    h("button.btn.btn-sm.btn-danger-ghost", {
      type: "button", "aria-label": t("Revoke token %(name)s", { name: token.name }), onclick: () => revoke(token),
    }, t("Revoke")));
}

async function load() {
  try {
    const { items } = await api("GET", "/api/auth/tokens");
    list.replaceChildren(...(items.length ? items.map(row) : [h("li.empty-row.muted", {}, t("No API tokens yet."))]));
  } catch (error) {
    list.replaceChildren(h("li.empty-row", {}, t("Could not load your tokens: %(problem)s", { problem: problemMessage(error) })));
  }
}

async function revoke(token) {
  const ok = await confirmDialog({
    title: t("Revoke “%(name)s”?", { name: token.name }),
    body: t("Scripts using this token stop working at once. This cannot be undone."),
    confirmLabel: t("Revoke"),
  });
  if (!ok) return;
  try {
    await api("DELETE", `/api/auth/tokens/${token.id}`);
    toast(t("Revoked “%(name)s”.", { name: token.name }));
    await load();
  } catch (error) {
    errorToast(t("Could not revoke the token"), error);
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = form.elements.name.value.trim();
  if (!name) {
    form.elements.name.setAttribute("aria-invalid", "true");
    form.elements.name.focus();
    return;
  }
  form.elements.name.removeAttribute("aria-invalid");
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const token = await api("POST", "/api/auth/tokens", { body: { name } });
    form.reset();
    const value = created.querySelector("[data-slot=token]");
    value.value = token.token;
    created.querySelector("[data-slot=name]").textContent = token.name;
    created.hidden = false;
    value.focus();
    value.select();
    await load();
  } catch (error) {
    errorToast(t("Could not create the token"), error);
  } finally {
    button.disabled = false;
  }
});

created.querySelector("[data-action=copy]").addEventListener("click", async () => {
  const value = created.querySelector("[data-slot=token]");
  try {
    await navigator.clipboard.writeText(value.value);
    toast(t("Token copied to the clipboard."), { kind: "success" });
  } catch {
    value.select();
    toast(t("Press Ctrl+C (⌘C) to copy the selected token."));
  }
});
created.querySelector("[data-action=dismiss]").addEventListener("click", () => {
  created.hidden = true;
  created.querySelector("[data-slot=token]").value = "";
  form.elements.name.focus();
});

load();
