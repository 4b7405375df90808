"""Ray executor: each job is a Ray Job (the Jobs API of the cluster's dashboard).

Why the Jobs API rather than actors of an in-process driver: a Ray Job lives on the
cluster, not in the scheduler, so it survives a restart of the scheduler that launched
it (another re-attaches by its submission id), and no dashtune process is a Ray driver
(the GCS terminates drivers after 60 s without it; an API server must not die with the
head). The entrypoint asks the cluster for the CPUs (torch threads) and GPUs of the job
and runs `python -m dashtune.scheduler.worker JOB_ID` (or the Ray Train launcher for
`num_workers > 1`) wherever they are free; the worker opens the database itself and
reports like a local worker. This module is imported only when DASHTUNE_EXECUTOR=ray.
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

from ray.job_submission import JobStatus as RayStatus
from ray.job_submission import JobSubmissionClient
from ray.util.state import list_nodes
from sqlalchemy import select

from dashtune.domain.resources import Inventory, Need, NodeInventory
from dashtune.domain.states import JobStatus
from dashtune.services import engine
from dashtune.services.engine import Fits
from dashtune.services.runtime import Runtime
from dashtune.store.tables import Job

log = logging.getLogger("dashtune.scheduler")

ENDED = (RayStatus.SUCCEEDED, RayStatus.FAILED, RayStatus.STOPPED)
# Jobs whose worker must stop: it does on its own at the next step (its heartbeat turns the
# status into the trainer's stop or pause file); the executor stops it after the grace.
STOPPING = (JobStatus.CANCELING.value, JobStatus.PAUSING.value)
# A worker that recorded its cancel or its pause but lingers is stopped as well.
ENDED_BY_REQUEST = (JobStatus.CANCELED.value, JobStatus.PAUSED.value)


@dataclass
class _RayJob:
    submission_id: str
    num_workers: int = 1
    placed: bool = False
    status: str = RayStatus.PENDING
    cancel_seen: float | None = None
    stop_sent: bool = False


def dashboard_url(address: str, url: str) -> str:
    """The Jobs API: DASHTUNE_RAY_DASHBOARD_URL, else the GCS host on the default port."""
    if url:
        return url.rstrip("/")
    host = (address or "127.0.0.1").split("://")[-1].rsplit(":", 1)[0]
    return f"http://{host}:8265"


class RayExecutor:
    name = "ray"
    host = "ray"  # worker_host of Ray jobs; their nodes are in `placement`

    def __init__(self, rt: Runtime) -> None:
        s = rt.settings
        self.rt = rt
        self.url = dashboard_url(s.ray_address, s.ray_dashboard_url)
        self.client = JobSubmissionClient(self.url)
        self.python = s.ray_worker_python or sys.executable
        self.jobs: dict[str, _RayJob] = {}
        self.nodes: dict[str, Any] = {}  # node id -> ray.util.state NodeState
        self._refresh_nodes()

    # What exists and what is free -------------------------------------------------

    def _refresh_nodes(self) -> None:
        try:
            self.nodes = {n.node_id: n for n in list_nodes(address=self.url, limit=1000)}
        except Exception as exc:  # dashboard restarting: keep the last view
            log.warning("cannot list Ray nodes at %s: %s", self.url, exc)

    def _alive(self) -> list[Any]:
        return [n for n in self.nodes.values() if n.state == "ALIVE"]

    def inventory(self) -> Inventory:
        nodes = [
            NodeInventory(
                n.node_id,
                int(n.resources_total.get("CPU", 0)),
                int(n.resources_total.get("GPU", 0)),
            )
            for n in self._alive()
        ]
        return Inventory(executor=self.name, nodes=nodes)

    def free_capacity(self) -> Fits:
        """Per node: its CPUs and GPUs less those of the live Ray jobs placed on it; jobs
        not placed yet take from the freest nodes. Ray places for real; this keeps jobs
        QUEUING (cancelable) rather than pending inside Ray."""
        threads = self.rt.settings.worker_threads
        free = {
            n.node_id: [n.resources_total.get("CPU", 0.0), n.resources_total.get("GPU", 0.0)]
            for n in self._alive()
        }
        with self.rt.db.read() as s:
            live = s.execute(
                select(Job.resolved_hyper_parameters, Job.placement).where(
                    Job.status.in_(engine.LIVE), Job.worker_host == self.host
                )
            ).all()
        for hp, placement in live:
            need = Need.of(hp, threads)
            nodes = [n for n in (placement or {}).get("nodes", []) if n in free]
            for i in range(need.num_workers):
                node = nodes[i % len(nodes)] if nodes else _freest(free)
                if node is not None:
                    free[node][0] -= need.cpus_per_worker
                    free[node][1] -= need.gpus_per_worker

        def fits(job: Job) -> bool:
            need = Need.of(job.resolved_hyper_parameters, threads)
            left = {k: list(v) for k, v in free.items()}
            for _ in range(need.num_workers):
                node = next(
                    (
                        k
                        for k, (c, g) in sorted(left.items(), key=lambda kv: -kv[1][0])
                        if c >= need.cpus_per_worker and g >= need.gpus_per_worker
                    ),
                    None,
                )
                if node is None:
                    return False
                left[node][0] -= need.cpus_per_worker
                left[node][1] -= need.gpus_per_worker
            return True

        return fits

    # Launch, watch, cancel -------------------------------------------------------

    def _env(self) -> dict[str, str]:
        s = self.rt.settings
        threads = str(s.worker_threads)
        env = {
            "DASHTUNE_DATA_DIR": str(s.data_dir.resolve()),
            "DASHTUNE_DATABASE_URL": s.database_url,
            "DASHTUNE_WORKER_THREADS": threads,
            "DASHTUNE_HEARTBEAT_INTERVAL": str(s.heartbeat_interval),
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "TOKENIZERS_PARALLELISM": "false",
            "HF_DATASETS_CACHE": str((s.data_dir / "cache" / "datasets").resolve()),
            "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",  # it breaks `datasets` (feasibility notes)
            "HF_HUB_DISABLE_TELEMETRY": "1",  # a self-hosted service reports to no one
        }
        if s.hf_offline:  # else the worker may download a catalog model on first use
            env["HF_HUB_OFFLINE"] = "1"
        return env

    def launch(self, job: Job) -> None:
        need = Need.of(job.resolved_hyper_parameters, self.rt.settings.worker_threads)
        sid = f"dashtune-{job.id}-{secrets.token_hex(3)}"
        if need.num_workers > 1:
            # The launcher only coordinates; Ray Train asks for each worker's resources.
            entry = f"{self.python} -m dashtune.scheduler.ray_train {job.id}"
            cpus, gpus = 0.0, 0.0
        else:
            entry = f"{self.python} -m dashtune.scheduler.worker {job.id}"
            cpus, gpus = float(need.cpus_per_worker), float(need.gpus_per_worker)
        placement = {
            "executor": self.name,
            "nodes": [],
            "devices": [],
            "num_workers": need.num_workers,
            "ray_job": sid,
        }
        engine.set_placement(self.rt, job.id, placement)
        try:
            self.client.submit_job(
                entrypoint=entry,
                submission_id=sid,
                entrypoint_num_cpus=cpus,
                entrypoint_num_gpus=gpus,
                runtime_env={"env_vars": self._env()},
                metadata={"dashtune_job": job.id},
            )
        except Exception as exc:
            engine.worker_exited(
                self.rt, job.id, None, why=f"the Ray cluster at {self.url} refused it: {exc}"
            )
            return
        self.jobs[job.id] = _RayJob(sid, need.num_workers)
        engine.log(
            self.rt,
            job.id,
            [
                f"Submitted to Ray as job {sid}: {need.num_workers} worker(s) of "
                f"{need.cpus_per_worker} CPU and {need.gpus_per_worker} GPU."
            ],
        )
        log.info("job %s submitted to Ray as %s", job.id, sid)

    def running(self) -> set[str]:
        self._poll()
        return {jid for jid, j in self.jobs.items() if j.status not in ENDED}

    def _poll(self) -> None:
        self._refresh_nodes()  # each tick: nodes that joined take jobs at once
        for job_id, rj in list(self.jobs.items()):
            try:
                info = self.client.get_job_info(rj.submission_id)
            except Exception as exc:
                log.warning("Ray job %s: %s", rj.submission_id, exc)
                continue
            rj.status = info.status
            node = info.driver_node_id or None
            if node and not rj.placed and info.status == RayStatus.RUNNING:
                rj.placed = True
                self._placed(job_id, node, rj.num_workers)
            dead = self._dead_node(job_id, node, rj.num_workers)
            if dead:
                self._lost(job_id, rj, f"Ray node {dead} died under it")
            elif info.status in ENDED:
                first = (info.message or "").strip().splitlines()[:1]
                why = f"Ray job {rj.submission_id} {info.status}" + (
                    f": {first[0]}" if first else ""
                )
                if node and "node has died" in (info.message or ""):
                    why = f"Ray node {node} died under it ({why})"
                self._lost(job_id, rj, why, info.driver_exit_code)

    def _dead_node(self, job_id: str, driver: str | None, num_workers: int) -> str | None:
        """A dead node among the job's: the launcher's, or a Ray Train worker's."""
        nodes = [driver] if driver else []
        if num_workers > 1:
            with self.rt.db.read() as s:
                job = s.get(Job, job_id)
                nodes += list(((job.placement if job else None) or {}).get("nodes") or [])
        return next((n for n in nodes if n in self.nodes and self.nodes[n].state == "DEAD"), None)

    def _placed(self, job_id: str, node: str, num_workers: int) -> None:
        n = self.nodes.get(node)
        ip = getattr(n, "node_ip", "") if n is not None else ""
        if num_workers > 1:  # the Ray Train workers record their own nodes
            engine.log(self.rt, job_id, [f"Ray Train launcher started on Ray node {node} ({ip})."])
            return
        engine.set_placement(self.rt, job_id, {"nodes": [node]})
        engine.log(self.rt, job_id, [f"Worker started on Ray node {node} ({ip})."])

    def _lost(self, job_id: str, rj: _RayJob, why: str, rc: int | None = None) -> None:
        """The Ray job ended or its node died: a job the worker left live ends here."""
        del self.jobs[job_id]
        if rj.status not in ENDED:
            self._stop(rj)
        status = engine.worker_exited(self.rt, job_id, rc, why=why)
        log.info("job %s: %s; now %s", job_id, why, status)

    def reap(self) -> None:
        pass  # done by _poll, which `running()` calls first each tick

    def _stop(self, rj: _RayJob) -> None:
        try:
            self.client.stop_job(rj.submission_id)
        except Exception as exc:
            log.warning("cannot stop Ray job %s: %s", rj.submission_id, exc)

    def enforce_cancels(self) -> None:
        """Stop, through the Jobs API, the Ray jobs of CANCELING and PAUSING jobs whose
        worker did not stop within the grace (as the local executor's SIGTERM does)."""
        grace = self.rt.settings.cancel_grace_seconds
        for job_id, rj in list(self.jobs.items()):
            status = engine.status(self.rt, job_id)
            if status not in STOPPING + ENDED_BY_REQUEST:
                continue
            now = time.monotonic()
            if rj.cancel_seen is None:
                rj.cancel_seen = now  # the worker's heartbeat sees it and stops itself
            if rj.status == RayStatus.PENDING and status in STOPPING:
                # Not started: Ray cannot stop a pending job, and its worker exits at start
                # when it finds the job ended.
                self._stop(rj)
                del self.jobs[job_id]
                asked = "canceled" if status == JobStatus.CANCELING.value else "paused"
                engine.worker_exited(self.rt, job_id, None, why=f"{asked} before it started")
            elif now - rj.cancel_seen > grace and not rj.stop_sent:
                if status == JobStatus.PAUSING.value:
                    engine.log(
                        self.rt,
                        job_id,
                        [
                            f"The worker did not pause within {grace:g} s "
                            f"(DASHTUNE_CANCEL_GRACE_SECONDS); stopping Ray job "
                            f"{rj.submission_id}."
                        ],
                    )
                self._stop(rj)  # SIGTERM, then SIGKILL from Ray
                rj.stop_sent = True

    def adopt(self, job: Job) -> None:
        sid = (job.placement or {}).get("ray_job")
        if not sid:
            return  # never submitted: the heartbeat timeout ends it
        placed = bool((job.placement or {}).get("nodes"))
        workers = int((job.placement or {}).get("num_workers") or 1)
        self.jobs[job.id] = _RayJob(sid, workers, placed=placed)
        engine.log(self.rt, job.id, [f"Re-attached to Ray job {sid}."])

    def shutdown(self) -> None:
        """Let go: Ray jobs outlive their scheduler, and the next one re-attaches."""
        self.jobs.clear()


def _freest(free: dict[str, list[float]]) -> str | None:
    return max(free, key=lambda k: free[k][0]) if free else None
