"""Real-hardware settings: precision, attention kernel, gradient checkpointing and Liger.

Each is a hyper-parameter whose default "auto" is decided here, from the device and the
model; an explicit value always wins. `describe()` is the one job-log line saying what was
chosen and why. The rules:

- bf16: on where the GPU supports it (`torch.cuda.is_bf16_supported()`). On a CPU only
  where it has bf16 matrix instructions (AMX or AVX512-BF16: elsewhere bf16 is emulated and
  slower) and the model's hidden size is at least CPU_BF16_MIN_HIDDEN: measured on this
  project's 2-core Xeon (AMX), a step of the 23M-parameter bench model (hidden 512) takes
  half the time in bf16, dashtune-tiny's (hidden 64) twice the time. Full jobs keep float32
  master weights and compute in bf16 autocast; LoRA jobs load the frozen base in bf16 (the
  adapter stays float32).
- attn_implementation: FlashAttention-2 when the `flash_attn` package is installed and a
  GPU is used; else, for packed batches of a plain causal decoder (VARLEN_MODELS),
  `sdpa_varlen` (varlen_attention.py: SDPA one sample at a time); else PyTorch SDPA with
  the block-diagonal mask transformers derives. Packed batches are exact with each.
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
CPU_BF16_MIN_HIDDEN = 256  # below it, bf16's casts cost more than its matmuls save on CPU
# Decoders whose attention is causal softmax over each sample and nothing else (no logit
# soft-capping, no attention sinks): sdpa_varlen computes exactly what their SDPA path does.
VARLEN_MODELS = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "phi3", "olmo2", "granite"}
)


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


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (x86 AMX-BF16 or AVX512-BF16, Arm BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16", "bf16"})
    except OSError:
        pass
    return False


def _cpu_bf16(hidden: int) -> tuple[bool, str]:
    if not cpu_has_bf16():
        return False, "CPU: float32, no bf16 instructions"
    if hidden < CPU_BF16_MIN_HIDDEN:
        return False, f"CPU: float32, hidden size {hidden} too small for bf16 to pay"
    return True, f"CPU with bf16 instructions, hidden size {hidden}"


def choose(
    hp: dict[str, Any],
    cuda: bool | None = None,
    model_config: Any = None,
    packed: bool = False,
) -> Hardware:
    """Precision, attention and Liger from the hyper-parameters, the device and the model
    (its config: hidden size and architecture; None decides as for a small unknown model).
    `packed`: the job trains on packed batches (packing.py)."""
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    why: dict[str, str] = {}
    hidden = int(getattr(model_config, "hidden_size", 0) or 0)
    model_type = str(getattr(model_config, "model_type", ""))

    bf16 = hp.get("bf16", "auto")
    if bf16 == "auto":
        if cuda:
            bf16 = torch.cuda.is_bf16_supported()
            why["bf16"] = "GPU supports bf16" if bf16 else "GPU lacks bf16"
        else:
            bf16, why["bf16"] = _cpu_bf16(hidden)
    else:
        why["bf16"] = "hyper-parameter bf16"

    attn = hp.get("attn_implementation", "auto")
    varlen_ok = packed and model_type in VARLEN_MODELS
    if attn == "auto":
        flash = cuda and _installed("flash_attn")
        if flash:
            attn, why["attn"] = "flash_attention_2", "flash_attn installed, GPU"
        elif varlen_ok:
            attn = "sdpa_varlen"
            why["attn"] = (
                f"{'flash_attn not installed' if cuda else 'CPU: no FlashAttention'}; "
                "packed batches, SDPA one sample at a time"
            )
        else:
            attn = "sdpa"
            why["attn"] = "flash_attn not installed" if cuda else "CPU: no FlashAttention"
    elif attn == "sdpa_varlen" and not varlen_ok:
        attn = "sdpa"
        why["attn"] = (
            f"sdpa_varlen needs packed batches of a plain causal decoder "
            f"({', '.join(sorted(VARLEN_MODELS))})"
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
