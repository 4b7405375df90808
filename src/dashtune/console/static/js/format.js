// How values read on screen: times in local time, sizes, percentages, durations, statuses.
import { h } from "./dom.js";

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELED"]);

export const isTerminal = (status) => TERMINAL.has(status);

// The API's times are UTC "YYYY-MM-DD HH:MM:SS" (the contract's one format).
export function time(value) {
  if (!value) return "–";
  const date = new Date(value.replace(" ", "T") + "Z");
  if (Number.isNaN(date.getTime())) return value;
  const pad = (n) => String(n).padStart(2, "0");
  const text = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(date.getMinutes())}`;
  return h("time", { datetime: date.toISOString(), title: `${value} UTC` }, text);
}

export function size(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function percent(p) {
  return p === null || p === undefined ? "–" : `${Math.round(p * 100)}%`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

export function num(value, digits = 4) {
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value !== "number") return String(value);
  if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e5)) return value.toExponential(2);
  return Number(value.toFixed(digits)).toString();
}

export function integer(value) {
  return value === null || value === undefined ? "–" : Math.round(value).toLocaleString("en-US");
}

export function badge(status) {
  const s = status || "UNKNOWN";
  return h("span", { class: `badge badge-${s.toLowerCase()}` }, s);
}

export function progressBar(p, status) {
  const pct = Math.max(0, Math.min(1, p || 0)) * 100;
  return h(
    "div",
    { class: `progress progress-${(status || "").toLowerCase()}`, title: percent(p) },
    h("div", { class: "progress-fill", style: `width:${pct}%` }),
  );
}

// The step of the latest train metrics, out of the trainer's own step count.
export function stepText(job) {
  const step = job.metrics?.step;
  if (step === undefined || step === null) return "–";
  const total = job.total_steps;
  return total ? `${step} / ${total}` : String(step);
}

// What a job that has not started waits for, in words; null once it runs or ended.
export function waitingFor(job) {
  if (job.status === "PENDING") return "Validating its data files and model";
  if (job.status === "QUEUING") return "Waiting for a free training slot (jobs run in creation order)";
  return null;
}

// One line for a job in a table: why it failed, or what it waits for.
export function statusNote(job) {
  if (job.status === "FAILED") return [job.code, job.message].filter(Boolean).join(": ") || "failed";
  return waitingFor(job);
}
