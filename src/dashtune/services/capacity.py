"""What the executors have (GPUs, nodes) and whether a job's resources can fit.

The API process asks this at create, without importing torch or Ray: the local GPU
inventory comes from `DASHTUNE_GPUS` or `nvidia-smi -L` (or /proc/driver/nvidia), and a
cluster's from the inventory its live schedulers publish in their leases.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from dashtune.config import Settings
from dashtune.domain.resources import Inventory, Need, NodeInventory, check_fits
from dashtune.services.runtime import Runtime, utcnow
from dashtune.store.tables import SchedulerLease


def local_gpus(settings: Settings) -> list[str]:
    """GPU indices of this host: DASHTUNE_GPUS when set, else what the NVIDIA driver lists."""
    if settings.gpus is not None:
        return [g.strip() for g in settings.gpus.split(",") if g.strip()]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        gpus = [line for line in out.splitlines() if line.startswith("GPU ")]
        return [str(i) for i in range(len(gpus))]
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return [str(i) for i in range(len(list(proc.iterdir())))]
    return []


def local_inventory(settings: Settings) -> Inventory:
    devices = local_gpus(settings)
    node = NodeInventory(socket.gethostname(), os.cpu_count() or 1, len(devices), devices)
    return Inventory(executor="local", nodes=[node])


def published(rt: Runtime) -> Inventory | None:
    """The newest inventory a live scheduler published, if any scheduler is alive."""
    cutoff = utcnow() - timedelta(seconds=rt.settings.scheduler_lease_seconds)
    with rt.db.read() as s:
        lease = s.scalars(
            select(SchedulerLease)
            .where(SchedulerLease.heartbeat_at > cutoff, SchedulerLease.executor != "none")
            .order_by(SchedulerLease.heartbeat_at.desc())
        ).first()
        return Inventory.from_json(lease.inventory) if lease else None


def inventory(rt: Runtime) -> Inventory | None:
    """What jobs created now will run on: a live scheduler's inventory, else this host's."""
    found = published(rt)
    if found is None and rt.settings.executor == "local":
        found = local_inventory(rt.settings)
    return found


def fit(rt: Runtime, resolved: dict[str, Any]) -> dict[str, Any]:
    """Fill `gpus_per_worker` (1 where the executor has GPUs, else 0) and refuse a job
    that could never fit, saying what exists."""
    inv = inventory(rt)
    if resolved.get("gpus_per_worker") is None:
        resolved["gpus_per_worker"] = 1 if inv is not None and inv.gpus > 0 else 0
    if inv is not None:
        need = Need.of(resolved, rt.settings.worker_threads)
        check_fits(need, inv, local=inv.executor == "local")
    return resolved
