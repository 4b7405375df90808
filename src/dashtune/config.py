"""One settings object; every knob has an environment variable (DASHTUNE_*) and a default."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DASHTUNE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("dashtune-data")
    # Empty: SQLite (WAL) at {data_dir}/dashtune.db. Else e.g. postgresql://user@host/db.
    database_url: str = ""

    max_upload_bytes: int = 300 * 1024 * 1024
    max_page_size: int = 100
    job_quota: int = 20  # running-or-succeeded jobs per user (§3.6)

    # Training engine: "local" runs each job in a worker process; "none" leaves jobs
    # QUEUING (the control plane alone, used by its tests).
    executor: str = "local"
    max_concurrent_jobs: int = 1
    scheduler_interval: float = 0.5
    heartbeat_interval: float = 2.0
    heartbeat_timeout: float = 30.0
    cancel_grace_seconds: float = 10.0
    worker_threads: int = 1
    catalog_path: Path | None = None
    serving: bool = True
    # The serving process (dashtune.serving): started by `dashtune serve` when `serving`.
    serving_device: str = "auto"  # cpu, cuda, or auto
    serving_threads: int = 1  # torch threads of the serving process
    serving_max_tokens: int = 256  # max_tokens when a request sets none
    serving_base_capacity: int = 4  # request slots of a catalog model called undeployed
    serving_queue_seconds: float = 30.0  # wait for a free slot, then 429 Throttling
    serving_start_timeout: float = 180.0  # a serving process not healthy by then is restarted
    log_json: bool = False

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
    def blob_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"
