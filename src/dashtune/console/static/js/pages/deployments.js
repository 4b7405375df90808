// Deployments: deploy a fine-tuned model, scale or remove it, and chat with it.
import { deployments, jobs } from "../api.js";
import { chatBox } from "../chat.js";
import { card, errorBox, h, notice, replace, table } from "../dom.js";
import { badge, time } from "../format.js";
import { poll } from "../poll.js";

const SETTLED = new Set(["RUNNING", "FAILED"]);

export function renderDeployments(root) {
  const listBox = h("div", { class: "table-wrap" }, h("p", { class: "muted" }, "Loading…"));
  const message = h("div");
  const chat = chatBox();
  const outputs = h("datalist", { id: "deployable-models" });
  let settling = false;
  let watching = null; // the deployment just created, announced once it settles

  const form = h(
    "form",
    { class: "form-grid", id: "deploy-form" },
    h("label", { class: "field" }, h("span", {}, "Model"), h("input", { name: "model_name", list: "deployable-models", required: true, placeholder: "A fine-tuned model name" })),
    h("label", { class: "field" }, h("span", {}, "Capacity"), h("input", { name: "capacity", type: "number", min: 1, value: "1", required: true })),
    h("label", { class: "field" }, h("span", {}, "Suffix (optional)"), h("input", { name: "suffix", placeholder: "v1" })),
    h("div", { class: "form-actions" }, h("button", { class: "btn btn-primary", type: "submit" }, "Deploy")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = { model_name: data.get("model_name").trim(), capacity: Number(data.get("capacity")) };
    if (data.get("suffix").trim()) body.suffix = data.get("suffix").trim();
    try {
      const dep = await deployments.create(body);
      watching = dep.deployed_model;
      replace(message, notice(`Deploying ${dep.deployed_model}…`));
      refresh();
    } catch (err) {
      replace(message, errorBox(err));
    }
  });

  async function scale(d) {
    const value = window.prompt(`New capacity for ${d.deployed_model}:`, String(d.capacity));
    if (!value) return;
    try {
      await deployments.scale(d.deployed_model, Number(value));
      replace(message);
    } catch (err) {
      replace(message, errorBox(err));
    }
    refresh();
  }

  async function remove(d) {
    if (!window.confirm(`Delete deployment ${d.deployed_model}?`)) return;
    try {
      await deployments.remove(d.deployed_model);
      replace(message, notice(`Deleting ${d.deployed_model}.`, "success"));
    } catch (err) {
      replace(message, errorBox(err));
    }
    refresh();
  }

  async function refresh() {
    let out;
    try {
      out = await deployments.list({ page_size: 100 });
    } catch (err) {
      const missing = err.status === 404 && err.code === "NotFound";
      replace(listBox, missing ? notice("This server has no deployments API yet; chat still works with any model it serves.", "warn") : errorBox(err));
      return false;
    }
    const rows = out.deployments || [];
    settling = rows.some((d) => !SETTLED.has(d.status));
    const watched = rows.find((d) => d.deployed_model === watching);
    if (watched && SETTLED.has(watched.status)) {
      watching = null;
      replace(
        message,
        watched.status === "RUNNING"
          ? notice(`${watched.deployed_model} is running: chat with it below.`, "success")
          : errorBox({ code: "DeploymentFailed", message: watched.message || `${watched.deployed_model} failed.` }),
      );
    }
    chat.setModels(rows.filter((d) => d.status === "RUNNING").map((d) => d.deployed_model));
    replace(
      listBox,
      table(
        rows,
        [
          ["Deployed model", (d) => h("span", { class: "mono" }, d.deployed_model), "nowrap"],
          ["Status", (d) => badge(d.status)],
          ["Model", (d) => h("span", { class: "mono" }, d.model_name)],
          ["Base model", (d) => d.base_model],
          ["Capacity", (d) => `${d.ready_capacity ?? 0} / ${d.capacity}`, "num"],
          ["Created", (d) => time(d.gmt_create?.replace("T", " ")), "nowrap"],
          [
            "",
            (d) =>
              h(
                "div",
                { class: "row-actions" },
                h("button", { class: "btn btn-small", disabled: d.status !== "RUNNING", onclick: () => chat.select(d.deployed_model) }, "Chat"),
                h("button", { class: "btn btn-small", onclick: () => scale(d) }, "Scale"),
                h("button", { class: "btn btn-small btn-danger-ghost", onclick: () => remove(d) }, "Delete"),
              ),
          ],
        ],
        { empty: "No deployments. Deploy a model from a succeeded job above.", rowAttrs: (d) => ({ dataset: { deployment: d.deployed_model, status: d.status } }) },
      ),
    );
    return true;
  }

  // Offer the outputs of succeeded jobs as deployable model names.
  jobs.list({ page_size: 100 }).then(
    (out) => replace(outputs, out.jobs.filter((j) => j.status === "SUCCEEDED").map((j) => h("option", { value: j.finetuned_output }))),
    () => null,
  );

  root.append(
    h("div", { class: "page-head" }, h("h1", {}, "Deployments")),
    card("Deploy a model", form, outputs, message),
    card("Deployments", listBox),
    card("Chat", chat.element),
  );
  // Every 2 s while a deployment is still starting or stopping, every 10 s otherwise.
  return poll(refresh, () => (settling ? 2000 : 10000));
}
