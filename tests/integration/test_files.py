"""Files API (§2) through both SDK generations and raw HTTP."""

from __future__ import annotations

from pathlib import Path

import dashscope
import pytest
from dashscope import Files

from tests.conftest import Server
from tests.integration.helpers import TIME, UUID, assert_error, sft_rows, upload, write_jsonl


@pytest.fixture
def sdk(server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setattr(dashscope, "base_http_api_url", server.api)
    return server


def blob_count(server: Server) -> int:
    return sum(1 for p in (server.data_dir / "files").rglob("*") if p.is_file())


def test_sdk_v1_upload_list_get_delete(sdk: Server, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", sft_rows(3))
    up = Files.upload(str(path), description="reverse task", api_key=sdk.key)
    assert up.status_code == 200, up
    file_id = up.output["uploaded_files"][0]["file_id"]
    assert UUID.match(file_id)
    assert up.output["uploaded_files"][0]["name"] == "train.jsonl"
    assert up.output["failed_uploads"] == []

    got = Files.get(file_id, api_key=sdk.key)
    assert got.status_code == 200
    assert got.output["file_id"] == file_id
    assert got.output["size"] == path.stat().st_size
    assert got.output["description"] == "reverse task"
    assert got.output["purpose"] == "fine-tune"
    assert TIME.match(got.output["gmt_create"])
    assert got.output["md5"]

    listed = Files.list(page=1, page_size=100, api_key=sdk.key)
    assert listed.status_code == 200
    assert file_id in [f["file_id"] for f in listed.output["files"]]

    gone = Files.delete(file_id, api_key=sdk.key)
    assert gone.status_code == 200
    again = Files.get(file_id, api_key=sdk.key)
    assert again.status_code == 404
    assert again.code == "NotFound"


def test_sdk_v2_client_files(server: Server, tmp_path: Path) -> None:
    from dashscope.v2 import Client

    client = Client(api_key=server.key, base_url=server.api, max_retries=0)
    path = write_jsonl(tmp_path / "v2.jsonl", sft_rows(2))
    f = client.files.upload(file_path=str(path), description="v2")
    assert f.file_id and UUID.match(f.file_id)
    got = client.files.get(f.file_id)
    assert got.name == "v2.jsonl" and got.size == path.stat().st_size
    assert got.uploaded_at and TIME.match(got.uploaded_at)
    listed = client.files.list(page_no=1, page_size=100)
    assert f.file_id in [x.file_id for x in listed.files]
    assert listed.total_count >= 1
    deleted = client.files.delete(f.file_id)
    assert deleted.deleted is True
    from dashscope.v2.errors import NotFoundError

    with pytest.raises(NotFoundError):
        client.files.get(f.file_id)


def test_list_pages(server: Server, tmp_path: Path) -> None:
    key = server.new_key("pager")
    with server.http(key) as c:
        ids = [upload(c, write_jsonl(tmp_path / f"p{i}.jsonl", sft_rows(1))) for i in range(3)]
        r = c.get("/files", params={"page_no": 1, "page_size": 2})
        data = r.json()["data"]
        assert data["total"] == 3 and data["page_no"] == 1 and data["page_size"] == 2
        page2 = c.get("/files", params={"page_no": 2, "page_size": 2}).json()["data"]["files"]
        seen = [f["file_id"] for f in data["files"]] + [f["file_id"] for f in page2]
        assert sorted(seen) == sorted(ids)
        assert_error(
            c.get("/files", params={"page_size": 101}), 400, "InvalidParameter", "page_size"
        )
        assert_error(c.get("/files", params={"page_no": 0}), 400, "InvalidParameter", "page_no")


def test_invalid_jsonl_rejected_and_nothing_stored(server: Server, tmp_path: Path) -> None:
    key = server.new_key("badfiles")
    before = blob_count(server)
    with server.http(key) as c:
        bad = b'{"messages": []}\n{"messages": [\n'
        r = c.post("/files", files={"files": ("bad.jsonl", bad)})
        assert_error(r, 400, "InvalidParameter", "line 2", "bad.jsonl")
        r = c.post("/files", files={"files": ("latin.jsonl", b'{"text": "caf\xe9"}\n')})
        assert_error(r, 400, "InvalidParameter", "line 1", "utf-8")
        r = c.post("/files", files={"files": ("arr.jsonl", b"[1, 2]\n")})
        assert_error(r, 400, "InvalidParameter", "object")
        r = c.post("/files", files={"files": ("notes.txt", b'{"text": "x"}\n')})
        assert_error(r, 400, "InvalidParameter", ".jsonl")
        # Two parts, the second bad: the first is not kept either.
        r = c.post(
            "/files",
            files=[
                ("files", ("ok.jsonl", b'{"text": "x"}\n')),
                ("files", ("bad.jsonl", b"nope\n")),
            ],
        )
        assert_error(r, 400, "InvalidParameter", "bad.jsonl")
        assert c.get("/files").json()["data"]["total"] == 0
    assert blob_count(server) == before


def test_oversize_upload_is_413_and_leaves_nothing(server: Server) -> None:
    key = server.new_key("bigfiles")
    before = blob_count(server)
    line = b'{"text": "' + b"x" * 1000 + b'"}\n'
    with server.http(key) as c:
        # Just over the 1 MiB limit the test server runs with: rejected while copying.
        r = c.post("/files", files={"files": ("big.jsonl", line * 1100)})
        assert_error(r, 413, "RequestTooLarge", "limit")
        # Far over: rejected from Content-Length before the body is read.
        r = c.post("/files", files={"files": ("huge.jsonl", line * 3000)})
        assert_error(r, 413, "RequestTooLarge")
        assert c.get("/files").json()["data"]["total"] == 0
    assert blob_count(server) == before


def test_upload_needs_multipart_and_a_files_part(server: Server) -> None:
    with server.http() as c:
        r = c.post("/files", content=b'{"text": "x"}', headers={"content-type": "application/json"})
        assert_error(r, 415, "InvalidParameter", "multipart")
        r = c.post("/files", files={"other": ("a.jsonl", b'{"text": "x"}\n')})
        assert_error(r, 400, "InvalidParameter", "files")


def test_content_and_purpose(server: Server, tmp_path: Path) -> None:
    with server.http() as c:
        raw = b'{"text": "hello"}\n'
        r = c.post("/files", files={"files": ("c.jsonl", raw)}, data={"purpose": "fine_tune"})
        fid = r.json()["data"]["uploaded_files"][0]["file_id"]
        assert c.get(f"/files/{fid}").json()["data"]["purpose"] == "fine-tune"
        assert c.get(f"/files/{fid}/content").content == raw
        r = c.post("/files", files={"files": ("c.jsonl", raw)}, data={"purpose": "batch"})
        assert_error(r, 400, "InvalidParameter", "purpose")


def test_lost_blob_is_a_logged_500(server: Server) -> None:
    """Storage lost under a file: the catch-all 500 names a request_id that the log has too."""
    with server.http() as c:
        r = c.post("/files", files={"files": ("lost.jsonl", b'{"text": "x"}\n')})
        fid = r.json()["data"]["uploaded_files"][0]["file_id"]
        (server.data_dir / "files" / fid[:2] / fid).unlink()
        r = c.get(f"/files/{fid}/content")
        body = assert_error(r, 500, "InternalError", "request_id")
        assert body["request_id"] in body["message"]
        assert body["request_id"] in server.log_text()


def test_lost_blob_through_the_openai_sdk_is_a_500_in_openais_shape(server: Server) -> None:
    """The OpenAI-compatible routes answer OpenAI's error object on every error, the
    catch-all 500 included (issue 13, item 8)."""
    import openai

    client = openai.OpenAI(
        base_url=server.base + "/compatible-mode/v1", api_key=server.key, max_retries=0
    )
    f = client.files.create(file=("lost.jsonl", b'{"text": "x"}\n'), purpose="fine-tune")
    (server.data_dir / "files" / f.id[:2] / f.id).unlink()
    with pytest.raises(openai.InternalServerError) as lost:
        client.files.content(f.id)
    body = lost.value.response.json()
    assert set(body["error"]) >= {"message", "type", "code", "param"}, body
    assert body["error"]["code"] == "InternalError" and body["error"]["type"] == "server_error"
    assert body["request_id"] in body["error"]["message"]
    assert body["request_id"] in server.log_text()
