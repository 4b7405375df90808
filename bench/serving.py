"""`make bench` serving section: what the serving path costs, and what LoRA sharing saves.

1. Throughput: greedy generation of `--serving-tokens` tokens through `dashtune serve`
   (native API non-streaming and streaming, OpenAI-compatible streaming, all over HTTP)
   next to `model.generate` called in this process on the same weights and prompt, one
   torch thread each, run one after the other. Models: dashtune-tiny, a LoRA adapter
   trained on it through the API, and a larger random model (`--serving-hidden`).
2. Deploy latency: POST /deployments -> RUNNING, polled every 20 ms.
3. Memory: the RSS of a serving process holding one base with N LoRA adapters, and of
   one holding N full copies of the same model (N = `--serving-adapters`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from tests.conftest import Server, free_port, start_server, stop_server
from tests.e2e.conftest import wait_terminal, words, write_jsonl

PROMPT = [{"role": "user", "content": "hello"}]
MB = 2**20


@dataclass
class Timing:
    """Wall seconds (and time to first token, when streamed) of repeated runs."""

    tokens: list[int]
    seconds: list[float]
    first_token: list[float]

    @property
    def tokens_per_s(self) -> float:
        return sum(self.tokens) / sum(self.seconds)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)


def _options(args: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench serving")
    p.add_argument("--serving-tokens", type=int, default=200)
    p.add_argument("--serving-repeats", type=int, default=5)
    p.add_argument("--serving-adapters", type=int, default=4)
    p.add_argument("--serving-hidden", type=int, default=512)
    p.add_argument("--serving-layers", type=int, default=8)
    return p.parse_known_args(args)[0]


# -- models ------------------------------------------------------------------------------


def _larger_model(tiny: str, out: Path, hidden: int, layers: int) -> str:
    """A random Qwen3 of the given size with the tiny model's tokenizer and template."""
    from transformers import AutoTokenizer

    from dashtune.trainer.tiny import save_random_qwen3

    heads = max(1, hidden // 64)
    save_random_qwen3(
        AutoTokenizer.from_pretrained(tiny),
        str(out),
        hidden=hidden,
        intermediate=int(hidden * 2.75),
        layers=layers,
        heads=heads,
        kv_heads=max(1, heads // 2),
        head_dim=64,
        max_positions=512,
    )
    return str(out)


def _random_adapters(base: str, out: Path, n: int) -> list[str]:
    """N LoRA adapters (r 8, all linear layers) on `base`, each with its own random weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(n):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(base)
        cfg = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
        get_peft_model(model, cfg).save_pretrained(str(out / f"adapter{i}"))
        paths.append(str(out / f"adapter{i}"))
    return paths


# -- throughput ----------------------------------------------------------------------------


def _in_process(model_dir: str, adapter: str | None, tokens: int, repeats: int) -> Timing:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(adapter or model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).eval()
    enc: Any = tok.apply_chat_template(
        PROMPT, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    n_in = enc["input_ids"].shape[1]
    out = Timing([], [], [])
    for i in range(repeats + 1):  # the first run warms up
        started = time.perf_counter()
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=tokens, do_sample=False)
        if i:
            out.seconds.append(time.perf_counter() - started)
            out.tokens.append(int(ids.shape[1] - n_in))
    return out


def _native(c: httpx.Client, model: str, tokens: int, repeats: int, stream: bool) -> Timing:
    body = {
        "model": model,
        "input": {"messages": PROMPT},
        "parameters": {"max_tokens": tokens, "temperature": 0, "incremental_output": True},
    }
    headers = {"X-DashScope-SSE": "enable"} if stream else {}
    out = Timing([], [], [])
    for i in range(repeats + 1):
        started = time.perf_counter()
        first = None
        if stream:
            last: dict[str, Any] = {}
            with c.stream(
                "POST", "/api/v1/services/aigc/text-generation/generation", json=body,
                headers=headers,
            ) as r:  # fmt: skip
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        first = first or time.perf_counter() - started
                        last = json.loads(line[5:])
            used = last["usage"]["output_tokens"]
        else:
            r = c.post("/api/v1/services/aigc/text-generation/generation", json=body)
            r.raise_for_status()
            used = r.json()["usage"]["output_tokens"]
        if i:
            out.seconds.append(time.perf_counter() - started)
            out.tokens.append(int(used))
            if first is not None:
                out.first_token.append(first)
    return out


def _openai_stream(c: httpx.Client, model: str, tokens: int, repeats: int) -> Timing:
    body = {
        "model": model,
        "messages": PROMPT,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    out = Timing([], [], [])
    for i in range(repeats + 1):
        started = time.perf_counter()
        first, used = None, 0
        with c.stream("POST", "/compatible-mode/v1/chat/completions", json=body) as r:
            for line in r.iter_lines():
                if not line.startswith("data:") or line.endswith("[DONE]"):
                    continue
                chunk = json.loads(line[5:])
                if chunk.get("usage"):
                    used = chunk["usage"]["completion_tokens"]
                elif chunk["choices"][0]["delta"].get("content"):
                    first = first or time.perf_counter() - started
        if i:
            out.seconds.append(time.perf_counter() - started)
            out.tokens.append(used)
            if first is not None:
                out.first_token.append(first)
    return out


# -- the server ----------------------------------------------------------------------------


def _deploy(c: httpx.Client, model: str, suffix: str) -> tuple[str, float]:
    """(deployed_model, seconds from the create request to RUNNING)."""
    started = time.perf_counter()
    r = c.post("/api/v1/deployments", json={"model_name": model, "capacity": 1, "suffix": suffix})
    r.raise_for_status()
    name = r.json()["output"]["deployed_model"]
    while True:
        dep = c.get(f"/api/v1/deployments/{name}").json()["output"]
        if dep["status"] == "RUNNING":
            return name, time.perf_counter() - started
        if dep["status"] == "FAILED":
            raise RuntimeError(dep)
        time.sleep(0.02)


def _train_lora(srv: Server, c: httpx.Client, tmp: Path) -> dict[str, Any]:
    rows = [
        {"messages": [{"role": "user", "content": w}, {"role": "assistant", "content": "zzz"}]}
        for w in words(32, 1)
    ]
    raw = write_jsonl(tmp / "lora.jsonl", rows).read_bytes()
    up = c.post("/api/v1/files", files={"files": ("lora.jsonl", raw)}).json()
    hp = {"n_epochs": 2, "learning_rate": 3e-2, "max_length": 64, "eval_steps": 1000}
    job = c.post(
        "/api/v1/fine-tunes",
        json={
            "model": "dashtune-tiny",
            "training_file_ids": [up["data"]["uploaded_files"][0]["file_id"]],
            "training_type": "efficient_sft",
            "hyper_parameters": hp,
        },
    ).json()["output"]
    with srv.http() as api:
        done = wait_terminal(api, job["job_id"], timeout=300)
    if done["status"] != "SUCCEEDED":
        raise RuntimeError(done)
    return done


@contextmanager
def _serving_process(tmp: Path) -> Iterator[Callable[..., Any]]:
    """A bare serving process (no API server): yields `call(method, path, json=None)`."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    log = open(tmp / f"serving-{port}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashtune.serving.server", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("serving process did not start")
            time.sleep(0.2)

        def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
            r = client.request(method, path, json=body)
            r.raise_for_status()
            return r.json()

        yield call
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _memory(tmp: Path, base: str, adapters: list[str], copies: list[str]) -> list[list[str]]:
    """Rows: what is loaded, models and adapters in memory, RSS, growth over empty."""
    rows = []

    def row(what: str, stats: dict[str, Any], empty: int) -> list[str]:
        rss = stats["rss_bytes"]
        params = sum(m["parameters"] for m in stats["models"])
        return [
            what,
            str(stats["models_loaded"]),
            str(stats["adapters_loaded"]),
            f"{params / 1e6:.1f} M",
            f"{rss / MB:.0f}",
            f"{(rss - empty) / MB:+.0f}",
        ]

    def serve_once(call: Callable[..., Any], key: str) -> None:
        call("POST", "/generate", {"key": key, "messages": PROMPT, "sampling": {"max_tokens": 4}})

    with _serving_process(tmp) as call:
        empty = call("GET", "/stats")
        rows.append(row("serving process, nothing loaded", empty, empty["rss_bytes"]))
        call("POST", "/load", {"key": "base", "spec": {"base_path": base}, "capacity": 1})
        serve_once(call, "base")
        rows.append(row("1 base model", call("GET", "/stats"), empty["rss_bytes"]))
        for i, adapter in enumerate(adapters):
            spec = {"base_path": base, "adapter_path": adapter}
            call("POST", "/load", {"key": f"lora{i}", "spec": spec, "capacity": 1})
            serve_once(call, f"lora{i}")
        what = f"1 base + {len(adapters)} LoRA adapters"
        rows.append(row(what, call("GET", "/stats"), empty["rss_bytes"]))
    with _serving_process(tmp) as call:
        empty = call("GET", "/stats")
        for i, path in enumerate(copies):
            call("POST", "/load", {"key": f"full{i}", "spec": {"base_path": path}, "capacity": 1})
            serve_once(call, f"full{i}")
        what = f"{len(copies)} full copies"
        rows.append(row(what, call("GET", "/stats"), empty["rss_bytes"]))
    return rows


def run(args: list[str] | None = None) -> None:
    opts = _options(args or [])
    console = Console()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        from dashtune.trainer.tiny import ensure_tiny_model

        tiny = ensure_tiny_model(str(tmp / "tiny"))
        larger = _larger_model(tiny, tmp / "larger", opts.serving_hidden, opts.serving_layers)
        size = _params(larger)
        catalog = tmp / "catalog.yaml"
        catalog.write_text(
            f"models:\n  dashtune-tiny:\n    source: builtin:tiny\n"
            f"  bench-larger:\n    source: {larger}\n"
        )
        console.print(
            f"[bold]serving[/bold]: greedy, {opts.serving_tokens} new tokens, "
            f"{opts.serving_repeats} runs after 1 warm-up, 1 torch thread everywhere"
        )
        srv = start_server(
            tmp / "srv",
            "",
            DASHTUNE_EXECUTOR="local",
            DASHTUNE_SERVING="true",
            DASHTUNE_CATALOG_PATH=str(catalog),
        )
        try:
            headers = {"Authorization": f"Bearer {srv.key}"}
            with httpx.Client(base_url=srv.base, headers=headers, timeout=600) as c:
                latency = []
                _, s = _deploy(c, "dashtune-tiny", "first")
                latency.append(("tiny, first deployment (starts the serving process)", s))
                tiny_dep, s = _deploy(c, "dashtune-tiny", "second")
                latency.append(("tiny again (base already in memory)", s))
                larger_dep, s = _deploy(c, "bench-larger", "b")
                latency.append((f"larger ({size}) on a running process", s))
                job = _train_lora(srv, c, tmp)
                lora_dep, s = _deploy(c, job["finetuned_output"], "lora")
                latency.append(("LoRA adapter on tiny (base already in memory)", s))
                adapter_dir = str(srv.data_dir / "jobs" / job["job_id"] / "final")
                tiny_dir = str(srv.data_dir / "models" / "builtin" / "dashtune-tiny")
                models = [
                    ("tiny", tiny_dep, tiny_dir, None),
                    ("tiny+LoRA", lora_dep, tiny_dir, adapter_dir),
                    (f"larger {size}", larger_dep, larger, None),
                ]
                results = []
                for label, dep, path, adapter in models:
                    n, k = opts.serving_tokens, opts.serving_repeats
                    direct = _in_process(path, adapter, n, k)
                    results.append((label, "generate()", direct, direct))
                    results.append((label, "native JSON", _native(c, dep, n, k, False), direct))
                    results.append((label, "native SSE", _native(c, dep, n, k, True), direct))
                    results.append((label, "OpenAI SSE", _openai_stream(c, dep, n, k), direct))
        finally:
            stop_server(srv)
        _print_throughput(console, results)
        _print_latency(console, latency)

        n = opts.serving_adapters
        adapters = _random_adapters(larger, tmp / "adapters", n)
        copies = []
        for i in range(n):
            target = tmp / f"copy{i}"
            subprocess.run(["cp", "-r", larger, str(target)], check=True)
            copies.append(str(target))
        mem = _memory(tmp, larger, adapters, copies)
    table = Table(title=f"serving process memory: the larger model ({size}, fp32)")
    for col in ("loaded", "models", "adapters", "params", "RSS MB", "vs empty"):
        table.add_column(col, justify="right")
    for r in mem:
        table.add_row(*r)
    console.print(table)


def _params(path: str) -> str:
    cfg = json.loads((Path(path) / "config.json").read_text())
    h, layers, inter = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    q = cfg["num_attention_heads"] * cfg["head_dim"]
    kv = cfg["num_key_value_heads"] * cfg["head_dim"]
    per_layer = h * q * 2 + h * kv * 2 + 3 * h * inter
    return f"{(layers * per_layer + cfg['vocab_size'] * h) / 1e6:.0f}M"


def _print_throughput(console: Console, results: list[tuple[str, str, Timing, Timing]]) -> None:
    table = Table(title="generation: dashtune over HTTP vs model.generate() in this process")
    for col in ("model", "path", "tok/run", "median s", "TTFT s", "tok/s", "÷direct"):
        table.add_column(col, justify="right")
    for label, path, t, direct in results:
        ttft = f"{statistics.median(t.first_token):.3f}" if t.first_token else "-"
        table.add_row(
            label,
            path,
            f"{statistics.median(t.tokens):.0f}",
            f"{t.median_s:.3f}",
            ttft,
            f"{t.tokens_per_s:.0f}",
            f"{t.tokens_per_s / direct.tokens_per_s:.2f}",
        )
    console.print(table)


def _print_latency(console: Console, latency: list[tuple[str, float]]) -> None:
    table = Table(title="deploy request -> RUNNING")
    table.add_column("deployment")
    table.add_column("seconds", justify="right")
    for what, seconds in latency:
        table.add_row(what, f"{seconds:.2f}")
    console.print(table)
