"""Signed webhooks (extension): registration, Standard Webhooks signatures checked by the
`standardwebhooks` package, retries with the same webhook-id, and the outbox surviving a
SIGKILL of the server."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashtune.config import Settings
from tests.conftest import BACKENDS, Server, start_server, stop_server
from tests.integration.helpers import (
    assert_error,
    create_job,
    sft_rows,
    upload,
    wait_status,
    write_jsonl,
)
from tests.webhook_receiver import Received, Receiver, receiver


def register(c: Any, url: str, *types: str) -> dict[str, Any]:
    r = c.post("/webhooks", json={"url": url, "event_types": list(types) or None})
    assert r.status_code == 200, r.text
    return dict(r.json()["output"])


def delivered(c: Any, webhook_id: str, timeout: float = 60) -> dict[str, Any]:
    """The one delivery of `webhook_id`, once recorded as delivered (the receiver sees the
    request before the dispatcher records its answer)."""
    deadline = time.monotonic() + timeout
    while True:
        found = c.get(f"/webhooks/{webhook_id}/deliveries").json()["output"]["deliveries"]
        if found and found[0]["status"] == "delivered":
            (d,) = found
            return dict(d)
        assert time.monotonic() < deadline, found
        time.sleep(0.2)


def distinct(rx: Receiver) -> list[Received]:
    """The deliveries the receiver verified, one per webhook-id, in arrival order (delivery
    is at least once: a slow answer may be followed by the same message again)."""
    return list({r.webhook_id: r for r in reversed(rx.received)}.values())[::-1]


def canceled_job(c: Any, tmp_path: Path) -> str:
    """A job that ends CANCELED at once (the control plane leaves jobs queued)."""
    fid = upload(c, write_jsonl(tmp_path / "w.jsonl", sft_rows(2)))
    job_id = str(create_job(c, fid)["job_id"])
    assert c.post(f"/fine-tunes/{job_id}/cancel").status_code == 200
    return job_id


def test_register_list_get_delete_and_url_checks(server: Server) -> None:
    key = server.new_key("webhook-owner")
    with server.http(key) as c, receiver() as rx:
        made = register(c, rx.url, "fine_tune.succeeded", "deployment.failed")
        assert made["secret"].startswith("whsec_")
        assert made["event_types"] == ["fine_tune.succeeded", "deployment.failed"]
        wid = made["webhook_id"]
        got = c.get(f"/webhooks/{wid}").json()["output"]
        assert got["url"] == rx.url and "secret" not in got  # shown once
        assert [w["webhook_id"] for w in c.get("/webhooks").json()["output"]["webhooks"]] == [wid]
        assert c.get(f"/webhooks/{wid}/deliveries").json()["output"]["deliveries"] == []

        for url, word in (
            ("ftp://example.com/hook", "http"),
            ("http:///nohost", "host"),
            ("not a url", "http"),
            ("http://no-such-host.invalid/hook", "resolve"),
        ):
            assert_error(c.post("/webhooks", json={"url": url}), 400, "InvalidParameter", word)
        bad_type = c.post("/webhooks", json={"url": rx.url, "event_types": ["fine_tune.done"]})
        assert_error(bad_type, 400, "InvalidParameter", "fine_tune.done")

        with server.http(server.new_key("webhook-outsider")) as other:
            assert_error(other.get(f"/webhooks/{wid}"), 404, "NotFound")
            assert_error(other.delete(f"/webhooks/{wid}"), 404, "NotFound")
        assert c.delete(f"/webhooks/{wid}").status_code == 200
        assert_error(c.get(f"/webhooks/{wid}"), 404, "NotFound")


def test_signed_delivery_retried_with_the_same_webhook_id(server: Server, tmp_path: Path) -> None:
    key = server.new_key("webhook-retry")
    with server.http(key) as c, receiver() as rx:
        made = register(c, rx.url, "fine_tune.canceled")
        rx.secret, rx.statuses = made["secret"], [500]
        job_id = canceled_job(c, tmp_path)
        got = rx.wait(lambda r: len(r) >= 2)
        assert not rx.bad
        assert [g.answered for g in got] == [500, 200]
        assert got[0].webhook_id == got[1].webhook_id and got[0].webhook_id.startswith("msg_")
        payload = got[1].payload
        assert payload["type"] == "fine_tune.canceled"
        assert payload["data"]["job_id"] == job_id and payload["data"]["status"] == "CANCELED"
        assert payload["timestamp"].endswith("Z")

        d = delivered(c, made["webhook_id"])
        assert d["webhook_message_id"] == got[0].webhook_id and d["status"] == "delivered"
        assert [a["status_code"] for a in d["attempts"]] == [500, 200]
        assert d["attempts"][0]["error"] == "HTTP 500"


def test_delivery_survives_sigkill_of_the_server(
    tmp_path: Path, database_factory: Any, request: pytest.FixtureRequest
) -> None:
    """Killed while the first attempt is in flight: the outbox row, committed with the
    state change, is delivered after the restart under the same webhook-id."""
    backend = os.environ.get("DASHTUNE_TEST_BACKENDS", "sqlite").split(",")[0]
    data_dir = tmp_path / "srv"
    url = database_factory(backend, data_dir)
    env = {"DASHTUNE_EXECUTOR": "none", "DASHTUNE_SERVING": "false"}
    srv: Server = start_server(data_dir, url, **env)
    try:
        with receiver() as rx:
            rx.hang_first = True
            with srv.http() as c:
                made = register(c, rx.url, "fine_tune.canceled")
                rx.secret = made["secret"]
                job_id = canceled_job(c, tmp_path)
            assert rx.arrived.wait(60), "no delivery attempt"
            srv.proc.send_signal(signal.SIGKILL)
            srv.proc.wait(timeout=20)
            restarted = start_server(data_dir, url, **env)
            restarted.key = srv.key
            srv = restarted
            (got,) = rx.wait(lambda r: len(r) >= 1)
            assert not rx.bad and got.payload["data"]["job_id"] == job_id
            with srv.http() as c:
                d = delivered(c, made["webhook_id"])
            assert d["webhook_message_id"] == got.webhook_id and d["status"] == "delivered"
    finally:
        stop_server(srv)


def test_paused_job_is_delivered_as_fine_tune_paused(server: Server, tmp_path: Path) -> None:
    key = server.new_key("webhook-paused")
    with server.http(key) as c, receiver() as rx:
        made = register(c, rx.url, "fine_tune.paused")
        rx.secret = made["secret"]
        fid = upload(c, write_jsonl(tmp_path / "p.jsonl", sft_rows(2)))
        job_id = str(create_job(c, fid)["job_id"])
        wait_status(c, job_id, "QUEUING")
        paused = c.post(f"/fine-tunes/{job_id}/pause")
        assert paused.status_code == 200 and paused.json()["output"]["status"] == "PAUSED"
        d = delivered(c, made["webhook_id"])
        (got,) = distinct(rx)
        assert not rx.bad
        assert got.payload["type"] == "fine_tune.paused" == d["event_type"]
        assert got.payload["data"]["job_id"] == job_id
        assert got.payload["data"]["status"] == "PAUSED"
        assert d["webhook_message_id"] == got.webhook_id


def test_failed_validation_is_delivered_as_fine_tune_failed(server: Server, tmp_path: Path) -> None:
    key = server.new_key("webhook-failed")
    with server.http(key) as c, receiver() as rx:
        made = register(c, rx.url, "fine_tune.failed")
        rx.secret = made["secret"]
        rows = sft_rows(3)
        rows[1] = {"messages": [{"role": "user", "content": "no answer"}]}
        fid = upload(c, write_jsonl(tmp_path / "bad.jsonl", rows))
        job_id = str(create_job(c, fid)["job_id"])
        failed = wait_status(c, job_id, "FAILED")
        d = delivered(c, made["webhook_id"])
        (got,) = distinct(rx)
        assert not rx.bad and d["webhook_message_id"] == got.webhook_id
        data = got.payload["data"]
        assert got.payload["type"] == "fine_tune.failed"
        assert data["job_id"] == job_id and data["status"] == "FAILED"
        assert data["code"] == "InvalidDataset" == failed["code"]
        # What the receiver is told is what the API shows.
        assert data["message"] == failed["message"] and "line 2" in data["message"]
        assert data["end_time"] == failed["end_time"]


def test_only_registered_event_types_are_delivered(server: Server, tmp_path: Path) -> None:
    """A webhook for fine_tune.failed hears nothing of a job that is paused and canceled."""
    key = server.new_key("webhook-filtered")
    with server.http(key) as c, receiver() as rx:
        quiet = register(c, rx.url, "fine_tune.failed")
        loud = register(c, rx.url, "fine_tune.paused", "fine_tune.canceled")
        rx.secret = loud["secret"]
        fid = upload(c, write_jsonl(tmp_path / "q.jsonl", sft_rows(2)))
        job_id = str(create_job(c, fid)["job_id"])
        wait_status(c, job_id, "QUEUING")
        assert c.post(f"/fine-tunes/{job_id}/pause").status_code == 200
        assert c.post(f"/fine-tunes/{job_id}/cancel").status_code == 200
        rx.wait(lambda r: len({g.webhook_id for g in r}) >= 2)
        assert [g.payload["type"] for g in distinct(rx)] == [
            "fine_tune.paused",
            "fine_tune.canceled",
        ]
        assert not rx.bad  # signed with the secret of the webhook that asked for them
        assert (
            c.get(f"/webhooks/{quiet['webhook_id']}/deliveries").json()["output"]["deliveries"]
            == []
        )


@pytest.fixture(scope="module", params=BACKENDS)
def public_only_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, database_factory: Any
) -> Iterator[Server]:
    """A server as deployed, refusing loopback and private webhook addresses: the default
    (start_server allows them for the other tests' receivers, so this one says "false")."""
    assert Settings.model_fields["webhook_allow_private"].default is False
    data_dir = tmp_path_factory.mktemp(f"public-only-{request.param}")
    srv = start_server(
        data_dir,
        database_factory(request.param, data_dir),
        DASHTUNE_EXECUTOR="none",
        DASHTUNE_SERVING="false",
        DASHTUNE_WEBHOOK_ALLOW_PRIVATE="false",
    )
    yield srv
    stop_server(srv)


def test_private_addresses_are_refused_at_registration(public_only_server: Server) -> None:
    with public_only_server.http() as c, receiver() as rx:
        port = rx.url.split(":")[2].split("/")[0]
        for url, why in (
            (rx.url, "127.0.0.1 is a loopback address"),
            (f"http://localhost:{port}/hook", "loopback"),
            ("http://[::1]:8080/hook", "loopback"),
            ("http://[::ffff:127.0.0.1]/hook", "loopback"),
            ("https://10.1.2.3/hook", "10.1.2.3 is a private address"),
            ("http://192.168.0.7:9000/hook", "private"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("http://0.0.0.0/hook", "0.0.0.0"),
        ):
            r = c.post("/webhooks", json={"url": url, "event_types": ["fine_tune.failed"]})
            assert_error(r, 400, "InvalidParameter", why, "public addresses")
        assert c.get("/webhooks").json()["output"]["webhooks"] == []
        # A public address is accepted (registering does not call it).
        public = register(c, "https://93.184.215.14/hook", "fine_tune.failed")
        listed = c.get("/webhooks").json()["output"]["webhooks"]
        assert [w["webhook_id"] for w in listed] == [public["webhook_id"]]
        assert c.delete(f"/webhooks/{public['webhook_id']}").status_code == 200


def test_deployment_running_and_failed_are_delivered(tmp_path: Path, database_factory: Any) -> None:
    """Deployments of base models (no training): the tiny model loads and runs, a catalog
    model whose weights are missing fails; the receiver hears of each."""
    backend = os.environ.get("DASHTUNE_TEST_BACKENDS", "sqlite").split(",")[0]
    data_dir = tmp_path / "srv"
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "models:\n"
        "  dashtune-tiny:\n    source: builtin:tiny\n"
        f"  broken-base:\n    source: {data_dir / 'no-such-weights'}\n"
    )
    srv = start_server(
        data_dir,
        database_factory(backend, data_dir),
        DASHTUNE_EXECUTOR="none",
        DASHTUNE_SERVING="true",
        DASHTUNE_CATALOG_PATH=str(catalog),
    )
    try:
        with srv.http() as c, receiver() as rx:
            made = register(c, rx.url, "deployment.running", "deployment.failed")
            rx.secret = made["secret"]
            names = {}
            for model in ("dashtune-tiny", "broken-base"):
                r = c.post("/deployments", json={"model_name": model, "capacity": 1})
                assert r.status_code == 200, r.text
                names[model] = r.json()["output"]["deployed_model"]
            rx.wait(lambda r: len({g.webhook_id for g in r}) >= 2, timeout=180)
            assert not rx.bad
            got = {g.payload["data"]["deployed_model"]: g.payload for g in distinct(rx)}
            running, failed = got[names["dashtune-tiny"]], got[names["broken-base"]]
            assert running["type"] == "deployment.running"
            assert running["data"]["status"] == "RUNNING"
            assert running["data"]["model_name"] == "dashtune-tiny"
            assert failed["type"] == "deployment.failed"
            assert failed["data"]["status"] == "FAILED"
            # What the receiver is told is what the API shows (no server paths).
            shown = c.get(f"/deployments/{names['broken-base']}").json()["output"]
            assert shown["status"] == "FAILED" and "no-such-weights" in shown["message"]
            assert failed["data"]["message"] == shown["message"]
            listed = c.get(f"/webhooks/{made['webhook_id']}/deliveries").json()["output"]
            messages = {d["payload"]["data"]["message"] for d in listed["deliveries"]}
            assert shown["message"] in messages and str(data_dir) not in str(listed)
            for name in names.values():
                assert c.delete(f"/deployments/{name}").status_code == 200
    finally:
        stop_server(srv)
