// The console's only way to the server: the public API with the key as a Bearer token.

const KEY = "dashtune.apiKey";

export const auth = {
  get key() {
    return localStorage.getItem(KEY);
  },
  save(key) {
    localStorage.setItem(KEY, key);
  },
  clear() {
    localStorage.removeItem(KEY);
  },
};

export class ApiError extends Error {
  constructor(code, message, status = null, requestId = null) {
    super(`${code}: ${message}`);
    this.code = code;
    this.message = message;
    this.status = status;
    this.requestId = requestId;
  }
}

// DashScope envelopes carry {code, message}; the OpenAI-compatible routes {error: {...}}.
async function failure(res) {
  const text = await res.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = null;
  }
  const err = body?.error && typeof body.error === "object" ? body.error : body || {};
  return new ApiError(
    err.code || err.type || `HTTP${res.status}`,
    err.message || text.slice(0, 300) || res.statusText,
    res.status,
    body?.request_id || res.headers.get("x-request-id"),
  );
}

async function send(path, { method = "GET", json, form, params, key, signal } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const headers = { Authorization: `Bearer ${key ?? auth.key}` };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form; // the browser sets the multipart boundary
  }
  let res;
  try {
    res = await fetch(url, { method, headers, body, signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError("ConnectionError", `Cannot reach the dashtune server (${err.message}).`);
  }
  if (!res.ok) {
    const err = await failure(res);
    if (res.status === 401 && key === undefined) {
      window.dispatchEvent(new CustomEvent("dashtune:unauthorized", { detail: err }));
    }
    throw err;
  }
  return res;
}

export async function api(path, options = {}) {
  const res = await send(path, options);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

// Server-Sent Events of a POST (EventSource cannot send a body or headers):
// calls onData with each `data:` payload until the stream ends or says [DONE].
export async function stream(path, options, onData) {
  const res = await send(path, options);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      if (data.trim() === "[DONE]") return;
      onData(JSON.parse(data));
    }
  }
}

const V1 = "/api/v1";

export const jobs = {
  list: (params) => api(`${V1}/fine-tunes`, { params }).then((b) => b.output),
  get: (id) => api(`${V1}/fine-tunes/${encodeURIComponent(id)}`).then((b) => b.output),
  create: (body) => api(`${V1}/fine-tunes`, { method: "POST", json: body }).then((b) => b.output),
  cancel: (id) => api(`${V1}/fine-tunes/${encodeURIComponent(id)}/cancel`, { method: "POST" }),
  pause: (id) => api(`${V1}/fine-tunes/${encodeURIComponent(id)}/pause`, { method: "POST" }),
  resume: (id) => api(`${V1}/fine-tunes/${encodeURIComponent(id)}/resume`, { method: "POST" }),
  remove: (id) => api(`${V1}/fine-tunes/${encodeURIComponent(id)}`, { method: "DELETE" }),
  metrics: (id) => api(`${V1}/fine-tunes/${encodeURIComponent(id)}/metrics`).then((b) => b.output.metrics),
  logs: (id, offset, line) =>
    api(`${V1}/fine-tunes/${encodeURIComponent(id)}/logs`, { params: { offset, line } }).then((b) => b.output),
  checkpoints: (id) => api(`${V1}/fine-tunes/${encodeURIComponent(id)}/checkpoints`).then((b) => b.output),
  exportCheckpoint: (id, checkpoint, modelName) =>
    api(`${V1}/fine-tunes/${encodeURIComponent(id)}/export/${encodeURIComponent(checkpoint)}`, {
      method: "POST",
      params: { model_name: modelName },
    }),
};

export const files = {
  list: (params) => api(`${V1}/files`, { params }).then((b) => b.data),
  get: (id) => api(`${V1}/files/${encodeURIComponent(id)}`).then((b) => b.data),
  upload: (file, description) => {
    const form = new FormData();
    form.append("files", file, file.name);
    form.append("descriptions", description || "");
    form.append("purpose", "fine-tune");
    return api(`${V1}/files`, { method: "POST", form }).then((b) => b.data.uploaded_files[0]);
  },
  remove: (id) => api(`${V1}/files/${encodeURIComponent(id)}`, { method: "DELETE" }),
};

export const deployments = {
  list: (params) => api(`${V1}/deployments`, { params }).then((b) => b.output),
  create: (body) => api(`${V1}/deployments`, { method: "POST", json: body }).then((b) => b.output),
  scale: (name, capacity) =>
    api(`${V1}/deployments/${encodeURIComponent(name)}/scale`, { method: "PUT", json: { capacity } }),
  remove: (name) => api(`${V1}/deployments/${encodeURIComponent(name)}`, { method: "DELETE" }),
};

export function chat(model, messages, params, onDelta, signal) {
  const json = { ...params, model, messages, stream: true };
  return stream("/compatible-mode/v1/chat/completions", { method: "POST", json, signal }, (chunk) => {
    if (chunk.error) throw new ApiError(chunk.error.code || "StreamError", chunk.error.message || "stream failed");
    for (const choice of chunk.choices || []) {
      if (choice.delta?.content) onDelta(choice.delta.content);
    }
  });
}
