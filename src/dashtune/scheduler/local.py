"""Local executor: the worker processes of each job on this machine.

A job's workers are started as `python -m dashtune.scheduler.worker JOB_ID` in their own
session (with `num_workers > 1`, under `torchrun`: one process per rank), with one
torch thread each (two busy processes on 2 cores made steps 40x slower) and the job's
own GPUs in `CUDA_VISIBLE_DEVICES`: two jobs never share a device. Cancel (and pause):
the worker stops at the next step on its own; after a grace period the executor sends
SIGTERM, then SIGKILL. Shutdown pauses running jobs; they resume when the scheduler
starts again on this host.
A worker whose RSS passes the memory limit is killed and its job fails with
MemoryLimitExceeded.

Workers outlive a server that is SIGKILLed (they run in their own session). A new server
on the same host, or the scheduler of another replica on it, adopts them once the dead
server's process is gone (the jobs of a scheduler that runs are its own): a job live on
this host whose recorded pid is a running `dashtune.scheduler.worker <job id>` is
tracked, counted against the concurrency limit, reaped and canceled like one it started;
a pid that is gone, or reused by another program, ends the job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import psutil
from sqlalchemy import select

from dashtune.domain.resources import Inventory, Need
from dashtune.domain.states import JobStatus
from dashtune.services import capacity, engine
from dashtune.services.engine import Fits
from dashtune.services.runtime import Runtime
from dashtune.store.tables import Job

log = logging.getLogger("dashtune.scheduler")


@dataclass
class _Worker:
    pid: int
    proc: subprocess.Popen[bytes] | None  # None: adopted from an earlier server
    devices: list[str] = field(default_factory=list)
    cancel_seen: float | None = None
    termed: bool = False

    def poll(self) -> int | None:
        """None while it runs; else its exit code (None too for an adopted one: not our child)."""
        if self.proc is not None:
            return self.proc.poll()
        return None if _worker_process(self.pid) is not None else -1

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def rss(self) -> int:
        """Resident memory of the worker and its children, in bytes (0 once gone)."""
        try:
            top = psutil.Process(self.pid)
            procs = [top, *top.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total


def _worker_process(pid: int, job_id: str | None = None) -> psutil.Process | None:
    """The live worker process at `pid` (of `job_id` when given); None for a pid that is
    gone, a zombie, or reused by another program."""
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        cmd = p.cmdline()
    except psutil.Error:
        return None
    if "dashtune.scheduler.worker" not in cmd or (job_id is not None and cmd[-1] != job_id):
        return None
    return p


class LocalExecutor:
    name = "local"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.host = socket.gethostname()
        self.workers: dict[str, _Worker] = {}
        self._inventory = capacity.local_inventory(rt.settings)

    def inventory(self) -> Inventory:
        return self._inventory

    def worker_env(self, devices: list[str] | None = None) -> dict[str, str]:
        s = self.rt.settings
        threads = str(s.worker_threads)
        env = dict(os.environ)
        env.update(
            {
                "DASHTUNE_DATA_DIR": str(s.data_dir.resolve()),
                "DASHTUNE_DATABASE_URL": s.database_url,
                "OMP_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads,
                "DASHTUNE_WORKER_THREADS": threads,
                "TOKENIZERS_PARALLELISM": "false",
                "HF_DATASETS_CACHE": str((s.data_dir / "cache" / "datasets").resolve()),
                "HF_HUB_DISABLE_TELEMETRY": "1",  # a self-hosted service reports to no one
            }
        )
        if devices is not None and (devices or self._inventory.gpus):
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)  # "" hides the GPUs of others
        if s.hf_offline:  # else the worker may download a catalog model on first use
            env["HF_HUB_OFFLINE"] = "1"
        return env

    def _devices_in_use(self) -> set[str]:
        """GPUs of live jobs on this host, ours and those a previous server left running."""
        used = {d for w in self.workers.values() if w.poll() is None for d in w.devices}
        with self.rt.db.read() as s:
            for placement in s.scalars(
                select(Job.placement).where(
                    Job.status.in_(engine.LIVE), Job.worker_host == self.host
                )
            ):
                used.update((placement or {}).get("devices") or [])
        return used

    def free_capacity(self) -> Fits:
        slots = self.rt.settings.max_concurrent_jobs - len(self.running())
        used = self._devices_in_use() if self._inventory.gpus else set()
        free = len([d for d in self._inventory.nodes[0].devices if d not in used])
        threads = self.rt.settings.worker_threads

        def fits(job: Job) -> bool:
            need = Need.of(job.resolved_hyper_parameters, threads)
            return slots > 0 and need.gpus <= free

        return fits

    def launch(self, job: Job) -> None:
        need = Need.of(job.resolved_hyper_parameters, self.rt.settings.worker_threads)
        used = self._devices_in_use()
        devices = [d for d in self._inventory.nodes[0].devices if d not in used][: need.gpus]
        job_dir = self.rt.settings.jobs_dir / job.id
        job_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "dashtune.scheduler.worker", job.id]
        if need.num_workers > 1:  # one process per rank; torchrun sets RANK, WORLD_SIZE, ...
            cmd[1:2] = [
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nnodes=1",
                f"--nproc-per-node={need.num_workers}",
                "--module",
            ]
        engine.set_placement(
            self.rt,
            job.id,
            {
                "executor": self.name,
                "nodes": [self.host],
                "devices": devices,
                "num_workers": need.num_workers,
            },
        )
        with open(job_dir / "worker.log", "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.worker_env(devices),
                start_new_session=True,
            )
        self.workers[job.id] = _Worker(proc.pid, proc, devices)
        engine.set_worker(self.rt, job.id, proc.pid)
        log.info("job %s started in worker pid %d on devices %s", job.id, proc.pid, devices)

    def running(self) -> set[str]:
        return {jid for jid, w in self.workers.items() if w.poll() is None}

    def reap(self) -> None:
        """Stop workers over the memory limit, end the jobs of workers that exited, adopt or
        end the live jobs of this host that no worker of ours runs."""
        self.enforce_memory()
        for job_id, w in list(self.workers.items()):
            if w.poll() is None:
                continue
            del self.workers[job_id]
            status = engine.worker_exited(self.rt, job_id, w.returncode)
            log.info("worker of job %s exited rc=%s; job %s", job_id, w.returncode, status)
        self.fail_lost_here()

    def fail_lost_here(self) -> None:
        """Jobs live on this host that this executor did not start, e.g. after a server
        restart or a replica's death: a worker still running is adopted, a job whose worker
        is gone ends at once (not after the heartbeat timeout). The jobs of another
        scheduler of this host that runs are its own (several replicas share a host)."""
        for job_id, pid, owner in engine.live_jobs_on(self.rt, self.host):
            if job_id in self.workers or self._runs_elsewhere_here(owner):
                continue
            if pid is not None and _worker_process(pid, job_id) is not None:
                self.workers[job_id] = _Worker(pid, None)
                engine.log(
                    self.rt,
                    job_id,
                    [f"Worker pid {pid} adopted by the scheduler of process {os.getpid()}."],
                )
                log.info("job %s: adopted its running worker pid %d", job_id, pid)
                continue
            status = engine.worker_exited(self.rt, job_id, None)
            log.info("job %s lost its worker (pid %s); now %s", job_id, pid, status)

    def _runs_elsewhere_here(self, scheduler_id: str | None) -> bool:
        """Whether a scheduler id ("host:pid:token", loop.Scheduler) is another process of
        this host that still runs. A reused pid only delays the take-over until that
        scheduler's lease expires (engine.take_orphans makes the job ours)."""
        host, _, rest = (scheduler_id or "").partition(":")
        pid = rest.partition(":")[0]
        if host != self.host or not pid.isdigit() or int(pid) == os.getpid():
            return False
        try:
            return bool(psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False

    def enforce_memory(self) -> None:
        """Kill a worker past the memory limit; its job fails saying so."""
        limit = self.rt.settings.worker_memory_bytes
        for job_id, w in self.workers.items():
            if w.poll() is not None:
                continue
            rss = w.rss()
            if rss <= limit:
                continue
            self._signal(w, signal.SIGKILL)
            engine.worker_failed(
                self.rt,
                job_id,
                "MemoryLimitExceeded",
                f"The training worker used {rss / 2**20:.0f} MiB, over the worker memory limit "
                f"of {limit / 2**20:.0f} MiB (DASHTUNE_WORKER_MEMORY_LIMIT), and was stopped. "
                "Use smaller or fewer training files, a smaller batch_size or max_length, or "
                "raise the limit.",
            )
            log.warning("job %s: worker pid %d over the memory limit; killed", job_id, w.pid)

    def adopt(self, job: Job) -> None:
        """A job of a dead scheduler, ours now: the next reap adopts its running worker on
        this host, or ends the job if the worker is gone."""

    def enforce_cancels(self) -> None:
        grace = self.rt.settings.cancel_grace_seconds
        for job_id, w in self.workers.items():
            if w.poll() is not None:
                continue
            status = engine.status(self.rt, job_id)
            if status not in (JobStatus.CANCELING.value, JobStatus.PAUSING.value, None):
                continue
            now = time.monotonic()
            if w.cancel_seen is None:
                w.cancel_seen = now
                flag = "PAUSE" if status == JobStatus.PAUSING.value else "STOP"
                (self.rt.settings.jobs_dir / job_id).mkdir(parents=True, exist_ok=True)
                (self.rt.settings.jobs_dir / job_id / flag).touch()
            elif now - w.cancel_seen > grace and not w.termed:
                self._signal(w, signal.SIGTERM)
                w.termed = True
            elif now - w.cancel_seen > grace + 5:
                self._signal(w, signal.SIGKILL)

    @staticmethod
    def _signal(w: _Worker, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(w.pid, sig)

    def shutdown(self) -> None:
        """Server stopping: pause our running jobs (a resume point each, within the cancel
        grace), then stop what is left; paused jobs resume when this host starts again."""
        for job_id, w in self.workers.items():
            if w.poll() is None and engine.pause_live(self.rt, job_id, engine.SHUTDOWN):
                (self.rt.settings.jobs_dir / job_id / "PAUSE").touch()
        deadline = time.monotonic() + self.rt.settings.cancel_grace_seconds
        for w in self.workers.values():
            while w.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if w.poll() is None:
                self._signal(w, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for w in self.workers.values():
            while w.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if w.poll() is None:
                self._signal(w, signal.SIGKILL)
                if w.proc is not None:
                    w.proc.wait()
        self.reap()
