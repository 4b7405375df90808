"""One generation: the prompt from the model's chat template, the sampling parameters as a
GenerationConfig, and `model.generate` in a thread whose text reaches the event loop as
it is produced.

The thread holds the model's lock for the whole generation (adapters are switched per
request on a shared base). Sampling uses torch's global RNG, so a sampled generation
also holds `_RNG_LOCK`: with a `seed`, the same request gives the same text.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from dashtune.domain.chat_masking import DEFAULT_CHAT_TEMPLATE
from dashtune.serving.incremental import IncrementalText
from dashtune.serving.pool import Endpoint, ModelPool
from dashtune.serving.protocol import (
    ChatMessage,
    Completion,
    ErrorBody,
    Sampling,
    StopReason,
    StreamLine,
    Usage,
)

_RNG_LOCK = threading.Lock()


class GenerationError(Exception):
    """A request the model cannot serve; `code` is the DashScope code the API returns."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode_prompt(endpoint: Endpoint, messages: list[ChatMessage]) -> Any:
    """input_ids and attention_mask of the conversation plus the assistant's turn opener."""
    tok = endpoint.tokenizer
    return tok.apply_chat_template(
        [m.model_dump() for m in messages],
        chat_template=tok.chat_template or DEFAULT_CHAT_TEMPLATE,  # what training used too
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )


def generation_config(model: Any, tok: Any, sampling: Sampling, max_new_tokens: int) -> Any:
    """The model's own generation_config, overridden by what the request sets.

    temperature 0 means greedy; any other temperature samples. Without a temperature the
    model's default decides (do_sample in its generation_config).
    """
    cfg = model.generation_config.__class__.from_dict(model.generation_config.to_dict())
    cfg.max_new_tokens = max_new_tokens
    cfg.max_length = None
    if cfg.pad_token_id is None:
        cfg.pad_token_id = tok.pad_token_id
    if sampling.temperature is not None:
        cfg.do_sample = sampling.temperature > 0
        if cfg.do_sample:
            cfg.temperature = sampling.temperature
    if cfg.do_sample:
        if sampling.top_p is not None:
            cfg.top_p = sampling.top_p
        if sampling.top_k is not None:
            cfg.top_k = sampling.top_k
    else:  # unused when greedy; unset so transformers does not warn about them
        cfg.temperature, cfg.top_p, cfg.top_k = None, None, None
    if sampling.repetition_penalty is not None:
        cfg.repetition_penalty = sampling.repetition_penalty
    return cfg


class _Cancelled(StoppingCriteria):
    """Ends generation at the next token once `event` is set."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


class _TokenFeed(BaseStreamer):
    """transformers' streamer protocol: passes each new token's ids to `emit`."""

    def __init__(self, emit: Callable[[list[int]], None]) -> None:
        self.emit = emit
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        self.emit([int(t) for t in value.reshape(-1).tolist()])

    def end(self) -> None:
        pass


class Generation:
    """`model.generate` in a thread that also turns tokens into text and finds stop
    sequences; the event loop only hears of text (streaming) and of the end.

    Keeping the per-token work in the generating thread matters: waking the event loop
    for every token makes the two threads trade the GIL per token, which costs more than
    a small model's forward pass.
    """

    def __init__(
        self,
        pool: ModelPool,
        endpoint: Endpoint,
        messages: list[ChatMessage],
        sampling: Sampling,
        default_max_tokens: int,
        stream: bool,
    ) -> None:
        self.pool, self.endpoint, self.sampling, self.stream = pool, endpoint, sampling, stream
        self.prompt = encode_prompt(endpoint, messages)
        self.input_tokens = int(self.prompt["input_ids"].shape[1])
        wanted = sampling.max_tokens or default_max_tokens
        room = (endpoint.context - self.input_tokens) if endpoint.context else wanted
        if room < 1:
            raise GenerationError(
                "InvalidParameter",
                f"The input is {self.input_tokens} tokens; this model's context is "
                f"{endpoint.context} tokens. Shorten the messages.",
            )
        self.max_new_tokens = min(wanted, room)
        self.cancel = threading.Event()  # the client left, or a stop sequence was found
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[StreamLine] = asyncio.Queue()
        tok = endpoint.tokenizer
        self._text = IncrementalText(
            lambda ids: tok.decode(ids, skip_special_tokens=True), sampling.stop
        )
        self._produced = 0
        self._pending = ""  # text not yet handed to the event loop
        self._pending_lock = threading.Lock()
        self._wake_scheduled = False

    # -- the generating thread -----------------------------------------------------------

    def _usage(self) -> Usage:
        return Usage(input_tokens=self.input_tokens, output_tokens=self._produced)

    def _on_tokens(self, ids: list[int]) -> None:
        if self._text.stopped:
            return
        self._produced += len(ids)
        delta = self._text.push(ids)
        if self._text.stopped:
            self.cancel.set()
        if delta and self.stream:
            self._publish(delta)

    def _publish(self, delta: str) -> None:
        """Hand text to the loop, coalescing what arrives before the loop has woken."""
        with self._pending_lock:
            self._pending += delta
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:  # on the event loop
        with self._pending_lock:
            text, self._pending, self._wake_scheduled = self._pending, "", False
        if text:
            self._queue.put_nowait(StreamLine(delta=text, usage=self._usage()))

    def _finish(self, out: Any, eos_ids: list[int]) -> None:
        tail = self._text.finish()
        if tail and self.stream:
            self._publish(tail)
        ended_on_eos = out.shape[1] > self.input_tokens and int(out[0, -1]) in eos_ids
        reason: StopReason = "stop"
        if not (self._text.stopped or ended_on_eos) and self._produced >= self.max_new_tokens:
            reason = "length"
        done = Completion(text=self._text.text, finish_reason=reason, usage=self._usage())
        self._loop.call_soon_threadsafe(self._queue.put_nowait, StreamLine(done=done))

    def _run(self) -> None:
        endpoint = self.endpoint
        try:
            with endpoint.loaded.lock:
                model = endpoint.loaded.model
                cfg = generation_config(
                    model, endpoint.tokenizer, self.sampling, self.max_new_tokens
                )
                rng = _RNG_LOCK if cfg.do_sample else contextlib.nullcontext()
                with rng, self.pool.active(endpoint) as active, torch.inference_mode():
                    if self.sampling.seed is not None:
                        torch.manual_seed(self.sampling.seed)
                    inputs = {k: v.to(active.device) for k, v in self.prompt.items()}
                    out = active.generate(
                        **inputs,
                        generation_config=cfg,
                        streamer=_TokenFeed(self._on_tokens),
                        stopping_criteria=StoppingCriteriaList([_Cancelled(self.cancel)]),
                    )
            self._finish(out, _as_list(cfg.eos_token_id))
        except Exception as exc:
            message = f"generation failed: {type(exc).__name__}: {exc}"
            line = StreamLine(error=ErrorBody(code="InternalError", message=message))
            self._loop.call_soon_threadsafe(self._queue.put_nowait, line)

    # -- the event loop ------------------------------------------------------------------

    async def lines(self) -> AsyncIterator[StreamLine]:
        """Text deltas (when streaming), then the completion or an error line."""
        threading.Thread(target=self._run, name="generate", daemon=True).start()
        try:
            while True:
                line = await self._queue.get()
                yield line
                if line.done is not None or line.error is not None:
                    return
        finally:
            self.cancel.set()  # a client that went away stops the generation at the next token


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [int(value)]
