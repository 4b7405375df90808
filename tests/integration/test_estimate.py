"""POST /api/v1/fine-tunes/estimate: every bad line listed, counts, nothing queued, and the
API process still free of torch."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.conftest import Server
from tests.integration.helpers import assert_error, sft_rows, upload, write_jsonl


def test_every_bad_line_is_listed_and_nothing_is_queued(server: Server, tmp_path: Path) -> None:
    key = server.new_key("estimate-user")
    good = [json.dumps(r) for r in sft_rows(6)]
    lines = [
        good[0],
        '{"messages": [{"role": "user", "content": "no answer"}]}',  # line 2
        good[1],
        '{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}',
        good[2],
        '{"text": "wrong format"}',  # line 6
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 3}]}',  # noqa: E501
        good[3],
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with server.http(key) as c:
        c.timeout = httpx.Timeout(300)  # the first estimate builds the tiny model's tokenizer
        fid = upload(c, bad)
        jobs_before = c.get("/fine-tunes").json()["output"]["total"]
        r = c.post(
            "/fine-tunes/estimate",
            json={
                "model": "dashtune-tiny",
                "training_file_ids": [fid, "no-such-file"],
                "hyper_parameters": {"n_epochs": 2, "batch_size": 2},
            },
        )
        assert r.status_code == 200, r.text
        out = r.json()["output"]
        assert not out["valid"]
        assert [(p["line"], p["field"]) for p in out["problems"]] == [
            (2, None),
            (4, "messages[0].role"),
            (6, "messages"),
            (7, "messages[1].weight"),
            (None, None),
        ]
        assert all(p["file"] == "bad.jsonl" for p in out["problems"][:4])
        assert out["problems"][4]["file_id"] == "no-such-file"
        assert "assistant" in out["problems"][0]["reason"]
        assert out["problems_total"] == 5 and not out["problems_truncated"]
        assert out["training"]["samples"] == 4 and out["training"]["tokens"] > 0
        # 4 samples: the auto split holds 1 out; 3 train at 2 a batch for 2 epochs.
        assert out["train_samples"] == 3 and out["total_steps"] == 4
        assert out["total_tokens"] == 2 * out["train_tokens_per_epoch"]
        assert out["duration"]["seconds"] is None and out["duration"]["reason"]
        assert out["memory"]["required_bytes"] > 0 and out["memory"]["fits"] is True
        assert c.get("/fine-tunes").json()["output"]["total"] == jobs_before

        dropped = c.post(
            "/fine-tunes/estimate",
            json={
                "model": "dashtune-tiny",
                "training_file_ids": [upload(c, write_jsonl(tmp_path / "g.jsonl", sft_rows(5)))],
                "hyper_parameters": {"max_length": 16},
            },
        ).json()["output"]
        assert dropped["valid"] and dropped["training"]["dropped_too_long"] == 5
        assert dropped["train_samples"] == 0

        assert_error(
            c.post("/fine-tunes/estimate", json={"model": "nope", "training_file_ids": [fid]}),
            400,
            "InvalidParameter",
            "nope",
        )
        assert_error(
            c.post(
                "/fine-tunes/estimate",
                json={
                    "model": "dashtune-tiny",
                    "training_file_ids": [fid],
                    "hyper_parameters": {"n_epochs": 0},
                },
            ),
            400,
            "InvalidParameter",
            "n_epochs",
        )
    maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
    assert "libtorch" not in maps
