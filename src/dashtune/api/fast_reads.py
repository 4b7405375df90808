"""`GET /api/v1/fine-tunes/{job_id}` and the job list, answered before FastAPI.

Why: polling a job is the API's hottest call (the SDKs' wait loops, the console, CI
scripts), and FastAPI's stack around it (middleware layers, dependency solving, query
validation, the thread-pool hop of a `def` route) cost several times the work itself:
2.5 ms of CPU for a page of 10 whose query and views take 0.6 ms. This ASGI layer, the
outermost of the app, answers the common case of the two reads itself: a key the
`PrincipalCache` knows, a job id or plain `page_no`/`page_size`/`model` parameters within
the bounds `api.paging` declares, jobs that exist. It sends what the FastAPI routes send
(body, status, `X-Request-Id`, `X-Content-Type-Options`) and records the request through
the same `AccessLog`.

How it stays cheap: it reads each job's *signature* (`job_reads.signed_*`, the row's
whole content as the database spells it) on the driver itself (`store.driver_reads`: on
the event loop, no thread hop) and keeps the rendered JSON of each job it served, handed
out again only for the same signature. Only a new or changed job is read whole and
rendered, through the same `job_view` and the same JSON encoding as the routes.

Anything else goes to the FastAPI app untouched: a key not cached yet, an unknown or
foreign job (the 404 is rendered there), a malformed or unusual query, a database error,
any other route or method. The routes in `fine_tunes.py` stay the documented ones
(OpenAPI) and the one place errors are rendered; `dashtune_fast_reads{outcome}` in
`/metrics` counts what this layer answered and what it passed on.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import cast
from urllib.parse import parse_qsl

from anyio import to_thread
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from dashtune.api.access_log import AccessLog
from dashtune.api.metrics import HttpMetrics
from dashtune.api.paging import MAX_PAGE_NO, MAX_PAGE_SIZE
from dashtune.api.views import job_view
from dashtune.domain.errors import InvalidApiKey
from dashtune.domain.ids import hash_api_key
from dashtune.services import job_reads
from dashtune.services.principal_cache import PrincipalCache
from dashtune.services.runtime import Runtime
from dashtune.services.tenancy import Principal, bearer_key
from dashtune.store.driver_reads import DriverReads

PREFIX = "/api/v1/fine-tunes"
ONE_ROUTE = PREFIX + "/{job_id}"
# Characters a job id may hold (`ft-202612041729-5e94`); any other path goes to FastAPI.
ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
LIST_PARAMS = frozenset({"page_no", "page_size", "model"})
ListQuery = tuple[int, int, str | None]  # page_no, page_size, model
# Rendered jobs kept per process: about 3 KiB each (signature and JSON), 12 MiB at most.
MAX_RENDERED = 4096


class FastReads:
    def __init__(
        self,
        app: ASGIApp,
        rt: Runtime,
        reads: DriverReads,
        principals: PrincipalCache,
        access: AccessLog,
        metrics: HttpMetrics,
    ) -> None:
        self.app = app
        self.rt = rt
        self.reads = reads
        self.principals = principals
        self.access = access
        self.rendered = RenderedJobs()
        self.answered = metrics.fast_reads.labels("answered")
        self.passed = metrics.fast_reads.labels("passed")
        self.renders = metrics.job_renders

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = hot_read(scope)
        if target is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route, job_id, query = target
        request_id = await self._answer(scope, send, job_id, query)
        if request_id is None:
            self.passed.inc()
            await self.app(scope, receive, send)
            return
        self.answered.inc()
        self.access.record(
            "GET", route, scope["path"], 200, time.perf_counter() - started, request_id
        )

    async def _answer(
        self, scope: Scope, send: Send, job_id: str, query: ListQuery | None
    ) -> str | None:
        """Send the answer and return its request id, or None to pass the request on."""
        who = self._principal(scope)
        if who is None:
            return None
        try:
            output = await self._output(who, job_id, query)
        except Exception:  # noqa: BLE001 - FastAPI renders it (a 404, a database outage)
            return None
        request_id = str(uuid.uuid4())
        # What `envelope.ok` renders: {"request_id": ..., "output": ...}, compact.
        body = b'{"request_id":"%s","output":%s}' % (request_id.encode(), output)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", b"%d" % len(body)),
                    (b"content-type", b"application/json"),
                    (b"x-request-id", request_id.encode()),
                    (b"x-content-type-options", b"nosniff"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return request_id

    def _principal(self, scope: Scope) -> Principal | None:
        """The caller when its key is cached (as `api.auth.principal` reads it), else None."""
        authorization = workspace = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif name == b"x-dashscope-workspace" and workspace is None:
                workspace = value.decode("latin-1")
        try:
            key = bearer_key(authorization)
        except InvalidApiKey:
            return None  # the route answers 401
        return self.principals.get(hash_api_key(key), workspace)

    async def _output(self, who: Principal, job_id: str, query: ListQuery | None) -> bytes:
        """The JSON of what `fine_tunes.get_job` or `fine_tunes.list_jobs` answers as
        `output`; NotFound or LookupError when the FastAPI route should answer instead."""
        if query is None:
            signed = [(job_id, await job_reads.signed_one(self.reads, who, job_id))]
        else:
            page_no, page_size, model = query
            signed, total = await job_reads.signed_page(self.reads, who, page_no, page_size, model)
        views: list[bytes | None] = [self.rendered.get(job_id, sig) for job_id, sig in signed]
        missing = [job_id for (job_id, _), view in zip(signed, views, strict=True) if view is None]
        if missing:
            # Rare (a new or changed job): read whole through the ORM's types, in the
            # thread pool on PostgreSQL (a blocking driver there).
            if self.reads.sqlite:
                rows = job_reads.signed_rows(self.rt, missing)
            else:
                rows = await to_thread.run_sync(job_reads.signed_rows, self.rt, missing)
            data_dir = self.rt.settings.data_dir
            for i, (job_id, _) in enumerate(signed):
                if views[i] is None:
                    if job_id not in rows:
                        raise LookupError(job_id)  # deleted since the page was read
                    sig, row = rows[job_id]
                    views[i] = self.rendered.put(job_id, sig, render_job(row, data_dir))
                    self.renders.inc()
        if query is None:
            return cast(bytes, views[0])
        return b'{"jobs":[%s],"total":%d,"page_no":%d,"page_size":%d}' % (
            b",".join(cast(list[bytes], views)),
            total,
            page_no,
            page_size,
        )


class RenderedJobs:
    """Job id -> (signature, rendered job), the least recently used dropped past
    `max_entries`. A rendering is handed out only for the signature it was made from."""

    def __init__(self, max_entries: int = MAX_RENDERED) -> None:
        self.max_entries = max_entries
        # Used on the event loop only (no lock): the reads await, the renders do not.
        self._entries: OrderedDict[str, tuple[str, bytes]] = OrderedDict()

    def get(self, job_id: str, signature: str) -> bytes | None:
        hit = self._entries.get(job_id)
        if hit is None or hit[0] != signature:
            return None
        self._entries.move_to_end(job_id)
        return hit[1]

    def put(self, job_id: str, signature: str, rendered: bytes) -> bytes:
        self._entries[job_id] = (signature, rendered)
        self._entries.move_to_end(job_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return rendered


def render_job(row: job_reads.JobRow, data_dir: Path) -> bytes:
    """The job's view encoded by `JSONResponse`, as the routes' bodies are; the checked
    view (values that are not strict JSON replaced) when the plain one does not encode,
    as `envelope.ok` falls back."""
    try:
        return bytes(JSONResponse(job_view(row, data_dir, checked=False)).body)
    except (ValueError, UnicodeEncodeError):
        return bytes(JSONResponse(job_view(row, data_dir)).body)


def hot_read(scope: Scope) -> tuple[str, str, ListQuery | None] | None:
    """(route template, job id, list query) when `scope` is one of the two reads in a
    shape this layer answers: `GET {PREFIX}/{job_id}` without a query string, or
    `GET {PREFIX}` with plain paging parameters (`list_query`)."""
    if (
        scope["type"] != "http"
        or scope["method"] != "GET"
        or not scope["path"].startswith(PREFIX)
        or scope.get("root_path")
    ):
        return None
    rest: str = scope["path"][len(PREFIX) :]
    if rest == "":
        query = list_query(scope.get("query_string", b""))
        return None if query is None else (PREFIX, "", query)
    if rest[0] == "/" and len(rest) > 1 and ID_CHARS.issuperset(rest[1:]):
        return None if scope.get("query_string") else (ONE_ROUTE, rest[1:], None)
    return None


def list_query(raw: bytes) -> ListQuery | None:
    """(page_no, page_size, model) of a plain list query, or None for FastAPI to judge:
    an unknown or repeated parameter, a number outside the declared bounds, a control
    character."""
    page_no, page_size, model = 1, 10, None
    if not raw:
        return page_no, page_size, model
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    if len({k for k, _ in pairs}) != len(pairs) or not LIST_PARAMS.issuperset(k for k, _ in pairs):
        return None
    for key, value in pairs:
        if key == "model":
            if not value.isprintable():
                return None
            model = value
            continue
        if not (value.isascii() and value.isdigit() and len(value) <= 9):
            return None
        number = int(value)
        if key == "page_no":
            if not 1 <= number <= MAX_PAGE_NO:
                return None
            page_no = number
        else:
            if not 1 <= number <= MAX_PAGE_SIZE:
                return None
            page_size = number
    return page_no, page_size, model
