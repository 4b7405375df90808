// Files: upload JSONL training data, list it, delete what no live job uses.
import { files } from "../api.js";
import { card, errorBox, h, notice, replace, table } from "../dom.js";
import { size, time } from "../format.js";

const PAGE_SIZE = 20;

export function renderFiles(root) {
  let page = 1;
  const listBox = h("div", { class: "table-wrap" }, h("p", { class: "muted" }, "Loading…"));
  const pager = h("div", { class: "pager" });
  const message = h("div", { id: "upload-message" });
  const input = h("input", { type: "file", id: "upload-file", accept: ".jsonl,application/jsonl", required: true, multiple: true });
  const description = h("input", { id: "upload-description", placeholder: "Description (optional)" });
  const button = h("button", { class: "btn btn-primary", type: "submit", id: "upload-button" }, "Upload");

  async function upload(event) {
    event.preventDefault();
    if (!input.files.length) return;
    button.disabled = true;
    replace(message, notice("Uploading…"));
    const done = [];
    try {
      for (const file of input.files) done.push(await files.upload(file, description.value.trim()));
      replace(message, notice(`Uploaded ${done.map((f) => `${f.name} as ${f.file_id}`).join(", ")}.`, "success"));
      input.value = "";
      description.value = "";
      page = 1;
      await refresh();
    } catch (err) {
      replace(message, done.length ? notice(`Uploaded ${done.length} file(s) before the error.`) : null, errorBox(err));
    } finally {
      button.disabled = false;
    }
  }

  async function remove(f) {
    if (!window.confirm(`Delete file ${f.name} (${f.file_id})?`)) return;
    try {
      await files.remove(f.file_id);
      replace(message, notice(`Deleted ${f.name}.`, "success"));
    } catch (err) {
      replace(message, errorBox(err));
    }
    refresh();
  }

  async function refresh() {
    try {
      const data = await files.list({ page_no: page, page_size: PAGE_SIZE });
      replace(
        listBox,
        table(
          data.files,
          [
            ["File ID", (f) => h("span", { class: "mono" }, f.file_id), "nowrap"],
            ["Name", (f) => f.name],
            ["Size", (f) => size(f.size), "num"],
            ["Lines", (f) => f.lines, "num"],
            ["Uploaded", (f) => time(f.gmt_create), "nowrap"],
            ["Description", (f) => f.description || "–"],
            ["", (f) => h("button", { class: "btn btn-small btn-danger-ghost", onclick: () => remove(f) }, "Delete")],
          ],
          { empty: "No files yet: upload a JSONL file above.", rowAttrs: (f) => ({ dataset: { fileId: f.file_id } }) },
        ),
      );
      const last = Math.min(page * PAGE_SIZE, data.total);
      replace(
        pager,
        h("span", { class: "muted" }, `${data.total ? (page - 1) * PAGE_SIZE + 1 : 0}–${last} of ${data.total}`),
        h("button", { class: "btn btn-small", disabled: page <= 1, onclick: () => { page -= 1; refresh(); } }, "‹ Newer"),
        h("button", { class: "btn btn-small", disabled: last >= data.total, onclick: () => { page += 1; refresh(); } }, "Older ›"),
      );
    } catch (err) {
      replace(listBox, errorBox(err));
    }
  }

  root.append(
    h("div", { class: "page-head" }, h("h1", {}, "Files")),
    card(
      "Upload training data",
      h("p", { class: "muted small" }, "JSONL, one sample per line: ", h("code", {}, '{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}'), " for SFT; see the API docs for DPO and CPT."),
      h("form", { class: "upload-row", id: "upload-form", onsubmit: upload }, input, description, button),
      message,
    ),
    card("Uploaded files", listBox, pager),
  );
  refresh();
  return null;
}
