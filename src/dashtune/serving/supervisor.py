"""The serving supervisor: lives in the API process, owns the serving process.

It starts `python -m dashtune.serving.server` on a loopback socket that it keeps open
(so the address survives restarts) the first time something needs it (a deployment, or
an inference call), restarts the process when it dies, and drives
deployments from a thread like the job scheduler's: PENDING -> DEPLOYING -> RUNNING
(or FAILED with the load error), capacity changes, and DELETING -> unloaded -> gone.
Only this module's child imports torch; the API process never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time

from dashtune.domain.deployments import DeploymentStatus
from dashtune.services import deployments
from dashtune.services.runtime import Runtime
from dashtune.services.weights import Weights
from dashtune.serving.client import ControlClient, LoadFailed, ServiceUnavailable, ServingClient
from dashtune.serving.protocol import TOKEN_ENV, LoadSpec

log = logging.getLogger("dashtune.serving")
S = DeploymentStatus
MAX_BACKOFF_SECONDS = 30.0
LOAD_TIMEOUT_SECONDS = 1800.0  # a large model read from a slow disk onto a CPU takes a while


def load_spec(w: Weights) -> LoadSpec:
    return LoadSpec(base_path=w.base_path, adapter_path=w.adapter_path, builtin=w.builtin)


class Supervisor:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        # One INFO line per loopback call would double the access log.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self._token = secrets.token_hex(16)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.client = ServingClient(self.url, self._token)
        self._control = ControlClient(self.url, self._token, LOAD_TIMEOUT_SECONDS)
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._ready = threading.Event()
        self._wanted = threading.Event()  # start the process (importing torch costs seconds)
        self._crashes = 0
        self._next_start = 0.0
        self._stop = threading.Event()
        self._poke = threading.Event()  # work to do now: do not wait for the next tick
        self._thread = threading.Thread(target=self._run, name="dashtune-serving", daemon=True)

    @property
    def state_file(self) -> str:
        """Where the serving process's pid and URL are written (for operators and tests)."""
        return str(self.rt.settings.data_dir / "serving.json")

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """A deployment changed: act on it now rather than at the next tick."""
        self._poke.set()

    async def stop(self) -> None:
        """Stop driving, end the serving process, close the socket."""
        self._stop.set()
        self._poke.set()
        await asyncio.to_thread(self._thread.join, 30)
        await asyncio.to_thread(self._end_process)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.state_file)
        self._sock.close()
        self._control.close()
        await self.client.aclose()

    async def wait_ready(self, timeout: float) -> bool:
        """True once the serving process answers (a cold start imports torch: seconds)."""
        if self._ready.is_set():
            return True
        self._wanted.set()
        return await asyncio.to_thread(self._ready.wait, timeout)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poke.clear()  # before the tick: a poke during it means one more tick
            try:
                self.tick()
            except Exception:
                log.exception("serving supervisor tick failed")
            self._poke.wait(self.rt.settings.scheduler_interval)

    def tick(self) -> None:
        if not self._wanted.is_set():
            if not deployments.any_to_serve(self.rt):
                deployments.drop_deleting(self.rt)  # no serving process of ours held them
                return
            self._wanted.set()
        if self._alive():
            self._drive()
            self._reconcile()

    def _alive(self) -> bool:
        """Start or restart the process as needed; True when it answers."""
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            self._ready.clear()
            self._proc = None
            self._crashes += 1
            delay = min(MAX_BACKOFF_SECONDS, 2.0 ** (self._crashes - 1))
            self._next_start = time.monotonic() + delay
            log.warning(
                "serving process %s exited with %s; restarting in %.0f s",
                proc.pid,
                proc.returncode,
                delay,
            )
        if self._proc is None:
            if time.monotonic() >= self._next_start:
                self._spawn()
            return False
        if self._ready.is_set():
            return True
        if self._control.healthy():
            log.info("serving process %s is up at %s", self._proc.pid, self.url)
            self._crashes = 0
            self._ready.set()
            return True
        if time.monotonic() - self._started_at > self.rt.settings.serving_start_timeout:
            log.error("serving process %s did not start in time; killing it", self._proc.pid)
            self._proc.kill()
        return False

    def _spawn(self) -> None:
        s = self.rt.settings
        # A new process holds no model: what was loaded is loaded again.
        reloading = deployments.serving_restarted(self.rt)
        cmd = [
            sys.executable,
            "-m",
            "dashtune.serving.server",
            "--fd",
            str(self._sock.fileno()),
            "--device",
            s.serving_device,
            "--threads",
            str(s.serving_threads),
            "--queue-seconds",
            str(s.serving_queue_seconds),
            "--max-tokens",
            str(s.serving_max_tokens),
            "--exit-with-parent",
        ]
        threads = str(s.serving_threads)
        env = dict(os.environ)
        env.update(
            {
                TOKEN_ENV: self._token,
                "OMP_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads,
                "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
            }
        )
        s.data_dir.mkdir(parents=True, exist_ok=True)
        with open(s.data_dir / "serving.log", "ab") as out:
            self._proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, pass_fds=[self._sock.fileno()]
            )
        self._started_at = time.monotonic()
        # The token lets an operator (and the tests) read /stats; the file is the owner's only.
        fd = os.open(self.state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": self._proc.pid, "url": self.url, "token": self._token}, f)
        log.info(
            "serving process %s starting (%d deployment(s) to load)", self._proc.pid, reloading
        )

    def _drive(self) -> None:
        """Act on each deployment that needs it, oldest first."""
        for work in deployments.serving_work(self.rt):
            if self._stop.is_set() or not self._ready.is_set():
                return
            if work.status is S.DELETING:
                self._control.unload(work.key)
                deployments.unloaded(self.rt, work.id)
                continue
            found = deployments.begin_load(self.rt, work.id)
            if found is None:
                continue
            weights, capacity = found
            started = time.monotonic()
            try:
                self._control.load(work.key, load_spec(weights), capacity)
            except LoadFailed as exc:
                log.warning("deployment %s failed to load: %s", work.deployed_model, exc)
                deployments.load_failed(self.rt, work.id, f"Cannot load the model: {exc}")
                continue
            except Exception as exc:
                self._load_interrupted(work, exc)
                return
            if deployments.loaded(self.rt, work.id, capacity):
                log.info(
                    "deployment %s RUNNING (%d slots) after %.2f s",
                    work.deployed_model,
                    capacity,
                    time.monotonic() - started,
                )

    def _load_interrupted(self, work: deployments.Work, exc: Exception) -> None:
        """The process went away mid-load: a model that kills it must not loop forever."""
        if self._proc is not None and self._proc.poll() is None:
            raise ServiceUnavailable(f"loading {work.deployed_model}: {exc}")
        deployments.load_failed(
            self.rt,
            work.id,
            f"The serving process ended while loading this model ({self._exit_reason()}); "
            "see serving.log on the server, then delete the deployment and deploy it again "
            "(a model too large for the host's memory ends it this way).",
        )

    def _exit_reason(self) -> str:
        """What is known of how the serving process ended, without guessing a cause."""
        code = self._proc.returncode if self._proc is not None else None
        if code is None:
            return "its process is gone"
        if code == -9:
            return "killed by SIGKILL, as the kernel's out-of-memory killer does"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def _reconcile(self) -> None:
        """Unload what the serving process holds for deployments, or fine-tuned models
        called without one, that no longer exist."""
        wanted = deployments.wanted_keys(self.rt)
        for endpoint in self._control.stats().get("endpoints", []):
            key = str(endpoint.get("key"))
            if key.startswith("dep-") and key not in wanted:
                log.info("unloading %s: its deployment is gone", key)
                self._control.unload(key)
            elif key.startswith("tuned:") and not deployments.tuned_key_current(self.rt, key):
                log.info("unloading %s: its fine-tuned model is gone", key)
                self._control.unload(key)

    def _end_process(self) -> None:
        proc = self._proc
        self._proc = None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
