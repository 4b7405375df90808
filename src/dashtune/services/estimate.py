"""The pre-flight estimate of a fine-tune job: the create body in, no job out.

Every dataset problem (up to a limit), sample and token counts with the model's own
tokenizer and chat template, what max_length would drop, the split and the steps (the
trainer's own rules: trainer.data, trainer.arguments, both free of torch), a duration
from the earlier jobs of the model (services.durations), and a memory estimate.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from dashtune.domain.datasets import DatasetError, check_line, iter_objects
from dashtune.domain.ids import file_id_list
from dashtune.domain.openai_formats import to_dashtune
from dashtune.domain.training import DPO_TYPES, LORA_TYPES, TrainingType, parse_training_type
from dashtune.services import chat_tokens, durations, weights
from dashtune.services.jobs import resolve_hyper_parameters
from dashtune.services.runtime import Runtime
from dashtune.services.tenancy import Principal
from dashtune.store.tables import StoredFile
from dashtune.trainer.arguments import total_steps
from dashtune.trainer.data import split_validation

MAX_PROBLEMS = 100
BATCH = 1024  # rows tokenised per call: bounds memory, amortises the call
FIELD = re.compile(r"^([A-Za-z_]\w*(?:\[\d+\])?(?:\.\w+)*) ")
QUOTED = re.compile(r"'(\w+)'")
# Bytes of accelerator (or host) memory per parameter while training in float32 with AdamW:
# weights 4 + gradients 4 + two moments 8; frozen weights only 4; DPO's reference copy 4.
BYTES_FULL, BYTES_FROZEN = 16, 4


@dataclass
class Part:
    """What one side (training or validation) holds, sample by sample."""

    samples: int = 0
    lengths: list[int] = field(default_factory=list)  # kept samples: tokens each
    usage: list[int] = field(default_factory=list)  # kept samples: tokens trained each
    too_long: int = 0
    untrained: int = 0

    def add(self, counted: list[tuple[int, int] | None], max_length: int) -> None:
        """Keep or drop each counted sample in order, by the trainer's rules."""
        for c in counted:
            if c is None:
                self.untrained += 1
            elif c[0] > max_length:
                self.too_long += 1
            else:
                self.lengths.append(c[0])
                self.usage.append(c[1])

    def view(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "kept_samples": len(self.lengths),
            "tokens": sum(self.lengths),
            "dropped_too_long": self.too_long,
            "dropped_untrained": self.untrained,
            "longest": max(self.lengths, default=0),
        }


def _field(problem: str) -> str | None:
    """The field a dataset problem names: its leading path (`messages[0].role must ...`)
    or the quoted key it asks for (`needs 'chosen'`)."""
    m = FIELD.match(problem)
    if m and m.group(1) not in ("is", "must", "needs", "the"):
        return m.group(1)
    quoted = QUOTED.search(problem)
    return quoted.group(1) if quoted else None


def _model_dir(rt: Runtime, who: Principal, model: str) -> tuple[weights.Weights, str]:
    """The weights and the directory holding the tokenizer and chat template."""
    w = weights.resolve(rt, who.workspace_id, model)
    if w.builtin and not (Path(w.base_path) / "tokenizer.json").is_file():
        # Built on first use by workers; here by a short-lived process (torch stays out).
        code = (
            "import sys; from dashtune.trainer.tiny import ensure_tiny_model as e; e(sys.argv[1])"
        )
        subprocess.run([sys.executable, "-c", code, w.base_path], check=True, timeout=300)
    tok_dir = w.base_path
    if w.adapter_path and (Path(w.adapter_path) / "tokenizer.json").is_file():
        tok_dir = w.adapter_path
    if not Path(tok_dir).is_dir():
        try:
            from huggingface_hub import snapshot_download

            tok_dir = snapshot_download(tok_dir, local_files_only=True)
        except Exception as exc:
            raise chat_tokens.TokenizerUnavailable(
                f"model '{model}' is not in the local Hugging Face cache ({exc})"
            ) from None
    return w, tok_dir


class Counter:
    """Tokens of rows as the trainer encodes them: (length for max_length, tokens trained)
    per row, or None for a row that trains nothing; a batch of rows at a time."""

    def __init__(self, tok: chat_tokens.ChatTokens, kind: TrainingType, prompt_loss: float):
        self.tok, self.kind, self.prompt_loss = tok, kind, prompt_loss

    def __call__(self, rows: list[dict[str, Any]]) -> list[tuple[int, int] | None]:
        if self.kind is TrainingType.CPT:
            return [(n, n) if n >= 2 else None for n in self.tok.texts([r["text"] for r in rows])]
        chats = [
            [{"role": m["role"], "content": m["content"]} for m in r["messages"]] for r in rows
        ]
        if self.kind in DPO_TYPES:
            sides = self.tok.chats(
                [
                    c + [_reply(r[key])]
                    for c, r in zip(chats, rows, strict=True)
                    for key in ("chosen", "rejected")
                ]
            )
            return [
                (max(chosen, rejected), chosen + rejected)
                for chosen, rejected in zip(sides[::2], sides[1::2], strict=True)
            ]
        trained = [self._trains(r) for r in rows]
        counts = iter(self.tok.chats([c for c, t in zip(chats, trained, strict=True) if t]))
        out: list[tuple[int, int] | None] = []
        for t in trained:
            n = next(counts) if t else None
            out.append(None if n is None else (n, n))
        return out

    def _trains(self, row: dict[str, Any]) -> bool:
        """Whether some token of an SFT row carries loss weight (else the trainer drops it)."""
        if self.prompt_loss > 0:
            return True
        return any(
            float(m.get("loss_weight", 1.0)) > 0
            for m in row["messages"]
            if m["role"] == "assistant"
        )


def _reply(value: Any) -> dict[str, str]:
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    return {"role": "assistant", "content": value["content"]}


def _read(
    rt: Runtime,
    who: Principal,
    fids: list[str],
    kind: TrainingType,
    count: Counter | None,
    max_length: int,
    problems: list[dict[str, Any]],
) -> tuple[Part, int]:
    """Check every line of `fids`; returns the part and how many problems were found."""
    part, found = Part(), 0

    def problem(fid: str, name: str | None, line: int | None, reason: str) -> None:
        nonlocal found
        found += 1
        if len(problems) < MAX_PROBLEMS:
            problems.append(
                {
                    "file_id": fid,
                    "file": name,
                    "line": line,
                    "field": _field(reason) if line is not None else None,
                    "reason": reason,
                }
            )

    for fid in fids:
        with rt.db.read() as s:
            f = s.get(StoredFile, fid)
        if f is None or f.workspace_id != who.workspace_id:
            problem(fid, None, None, "file not found: upload it first (POST /files)")
            continue
        batch: list[dict[str, Any]] = []
        for number, raw in enumerate(rt.blobs.lines(f.blob), start=1):
            try:
                objs = list(iter_objects([raw]))
                if not objs:
                    continue
                row = to_dashtune(number, objs[0][1])
                check_line(number, row, kind)
            except DatasetError as exc:
                problem(fid, f.name, number, exc.problem)
                continue
            part.samples += 1
            if count is not None:
                batch.append(row)
                if len(batch) == BATCH:
                    part.add(count(batch), max_length)
                    batch = []
        if count is not None and batch:
            part.add(count(batch), max_length)
    return part, found


def _gpu_memory() -> tuple[str, int | None]:
    """("cuda", bytes of the first GPU) when nvidia-smi sees one, else ("cpu", None)."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.split()
            if out:
                return "cuda", int(out[0]) * 1024 * 1024
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    return "cpu", None


def _memory(
    w: weights.Weights, tok_dir: str, kind: TrainingType, hp: dict[str, Any], longest: int
) -> dict[str, Any]:
    model_dir = Path(w.base_path if Path(w.base_path).is_dir() else tok_dir)
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {"required_bytes": None, "reason": f"no config.json in {model_dir}"}
    on_disk = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    params = on_disk // (2 if dtype in ("bfloat16", "float16") else 4)
    per_param = BYTES_FROZEN if kind in LORA_TYPES else BYTES_FULL
    if kind in DPO_TYPES and kind not in LORA_TYPES:
        per_param += BYTES_FROZEN
    hidden = int(config.get("hidden_size", 0))
    layers = int(config.get("num_hidden_layers", 0))
    # Activations kept for backward, float32: roughly 16 values per hidden unit per layer.
    sequences = hp["batch_size"] * (2 if kind in DPO_TYPES else 1)
    activations = sequences * max(longest, 1) * hidden * layers * 16 * 4
    required = params * per_param + activations
    device, gpu = _gpu_memory()
    available = gpu if gpu is not None else psutil.virtual_memory().available
    return {
        "parameters": params,
        "required_bytes": required,
        "available_bytes": available,
        "device": device,
        "fits": required <= available,
    }


def estimate(rt: Runtime, who: Principal, body: dict[str, Any]) -> dict[str, Any]:
    """The estimate for a create body; 400 only where create would refuse the body itself."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        from dashtune.domain.errors import InvalidParameter

        raise InvalidParameter("Missing model: give a base model id or a fine-tuned model name.")
    kind = parse_training_type(body.get("training_type"))
    hp = resolve_hyper_parameters(rt, model.strip(), kind, body.get("hyper_parameters"))
    training_ids = file_id_list(body.get("training_file_ids"), "training_file_ids")
    validation_ids = file_id_list(body.get("validation_file_ids"), "validation_file_ids")
    w, tok_dir, count, token_note = None, None, None, None
    try:
        w, tok_dir = _model_dir(rt, who, model.strip())
        count = Counter(chat_tokens.load(tok_dir), kind, float(hp.get("prompt_loss", 0.0)))
    except chat_tokens.TokenizerUnavailable as exc:
        token_note = f"token counts unknown: {exc}"
    problems: list[dict[str, Any]] = []
    train, n_train = _read(rt, who, training_ids, kind, count, hp["max_length"], problems)
    val, n_val = _read(rt, who, validation_ids, kind, count, hp["max_length"], problems)
    if not training_ids:
        problems.append(
            {
                "file_id": None,
                "file": None,
                "line": None,
                "field": "training_file_ids",
                "reason": "no training file",
            }
        )

    pairs = list(zip(train.lengths, train.usage, strict=True))
    if validation_ids:
        trained, held = pairs, list(zip(val.lengths, val.usage, strict=True))
        split = {"source": "validation_file_ids", **val.view()}
    else:
        trained, held = split_validation(
            pairs, hp["split"], hp["max_split_val_dataset_sample"], hp["seed"]
        )
        split = {"source": "split", "samples": len(held), "tokens": sum(n for n, _ in held)}
    per_epoch = sum(u for _, u in trained)
    steps = total_steps(len(trained), hp) if trained else 0
    total = per_epoch * hp["n_epochs"]
    duration: dict[str, Any]
    if count is None or w is None:
        duration = {"seconds": None, "reason": token_note}
    elif not trained:
        duration = {"seconds": None, "reason": "no sample left to train on"}
    else:
        duration = durations.estimate(rt, w.base_model, kind, total)
    memory = (
        _memory(w, tok_dir, kind, hp, max(train.lengths + val.lengths, default=0))
        if w is not None and tok_dir is not None
        else {"required_bytes": None, "reason": token_note}
    )
    return {
        "model": model.strip(),
        "base_model": w.base_model if w else None,
        "training_type": kind.value,
        "resolved_hyper_parameters": hp,
        "valid": not problems,
        "problems": problems,
        "problems_total": n_train + n_val + (0 if training_ids else 1),
        "problems_truncated": n_train + n_val > len(problems),
        "training": train.view(),
        "validation": split,
        "tokens_exact": count is not None and kind not in DPO_TYPES,
        "token_note": token_note
        or (
            "DPO tokens count prompt+chosen and prompt+rejected as rendered; the trainer's "
            "own count may differ slightly"
            if kind in DPO_TYPES
            else None
        ),
        # Packing is per batch and `usage` counts real tokens: steps and tokens are the same.
        "packing": bool(hp.get("packing", False)),
        "train_samples": len(trained),
        "train_tokens_per_epoch": per_epoch,
        "steps_per_epoch": math.ceil(steps / hp["n_epochs"]) if steps else 0,
        "total_steps": steps,
        "total_tokens": total,
        "duration": duration,
        "memory": memory,
    }
