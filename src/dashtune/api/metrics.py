"""`GET /metrics` in Prometheus format (requests are counted by `access_log`).

Requests are counted by route template (`/api/v1/fine-tunes/{job_id}`), never by raw
path, so job ids do not multiply the series; methods outside the standard ones count as
`other`, so no label takes a value a caller chooses. Job figures come from the database at
scrape time, so they are right whichever process changed the job:

- `dashtune_jobs{state}` and `dashtune_queue_depth` are counted on each scrape;
- `dashtune_job_duration_seconds` and `dashtune_training_tokens_total` observe each job
  that ended since this server started, once, when a scrape first sees it ended.

The endpoint needs no API key (scrapers rarely carry one); it exposes counts and
timings only, no ids or names. Bind the server to a private address if that matters.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import NamedTuple

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import Scope

from dashtune.domain.states import JobStatus
from dashtune.services import stats
from dashtune.services.runtime import Runtime, utcnow

UNMATCHED = "<unmatched>"
OTHER = "other"
# Every label takes a bounded set of values, so requests cannot create series at will.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# An ended job whose end commits later than this after its end_time would be missed.
END_SLACK = timedelta(minutes=5)
JOB_SECONDS_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


def method_label(method: str) -> str:
    """The HTTP method, or `other` for anything outside the standard ones."""
    return method if method in METHODS else OTHER


def status_label(status: int) -> str:
    """The status code as a label; codes outside 100..599 are `other`."""
    return str(status) if 100 <= status <= 599 else OTHER


def route_template(scope: Scope, root_path: str) -> str:
    """The matched route's path template, or a fixed label for anything unrouted.

    Call it after the app ran (routing fills in `scope`); `root_path` is the scope's
    root_path from before, so a mount (the console's static files) shows as its prefix.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    mounted = scope.get("root_path", "")
    if mounted != root_path:
        return f"{mounted[len(root_path) :]}/{{path}}"
    return UNMATCHED


class JobCollector(Collector):
    """Job gauges read at scrape time, and histograms fed by jobs seen ending."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.started_at = utcnow()
        self.latest_end = self.started_at
        self.seen: dict[str, datetime] = {}
        # Scrapes run in the threadpool; two at once must not observe a job twice.
        self.lock = threading.Lock()
        # Not registered themselves: collect() below updates, then yields them.
        self.durations = Histogram(
            "dashtune_job_duration_seconds",
            "Run time (start to end) of jobs that ended since the server started.",
            ["state", "training_type"],
            buckets=JOB_SECONDS_BUCKETS,
            registry=None,
        )
        self.tokens = Counter(
            "dashtune_training_tokens",
            "Tokens trained (job usage) by jobs that ended since the server started.",
            ["training_type"],
            registry=None,
        )

    def observe_endings(self) -> None:
        """Observe every job that ended since the last scrape, exactly once."""
        window = max(self.started_at, self.latest_end - END_SLACK)
        for job in stats.ended_since(self.rt, window):
            self.latest_end = max(self.latest_end, job.end_time)
            if job.id in self.seen:
                continue
            self.seen[job.id] = job.end_time
            if job.run_seconds is not None:
                self.durations.labels(job.status, job.training_type).observe(job.run_seconds)
            self.tokens.labels(job.training_type).inc(job.usage)
        self.seen = {k: t for k, t in self.seen.items() if t >= window}

    def collect(self) -> Iterator[Metric]:
        counts = stats.jobs_by_status(self.rt)
        jobs = GaugeMetricFamily("dashtune_jobs", "Jobs in each state.", labels=["state"])
        for state in JobStatus:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        yield jobs
        yield GaugeMetricFamily(
            "dashtune_queue_depth",
            "Jobs QUEUING: validated and waiting for a worker.",
            value=counts.get(JobStatus.QUEUING.value, 0),
        )
        with self.lock:
            self.observe_endings()
        yield from self.durations.collect()
        yield from self.tokens.collect()


class HttpMetrics(NamedTuple):
    requests: Counter  # fed by the access log, one observation per request
    seconds: Histogram
    fast_reads: Counter  # by outcome: answered by api.fast_reads, or passed to the routes
    job_renders: Counter  # jobs api.fast_reads rendered (new or changed since last kept)


def install(app: FastAPI, rt: Runtime) -> HttpMetrics:
    """Add the `/metrics` route to `app`; returns the instruments the request observers
    (the access log, the fast reads) feed."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    requests = Counter(
        "dashtune_http_requests",
        "HTTP requests by method, route template and status.",
        ["method", "route", "status"],
        registry=registry,
    )
    seconds = Histogram(
        "dashtune_http_request_duration_seconds",
        "HTTP request time by method and route template (streams: until they end).",
        ["method", "route"],
        registry=registry,
    )
    fast_reads = Counter(
        "dashtune_fast_reads",
        "Job reads (GET one job, list pages) answered by the fast path, or passed to the "
        "routes (a key not cached yet, an error, an unusual query).",
        ["outcome"],
        registry=registry,
    )
    job_renders = Counter(
        "dashtune_fast_read_job_renders",
        "Jobs the fast path rendered because they were new to it or had changed.",
        registry=registry,
    )
    registry.register(JobCollector(rt))

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return HttpMetrics(requests, seconds, fast_reads, job_renders)
