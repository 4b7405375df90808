// The jobs table: status and model filters, paging, a create form; live while jobs run.
import { files, jobs } from "../api.js";
import { append, card, errorBox, h, replace, table } from "../dom.js";
import { badge, isTerminal, num, percent, progressBar, statusNote, time } from "../format.js";
import { poll } from "../poll.js";

const PAGE_SIZE = 20;
const STATUSES = ["PENDING", "QUEUING", "RUNNING", "CANCELING", "PAUSING", "PAUSED", "SUCCEEDED", "FAILED", "CANCELED"];
const TRAINING_TYPES = ["sft", "efficient_sft", "dpo_full", "dpo_lora", "cpt"];
const LIVE = "LIVE";

// The API filters by model only; a status filter reads every page and filters here.
async function load({ page, model, status }) {
  if (!status) return jobs.list({ page_no: page, page_size: PAGE_SIZE, model });
  const all = [];
  for (let p = 1; p <= 50; p += 1) {
    const out = await jobs.list({ page_no: p, page_size: 100, model });
    all.push(...out.jobs);
    if (p * 100 >= out.total) break;
  }
  const wanted = all.filter((j) => (status === LIVE ? !isTerminal(j.status) : j.status === status));
  const start = (page - 1) * PAGE_SIZE;
  return { jobs: wanted.slice(start, start + PAGE_SIZE), total: wanted.length, page_no: page };
}

function jobsTable(rows) {
  return table(
    rows,
    [
      ["Job", (j) => h("a", { href: `#/jobs/${j.job_id}`, class: "mono" }, j.job_id), "nowrap"],
      [
        "Status",
        (j) => {
          const note = statusNote(j);
          return h("div", {}, badge(j.status), note ? h("div", { class: "muted small status-note", title: note }, note) : null);
        },
      ],
      ["Model", (j) => j.model],
      ["Type", (j) => j.training_type],
      [
        "Progress",
        (j) => h("div", { class: "progress-cell" }, progressBar(j.progress, j.status), h("span", {}, percent(j.progress))),
      ],
      ["Loss", (j) => num(j.metrics?.loss), "num"],
      ["Eval loss", (j) => num(j.metrics?.eval_loss), "num"],
      ["Created", (j) => time(j.create_time), "nowrap"],
    ],
    { empty: "No jobs match.", rowAttrs: (j) => ({ dataset: { jobId: j.job_id, status: j.status } }) },
  );
}

function createForm(onCreated) {
  const error = h("div", { class: "form-error" });
  const fileSelect = h("select", { name: "training_file", required: true }, h("option", { value: "" }, "Loading files…"));
  const validSelect = h("select", { name: "validation_file" }, h("option", { value: "" }, "None (split from training data)"));
  files.list({ page_size: 100 }).then(
    (data) => {
      const options = data.files.map((f) => h("option", { value: f.file_id }, `${f.name} · ${f.lines} lines · ${f.file_id.slice(0, 8)}`));
      replace(fileSelect, h("option", { value: "" }, data.files.length ? "Choose a file…" : "Upload a file first (Files page)"), options);
      append(validSelect, data.files.map((f) => h("option", { value: f.file_id }, `${f.name} · ${f.file_id.slice(0, 8)}`)));
    },
    (err) => replace(error, errorBox(err)),
  );
  const form = h(
    "form",
    { class: "form-grid", id: "create-job" },
    field("Model", h("input", { name: "model", value: "dashtune-tiny", required: true, list: "known-models" })),
    field("Training type", h("select", { name: "training_type" }, TRAINING_TYPES.map((t) => h("option", { value: t }, t)))),
    field("Training file", fileSelect),
    field("Validation file", validSelect),
    field(
      "Hyper-parameters (JSON)",
      h("textarea", { name: "hyper_parameters", rows: 3, placeholder: '{"n_epochs": 3, "learning_rate": 0.003}' }),
      "wide",
    ),
    field("Output model name (optional)", h("input", { name: "model_name", placeholder: "my-model" })),
    field("Job name (optional)", h("input", { name: "job_name" })),
    h("div", { class: "form-actions wide" }, error, h("button", { class: "btn btn-primary", type: "submit" }, "Create job")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    replace(error);
    const data = new FormData(form);
    const body = { model: data.get("model").trim(), training_file_ids: [data.get("training_file")], training_type: data.get("training_type") };
    if (data.get("validation_file")) body.validation_file_ids = [data.get("validation_file")];
    for (const key of ["model_name", "job_name"]) if (data.get(key).trim()) body[key] = data.get(key).trim();
    const hp = data.get("hyper_parameters").trim();
    if (hp) {
      try {
        body.hyper_parameters = JSON.parse(hp);
      } catch (err) {
        replace(error, errorBox({ code: "InvalidParameter", message: `Hyper-parameters are not valid JSON: ${err.message}` }));
        return;
      }
    }
    try {
      onCreated(await jobs.create(body));
    } catch (err) {
      replace(error, errorBox(err));
    }
  });
  return form;
}

function field(label, control, cls = "") {
  return h("label", { class: `field ${cls}` }, h("span", {}, label), control);
}

export function renderJobs(root) {
  const state = { page: 1, model: "", status: "" };
  const tableBox = h("div", { class: "table-wrap" }, h("p", { class: "muted" }, "Loading…"));
  const pager = h("div", { class: "pager" });
  const error = h("div");
  const formBox = h("div", { class: "hidden" });
  const models = h("datalist", { id: "known-models" }, h("option", { value: "dashtune-tiny" }));
  let live = false;

  const statusSelect = h(
    "select",
    { id: "status-filter", "aria-label": "Status" },
    h("option", { value: "" }, "All statuses"),
    h("option", { value: LIVE }, "Not ended"),
    STATUSES.map((s) => h("option", { value: s }, s)),
  );
  const modelInput = h("input", { id: "model-filter", type: "search", placeholder: "Filter by model", "aria-label": "Model" });
  let debounce = null;
  statusSelect.addEventListener("change", () => {
    state.status = statusSelect.value;
    state.page = 1;
    refresh();
  });
  modelInput.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      state.model = modelInput.value.trim();
      state.page = 1;
      refresh();
    }, 300);
  });

  async function refresh() {
    try {
      const out = await load(state);
      replace(error);
      replace(tableBox, jobsTable(out.jobs));
      live = out.jobs.some((j) => !isTerminal(j.status));
      const known = new Set(["dashtune-tiny", ...out.jobs.map((j) => j.model)]);
      out.jobs.filter((j) => j.status === "SUCCEEDED").forEach((j) => known.add(j.finetuned_output));
      replace(models, [...known].map((m) => h("option", { value: m })));
      const first = out.total ? (state.page - 1) * PAGE_SIZE + 1 : 0;
      const last = Math.min(state.page * PAGE_SIZE, out.total);
      replace(
        pager,
        h("span", { class: "muted" }, `${first}–${last} of ${out.total}`),
        h("button", { class: "btn btn-small", disabled: state.page <= 1, onclick: () => { state.page -= 1; refresh(); } }, "‹ Newer"),
        h("button", { class: "btn btn-small", disabled: last >= out.total, onclick: () => { state.page += 1; refresh(); } }, "Older ›"),
      );
    } catch (err) {
      replace(error, errorBox(err));
    }
  }

  const toggle = h("button", { class: "btn btn-primary", id: "new-job" }, "New job");
  toggle.addEventListener("click", () => {
    if (formBox.classList.toggle("hidden")) return;
    replace(formBox, card("New fine-tune job", createForm((job) => (location.hash = `#/jobs/${job.job_id}`))));
  });

  root.append(
    h("div", { class: "page-head" }, h("h1", {}, "Fine-tune jobs"), toggle),
    formBox,
    models,
    error,
    card(null, h("div", { class: "toolbar" }, statusSelect, modelInput, h("button", { class: "btn", onclick: refresh }, "Refresh")), tableBox, pager),
  );
  // Every 3 s while a listed job has not ended, every 15 s otherwise.
  return poll(refresh, () => (live ? 3000 : 15000));
}
