"""A catalog model that is a Hugging Face repo id, not yet on this machine, on a server that
may download (DASHTUNE_HF_OFFLINE=false): the first job fetches it from the hub with
progress in its logs and trains; afterwards the model is local and is not fetched again.

The hub is a fake on loopback that answers what `huggingface_hub.snapshot_download` asks
(repo info, the file tree, HEAD and GET of each file) with the files of a tiny model built
here, so nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from dashtune.services.hub import PATTERNS
from tests.cli.shell import Cli, client_env
from tests.conftest import Server, start_server, stop_server
from tests.e2e.conftest import rows_for, upload_rows, wait_terminal

pytestmark = pytest.mark.e2e

REPO = "acme/tiny-chat"
COMMIT = hashlib.sha1(b"acme/tiny-chat@main").hexdigest()
# In the repo, as in real ones, but not what a trainer loads: never fetched.
NOT_LOADED = {"README.md": b"# tiny chat\n", "original/consolidated.pth": b"\0" * 64}


@dataclass
class FakeHub:
    """The files of one repo at one commit, and every request the hub was asked."""

    files: dict[str, bytes]
    url: str = ""
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.requests)


@contextmanager
def fake_hub(files: dict[str, bytes]) -> Iterator[FakeHub]:
    hub = FakeHub(files)
    api = f"/api/models/{REPO}"
    resolve = f"/{REPO}/resolve/"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer()

        def do_GET(self) -> None:
            self._answer()

        def _answer(self) -> None:
            path = urlsplit(self.path).path
            with hub.lock:
                hub.requests.append((self.command, path))
            if self.command == "GET" and path == f"{api}/revision/main":
                siblings = [{"rfilename": name} for name in files]
                self._send(json.dumps({"id": REPO, "sha": COMMIT, "siblings": siblings}).encode())
            elif self.command == "GET" and path == f"{api}/tree/{COMMIT}":
                tree = [
                    {"type": "file", "path": name, "size": len(body), "oid": _sha(body)}
                    for name, body in files.items()
                ]
                self._send(json.dumps(tree).encode())
            elif path.startswith(resolve):  # /{repo}/resolve/{revision}/{file}: HEAD and GET
                revision, _, name = path[len(resolve) :].partition("/")
                if revision in ("main", COMMIT) and name in files:
                    etag = f'"{_sha(files[name])}"'
                    self._send(files[name], {"X-Repo-Commit": COMMIT, "ETag": etag})
                else:
                    self._send(b"", {"X-Repo-Commit": COMMIT, "X-Error-Code": "EntryNotFound"}, 404)
            else:
                self._send(b"", {"X-Error-Code": "RepoNotFound"}, 404)

        def _send(
            self, body: bytes, headers: dict[str, str] | None = None, status: int = 200
        ) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hub.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        httpd.shutdown()
        httpd.server_close()


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _tiny_model_files(path: Path) -> dict[str, bytes]:
    """The built-in tiny model's files, built here as a repo's contents."""
    from dashtune.trainer.tiny import build_tokenizer, save_tiny

    save_tiny(build_tokenizer(), str(path))
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def online(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, FakeHub]]:
    root = tmp_path_factory.mktemp("hub-download")
    files = {**_tiny_model_files(root / "tiny-chat"), **NOT_LOADED}
    catalog = root / "catalog.yaml"
    catalog.write_text(json.dumps({"models": {"tiny-chat": {"source": REPO}}}))
    with fake_hub(files) as hub:
        srv = start_server(
            root / "data",
            "",
            DASHTUNE_EXECUTOR="local",
            DASHTUNE_SERVING="false",
            DASHTUNE_CATALOG_PATH=str(catalog),
            # CI exports both offline switches; this server may download, from the fake hub.
            DASHTUNE_HF_OFFLINE="false",
            HF_HUB_OFFLINE="0",
            HF_ENDPOINT=hub.url,
            HF_HOME=str(root / "hf-home"),
            NO_PROXY="127.0.0.1,localhost",  # a proxy of the machine would not reach it
            no_proxy="127.0.0.1,localhost",
        )
        try:
            yield srv, hub
        finally:
            stop_server(srv)


def _train(srv: Server, tmp: Path, name: str) -> tuple[dict[str, Any], list[str]]:
    """A short sft job on the hub model, run to its end: the job and its logs."""
    with srv.http() as c:
        fid = upload_rows(c, tmp, f"{name}.jsonl", rows_for("sft", 8))
        body = {
            "model": "tiny-chat",
            "training_file_ids": [fid],
            "hyper_parameters": {"n_epochs": 1, "batch_size": 4, "max_length": 64},
        }
        r = c.post("/fine-tunes", json=body)
        assert r.status_code == 200, r.text
        job = wait_terminal(c, r.json()["output"]["job_id"], timeout=600)
        logs = c.get(f"/fine-tunes/{job['job_id']}/logs", params={"offset": 0, "line": 1000})
        return job, list(logs.json()["output"]["logs"])


def _listed(cli: Cli) -> dict[str, Any]:
    return next(m for m in cli.json("models", "list") if m["model"] == "tiny-chat")


def _about_repo(requests: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The requests for the repo; huggingface_hub and TRL also ask the hub for other things."""
    return [(method, path) for method, path in requests if REPO in path]


def test_a_hub_model_downloads_on_first_use_then_stays_local(
    online: tuple[Server, FakeHub], tmp_path: Path
) -> None:
    srv, hub = online
    cli = Cli(client_env(tmp_path, srv.base, srv.key))
    before = _listed(cli)
    assert before["available"] is False, before
    assert before["weights"] == f"downloaded on first use from {REPO}", before
    assert _about_repo(hub.seen()) == []  # listing the catalog downloads nothing

    job, logs = _train(srv, tmp_path, "first")
    assert job["status"] == "SUCCEEDED", (job, logs[-10:])
    loaded = sorted(name for name in hub.files if any(fnmatch(name, p) for p in PATTERNS))
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(loaded), loaded
    n = len(loaded)
    start = logs.index(f"downloading {REPO} from the Hugging Face hub (first use of this model)")
    progress = [i for i, line in enumerate(logs) if line.startswith(f"downloading {REPO}: ")]
    done = [i for i, line in enumerate(logs) if line.startswith(f"downloaded {REPO} to ")]
    # The file counter only: snapshot_download's byte counters must not read as files.
    assert progress and all(logs[i].endswith(f"/{n} files") for i in progress), logs
    assert logs[progress[-1]] == f"downloading {REPO}: {n}/{n} files", logs
    assert len(done) == 1 and f"models--acme--tiny-chat/snapshots/{COMMIT}" in logs[done[0]]
    training = next(i for i, line in enumerate(logs) if line.startswith("training data:"))
    assert start < progress[0] and progress[-1] < done[0] < training, logs

    asked = _about_repo(hub.seen())
    assert ("GET", f"/api/models/{REPO}/revision/main") in asked, asked
    fetched = sorted(
        path.rsplit(f"/{COMMIT}/", 1)[1] for m, path in asked if m == "GET" and "/resolve/" in path
    )
    assert fetched == loaded, asked  # each file a trainer loads, once; README and .pth not

    after = _listed(cli)
    assert after["available"] is True, after
    assert after["weights"] == f"in the Hugging Face cache ({REPO})", after

    again, logs = _train(srv, tmp_path, "second")
    assert again["status"] == "SUCCEEDED", (again, logs[-10:])
    assert not any(line.startswith("download") for line in logs), logs
    assert _about_repo(hub.seen()) == asked  # trained from the cache, the hub not asked
    # Workers send no telemetry (HF_HUB_DISABLE_TELEMETRY): TRL's went to the hub before.
    assert not [r for r in hub.seen() if "telemetry" in r[1]], hub.seen()
