"""`dashtune jobs create --dry-run` (the estimate) and `dashtune webhooks ...`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.shell import Cli
from tests.integration.helpers import sft_rows, write_jsonl


def test_dry_run_lists_every_problem_and_creates_nothing(cli: Cli, tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", sft_rows(4))
    jobs_before = cli.json("jobs", "list")["total"]
    est = cli.json(
        "jobs", "create", "-m", "dashtune-tiny", "-t", str(good), "--dry-run", timeout=400
    )
    assert est["valid"] and est["training"]["samples"] == 4 and est["total_tokens"] > 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(sft_rows(1)[0]) + '\n{"messages": []}\n{"text": "x"}\n')
    out = cli("jobs", "create", "-m", "dashtune-tiny", "-t", str(bad), "--dry-run", timeout=400)
    assert out.returncode == 1, out
    assert "bad.jsonl:2:" in out.stderr and "bad.jsonl:3:" in out.stderr, out.stderr
    assert "tokens per epoch" in out.stdout
    assert cli.json("jobs", "list")["total"] == jobs_before


def test_webhooks_create_list_deliveries_delete(cli: Cli) -> None:
    made = cli.json("webhooks", "create", "http://127.0.0.1:9/hook", "-e", "fine_tune.failed")
    assert made["secret"].startswith("whsec_") and made["event_types"] == ["fine_tune.failed"]
    listed = cli.ok("webhooks", "list").stdout
    assert made["webhook_id"] in listed and "fine_tune.failed" in listed
    assert cli.json("webhooks", "deliveries", made["webhook_id"]) == []
    cli.ok("webhooks", "delete", made["webhook_id"])
    assert made["webhook_id"] not in cli.ok("webhooks", "list").stdout
    refused = cli("webhooks", "create", "ftp://example.com/x")
    assert refused.returncode == 1 and "InvalidParameter" in refused.stderr
