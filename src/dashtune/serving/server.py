"""The serving process: `python -m dashtune.serving.server --port P` (or `--fd N`).

A small Starlette app on loopback that the API process's supervisor starts and drives:
`POST /load`, `POST /unload`, `POST /generate` (JSON, or NDJSON lines when streaming),
`GET /stats` (all with the supervisor's token), and the unauthenticated `GET /health`. It knows nothing of users or the
database: the API process decides what may be called and sends paths and keys.
Each key has `capacity` request slots; a request waits up to `--queue-seconds` for one,
then gets 429.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import threading
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from dashtune.serving.protocol import (
    TOKEN_ENV,
    TOKEN_HEADER,
    GenerateRequest,
    LoadRequest,
    UnloadRequest,
)


class Slots:
    """A key's concurrent request slots (its deployment's `capacity`); resizable."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_flight = 0
        self._changed = asyncio.Condition()

    async def acquire(self, timeout: float) -> bool:
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.in_flight < self.capacity), timeout
                )
            except TimeoutError:
                return False
            self.in_flight += 1
            return True

    async def release(self) -> None:
        async with self._changed:
            self.in_flight -= 1
            self._changed.notify_all()

    async def resize(self, capacity: int) -> None:
        async with self._changed:
            self.capacity = capacity
            self._changed.notify_all()


@dataclass
class State:
    pool: Any  # pool.ModelPool (imported with torch in main)
    token: str
    queue_seconds: float
    default_max_tokens: int
    slots: dict[str, Slots] = field(default_factory=dict)
    started: float = field(default_factory=time.time)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def create_app(state: State) -> Starlette:
    from dashtune.serving.generate import Generation, GenerationError
    from dashtune.serving.pool import LoadError

    def authorised(request: Request) -> bool:
        return not state.token or request.headers.get(TOKEN_HEADER) == state.token

    async def load_key(key: str, spec: Any, capacity: int) -> None:
        await asyncio.to_thread(state.pool.load, key, spec)
        slots = state.slots.get(key)
        if slots is None:
            state.slots[key] = Slots(capacity)
        else:
            await slots.resize(capacity)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "pid": os.getpid()})

    async def stats(request: Request) -> Response:
        # It lists every tenant's model and adapter paths: the API's token, like the rest.
        if not authorised(request):
            return _error(401, "Unauthorized", "bad serving token")
        import psutil

        body = state.pool.stats()
        body.update(
            pid=os.getpid(),
            rss_bytes=psutil.Process().memory_info().rss,
            uptime_s=round(time.time() - state.started, 1),
            endpoints=[
                {"key": k, "capacity": s.capacity, "in_flight": s.in_flight}
                for k, s in sorted(state.slots.items())
            ],
        )
        return JSONResponse(body)

    async def load(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "Unauthorized", "bad serving token")
        req = LoadRequest.model_validate(await request.json())
        try:
            await load_key(req.key, req.spec, req.capacity)
        except LoadError as exc:
            return _error(400, "ModelLoadError", str(exc))
        return JSONResponse({"key": req.key, "capacity": req.capacity})

    async def unload(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "Unauthorized", "bad serving token")
        req = UnloadRequest.model_validate(await request.json())
        found = await asyncio.to_thread(state.pool.unload, req.key)
        state.slots.pop(req.key, None)
        return JSONResponse({"key": req.key, "unloaded": found})

    async def generate(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "Unauthorized", "bad serving token")
        req = GenerateRequest.model_validate(await request.json())
        if state.pool.get(req.key) is None and req.load is not None:
            try:
                await load_key(req.key, req.load, req.capacity)
            except LoadError as exc:
                return _error(400, "ModelLoadError", str(exc))
        endpoint = state.pool.get(req.key)
        slots = state.slots.get(req.key)
        if endpoint is None or slots is None:
            return _error(404, "NotLoaded", f"{req.key} is not loaded")
        try:
            gen = Generation(
                state.pool,
                endpoint,
                req.messages,
                req.sampling,
                state.default_max_tokens,
                stream=req.stream,
            )
        except GenerationError as exc:
            return _error(400, exc.code, exc.message)
        if not await slots.acquire(state.queue_seconds):
            return _error(
                429,
                "Throttling",
                f"all {slots.capacity} request slots are busy for {state.queue_seconds:g} s",
            )
        if not req.stream:
            try:
                async for line in gen.lines():
                    if line.error:
                        return _error(500, line.error.code, line.error.message)
                    if line.done:
                        return JSONResponse(line.done.model_dump())
            finally:
                await slots.release()
            return _error(500, "InternalError", "generation ended without a result")

        async def ndjson() -> AsyncIterator[str]:
            try:
                async for line in gen.lines():
                    yield line.model_dump_json(exclude_none=True) + "\n"
            finally:
                await slots.release()

        return StreamingResponse(ndjson(), media_type="application/x-ndjson")

    async def invalid(request: Request, exc: Exception) -> Response:
        return _error(400, "InvalidParameter", str(exc))

    return Starlette(
        exception_handlers={ValidationError: invalid},
        routes=[
            Route("/health", health),
            Route("/stats", stats),
            Route("/load", load, methods=["POST"]),
            Route("/unload", unload, methods=["POST"]),
            Route("/generate", generate, methods=["POST"]),
        ],
    )


def _exit_with_parent() -> None:
    """A killed API server must not leave its models in memory: follow it out."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int, help="listen on 127.0.0.1:PORT")
    where.add_argument("--fd", type=int, help="accept on this inherited listening socket")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--queue-seconds", type=float, default=30.0)
    parser.add_argument("--max-tokens", type=int, default=256, help="default max_tokens")
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="exit when the starting process dies"
    )
    args = parser.parse_args(argv)
    if args.exit_with_parent:
        _exit_with_parent()

    # Read by huggingface_hub when transformers is first imported: never reach the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    import torch
    import transformers
    import uvicorn

    from dashtune.serving.pool import ModelPool

    torch.set_num_threads(args.threads)  # more threads than cores stalls small models
    # transformers 5.24 deprecates names that peft 0.21 still calls: noise, not news.
    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.utils.logging.disable_progress_bar()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    state = State(
        pool=ModelPool(device),
        token=os.environ.get(TOKEN_ENV, ""),
        queue_seconds=args.queue_seconds,
        default_max_tokens=args.max_tokens,
    )
    app = create_app(state)
    if args.fd is None:
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
        return
    # Not `uvicorn.run(fd=...)`: uvicorn takes an fd for a UNIX socket, so asyncio would not
    # set TCP_NODELAY and every response would wait ~40 ms on a delayed ACK.
    sock = socket.socket(fileno=args.fd)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    main()
