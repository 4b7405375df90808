"""The baseline server: a bare Starlette endpoint that returns captured dashtune bodies.

`python -m bench.bare_app --port P --bodies F` serves, for each `path?query` key of the
JSON object in F, exactly the bytes dashtune answered there, under uvicorn with the
flags `dashtune serve` uses. What dashtune costs beyond this is auth, the database,
the ORM, pydantic and FastAPI.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def create_app(bodies: dict[str, bytes]) -> Starlette:
    """An app answering each known `path?query` with its body, anything else with 404."""

    async def endpoint(request: Request) -> Response:
        key = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        body = bodies.get(key)
        if body is None:
            return Response(b'{"code":"NotFound"}', 404, media_type="application/json")
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", endpoint)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bodies", type=Path, required=True)
    # dashtune's event loop runs at DASHTUNE_API_NICE (5 by default): the same here, or on
    # a busy machine the baseline would win CPU the measured server is told to give away.
    parser.add_argument("--nice", type=int, default=0)
    args = parser.parse_args()
    if args.nice > 0:
        os.nice(args.nice)
    raw: dict[str, str] = json.loads(args.bodies.read_text())
    bodies = {key: text.encode() for key, text in raw.items()}
    # The same call as `dashtune serve` (src/dashtune/cli.py): defaults but the log level.
    uvicorn.run(create_app(bodies), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
