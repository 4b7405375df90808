"""The models in the serving process's memory, and which key serves which.

A base model is loaded once, whatever number of keys use it: its catalog name, full
deployments of it, and every LoRA adapter tuned from it (PEFT multi-adapter: the
adapters sit side by side in one PeftModel and a request picks its own). A full
fine-tune is a model of its own. Every model has one lock: a generation holds it from
choosing the adapter to the last token, so requests on one base run one at a time.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dashtune.serving.protocol import LoadSpec

log = logging.getLogger("dashtune.serving")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class LoadError(Exception):
    """The weights could not be loaded; the message says which and why."""


@dataclass
class Loaded:
    """One model object in memory (a base with its adapters, or a full fine-tune)."""

    path: str
    model: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    adapters: dict[str, str] = field(default_factory=dict)  # adapter name -> adapter dir

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@dataclass
class Endpoint:
    """What one key serves: a loaded model, optionally through one of its adapters."""

    key: str
    spec: LoadSpec
    loaded: Loaded
    adapter: str | None
    tokenizer: Any
    context: int | None  # the model's max positions, when its config says

    @property
    def model_path(self) -> str:
        return self.loaded.path


class ModelPool:
    def __init__(self, device: str) -> None:
        self.device = device
        self._models: dict[str, Loaded] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self._admin = threading.Lock()  # loads and unloads, one at a time

    def get(self, key: str) -> Endpoint | None:
        return self._endpoints.get(key)

    def keys(self) -> list[str]:
        return list(self._endpoints)

    def load(self, key: str, spec: LoadSpec) -> Endpoint:
        """Serve `spec` under `key` (idempotent); loads the base only if it is not in memory."""
        with self._admin:
            current = self._endpoints.get(key)
            if current is not None and current.spec == spec:
                return current
            if current is not None:
                self._unload(key)
            base_path, adapter_path = _paths(spec)
            loaded = self._models.get(base_path)
            if loaded is None:
                loaded = Loaded(base_path, self._load_model(base_path))
                self._models[base_path] = loaded
            try:
                adapter = self._attach(loaded, adapter_path) if adapter_path else None
                tokenizer = _load_tokenizer(
                    adapter_path if adapter_path and _has_tokenizer(adapter_path) else base_path
                )
            except Exception:
                self._drop_if_unused(loaded)
                raise
            context = getattr(loaded.model.config, "max_position_embeddings", None)
            endpoint = Endpoint(key, spec, loaded, adapter, tokenizer, context)
            self._endpoints[key] = endpoint
            log.info("serving %s: %s%s", key, base_path, f" + {adapter_path}" if adapter else "")
            return endpoint

    def unload(self, key: str) -> bool:
        with self._admin:
            return self._unload(key)

    def _unload(self, key: str) -> bool:
        endpoint = self._endpoints.pop(key, None)
        if endpoint is None:
            return False
        loaded = endpoint.loaded
        name = endpoint.adapter
        if name is not None and not any(e.adapter == name for e in self._users(loaded)):
            with loaded.lock:
                del loaded.adapters[name]
                if loaded.adapters:
                    loaded.model.delete_adapter(name)
                else:  # the last one: back to the plain model, no LoRA layers left
                    loaded.model = loaded.model.unload()
        self._drop_if_unused(loaded)
        log.info("unloaded %s", key)
        return True

    def _users(self, loaded: Loaded) -> list[Endpoint]:
        return [e for e in self._endpoints.values() if e.loaded is loaded]

    def _drop_if_unused(self, loaded: Loaded) -> None:
        if not self._users(loaded):
            self._models.pop(loaded.path, None)
            gc.collect()

    def _load_model(self, path: str) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        dtype = torch.float32 if self.device == "cpu" else "auto"
        if path.startswith(("/", ".")) and not os.path.isdir(path):
            raise LoadError(f"no model directory at {path}")
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except Exception as exc:  # transformers raises many types for a bad dir
            raise LoadError(f"cannot load the model at {path}: {exc}") from None
        moved: Any = model.to(self.device)  # type: ignore[arg-type]  # transformers stub
        return moved.eval()

    def _attach(self, loaded: Loaded, adapter_path: str) -> str:
        """The adapter's name inside `loaded.model`, loading it unless it is there already."""
        for name, path in loaded.adapters.items():
            if path == adapter_path:
                return name
        name = f"adapter{len(loaded.adapters)}"
        while name in loaded.adapters:
            name += "_"
        from peft import PeftModel

        with loaded.lock:  # not while a generation uses the model
            try:
                if isinstance(loaded.model, PeftModel):
                    loaded.model.load_adapter(adapter_path, adapter_name=name)
                else:
                    loaded.model = PeftModel.from_pretrained(
                        loaded.model, adapter_path, adapter_name=name
                    )
            except Exception as exc:
                raise LoadError(
                    f"cannot load the LoRA adapter at {adapter_path} onto {loaded.path}: {exc}"
                ) from None
            loaded.model.eval()
            loaded.adapters[name] = adapter_path
        return name

    @contextmanager
    def active(self, endpoint: Endpoint) -> Iterator[Any]:
        """The model with the endpoint's adapter switched on; the caller holds its lock."""
        model = endpoint.loaded.model
        if endpoint.adapter is not None:
            model.set_adapter(endpoint.adapter)
            yield model
        elif endpoint.loaded.adapters:
            with model.disable_adapter():
                yield model
        else:
            yield model

    def stats(self) -> dict[str, Any]:
        return {
            "models_loaded": len(self._models),
            "adapters_loaded": sum(len(m.adapters) for m in self._models.values()),
            "models": [
                {
                    "path": m.path,
                    "parameters": m.parameters(),
                    "adapters": sorted(m.adapters.values()),
                    "keys": sorted(e.key for e in self._users(m)),
                }
                for m in self._models.values()
            ],
        }


def _paths(spec: LoadSpec) -> tuple[str, str | None]:
    """(base dir, adapter dir). A LoRA adapter names its own base, which wins when present:
    an adapter tuned on a full fine-tune sits on that fine-tune, not on the catalog model."""
    base = spec.base_path
    if spec.builtin:
        from dashtune.trainer.tiny import ensure_tiny_model

        base = ensure_tiny_model(base)
    if spec.adapter_path is None:
        return _canonical(base), None
    adapter = _canonical(spec.adapter_path)
    try:
        with open(os.path.join(adapter, "adapter_config.json")) as f:
            named = json.load(f).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        raise LoadError(f"cannot read the LoRA adapter at {adapter}: {exc}") from None
    if isinstance(named, str) and os.path.isdir(named):
        base = named
    return _canonical(base), adapter


def _canonical(path: str) -> str:
    """Real path for a directory (so two spellings share one model); a hub id unchanged."""
    return os.path.realpath(path) if os.path.isdir(path) else path


def _has_tokenizer(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES)


def _load_tokenizer(path: str) -> Any:
    """The tokenizer saved with the weights: its chat template is the one used in training."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise LoadError(f"cannot load the tokenizer at {path}: {exc}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
