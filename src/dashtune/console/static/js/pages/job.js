// One job: live progress, loss/eval-loss curves, hyper-parameters, checkpoints, log tail,
// and the Pause/Resume/Cancel/Delete/Export buttons the job's `allowed_actions` permit right now.
import { files, jobs } from "../api.js";
import { lossChart } from "../chart.js";
import { card, errorBox, h, notice, replace, table } from "../dom.js";
import { badge, duration, integer, isTerminal, num, percent, progressBar, stepText, time, waitingFor } from "../format.js";
import { poll } from "../poll.js";

const LOG_TAIL = 300;
const LOG_KEEP = 1000;
const REFRESH_MS = 2000;

function tile(label, value, id) {
  return h("div", { class: "tile", id }, h("div", { class: "tile-label" }, label), h("div", { class: "tile-value" }, value));
}

// A file as its name, the id beside it (or "deleted" once the file is gone).
function fileList(ids, names) {
  return h(
    "span",
    { class: "file-list" },
    ids.map((id, i) => [
      i ? ", " : null,
      h("span", { class: "file-name", title: id }, names.get(id) ?? "…"),
      h("span", { class: "muted small mono" }, ` ${id.slice(0, 8)}`),
    ]),
  );
}

function details(job, names) {
  const rows = [
    ["Model", job.model],
    ["Base model", job.base_model],
    ["Training type", job.training_type],
    ["Training files", fileList(job.training_file_ids || [], names)],
    ["Validation files", job.validation_file_ids?.length ? fileList(job.validation_file_ids, names) : "split from training data"],
    ["Output model", h("span", { class: "mono" }, job.finetuned_output)],
    ["Created", time(job.create_time)],
    ["Ended", time(job.end_time)],
    ["Tokens trained", integer(job.usage)],
    ["Creator", job.creator],
  ];
  return h("dl", { class: "kv" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "–")]));
}

function hyperParameters(job) {
  const given = new Set(Object.keys(job.hyper_parameters || {}));
  const all = job.resolved_hyper_parameters || job.hyper_parameters || {};
  const rows = Object.keys(all).sort().map((k) => ({ k, v: all[k] }));
  return table(
    rows,
    [
      ["Name", (r) => h("span", { class: given.has(r.k) ? "strong" : "" }, r.k, given.has(r.k) ? h("span", { class: "tag" }, "set") : null)],
      ["Value", (r) => h("span", { class: "mono" }, typeof r.v === "object" ? JSON.stringify(r.v) : String(r.v))],
    ],
    { empty: "No hyper-parameters." },
  );
}

export function renderJob(root, jobId) {
  let job = null;
  let tick = 0;
  let logSeen = null;
  let logLines = [];
  let logTruncated = false;
  let exporting = false;
  const fileNames = new Map();

  const title = h("h1", { class: "mono" }, jobId);
  const status = h("span");
  const cancelBtn = h("button", { class: "btn", id: "cancel-job", disabled: true }, "Cancel");
  const pauseBtn = h("button", { class: "btn hidden", id: "pause-job" }, "Pause");
  const resumeBtn = h("button", { class: "btn hidden", id: "resume-job" }, "Resume");
  const deleteBtn = h("button", { class: "btn btn-danger", id: "delete-job", disabled: true }, "Delete");
  const actionError = h("div");
  const tiles = h("div", { class: "tiles" });
  const failure = h("div");
  const chartBox = h("div", { class: "chart", id: "loss-chart" });
  const chartEmpty = notice("No metrics yet: the curves appear once training logs its first step.");
  const detailsBox = h("div");
  const hpBox = h("div");
  const checkpointsBox = h("div");
  const logBox = h("pre", { class: "logs", id: "job-logs" }, "Loading…");
  const chart = lossChart(chartBox);

  async function act(button, verb, fn) {
    if (!window.confirm(`${verb} job ${jobId}?`)) return false;
    button.disabled = true;
    replace(actionError);
    try {
      await fn();
      return true;
    } catch (err) {
      replace(actionError, errorBox(err));
      button.disabled = false;
      return false;
    }
  }
  cancelBtn.addEventListener("click", async () => {
    if (await act(cancelBtn, "Cancel", () => jobs.cancel(jobId))) await refresh();
  });
  pauseBtn.addEventListener("click", async () => {
    if (await act(pauseBtn, "Pause", () => jobs.pause(jobId))) await refresh();
  });
  resumeBtn.addEventListener("click", async () => {
    if (await act(resumeBtn, "Resume", () => jobs.resume(jobId))) await refresh();
  });
  deleteBtn.addEventListener("click", async () => {
    if (await act(deleteBtn, "Delete", () => jobs.remove(jobId))) location.hash = "#/jobs";
  });

  function renderJobFields() {
    title.textContent = job.job_name && job.job_name !== job.job_id ? `${job.job_name}` : job.job_id;
    replace(status, badge(job.status));
    const allowed = new Set(job.allowed_actions || []);
    cancelBtn.disabled = !allowed.has("cancel");
    cancelBtn.title = allowed.has("cancel") ? "Stop this job" : "Only a job that has not ended can be canceled";
    // Shown only while they apply: a PAUSING job keeps "pause" (idempotent) but shows it busy.
    pauseBtn.classList.toggle("hidden", !allowed.has("pause"));
    pauseBtn.disabled = job.status === "PAUSING";
    pauseBtn.title = "Save a resume point and free the job's slot; resume it later";
    resumeBtn.classList.toggle("hidden", !allowed.has("resume"));
    resumeBtn.disabled = false;
    resumeBtn.title = "Queue the job again; it continues from where it paused";
    deleteBtn.disabled = !allowed.has("delete");
    deleteBtn.title = allowed.has("delete") ? "Delete the job, its logs, checkpoints and model" : "Cancel the job first; only ended jobs can be deleted";
    const m = job.metrics || {};
    replace(
      tiles,
      h(
        "div",
        { class: "tile tile-wide" },
        h("div", { class: "tile-label" }, "Progress"),
        h("div", { class: "tile-progress" }, progressBar(job.progress, job.status), h("span", { class: "tile-value" }, percent(job.progress))),
      ),
      tile("Step", stepText(job), "tile-step"),
      tile("Loss", num(m.loss), "tile-loss"),
      tile("Eval loss", num(m.eval_loss), "tile-eval"),
      tile("Learning rate", num(m.learning_rate), "tile-lr"),
      tile("Tokens/s", m.tokens_per_second ? integer(m.tokens_per_second) : "–", "tile-tps"),
      tile("ETA", job.status === "RUNNING" ? duration(job.eta_seconds) : "–", "tile-eta"),
    );
    const waiting = waitingFor(job);
    replace(
      failure,
      job.status === "FAILED" ? errorBox({ code: job.code, message: job.message }) : waiting ? notice(`${waiting}.`) : null,
    );
    replace(detailsBox, details(job, fileNames));
    replace(hpBox, hyperParameters(job));
  }

  async function refreshJob() {
    job = await jobs.get(jobId);
    renderJobFields();
    const unknown = [...(job.training_file_ids || []), ...(job.validation_file_ids || [])].filter((id) => !fileNames.has(id));
    if (unknown.length) {
      await Promise.all(
        unknown.map((id) =>
          files.get(id).then(
            (f) => fileNames.set(id, f.name),
            () => fileNames.set(id, "deleted file"),
          ),
        ),
      );
      replace(detailsBox, details(job, fileNames));
    }
  }

  // An id that names no job of this workspace: say so instead of loading forever.
  function notFound(err) {
    replace(
      root,
      h("nav", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / ", h("span", { class: "mono" }, jobId)),
      h("div", { class: "page-head" }, h("h1", {}, "Job not found")),
      h(
        "div",
        { id: "job-not-found" },
        errorBox(err),
        h("p", {}, `No fine-tune job ${jobId} in this workspace: it may have been deleted, or the link is wrong. `, h("a", { href: "#/jobs" }, "Back to the jobs list")),
      ),
    );
  }

  async function refreshMetrics() {
    const points = await jobs.metrics(jobId);
    chartEmpty.textContent =
      job && isTerminal(job.status)
        ? "This job recorded no metrics."
        : "No metrics yet: the curves appear once training logs its first step.";
    chartEmpty.classList.toggle("hidden", points.length > 0);
    chartBox.classList.toggle("hidden", points.length === 0);
    chart.update(points);
  }

  async function refreshLogs() {
    if (logSeen === null) {
      const head = await jobs.logs(jobId, 0, 1);
      const start = Math.max(0, head.total - LOG_TAIL);
      const out = await jobs.logs(jobId, start, LOG_TAIL);
      logLines = out.logs;
      logSeen = start + out.logs.length;
      logTruncated = start > 0;
    } else {
      const out = await jobs.logs(jobId, logSeen, 1000);
      if (!out.logs.length) return;
      logLines.push(...out.logs);
      logSeen += out.logs.length;
    }
    if (logLines.length > LOG_KEEP) {
      logLines = logLines.slice(-LOG_KEEP);
      logTruncated = true;
    }
    const atBottom = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 8;
    logBox.textContent = (logTruncated ? "… earlier lines omitted\n" : "") + (logLines.join("\n") || "(no log lines yet)");
    if (atBottom) logBox.scrollTop = logBox.scrollHeight;
  }

  async function refreshCheckpoints() {
    const rows = await jobs.checkpoints(jobId);
    exporting = rows.some((c) => c.status === "PROCESSING");
    const canExport = (job?.allowed_actions || []).includes("export");
    replace(
      checkpointsBox,
      table(
        rows,
        [
          ["Checkpoint", (c) => h("span", { class: "mono" }, c.checkpoint)],
          ["Step", (c) => c.step, "num"],
          ["Export", (c) => badge(c.status)],
          ["Model name", (c) => h("span", { class: "mono" }, c.model_name)],
          ["Loss", (c) => num(c.metrics?.loss), "num"],
          ["Eval loss", (c) => num(c.metrics?.eval_loss), "num"],
          ["Created", (c) => time(c.create_time)],
          [
            "",
            (c) =>
              canExport && c.status === "PENDING"
                ? h("button", { class: "btn btn-small", onclick: () => exportCheckpoint(c) }, "Export")
                : null,
          ],
        ],
        { empty: "No checkpoints yet." },
      ),
    );
  }

  async function exportCheckpoint(c) {
    const name = window.prompt(`Export ${c.checkpoint} as model named:`, c.model_name);
    if (!name) return;
    try {
      await jobs.exportCheckpoint(jobId, c.checkpoint, name);
      replace(actionError);
      exporting = true;
      startPolling(); // follow PROCESSING -> SUCCEEDED, also on an ended job
    } catch (err) {
      replace(actionError, errorBox(err));
    }
  }

  // One tick refreshes everything; false once the job is gone (deleted elsewhere).
  async function refresh() {
    try {
      await refreshJob();
    } catch (err) {
      if (err.status === 404 && job === null) notFound(err);
      else replace(actionError, errorBox(err));
      return err.status !== 404;
    }
    const work = [refreshMetrics(), refreshLogs()];
    if (isTerminal(job.status) || exporting || tick % 3 === 0) work.push(refreshCheckpoints());
    tick += 1;
    await Promise.allSettled(work);
    return true;
  }

  root.append(
    h("nav", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / ", h("span", { class: "mono" }, jobId)),
    h("div", { class: "page-head" }, h("div", { class: "title-row" }, title, status), h("div", { class: "actions" }, pauseBtn, resumeBtn, cancelBtn, deleteBtn)),
    actionError,
    failure,
    tiles,
    card("Loss", chartEmpty, chartBox, h("p", { class: "muted small" }, "Train loss per logging step and eval loss per evaluation; drag to zoom, double-click to reset.")),
    h("div", { class: "grid-2" }, card("Details", detailsBox), card("Hyper-parameters", hpBox)),
    card("Checkpoints", checkpointsBox),
    card("Logs", logBox),
  );

  // While the job lives (or a checkpoint exports), refresh every 2 s; once it has
  // ended, one more tick, then rest.
  let stop = null;
  function startPolling() {
    if (stop) return;
    stop = poll(async () => {
      const endedBefore = job !== null && isTerminal(job.status);
      const goOn = (await refresh()) && !(endedBefore && isTerminal(job.status) && !exporting);
      if (!goOn) stop = null;
      return goOn;
    }, REFRESH_MS);
  }
  startPolling();
  return () => {
    if (stop) stop();
    chart.destroy();
  };
}
