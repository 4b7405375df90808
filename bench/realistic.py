"""The realistic training workload of `make bench` section `training` (issue 10).

Chat samples with long-tailed lengths (log-normal, median about 150 tokens, tail to
max_length 1024) and a random-initialised ~23M-parameter Qwen2-style model, both built
here with no downloads (the tokenizer is dashtune-tiny's BPE, 384 tokens). A dashtune `sft`
job through the real server vs bench/plain_trl.py with a user's defaults (padding, no
packing), same data, epochs, global batch and learning rate; each trains on one torch
thread. Reported: real (non-padding) tokens/s of both and the ratio, peak RSS of both, the
final eval loss of both (each trainer's own, and one computed here the same way for both
final models), and create -> RUNNING latency.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from tests.conftest import start_server, stop_server
from tests.e2e.conftest import write_jsonl

MAX_LEN, BATCH, EPOCHS, LR = 1024, 8, 1, 1e-3
MEDIAN, SIGMA = 150, 0.8  # log-normal token lengths: p90 ~ 420, p99 ~ 960 before the clip
MODEL = "bench-qwen2-23m"
TRAIN_TPS = re.compile(r"trained \d+ steps in ([\d.]+) s \((\d+) tokens/s")
PEAK_RSS = re.compile(r"peak memory: RSS (\d+) MiB")


def options(args: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench training")
    p.add_argument("--realistic-samples", type=int, default=1000, help="training samples")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each trainer")
    p.add_argument(
        "--also-float32",
        action="store_true",
        help="also run the dashtune job with bf16=false (what bf16 adds, where auto chose it)",
    )
    known, _ = p.parse_known_args(args or [])
    return known


def build_model(path: Path) -> Any:
    """A random Qwen2 of ~23M parameters on dashtune-tiny's tokenizer; returns the tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from dashtune.trainer.tiny import build_tokenizer

    tok = build_tokenizer()
    tok.model_max_length = MAX_LEN
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=MAX_LEN,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return tok


def chat_rows(tok: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` conversations whose rendered lengths follow the long-tailed distribution."""
    from dashtune.trainer.tiny import _WORDS

    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    while len(rows) < n:  # a sample that cannot land within max_length is drawn again
        target = min(MAX_LEN, max(24, round(rng.lognormvariate(math.log(MEDIAN), SIGMA))))
        words = [rng.choice(_WORDS) for _ in range(target)]
        cut = max(2, len(words) // 4)
        for _ in range(6):  # a word is about one token here: converge on the target length
            row = {
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": " ".join(words[:cut])},
                    {"role": "assistant", "content": " ".join(words[cut:])},
                ]
            }
            length = _length(tok, row)
            if length <= MAX_LEN and abs(length - target) <= max(4, target // 20):
                break
            keep = max(cut + 1, round(len(words) * target / length))
            words = words[:keep] if keep < len(words) else words + words[: keep - len(words)]
        if length <= MAX_LEN:
            rows.append(row)
    return rows


def _length(tok: Any, row: dict[str, Any]) -> int:
    text = tok.apply_chat_template(row["messages"], tokenize=False)
    return len(tok(text, add_special_tokens=False)["input_ids"])


def lengths(tok: Any, rows: list[dict[str, Any]]) -> list[int]:
    return sorted(_length(tok, r) for r in rows)


def eval_nll(model_dir: str, rows: list[dict[str, Any]]) -> float:
    """Token-weighted mean NLL of the assistant tokens of `rows`: one measure for both."""
    import torch
    from transformers import AutoModelForCausalLM

    from dashtune.trainer.model import load_tokenizer
    from dashtune.trainer.sft import chat_encoder

    tok = load_tokenizer(model_dir)
    encode = chat_encoder(tok, prompt_loss=0.0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            enc = encode(row)
            assert enc is not None
            ids = torch.tensor([enc[0]["input_ids"]])
            labels = torch.tensor([enc[0]["labels"]])[:, 1:]
            logits = model(input_ids=ids).logits[:, :-1]
            nll = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), labels, ignore_index=-100, reduction="sum"
            )
            total += float(nll)
            count += int((labels != -100).sum())
    return total / count


def _plain(train: Path, val: Path, model_dir: str, out: Path, threads: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).with_name("plain_trl.py")),
        *("--data", str(train), "--validation", str(val), "--model", model_dir),
        *("--output", str(out), "--epochs", str(EPOCHS), "--batch-size", str(BATCH)),
        *("--learning-rate", str(LR), "--max-length", str(MAX_LEN), "--threads", str(threads)),
    ]
    env = {"OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _poll(c: httpx.Client, job_id: str, status: str, period: float) -> dict[str, Any]:
    while True:
        job = c.get(f"/fine-tunes/{job_id}").json()["output"]
        if job["status"] == status:
            return dict(job)
        if job["status"] in ("FAILED", "CANCELED"):
            raise RuntimeError(job)
        time.sleep(period)


def _dashtune(
    tmp: Path, train: Path, val: Path, model_dir: str, threads: int, **extra_hp: Any
) -> dict[str, Any]:
    catalog = tmp / "catalog.yaml"
    catalog.write_text(f"models:\n  {MODEL}:\n    source: {model_dir}\n")
    server_dir = tmp / "-".join(["server", *(f"{k}-{v}" for k, v in extra_hp.items())])
    srv = start_server(
        server_dir,
        "",
        DASHTUNE_EXECUTOR="local",
        DASHTUNE_CATALOG_PATH=str(catalog),
        DASHTUNE_WORKER_THREADS=str(threads),
        OMP_NUM_THREADS=str(threads),
    )
    hp = {
        "n_epochs": EPOCHS,
        "batch_size": BATCH,
        "learning_rate": LR,
        "max_length": MAX_LEN,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.05,
        "weight_decay": 0.0,  # TRL's default, as the plain script leaves it
        "logging_steps": 5,
        "eval_steps": 100000,  # evaluate at the start and the end only
        "save_strategy": "steps",
        "save_steps": 100000,  # no mid-run checkpoint: the plain script saves none
        **extra_hp,
    }
    try:
        with srv.http() as c:

            def upload(path: Path) -> str:
                files = {"files": (path.name, path.read_bytes())}
                data = c.post("/files", files=files).json()["data"]
                return str(data["uploaded_files"][0]["file_id"])

            body = {
                "model": MODEL,
                "training_file_ids": [upload(train)],
                "validation_file_ids": [upload(val)],
                "hyper_parameters": hp,
            }
            t0 = time.perf_counter()
            job = c.post("/fine-tunes", json=body).json()["output"]
            _poll(c, job["job_id"], "RUNNING", 0.01)
            running_s = time.perf_counter() - t0
            done = _poll(c, job["job_id"], "SUCCEEDED", 0.5)
            logs = c.get(f"/fine-tunes/{job['job_id']}/logs", params={"line": 1000}).json()[
                "output"
            ]["logs"]
        train_s, tps = next(
            (float(m.group(1)), float(m.group(2))) for x in logs if (m := TRAIN_TPS.search(x))
        )
        rss = next(float(m.group(1)) for x in logs if (m := PEAK_RSS.search(x)))
        final = next(p for p in server_dir.rglob("final") if job["job_id"] in str(p))
        evals = [x for x in logs if "eval_loss" in x]
        return {
            "running_s": running_s,
            "usage": done["usage"],
            "train_s": train_s,
            "tokens_per_s": tps,
            "peak_rss_mib": rss,
            "final": str(final),
            "settings": next((x for x in logs if "hardware settings" in x), ""),
            "eval_line": evals[-1] if evals else "",
        }
    finally:
        stop_server(srv)


def run(args: list[str] | None = None) -> None:
    import tempfile

    opt = options(args)
    console = Console()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        tok = build_model(tmp / MODEL)
        rows = chat_rows(tok, opt.realistic_samples, seed=1)
        val_rows = chat_rows(tok, max(16, opt.realistic_samples // 10), seed=2)
        train, val = (
            write_jsonl(tmp / "train.jsonl", rows),
            write_jsonl(tmp / "val.jsonl", val_rows),
        )
        ls = lengths(tok, rows)
        console.print(
            f"[bold]training, realistic[/bold]: sft, random Qwen2 23M ({MODEL}), "
            f"{len(rows)} chat samples (tokens: median {ls[len(ls) // 2]}, "
            f"p90 {ls[int(len(ls) * 0.9)]}, max {ls[-1]}, total {sum(ls)}), "
            f"{len(val_rows)} validation, {EPOCHS} epoch, batch {BATCH}, max_length {MAX_LEN}, "
            f"{opt.threads} torch thread(s) each"
        )
        # The host's 1-minute load average after each run: other work on a shared machine
        # slows whichever run it overlaps, so the ratio is only as fair as these are close.
        dash = _dashtune(tmp, train, val, str(tmp / MODEL), opt.threads)
        dash_load = os.getloadavg()[0]
        plain = _plain(train, val, str(tmp / MODEL), tmp / "plain", opt.threads)
        plain_load = os.getloadavg()[0]
        dash_nll = eval_nll(dash["final"], val_rows)
        plain_nll = eval_nll(str(tmp / "plain" / "final"), val_rows)
        fp32 = None
        if opt.also_float32:
            fp32 = _dashtune(tmp, train, val, str(tmp / MODEL), opt.threads, bf16=False)
            fp32["load"] = os.getloadavg()[0]
            fp32["nll"] = eval_nll(fp32["final"], val_rows)
    table = Table(title="realistic: dashtune sft job vs plain TRL SFTTrainer (padding, no packing)")
    for col in ("metric", "dashtune", "plain TRL", "ratio dashtune/plain"):
        table.add_column(col, justify="right")
    table.add_row(
        "real tokens/s (trainer.train())",
        f"{dash['tokens_per_s']:.0f}",
        f"{plain['train_tokens_per_s']:.0f}",
        f"{dash['tokens_per_s'] / plain['train_tokens_per_s']:.2f}",
    )
    table.add_row("real tokens trained", str(dash["usage"]), str(plain["tokens"]), "")
    table.add_row(
        "train seconds",
        f"{dash['train_s']:.1f}",
        f"{plain['train_s']:.1f}",
        f"{dash['train_s'] / plain['train_s']:.2f}",
    )
    table.add_row(
        "peak RSS MiB (trainer process)",
        f"{dash['peak_rss_mib']:.0f}",
        f"{plain['peak_rss_mib']:.0f}",
        f"{dash['peak_rss_mib'] / plain['peak_rss_mib']:.2f}",
    )
    table.add_row(
        "final eval loss (same code for both)",
        f"{dash_nll:.4f}",
        f"{plain_nll:.4f}",
        f"{dash_nll / plain_nll:.4f}",
    )
    table.add_row("final eval loss (each trainer's own)", "", f"{plain['eval_loss']:.4f}", "")
    console.print(table)
    console.print(f"dashtune {dash['settings']}")
    console.print(f"dashtune final eval log: {dash['eval_line']}")
    console.print(f"dashtune create → RUNNING: {dash['running_s']:.3f} s")
    console.print(f"load average after each run: dashtune {dash_load:.1f}, plain {plain_load:.1f}")
    if fp32 is not None:
        console.print(
            f"dashtune with bf16=false: {fp32['tokens_per_s']:.0f} real tokens/s "
            f"({fp32['tokens_per_s'] / plain['train_tokens_per_s']:.2f}x plain), "
            f"eval loss (same code) {fp32['nll']:.4f}, peak RSS {fp32['peak_rss_mib']:.0f} MiB, "
            f"load average after it {fp32['load']:.1f}; {fp32['settings']}"
        )
