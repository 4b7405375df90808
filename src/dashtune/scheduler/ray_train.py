"""The entrypoint of a data-parallel Ray job: `python -m dashtune.scheduler.ray_train JOB_ID`.

It runs on the cluster (a Ray Job started by scheduler/ray.py) and starts `num_workers`
Ray Train workers (TorchTrainer: gloo on CPU, NCCL on GPU), each asking for the job's
CPUs and GPUs per worker, possibly on different nodes. Every worker runs the same
`scheduler.worker.main` as a local worker, with RANK and WORLD_SIZE set: rank 0 reports
and saves, all ranks stop at the same step. Retries are the service's decision, so Ray
Train gets `max_failures=0`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from dashtune.config import Settings
from dashtune.domain.resources import Need
from dashtune.services import engine
from dashtune.services.runtime import Runtime
from dashtune.store.tables import Job


def _loop(config: dict[str, Any]) -> None:
    import ray
    import ray.train

    ctx = ray.train.get_context()
    node = ray.get_runtime_context().get_node_id()
    os.environ.update(
        {
            "RANK": str(ctx.get_world_rank()),
            "WORLD_SIZE": str(ctx.get_world_size()),
            "LOCAL_RANK": str(ctx.get_local_rank()),
            "LOCAL_WORLD_SIZE": str(ctx.get_local_world_size()),
            "DASHTUNE_RAY_NODE_ID": node,
        }
    )
    from dashtune.scheduler.worker import main

    rt = Runtime.open(Settings(), run_migrations=False)
    engine.add_placement_node(rt, config["job_id"], node)
    rt.close()
    main(config["job_id"])


def main(job_id: str) -> int:
    settings = Settings()
    rt = Runtime.open(settings, run_migrations=False)
    with rt.db.read() as s:
        job = s.get(Job, job_id)
    if job is None or job.status not in engine.LIVE:
        return 0
    need = Need.of(job.resolved_hyper_parameters, settings.worker_threads)
    rt.close()

    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources: dict[str, float] = {"CPU": float(need.cpus_per_worker)}
    if need.gpus_per_worker:
        resources["GPU"] = float(need.gpus_per_worker)
    trainer = TorchTrainer(
        _loop,
        train_loop_config={"job_id": job_id},
        scaling_config=ScalingConfig(
            num_workers=need.num_workers,
            use_gpu=need.gpus_per_worker > 0,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=job_id,
            storage_path=str((settings.data_dir / "ray").resolve()),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    trainer.fit()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
