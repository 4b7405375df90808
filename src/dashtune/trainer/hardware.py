"""Real-hardware settings: precision, attention kernel, gradient checkpointing and Liger.

Each is a hyper-parameter whose default "auto" is decided here, from the device and the
model; an explicit value always wins. `describe()` is the one job-log line saying what was
chosen and why. The rules:

- bf16: on where the GPU supports it (`torch.cuda.is_bf16_supported()`), off on CPU (most
  CPUs emulate bf16 matmuls slowly). Full jobs keep float32 master weights and compute in
  bf16 autocast; LoRA jobs load the frozen base in bf16 (the adapter stays float32).
- attn_implementation: FlashAttention-2 when the `flash_attn` package is installed and a
  GPU is used, else PyTorch SDPA. Packed batches are exact with all three.
- gradient_checkpointing: on when the estimated training memory exceeds 80% of the
  device's (GPU memory, or RAM on CPU): the training state (full: 16 bytes a parameter for
  float32 weights, gradients and Adam moments; LoRA: the frozen weights only) plus the
  activations of one micro-batch at its largest (17 elements per hidden unit, layer and
  token, i.e. 34 bytes in bf16; per-device batch x max_length tokens).
- use_liger_kernel: on when the optional `gpu` extra (liger-kernel) is installed and a GPU
  is used.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

from dashtune.trainer.errors import TRAINING_FAILED, TrainingError

CHECKPOINTING_SHARE = 0.8  # of device memory the estimate may reach before checkpointing


@dataclass
class Hardware:
    """What this run uses, and why (one short reason per setting)."""

    cuda: bool
    bf16: bool
    attn_implementation: str
    use_liger_kernel: bool
    gradient_checkpointing: bool = False
    why: dict[str, str] | None = None

    def load_dtype(self, is_lora: bool) -> str:
        """The dtype the weights load in: bf16 only for a LoRA job's frozen base."""
        return "bfloat16" if self.bf16 and is_lora else "float32"

    def describe(self, is_lora: bool) -> str:
        """One log line: each setting and the reason it was chosen."""
        why = self.why or {}
        parts = [
            f"weights {self.load_dtype(is_lora)}"
            + (", bf16 compute" if self.bf16 else ", float32 compute")
            + f" ({why.get('bf16', '')})",
            f"attention {self.attn_implementation} ({why.get('attn', '')})",
            f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'} "
            f"({why.get('checkpointing', '')})",
            f"Liger kernels {'on' if self.use_liger_kernel else 'off'} ({why.get('liger', '')})",
        ]
        return "hardware settings: " + "; ".join(parts)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def choose(hp: dict[str, Any], cuda: bool | None = None) -> Hardware:
    """Precision, attention and Liger from the hyper-parameters and the device."""
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    why: dict[str, str] = {}

    bf16 = hp.get("bf16", "auto")
    if bf16 == "auto":
        bf16 = cuda and torch.cuda.is_bf16_supported()
        why["bf16"] = (
            "GPU supports bf16" if bf16 else ("GPU lacks bf16" if cuda else "CPU: float32")
        )
    else:
        why["bf16"] = "hyper-parameter bf16"

    attn = hp.get("attn_implementation", "auto")
    if attn == "auto":
        flash = cuda and _installed("flash_attn")
        attn = "flash_attention_2" if flash else "sdpa"
        why["attn"] = (
            "flash_attn installed, GPU"
            if flash
            else ("flash_attn not installed" if cuda else "CPU: no FlashAttention")
        )
    else:
        why["attn"] = "hyper-parameter attn_implementation"

    liger = hp.get("use_liger_kernel", "auto")
    if liger == "auto":
        liger = cuda and _installed("liger_kernel")
        why["liger"] = (
            "gpu extra installed, GPU"
            if liger
            else ("gpu extra not installed" if cuda else "CPU: Liger needs a GPU")
        )
    else:
        if liger and not (cuda and _installed("liger_kernel")):
            raise TrainingError(
                TRAINING_FAILED,
                "use_liger_kernel=true needs a CUDA GPU and the liger-kernel package "
                "(pip install 'dashtune[gpu]')",
            )
        why["liger"] = "hyper-parameter use_liger_kernel"
    return Hardware(cuda, bool(bf16), str(attn), bool(liger), why=why)


def device_memory(cuda: bool) -> int:
    """Bytes of memory on the training device: the first GPU's, or the host's RAM."""
    if cuda:
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def training_bytes(model: Any, is_lora: bool, bf16: bool, tokens: int) -> int:
    """Estimated peak training memory: state plus one micro-batch of activations."""
    params = sum(p.numel() for p in model.parameters())
    element = 2 if bf16 else 4
    state = params * (element if is_lora else 16)
    cfg = model.config
    hidden = int(getattr(cfg, "hidden_size", 0) or 0)
    layers = int(getattr(cfg, "num_hidden_layers", 0) or 0)
    activations = 17 * element * hidden * layers * tokens
    return state + activations


def with_checkpointing(
    hw: Hardware, hp: dict[str, Any], model: Any, is_lora: bool, tokens: int
) -> Hardware:
    """Decide gradient checkpointing for `model` on this device (see the module rule)."""
    why = dict(hw.why or {})
    asked = hp.get("gradient_checkpointing", "auto")
    if asked != "auto":
        why["checkpointing"] = "hyper-parameter gradient_checkpointing"
        on = bool(asked)
    else:
        need, have = training_bytes(model, is_lora, hw.bf16, tokens), device_memory(hw.cuda)
        on = need > CHECKPOINTING_SHARE * have
        why["checkpointing"] = (
            f"estimated {need / 2**30:.1f} GiB of {have / 2**30:.0f} GiB "
            f"{'GPU memory' if hw.cuda else 'RAM'}"
        )
    hw.gradient_checkpointing, hw.why = on, why
    return hw


def peak_memory(cuda: bool) -> str:
    """One log line: this process's peak RSS and, on a GPU, its peak allocated memory."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    line = f"peak memory: RSS {rss:.0f} MiB"
    if cuda:
        import torch

        line += f", GPU {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB allocated"
    return line
