"""A workspace with many jobs: one created through the API, the rest bulk-inserted.

The API creates the user, the file and the first job, so the tenant is a real one; the
other rows copy that job with SQLAlchemy Core executemany (seconds for 100k rows, where
100k creates through the API would take minutes) and keep `rank` dense, as the service does.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import create_engine, select, text, update
from tests.conftest import Server

from dashtune.store.tables import Base

MODEL = "dashtune-tiny"
BATCH = 5000


def real_job(srv: Server) -> str:
    """Upload a file and create a job through the API, so the tenant is a real one."""
    rows = [
        {
            "messages": [
                {"role": "system", "content": "You reverse words."},
                {"role": "user", "content": f"reverse {w}"},
                {"role": "assistant", "content": w[::-1]},
            ]
        }
        for w in ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")
    ]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    with srv.http() as c:
        up = c.post("/files", files={"files": ("train.jsonl", data)}, data={"purpose": "fine-tune"})
        up.raise_for_status()
        file_id = up.json()["data"]["uploaded_files"][0]["file_id"]
        created = c.post(
            "/fine-tunes",
            json={
                "model": MODEL,
                "training_file_ids": [file_id],
                "training_type": "efficient_sft",
                "hyper_parameters": {"n_epochs": 3, "learning_rate": 3e-3, "batch_size": 8},
            },
        )
        created.raise_for_status()
        job_id: str = created.json()["output"]["job_id"]
        # Let the scheduler validate it, so nothing changes under the measurement.
        deadline = time.monotonic() + 30
        while c.get(f"/fine-tunes/{job_id}").json()["output"]["status"] != "QUEUING":
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} did not reach QUEUING")
            time.sleep(0.1)
    return job_id


def bulk_jobs(srv: Server, job_id: str, total: int) -> float:
    """Copy the real job into ranks 2..total with SQLAlchemy Core executemany; seconds taken."""
    url = srv.settings().database
    engine = create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
    jobs_t = Base.metadata.tables["jobs"]
    ws_t = Base.metadata.tables["workspaces"]
    started = time.perf_counter()
    try:
        with engine.begin() as conn:
            real = dict(conn.execute(select(jobs_t).where(jobs_t.c.id == job_id)).mappings().one())
            count = conn.scalar(select(ws_t.c.job_count).where(ws_t.c.id == real["workspace_id"]))
            if real["rank"] != 1 or real.get("model_rank", 1) != 1 or count != 1:
                raise RuntimeError(f"expected a fresh workspace, got rank {real['rank']}/{count}")
            batch: list[dict[str, Any]] = []
            for rank in range(2, total + 1):
                # One id per minute: `ft-{yyyyMMddHHmm}-{4hex}` cannot collide.
                t = real["create_time"] + timedelta(minutes=rank - 1)
                new_id = f"ft-{t:%Y%m%d%H%M}-{secrets.token_hex(2)}"
                batch.append(
                    {
                        **real,
                        "id": new_id,
                        "rank": rank,
                        "job_name": new_id,
                        "finetuned_output": real["finetuned_output"].replace(job_id, new_id),
                        "status": "SUCCEEDED",
                        "create_time": t,
                        "start_time": t + timedelta(minutes=1),
                        "end_time": t + timedelta(minutes=9),
                        "progress": 1.0,
                        "usage": 250_000,
                        "log_count": 0,
                    }
                )
                if "model_rank" in real:  # every copy has the real job's base model
                    batch[-1]["model_rank"] = rank
                if len(batch) == BATCH:
                    conn.execute(jobs_t.insert(), batch)
                    batch = []
            if batch:
                conn.execute(jobs_t.insert(), batch)
            conn.execute(
                update(ws_t).where(ws_t.c.id == real["workspace_id"]).values(job_count=total)
            )
            counts_t = Base.metadata.tables.get("model_job_counts")  # absent before 0009
            if counts_t is not None:
                conn.execute(
                    update(counts_t)
                    .where(
                        counts_t.c.workspace_id == real["workspace_id"],
                        counts_t.c.base_model == real["base_model"],
                    )
                    .values(job_count=total)
                )
        if not url.startswith("sqlite"):
            # What autovacuum does on its own after this many inserts. Not on SQLite: nothing
            # runs ANALYZE there, and without stat4 its statistics would turn the scheduler's
            # `status IN (...)` queries into full scans, which no real install sees.
            with engine.begin() as conn:
                conn.execute(text("ANALYZE jobs"))
    finally:
        engine.dispose()
    return time.perf_counter() - started
