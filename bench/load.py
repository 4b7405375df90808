"""Load generation: `wrk` when it is there (installed on demand as root), else httpx.

Both clients hold `concurrency` keep-alive connections busy for a fixed time (closed loop)
and report requests/s and p50/p99 latency. The same client measures dashtune and its
baseline, so whatever the client costs is the same on both sides.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass

import httpx

# wrk calls done() once at the end; print the figures as one JSON line we can parse.
_WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %.1f, "p99_us": %.1f, '
    .. '"errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status))
end
"""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors, timeouts and non-2xx answers

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_version() -> str | None:
    """`wrk 4.1.0 [epoll] ...`, or None when wrk is not installed."""
    exe = shutil.which("wrk")
    if exe is None:
        return None
    out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10)
    first = (out.stdout or out.stderr or "wrk").strip().splitlines()[0]
    return first.split(" Copyright")[0].strip()


def ensure_wrk() -> bool:
    """True when wrk is usable; as root, try `apt-get install wrk` first (with an update if needed)."""
    if shutil.which("wrk"):
        return True
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    for cmds in ([install], [["apt-get", "update", "-q"], install]):
        try:
            for cmd in cmds:
                subprocess.run(cmd, env=env, capture_output=True, timeout=180, check=True)
        except (subprocess.SubprocessError, OSError):
            continue
        if shutil.which("wrk"):
            return True
    return False


def choose_client(prefer: str) -> str:
    """'wrk' or 'python'; `prefer` is 'auto', 'wrk' or 'python'."""
    if prefer == "python":
        return "python"
    if ensure_wrk():
        return "wrk"
    if prefer == "wrk":
        raise RuntimeError("wrk was asked for but is not installed and could not be installed")
    return "python"


def measure(
    client: str, url: str, headers: dict[str, str], *, concurrency: int, seconds: int
) -> LoadResult:
    """Keep `concurrency` requests in flight against `url` for `seconds`."""
    if client == "wrk":
        return _wrk(url, headers, concurrency, seconds)
    return asyncio.run(_httpx(url, headers, concurrency, float(seconds)))


def _wrk(url: str, headers: dict[str, str], concurrency: int, seconds: int) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(_WRK_SCRIPT)
        script.flush()
        cmd = [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            script.name,
        ]
        for name, value in headers.items():
            cmd += ["-H", f"{name}: {value}"]
        out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    r = json.loads(line.removeprefix("BENCH_JSON "))
    return LoadResult(
        r["requests"], r["duration_us"] / 1e6, r["p50_us"] / 1e3, r["p99_us"] / 1e3, r["errors"]
    )


async def _httpx(url: str, headers: dict[str, str], concurrency: int, seconds: float) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, timeout=10, limits=limits) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    ok = (await client.get(url)).status_code < 300
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if len(latencies) < 2:
        return LoadResult(len(latencies), elapsed, float("nan"), float("nan"), errors)
    cuts = statistics.quantiles(latencies, n=100)
    return LoadResult(len(latencies) + errors, elapsed, cuts[49] * 1e3, cuts[98] * 1e3, errors)
