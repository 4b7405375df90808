// Sign in with an API key: checked against the API, then kept in localStorage.
import { api, auth } from "../api.js";
import { errorBox, h, replace } from "../dom.js";

export function renderLogin(onDone) {
  const input = h("input", {
    id: "api-key",
    type: "password",
    placeholder: "sk-…",
    autocomplete: "off",
    required: true,
    autofocus: true,
  });
  const error = h("div", { class: "form-error" });
  const button = h("button", { class: "btn btn-primary btn-block", type: "submit" }, "Sign in");

  async function submit(event) {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    button.disabled = true;
    replace(error);
    try {
      // Any authenticated read proves the key; the job list is the cheapest.
      await api("/api/v1/fine-tunes", { params: { page_size: 1 }, key });
      auth.save(key);
      onDone();
    } catch (err) {
      replace(error, errorBox(err));
      button.disabled = false;
    }
  }

  return h(
    "div",
    { class: "login" },
    h(
      "form",
      { class: "card login-card", onsubmit: submit },
      h("div", { class: "login-brand" }, h("span", { class: "brand-mark" }), "dashtune"),
      h("p", { class: "muted" }, "Sign in with an API key from ", h("code", {}, "dashtune keys create"), " or the key printed by the server's first start."),
      h("label", { for: "api-key" }, "API key"),
      input,
      error,
      button,
    ),
  );
}
