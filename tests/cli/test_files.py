"""`dashtune files ...` against a real server."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.shell import Cli, assert_cli_error
from tests.integration.helpers import sft_rows, write_jsonl


def test_upload_list_get_delete(cli: Cli, tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", sft_rows(3))
    b = write_jsonl(tmp_path / "b.jsonl", sft_rows(5))

    uploaded = cli.json("files", "upload", str(a), str(b), "-d", "two sets")
    assert [f["name"] for f in uploaded] == ["a.jsonl", "b.jsonl"]
    ids = [f["file_id"] for f in uploaded]

    listed = cli.json("files", "list", "--page-size", "100")
    assert set(ids) <= {f["file_id"] for f in listed["files"]}

    table = cli.ok("files", "list").stdout
    assert ids[0] in table and "a.jsonl" in table and "two sets" in table

    got = cli.json("files", "get", ids[1])
    assert got["lines"] == 5 and got["description"] == "two sets"
    shown = cli.ok("files", "get", ids[1]).stdout
    assert "b.jsonl" in shown and "md5" in shown

    assert cli.json("files", "delete", ids[0]) == {"deleted": True}
    assert_cli_error(cli("files", "get", ids[0]), "NotFound", ids[0])
    cli.ok("files", "delete", ids[1])


def test_upload_errors_name_the_problem(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": []}) + "\nnot json\n")
    assert_cli_error(cli("files", "upload", str(bad)), "InvalidParameter", "line 2")
    assert_cli_error(
        cli("files", "upload", str(tmp_path / "missing.jsonl")), "InvalidParameter", "missing.jsonl"
    )
