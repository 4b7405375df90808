"""`dashtune jobs ...`: create, follow and manage fine-tune jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from dashtune.client.errors import EXIT_ERROR, ApiError, ReportedGroup, report
from dashtune.client.http import Client, connect
from dashtune.client.render import (
    Column,
    JsonFlag,
    cell,
    console,
    done,
    duration,
    err_console,
    fields,
    percent,
    print_json,
    status_text,
    table,
)
from dashtune.client.watch import watch as watch_job
from dashtune.domain.training import TrainingType

app = typer.Typer(cls=ReportedGroup, no_args_is_help=True, help="Create and follow fine-tune jobs.")

TRAINING_TYPES = [t.value for t in TrainingType]
LOG_PAGE = 1000  # the most lines one logs request returns

JOB_COLUMNS = [
    ("JOB ID", lambda j: cell(j.get("job_id"))),
    ("STATUS", lambda j: status_text(j.get("status"))),
    ("MODEL", lambda j: cell(j.get("model"))),
    ("TYPE", lambda j: cell(j.get("training_type"))),
    ("PROGRESS", lambda j: percent(j.get("progress"))),
    ("CREATED", lambda j: cell(j.get("create_time"))),
    ("OUTPUT MODEL", lambda j: cell(j.get("finetuned_output"))),
]


def parse_hyper_parameters(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs; values are JSON when they parse (3, 3e-3, true), else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ApiError("InvalidParameter", f"--hp expects KEY=VALUE, got '{pair}'.")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def resolve_files(client: Client, refs: list[str]) -> list[str]:
    """File ids for `refs`; a ref that names a local file is uploaded first."""
    ids = []
    for ref in refs:
        path = Path(ref)
        if path.is_file():
            uploaded = client.upload_file(path)
            err_console.print(f"[dim]uploaded {path} as {uploaded['file_id']}[/dim]")
            ids.append(uploaded["file_id"])
        else:
            ids.append(ref)
    return ids


def end_of_watch(job: dict[str, Any], as_json: bool) -> None:
    """Report how a watched job ended; exit non-zero unless it SUCCEEDED."""
    status = job.get("status")
    if as_json:
        print_json(job)
    elif status == "SUCCEEDED":
        console.print(
            f"{job['job_id']} [green]SUCCEEDED[/green]: model [bold]{job.get('finetuned_output')}"
            f"[/bold] ({job.get('usage', 0):,} tokens trained)"
        )
    if status == "FAILED":
        report(
            ApiError(
                str(job.get("code") or "Failed"),
                f"{job['job_id']} FAILED: {job.get('message') or 'no reason given'}",
            )
        )
    elif status == "CANCELED":
        report(ApiError("Canceled", f"{job['job_id']} was canceled."))
    if status != "SUCCEEDED":
        raise typer.Exit(EXIT_ERROR)


@app.command()
def create(
    model: Annotated[str, typer.Option("--model", "-m", help="Base model or a fine-tuned model.")],
    training_files: Annotated[
        list[str],
        typer.Option("--training-file", "-t", help="File id or local JSONL path (repeatable)."),
    ],
    validation_files: Annotated[
        list[str] | None,
        typer.Option("--validation-file", "-v", help="File id or local JSONL path (repeatable)."),
    ] = None,
    training_type: Annotated[
        str | None, typer.Option("--type", help=f"One of {', '.join(TRAINING_TYPES)}.")
    ] = None,
    hp: Annotated[
        list[str] | None,
        typer.Option("--hp", help="Hyper-parameter KEY=VALUE (repeatable), e.g. --hp n_epochs=3."),
    ] = None,
    suffix: Annotated[str | None, typer.Option(help="Suffix of the output model name.")] = None,
    model_name: Annotated[
        str | None, typer.Option("--model-name", help="Exact output model name.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Job display name.")] = None,
    follow: Annotated[bool, typer.Option("--watch", "-w", help="Watch until it ends.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only estimate: problems, tokens, steps, time, memory."),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a fine-tune job (local JSONL paths are uploaded first)."""
    with connect() as c:
        body: dict[str, Any] = {
            "model": model,
            "training_file_ids": resolve_files(c, training_files),
        }
        if validation_files:
            body["validation_file_ids"] = resolve_files(c, validation_files)
        if training_type:
            body["training_type"] = training_type
        if hp:
            body["hyper_parameters"] = parse_hyper_parameters(hp)
        for key, value in (
            ("finetuned_output_suffix", suffix),
            ("model_name", model_name),
            ("job_name", name),
        ):
            if value:
                body[key] = value
        if dry_run:
            show_estimate(c.estimate_job(body), as_json)
            return
        job = c.create_job(body)
        if follow:
            if not as_json:
                console.print(f"created {job['job_id']}")
            end_of_watch(watch_job(c, job["job_id"]), as_json)
            return
    done(
        f"created {job['job_id']} ({job['status']}); follow it with: dashtune jobs watch {job['job_id']}",
        job,
        as_json,
    )


def show_estimate(est: dict[str, Any], as_json: bool) -> None:
    """The estimate for people (or as JSON); exit 1 when the data has problems."""
    if as_json:
        print_json(est)
    else:
        train, dur, mem = est["training"], est["duration"], est["memory"]
        fields(
            est,
            [
                ("model", est["model"]),
                ("training type", est["training_type"]),
                ("samples", f"{train['samples']} ({train['dropped_too_long']} over max_length)"),
                ("train samples", est["train_samples"]),
                ("tokens per epoch", est["train_tokens_per_epoch"]),
                ("steps", est["total_steps"]),
                (
                    "duration",
                    duration(dur.get("seconds")) if dur.get("seconds") else dur.get("reason"),
                ),
                (
                    "memory",
                    f"{mem.get('required_bytes')} of {mem.get('available_bytes')} bytes"
                    f" on {mem.get('device')}"
                    if mem.get("required_bytes")
                    else mem.get("reason"),
                ),
            ],
        )
        for p in est["problems"]:
            where = f"{p['file'] or p['file_id']}" + (f":{p['line']}" if p["line"] else "")
            err_console.print(f"{where}: {p['reason']}")
    if not est["valid"]:
        raise typer.Exit(EXIT_ERROR)


@app.command("list")
def list_jobs(
    model: Annotated[str | None, typer.Option("--model", help="Only jobs of this model.")] = None,
    page: Annotated[int, typer.Option("--page", help="Page number.")] = 1,
    page_size: Annotated[int, typer.Option("--page-size", help="Jobs per page (1..100).")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List jobs, newest first."""
    with connect() as c:
        data = c.list_jobs(page, page_size, model)
    if as_json:
        print_json(data)
        return
    table(data["jobs"], JOB_COLUMNS, title="Jobs")
    if data["total"] > page * page_size:
        typer.echo(f"page {page} of {-(-data['total'] // page_size)}; next: --page {page + 1}")


@app.command()
def get(job_id: str, as_json: JsonFlag = False) -> None:
    """Show one job: status, progress, latest metrics and hyper-parameters."""
    with connect() as c:
        job = c.get_job(job_id)
    if as_json:
        print_json(job)
        return
    m = job.get("metrics") or {}
    rows: list[tuple[str, Any]] = [
        ("job_id", job.get("job_id")),
        ("name", job.get("job_name")),
        ("status", status_text(job.get("status"))),
        ("model", job.get("model")),
        ("base_model", job.get("base_model")),
        ("training_type", job.get("training_type")),
        ("training_files", job.get("training_file_ids")),
        ("validation_files", job.get("validation_file_ids")),
        ("output_model", job.get("finetuned_output")),
        ("progress", percent(job.get("progress"))),
        ("eta", duration(job.get("eta_seconds"))),
        ("step", m.get("step")),
        ("loss", m.get("loss")),
        ("eval_loss", m.get("eval_loss")),
        ("usage_tokens", job.get("usage")),
        ("created", job.get("create_time")),
        ("ended", job.get("end_time")),
        ("allowed_actions", job.get("allowed_actions")),
    ]
    if job.get("code"):
        rows.append(("error", f"[red]{cell(job['code'])}: {cell(job.get('message'))}[/red]"))
    fields(job, rows)
    hps = job.get("resolved_hyper_parameters") or job.get("hyper_parameters") or {}
    if hps:
        given = set(job.get("hyper_parameters") or {})
        table(
            [{"k": k, "v": v} for k, v in sorted(hps.items())],
            [
                (
                    "HYPER-PARAMETER",
                    lambda r: f"[bold]{r['k']}[/bold]" if r["k"] in given else r["k"],
                ),
                ("VALUE", lambda r: cell(r["v"])),
            ],
        )


@app.command()
def cancel(job_id: str, as_json: JsonFlag = False) -> None:
    """Cancel a job (PENDING/QUEUING stop at once; RUNNING goes through CANCELING)."""
    with connect() as c:
        out = c.cancel_job(job_id)
    done(f"cancel requested for {job_id}", out, as_json)


@app.command()
def pause(job_id: str, as_json: JsonFlag = False) -> None:
    """Pause a job: RUNNING saves a resume point and frees its slot (PAUSING, then PAUSED)."""
    with connect() as c:
        out = c.pause_job(job_id)
    done(f"pause requested for {job_id}: {out.get('status')}", out, as_json)


@app.command()
def resume(job_id: str, as_json: JsonFlag = False) -> None:
    """Queue a PAUSED job again; it continues from where it paused."""
    with connect() as c:
        out = c.resume_job(job_id)
    done(f"resumed {job_id}: {out.get('status')}", out, as_json)


@app.command()
def delete(job_id: str, as_json: JsonFlag = False) -> None:
    """Delete an ended job with its logs, checkpoints and output model."""
    with connect() as c:
        out = c.delete_job(job_id)
    done(f"deleted {job_id}", out, as_json)


@app.command()
def logs(
    job_id: str,
    offset: Annotated[
        int | None,
        typer.Option(
            "--offset",
            help="Start after this many lines (default: the tail; with -f, the last 10).",
        ),
    ] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines to show (max 1000).")] = 100,
    show_all: Annotated[bool, typer.Option("--all", "-a", help="Every line of the log.")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the job ends.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Print the last lines of a job's log (--all: every line; -f follows it; with --json
    and -f, one JSON event per line)."""
    with connect() as c:
        if not follow:
            start, got, total = _log_lines(c, job_id, offset, lines, show_all)
            if as_json:
                print_json({"total": total, "offset": start, "logs": got})
                return
            if start > 0:
                err_console.print(
                    f"[dim]… {start} earlier line(s) not shown; --all prints every line[/dim]"
                )
            for line in got:
                typer.echo(line)
            after = total - start - len(got)
            if after > 0:
                err_console.print(
                    f"[dim]… {after} more line(s); next: --offset {start + len(got)}[/dim]"
                )
            return
        for event in c.job_events(job_id, offset):
            if as_json:
                typer.echo(json.dumps(event, ensure_ascii=False))
            elif event.get("type") == "log":
                typer.echo(event.get("line", ""))


def _log_lines(
    c: Client, job_id: str, offset: int | None, lines: int, show_all: bool
) -> tuple[int, list[str], int]:
    """(first line's offset, the lines, the log's total): the tail unless `offset` or all."""
    lines = max(1, min(lines, LOG_PAGE))
    if offset is None and not show_all:
        total = int(c.job_logs(job_id, 0, 1)["total"])
        offset = max(0, total - lines)
    start = 0 if show_all else offset or 0
    page = c.job_logs(job_id, start, LOG_PAGE if show_all else lines)
    got, total = list(page["logs"]), int(page["total"])
    while show_all and page["logs"] and start + len(got) < total:
        page = c.job_logs(job_id, start + len(got), LOG_PAGE)
        got += page["logs"]
    return start, got, total


@app.command()
def watch(
    job_id: str,
    interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 1.0,
    as_json: JsonFlag = False,
) -> None:
    """Live progress (step, loss, eval loss, tokens/s, ETA) until the job ends.

    Exits 0 when the job SUCCEEDED and 1 when it FAILED or was CANCELED.
    """
    with connect() as c:
        job = watch_job(c, job_id, interval)
    end_of_watch(job, as_json)


@app.command()
def checkpoints(job_id: str, as_json: JsonFlag = False) -> None:
    """List a job's checkpoints and their export state."""
    with connect() as c:
        rows = c.checkpoints(job_id)
    if as_json:
        print_json(rows)
        return
    table(
        rows,
        [
            ("CHECKPOINT", lambda r: cell(r.get("checkpoint"))),
            ("STEP", lambda r: cell(r.get("step"))),
            ("STATUS", lambda r: status_text(r.get("status"))),
            ("MODEL NAME", lambda r: cell(r.get("model_name"))),
            ("LOSS", lambda r: cell((r.get("metrics") or {}).get("loss"))),
            ("EVAL LOSS", lambda r: cell((r.get("metrics") or {}).get("eval_loss"))),
            ("CREATED", lambda r: cell(r.get("create_time"))),
        ],
        title="Checkpoints",
    )


@app.command()
def export(
    job_id: str,
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint name, e.g. checkpoint-40.")],
    model_name: Annotated[str, typer.Option("--model-name", help="Name of the exported model.")],
    as_json: JsonFlag = False,
) -> None:
    """Export a checkpoint as a model that can be deployed or trained further."""
    with connect() as c:
        out = c.export(job_id, checkpoint, model_name)
    done(f"exporting {checkpoint} of {job_id} as '{model_name}'", out, as_json)


@app.command()
def metrics(job_id: str, as_json: JsonFlag = False) -> None:
    """Every recorded metric point of a job (step, loss, eval loss, learning rate...)."""
    with connect() as c:
        points = c.metrics(job_id)
    if as_json:
        print_json(points)
        return
    keys = sorted({k for p in points for k in p} - {"step"})
    table(points, [metric_column(k) for k in ["step", *keys]], title="Metrics")


def metric_column(key: str) -> Column:
    return (key.upper(), lambda point: cell(point.get(key)))
