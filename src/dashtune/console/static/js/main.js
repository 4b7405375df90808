// The console's shell: login gate, top navigation and hash routes (#/jobs, #/jobs/ID,
// #/files, #/deployments). Each page returns a function that stops its refresh timers.
import { auth } from "./api.js";
import { h, replace } from "./dom.js";
import { renderDeployments } from "./pages/deployments.js";
import { renderFiles } from "./pages/files.js";
import { renderJob } from "./pages/job.js";
import { renderJobs } from "./pages/jobs.js";
import { renderLogin } from "./pages/login.js";

const ROUTES = [
  [/^#\/jobs\/([^/]+)$/, renderJob, "jobs"],
  [/^#\/jobs$/, renderJobs, "jobs"],
  [/^#\/files$/, renderFiles, "files"],
  [/^#\/deployments$/, renderDeployments, "deployments"],
];

const app = document.getElementById("app");
let stopPage = null;

function nav(active) {
  const link = (name, label) =>
    h("a", { href: `#/${name}`, class: name === active ? "active" : "", "aria-current": name === active ? "page" : null }, label);
  const key = auth.key || "";
  return h(
    "header",
    { class: "topbar" },
    h("a", { class: "brand", href: "#/jobs" }, h("span", { class: "brand-mark" }), "dashtune"),
    h("nav", {}, link("jobs", "Jobs"), link("files", "Files"), link("deployments", "Deployments")),
    h(
      "div",
      { class: "session" },
      h("span", { class: "key", title: "API key in use" }, `${key.slice(0, 7)}…${key.slice(-4)}`),
      h("button", { class: "btn btn-ghost", id: "logout", onclick: logout }, "Sign out"),
    ),
  );
}

function logout() {
  auth.clear();
  route();
}

function route() {
  if (stopPage) stopPage();
  stopPage = null;
  if (!auth.key) {
    replace(app, renderLogin(() => route()));
    return;
  }
  const hash = location.hash || "#/jobs";
  const match = ROUTES.map(([re, render, name]) => [hash.match(re), render, name]).find(([m]) => m);
  if (!match) {
    location.hash = "#/jobs";
    return;
  }
  const [m, render, name] = match;
  const main = h("main", { class: "page" });
  replace(app, nav(name), main);
  stopPage = render(main, ...m.slice(1).map(decodeURIComponent)) || null;
}

window.addEventListener("hashchange", route);
window.addEventListener("dashtune:unauthorized", () => {
  auth.clear();
  route();
});
route();
