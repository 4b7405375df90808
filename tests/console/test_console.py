"""The web console in a real browser against a real server: login, jobs table and
filters, a job's loss curves from recorded metrics, cancel/delete buttons, upload, chat."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from dashtune.services import engine
from tests.cli.control_plane import wait_status
from tests.conftest import Server
from tests.console.conftest import login, shot
from tests.integration.helpers import create_job, sft_rows, upload, write_jsonl


@pytest.fixture
def runtime(server: Server) -> Any:
    rt = server.runtime()
    yield rt
    rt.close()


@pytest.fixture
def file_id(server: Server, tmp_path: Path) -> str:
    with server.http() as c:
        return upload(c, write_jsonl(tmp_path / "train.jsonl", sft_rows(4)))


def queued_job(server: Server, file_id: str, **extra: Any) -> str:
    with server.http() as c:
        job_id = str(create_job(c, file_id, **extra)["job_id"])
    wait_status(server, job_id, "QUEUING")
    return job_id


def running_job(server: Server, runtime: Any, file_id: str) -> str:
    job_id = queued_job(server, file_id)
    claimed = engine.claim_next(runtime, "console-test")
    assert claimed is not None and claimed.id == job_id
    return job_id


def curve_loss(step: int) -> float:
    return 2.5 * math.exp(-step / 12) + 0.3


def record(runtime: Any, job_id: str, steps: range, total: int) -> None:
    """What a worker reports: train loss each step, eval loss every 5, progress, a log line."""
    for step in steps:
        loss = curve_loss(step)
        engine.record_metrics(
            runtime,
            job_id,
            step,
            {"loss": loss, "learning_rate": 1e-3, "tokens_per_second": 2048.0},
        )
        if step % 5 == 0:
            engine.record_metrics(runtime, job_id, step, {"eval_loss": loss + 0.2})
        engine.log(runtime, job_id, [f"step {step}/{total} loss={loss:.4f}"])
    engine.record_progress(runtime, job_id, steps[-1], total, 30.0)


# Pixels of a colour on the chart's canvas: proof that a series was drawn, not just set.
COUNT_PIXELS = """([r, g, b]) => {
  const canvas = document.querySelector('#loss-chart canvas');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (Math.abs(data[i] - r) < 40 && Math.abs(data[i + 1] - g) < 40 && Math.abs(data[i + 2] - b) < 40 && data[i + 3] > 200) n++;
  }
  return n;
}"""
BLUE, ORANGE = (37, 99, 235), (234, 88, 12)


def test_login_keeps_the_key_and_sign_out_forgets_it(page: Any, server: Server) -> None:
    page.goto(server.base + "/console")
    shot(page, "login")
    page.fill("#api-key", "sk-not-a-key")
    page.click("button[type=submit]")
    page.wait_for_selector(".alert-error")
    assert "InvalidApiKey" in page.inner_text(".alert-error")

    login(page, server)
    assert page.evaluate("localStorage.getItem('dashtune.apiKey')") == server.key
    page.reload()
    page.wait_for_selector("#new-job")  # still signed in
    page.click("#logout")
    page.wait_for_selector("#api-key")
    assert page.evaluate("localStorage.getItem('dashtune.apiKey')") is None


def test_job_page_draws_loss_curves_from_recorded_metrics(
    page: Any, server: Server, runtime: Any, file_id: str
) -> None:
    job_id = running_job(server, runtime, file_id)
    record(runtime, job_id, range(1, 21), total=40)

    login(page, server)
    row = page.locator(f"tr[data-job-id='{job_id}']")
    assert "RUNNING" in row.inner_text() and "50%" in row.inner_text()
    row.locator("a").click()

    page.wait_for_selector("#loss-chart[data-loss-points='20'][data-eval-points='4'] canvas")
    page.wait_for_timeout(300)
    assert page.evaluate(COUNT_PIXELS, BLUE) > 200, "train loss curve not drawn"
    assert page.evaluate(COUNT_PIXELS, ORANGE) > 50, "eval loss curve not drawn"
    assert page.inner_text("#tile-step").endswith("20 / 40")
    assert page.inner_text("#tile-loss").endswith(f"{curve_loss(20):.4f}".rstrip("0"))
    assert "step 20/40" in page.inner_text("#job-logs")
    assert "n_epochs" in page.inner_text("body")
    shot(page, "job-running-loss-curve")

    # The page refreshes while the job runs: new points extend the curve.
    record(runtime, job_id, range(21, 31), total=40)
    page.wait_for_selector("#loss-chart[data-loss-points='30'][data-eval-points='6']")
    page.wait_for_function("document.querySelector('#job-logs').textContent.includes('step 30/40')")
    assert page.inner_text("#tile-step").endswith("30 / 40")
    shot(page, "job-loss-curve-updated")


def test_cancel_and_delete_buttons_follow_allowed_actions(
    page: Any, server: Server, runtime: Any, file_id: str
) -> None:
    login(page, server)

    # RUNNING: Cancel is offered, Delete is not; cancel goes through CANCELING.
    job_id = running_job(server, runtime, file_id)
    page.goto(f"{server.base}/console/#/jobs/{job_id}")
    page.wait_for_selector(".badge-running")
    assert page.is_enabled("#cancel-job") and page.is_disabled("#delete-job")
    page.click("#cancel-job")
    page.wait_for_selector(".title-row .badge-canceling")
    assert page.is_disabled("#delete-job")
    engine.finish(runtime, job_id, engine.Outcome(canceled=True))  # the worker stops
    page.wait_for_selector(".title-row .badge-canceled")
    assert page.is_disabled("#cancel-job") and page.is_enabled("#delete-job")
    shot(page, "job-canceled")

    page.click("#delete-job")
    page.wait_for_selector("#new-job")
    assert page.url.endswith("#/jobs")
    with server.http() as c:
        assert c.get(f"/fine-tunes/{job_id}").status_code == 404

    # QUEUING: Cancel ends it at once.
    queued = queued_job(server, file_id)
    page.goto(f"{server.base}/console/#/jobs/{queued}")
    page.wait_for_selector(".badge-queuing")
    page.click("#cancel-job")
    page.wait_for_selector(".title-row .badge-canceled")
    with server.http() as c:
        assert c.get(f"/fine-tunes/{queued}").json()["output"]["status"] == "CANCELED"


def test_pause_and_resume_buttons_follow_allowed_actions(
    page: Any, server: Server, runtime: Any, file_id: str
) -> None:
    login(page, server)
    job_id = running_job(server, runtime, file_id)
    page.goto(f"{server.base}/console/#/jobs/{job_id}")
    page.wait_for_selector(".badge-running")
    assert page.is_visible("#pause-job") and not page.is_visible("#resume-job")
    page.click("#pause-job")
    page.wait_for_selector(".title-row .badge-pausing")
    assert page.is_disabled("#pause-job") and page.is_disabled("#delete-job")
    engine.finish(runtime, job_id, engine.Outcome(usage=7, paused=True))  # resume point saved
    page.wait_for_selector(".title-row .badge-paused")
    assert page.is_visible("#resume-job") and not page.is_visible("#pause-job")
    assert page.is_enabled("#cancel-job") and page.is_disabled("#delete-job")
    shot(page, "job-paused")
    page.click("#resume-job")
    page.wait_for_selector(".title-row .badge-queuing")
    assert page.is_visible("#pause-job") and not page.is_visible("#resume-job")
    with server.http() as c:
        assert c.get(f"/fine-tunes/{job_id}").json()["output"]["status"] == "QUEUING"


ALL_ROWS_IN = """([states, mustShow]) => {
    const rows = [...document.querySelectorAll('tr[data-job-id]')];
    return rows.some(r => r.dataset.jobId === mustShow)
        && rows.every(r => states.includes(r.dataset.status));
}"""


def test_jobs_table_filters_by_status_and_model(page: Any, server: Server, file_id: str) -> None:
    live = queued_job(server, file_id)
    ended = queued_job(server, file_id)
    with server.http() as c:
        c.post(f"/fine-tunes/{ended}/cancel")
    login(page, server)
    page.wait_for_selector(f"tr[data-job-id='{live}']")

    # The filtered table replaces the rows asynchronously: wait for the re-render itself,
    # not for a row that the unfiltered table already showed.
    page.select_option("#status-filter", "CANCELED")
    page.wait_for_function(ALL_ROWS_IN, arg=[["CANCELED"], ended])
    statuses = page.eval_on_selector_all(
        "tr[data-job-id]", "rows => rows.map(r => r.dataset.status)"
    )
    assert statuses and set(statuses) == {"CANCELED"}

    live_states = ["PENDING", "QUEUING", "RUNNING", "CANCELING"]
    page.select_option("#status-filter", "LIVE")
    page.wait_for_function(ALL_ROWS_IN, arg=[live_states, live])
    statuses = page.eval_on_selector_all(
        "tr[data-job-id]", "rows => rows.map(r => r.dataset.status)"
    )
    assert set(statuses) <= set(live_states)
    shot(page, "jobs-filtered")

    page.select_option("#status-filter", "")
    page.fill("#model-filter", "no-such-model")
    page.wait_for_selector("td.empty")


def test_upload_a_file_from_the_files_page(page: Any, server: Server, tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "console-upload.jsonl", sft_rows(6))
    bad = tmp_path / "broken.jsonl"
    bad.write_text(json.dumps(sft_rows(1)[0]) + "\n{not json\n")
    login(page, server)
    page.click("a[href='#/files']")
    page.wait_for_selector("#upload-form")

    page.set_input_files("#upload-file", str(good))
    page.fill("#upload-description", "from the browser")
    page.click("#upload-button")
    page.wait_for_selector("#upload-message .alert-success")
    message = page.inner_text("#upload-message")
    file_id = message.split(" as ")[1].rstrip(".")
    row = page.locator(f"tr[data-file-id='{file_id}']")
    assert "console-upload.jsonl" in row.inner_text() and "from the browser" in row.inner_text()
    with server.http() as c:
        got = c.get(f"/files/{file_id}").json()["data"]
    assert got["lines"] == 6 and got["name"] == "console-upload.jsonl"
    shot(page, "files-uploaded")

    page.set_input_files("#upload-file", str(bad))
    page.click("#upload-button")
    page.wait_for_selector("#upload-message .alert-error")
    assert "InvalidParameter" in page.inner_text("#upload-message")
    assert "line 2" in page.inner_text("#upload-message")


def test_new_job_form_creates_a_job(page: Any, server: Server, file_id: str) -> None:
    login(page, server)
    page.click("#new-job")
    page.wait_for_selector(
        f"select[name=training_file] option[value='{file_id}']", state="attached"
    )
    page.select_option("select[name=training_file]", file_id)
    page.select_option("select[name=training_type]", "efficient_sft")
    page.fill("textarea[name=hyper_parameters]", '{"n_epochs": 2, "learning_rate": 0.003}')
    shot(page, "job-create-form")
    page.click("#create-job button[type=submit]")
    page.wait_for_selector("#cancel-job")
    job_id = page.url.rsplit("/", 1)[1]
    with server.http() as c:
        job = c.get(f"/fine-tunes/{job_id}").json()["output"]
    assert job["training_type"] == "efficient_sft"
    assert job["hyper_parameters"] == {"n_epochs": 2, "learning_rate": 0.003}


def test_deploy_chat_and_delete_from_the_deployments_page(page: Any, server: Server) -> None:
    login(page, server)
    page.click("a[href='#/deployments']")
    page.wait_for_selector("#deploy-form")

    # A model nobody serves: the chat box shows the API's code and message.
    page.fill("#chat-model", "no-such-model")
    page.fill("#chat-input", "hello")
    page.click("#chat-send")
    page.wait_for_selector("#chat-form .alert-error")
    assert "NotFound: " in page.inner_text("#chat-form .alert-error")
    assert page.input_value("#chat-input") == "hello"  # kept for a retry

    # Deploy the base model; the page follows it to RUNNING.
    page.fill("#deploy-form input[name=model_name]", "dashtune-tiny")
    page.fill("#deploy-form input[name=suffix]", "console")
    page.click("#deploy-form button[type=submit]")
    row = "tr[data-deployment='dashtune-tiny-console']"
    page.wait_for_selector(f"{row}[data-status='RUNNING']", timeout=120_000)

    page.click(f"{row} button:has-text('Chat')")
    assert page.input_value("#chat-model") == "dashtune-tiny-console"
    page.fill("#chat-temperature", "1")
    page.fill("#chat-max-tokens", "12")
    page.fill("#chat-input", "reverse abcd")
    page.click("#chat-send")
    page.wait_for_selector(".bubble-assistant .bubble-text:not(.typing)")
    assert page.inner_text(".bubble-assistant .bubble-text").strip()  # sampled: some text
    assert page.locator("#chat-form .alert-error").count() == 0
    assert page.inner_text(".bubble-user .bubble-text") == "reverse abcd"
    shot(page, "deployments-chat")

    page.click(f"{row} button:has-text('Delete')")
    page.wait_for_selector(f"{row}[data-status='DELETING'], td.empty")
    with server.http() as c:
        deadline = time.monotonic() + 60
        while c.get("/deployments/dashtune-tiny-console").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.5)


def test_export_a_checkpoint_from_the_job_page(
    page: Any, server: Server, runtime: Any, file_id: str, tmp_path: Path
) -> None:
    job_id = running_job(server, runtime, file_id)
    saved = tmp_path / "checkpoint-4"
    saved.mkdir()
    (saved / "adapter_config.json").write_text("{}")
    record(runtime, job_id, range(1, 5), total=8)
    engine.add_checkpoint(runtime, job_id, "checkpoint-4", 4, str(saved), {"loss": curve_loss(4)})
    login(page, server)
    page.goto(f"{server.base}/console/#/jobs/{job_id}")
    page.wait_for_selector("td >> text=checkpoint-4")
    assert page.locator("button:has-text('Export')").count() == 0  # not while RUNNING

    with server.http() as c:
        c.post(f"/fine-tunes/{job_id}/cancel")
    engine.finish(runtime, job_id, engine.Outcome(canceled=True))
    page.wait_for_selector(".title-row .badge-canceled")
    page.click("button:has-text('Export')")  # the prompt is accepted with its default name
    page.wait_for_selector("#job-logs >> text=Export of checkpoint-4")
    page.wait_for_selector("td .badge-succeeded")
    with server.http() as c:
        cps = c.get(f"/fine-tunes/{job_id}/checkpoints").json()["output"]
    assert [(x["checkpoint"], x["status"]) for x in cps] == [("checkpoint-4", "SUCCEEDED")]
    shot(page, "job-checkpoint-exported")


def test_unknown_job_failed_reason_queue_wait_and_file_names(
    page: Any, server: Server, runtime: Any, file_id: str
) -> None:
    """What a newcomer met: an unknown job loading forever, failures and waits unexplained,
    training files shown as bare UUIDs."""
    failed = running_job(server, runtime, file_id)
    reason = "file 'train.jsonl' line 3: needs at least one assistant message"
    engine.finish(runtime, failed, engine.Outcome(code="InvalidDataset", message=reason))
    waiting = queued_job(server, file_id)

    login(page, server)
    failed_row = page.locator(f"tr[data-job-id='{failed}'] .status-note")
    assert f"InvalidDataset: {reason}" in failed_row.inner_text()
    waiting_row = page.locator(f"tr[data-job-id='{waiting}'] .status-note")
    assert "Waiting for a free training slot" in waiting_row.inner_text()

    page.goto(f"{server.base}/console#/jobs/{waiting}")
    page.wait_for_function(
        "document.querySelector('.file-name') && "
        "document.querySelector('.file-name').textContent === 'train.jsonl'"
    )
    assert "Waiting for a free training slot" in page.inner_text("body")
    shot(page, "job-queued-with-file-names")

    page.goto(f"{server.base}/console#/jobs/ft-000000000000-0000")
    page.wait_for_selector("#job-not-found")
    text = page.inner_text("body")
    assert "Job not found" in text and "NotFound" in text and "Loading…" not in text
    shot(page, "job-not-found")
