"""One settings object; every knob has an environment variable (DASHTUNE_*) and a default."""

from __future__ import annotations

from pathlib import Path

import psutil
from pydantic import ByteSize
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DASHTUNE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("dashtune-data")
    # Empty: SQLite (WAL) at {data_dir}/dashtune.db. Else e.g. postgresql://user@host/db.
    database_url: str = ""

    # Request limits (docs/api.md "Limits"): bytes of one uploaded file, parts of one
    # upload request, bytes of a JSON body, nesting of a JSON value.
    max_upload_bytes: int = 300 * 1024 * 1024
    max_upload_files: int = 20
    max_body_bytes: int = 8 * 1024 * 1024
    max_json_depth: int = 32
    # Per job at create: file ids (training + validation) and their total bytes.
    max_job_files: int = 16
    max_job_bytes: int = 1024 * 1024 * 1024
    max_page_size: int = 100
    # A server answers a key it looked up less than this many seconds ago from memory; a
    # revoked key is refused by every server on the database within this bound (0: off).
    auth_cache_seconds: float = 3.0
    job_quota: int = 20  # running-or-succeeded jobs per user (§3.6)

    # Training engine: "local" runs each job in a worker process on this host, "ray" on a
    # Ray cluster (needs PostgreSQL); "none" leaves jobs QUEUING (the control plane alone).
    executor: str = "local"
    # `serve` runs a scheduler in-process; false: API only (`dashtune scheduler` elsewhere).
    scheduler: bool = True
    # A scheduler renews its lease this often; one silent for scheduler_lease_seconds is
    # dead and another re-attaches its jobs.
    scheduler_lease_seconds: float = 10.0
    # Ray: the GCS address `ray start --head` prints (host:port), the dashboard (Jobs API)
    # URL, default http://<GCS host>:8265, and the python that runs workers on the nodes.
    ray_address: str = ""
    ray_dashboard_url: str = ""
    ray_worker_python: str = ""
    # Local GPUs by index, e.g. "0,1,2,3" ("" for none); unset: detected (nvidia-smi -L).
    gpus: str | None = None
    max_concurrent_jobs: int = 1
    scheduler_interval: float = 0.5
    heartbeat_interval: float = 2.0
    heartbeat_timeout: float = 30.0
    cancel_grace_seconds: float = 10.0
    # Worker runs of a job before a lost worker fails it (WorkerLost); each resumes.
    max_attempts: int = 3
    worker_threads: int = 1
    # RSS of a worker (with its children) past which the executor kills it and fails the
    # job with MemoryLimitExceeded. Bytes or units ("4GiB"); unset: 80% of the host's RAM
    # shared by max_concurrent_jobs.
    worker_memory_limit: ByteSize | None = None
    # PENDING jobs are validated by this many threads beside the scheduling loop, at most
    # one job per workspace at a time, each for at most validation_timeout_seconds.
    validation_workers: int = 2
    validation_timeout_seconds: float = 300.0
    # The start-up sweep leaves unlisted blobs younger than this (another server sharing
    # the data directory may be between publishing one and inserting its row).
    sweep_grace_seconds: float = 60.0
    # Niceness of the API's request handling (event loop and its thread pool), so that
    # pollers and streams yield the CPU to training workers; 0 leaves it as it is.
    api_nice: int = 5
    # A job stream starts with this many last lines of the log (history on request).
    stream_tail_lines: int = 10
    # Test hook, never set in production: SIGKILL the process on reaching this named
    # point (see dashtune.crashpoint and tests/e2e/test_chaos.py).
    crash_at: str = ""
    catalog_path: Path | None = None
    # Catalog models given as Hugging Face repo ids are downloaded on first use unless true
    # (tests and CI set it: no network there). Offline, a missing model fails its job with
    # the command that puts it in the cache.
    hf_offline: bool = False
    serving: bool = True
    # The serving process (dashtune.serving): started by `dashtune serve` when `serving`.
    serving_device: str = "auto"  # cpu, cuda, or auto
    serving_threads: int = 1  # torch threads of the serving process
    serving_max_tokens: int = 256  # max_tokens when a request sets none
    serving_base_capacity: int = 4  # request slots of a catalog model called undeployed
    serving_queue_seconds: float = 30.0  # wait for a free slot, then 429 Throttling
    serving_start_timeout: float = 180.0  # a serving process not healthy by then is restarted
    log_json: bool = False
    # Webhooks: loopback/private targets are refused unless allowed (tests, closed networks).
    webhook_allow_private: bool = False
    webhook_timeout: float = 10.0  # seconds per delivery attempt
    webhook_backoff: float = 2.0  # first retry delay; doubles per attempt
    webhook_backoff_max: float = 600.0
    webhook_retry_for: float = 86400.0  # give up (status failed) this long after the event
    webhook_lease: float = 60.0  # a claimed attempt not recorded by then is claimed again
    webhook_interval: float = 0.5  # how often the dispatcher looks for due deliveries

    @property
    def database(self) -> str:
        """The SQLAlchemy URL, with the psycopg 3 driver for PostgreSQL."""
        url = self.database_url
        if not url:
            return f"sqlite:///{(self.data_dir / 'dashtune.db').resolve()}"
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            return "postgresql+psycopg://" + url.split("://", 1)[1]
        return url

    @property
    def worker_memory_bytes(self) -> int:
        if self.worker_memory_limit:
            return int(self.worker_memory_limit)
        return int(psutil.virtual_memory().total * 0.8 / max(1, self.max_concurrent_jobs))

    @property
    def trash_dir(self) -> Path:
        """Directories being deleted: renamed here first, removed after (and at start-up)."""
        return self.data_dir / "trash"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"
