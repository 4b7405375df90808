// A chat box over the OpenAI-compatible endpoint, streaming the reply as it is generated.
import { chat } from "./api.js";
import { errorBox, h, replace } from "./dom.js";

function field(label, control) {
  return h("label", { class: "field" }, h("span", {}, label), control);
}

export function chatBox() {
  const history = [];
  let controller = null;
  const model = h("input", { id: "chat-model", list: "chat-models", placeholder: "Deployed model name", required: true });
  const models = h("datalist", { id: "chat-models" });
  const system = h("input", { id: "chat-system", placeholder: "System prompt (optional)" });
  const temperature = h("input", { id: "chat-temperature", type: "number", min: 0, max: 2, step: 0.1, placeholder: "Temperature", title: "Sampling temperature (0: greedy; empty: the model's default)" });
  const maxTokens = h("input", { id: "chat-max-tokens", type: "number", min: 1, placeholder: "Max tokens", title: "Reply length cap (empty: the server's default)" });
  const log = h("div", { class: "chat-log", id: "chat-log" }, h("p", { class: "muted" }, "Pick a model and say something."));
  const input = h("textarea", { id: "chat-input", rows: 2, placeholder: "Message (Enter sends, Shift+Enter for a new line)" });
  const send = h("button", { class: "btn btn-primary", id: "chat-send", type: "submit" }, "Send");
  const clear = h("button", { class: "btn", type: "button" }, "Clear");
  const error = h("div");

  function bubble(role, text) {
    const el = h("div", { class: `bubble bubble-${role}` }, h("div", { class: "bubble-role" }, role), h("div", { class: "bubble-text" }, text));
    if (history.length === 1 && role === "user") replace(log);
    log.append(el);
    log.scrollTop = log.scrollHeight;
    return el.querySelector(".bubble-text");
  }

  async function submit(event) {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || !model.value.trim()) return;
    replace(error);
    history.push({ role: "user", content: text });
    const asked = bubble("user", text).closest(".bubble");
    input.value = "";
    const out = bubble("assistant", "");
    out.classList.add("typing");
    send.disabled = true;
    controller = new AbortController();
    const messages = system.value.trim() ? [{ role: "system", content: system.value.trim() }, ...history] : history;
    let reply = "";
    try {
      const params = {};
      if (temperature.value !== "") params.temperature = Number(temperature.value);
      if (maxTokens.value !== "") params.max_tokens = Number(maxTokens.value);
      await chat(model.value.trim(), messages, params, (piece) => {
        reply += piece;
        out.textContent = reply;
        log.scrollTop = log.scrollHeight;
      }, controller.signal);
      history.push({ role: "assistant", content: reply });
      if (!reply) {
        out.textContent = "(empty reply)";
        out.classList.add("muted");
      }
    } catch (err) {
      // The turn did not happen: take it back and leave the text to retry.
      history.pop();
      out.closest(".bubble").remove();
      asked.remove();
      if (!input.value) input.value = text;
      if (err.name !== "AbortError") replace(error, errorBox(err));
    } finally {
      out.classList.remove("typing");
      send.disabled = false;
      controller = null;
    }
  }

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  clear.addEventListener("click", () => {
    if (controller) controller.abort();
    history.length = 0;
    replace(log, h("p", { class: "muted" }, "Pick a model and say something."));
    replace(error);
  });

  const form = h(
    "form",
    { class: "chat", id: "chat-form", onsubmit: submit },
    h(
      "div",
      { class: "chat-settings" },
      field("Model", model),
      models,
      field("System prompt", system),
      field("Temperature", temperature),
      field("Max tokens", maxTokens),
    ),
    log,
    error,
    h("div", { class: "chat-input" }, input, h("div", { class: "chat-buttons" }, send, clear)),
  );

  return {
    element: form,
    setModels(names) {
      replace(models, names.map((n) => h("option", { value: n })));
      if (!model.value && names.length) model.value = names[0];
    },
    select(name) {
      model.value = name;
      input.focus();
    },
  };
}
