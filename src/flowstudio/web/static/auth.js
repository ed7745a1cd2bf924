// Sign-in and sign-up forms: post to /api/auth/login|register, then go where the visitor was headed.

import { api, problemMessage, t } from "./common.js";

const form = document.getElementById("auth-form");
const errorBox = document.getElementById("auth-error");

function showError(message, field) {
  errorBox.textContent = message;
  errorBox.hidden = false;
  for (const input of form.querySelectorAll("input")) input.removeAttribute("aria-invalid");
  if (field) {
    field.setAttribute("aria-invalid", "true");
    field.focus();
  }
}

function safeNext(value) {
  return value && value.startsWith("/") && !value.startsWith("//") && !value.includes("\\") ? value : "/";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const mode = form.dataset.mode;
  const email = form.email.value.trim();
  const password = form.password.value;
  if (!email) return showError(t("Enter your email address."), form.email);
  if (mode === "register" && !form.email.checkValidity()) return showError(t("Enter a valid email address."), form.email);
  if (!password) return showError(t("Enter your password."), form.password);
  if (mode === "register" && password.length < 8) return showError(t("Choose a password of at least 8 characters."), form.password);
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    await api("POST", `/api/auth/${mode === "login" ? "login" : "register"}`, {
      body: { email, password }, redirectOn401: false,
    });
    location.assign(safeNext(form.dataset.next));
  } catch (error) {
    let message = problemMessage(error);
    if (error.code === "validation_error" && error.problem.errors) {
      const fields = error.problem.errors.map((e) => e.field);
      message = fields.includes("email") ? t("Enter a valid email address.") : t("Choose a password of at least 8 characters.");
    }
    showError(message, error.code === "email_taken" || error.code === "invalid_credentials" ? form.email : null);
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
});
