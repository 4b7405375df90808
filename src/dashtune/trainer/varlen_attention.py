"""`sdpa_varlen`: attention over a packed row, one sample at a time, with PyTorch SDPA.

Why: a packed batch is exact under plain SDPA only through a block-diagonal mask
(transformers derives it from the position ids), and SDPA then computes every (query, key)
pair of the row and takes its masked kernel. Where FlashAttention-2 is missing (every CPU,
GPUs without `flash_attn`), this function gives SDPA what FlashAttention's varlen kernel
gets: the sample boundaries (`cu_seq_lens_q`, passed by PackedCollator in one-row mode), so
each sample attends to itself alone with SDPA's unmasked causal kernel. The cost falls from
the row's width squared to the sum of each sample's length squared, and nothing is masked.

Only for decoders whose attention is plain causal softmax attention (hardware.VARLEN_MODELS):
the mask is not built for a registered implementation, so without sample boundaries a call
is a single causal sequence. A sliding window is honoured per sample.
tests/trainer/test_packing.py checks each token's log-prob against its sample run alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

NAME = "sdpa_varlen"


def _causal(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scaling: float | None,
    dropout: float,
    window: int | None,
) -> torch.Tensor:
    n = q.shape[2]
    if window is None or n <= window:
        return F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scaling, dropout_p=dropout, enable_gqa=True
        )
    i = torch.arange(n, device=q.device)
    keep = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < window)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=keep, scale=scaling, dropout_p=dropout, enable_gqa=True
    )


def sdpa_varlen(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: [batch, heads, tokens, dim] in, [batch, tokens,
    heads, dim] out. With `cu_seq_lens_q` the batch is one packed row split at those offsets."""
    if attention_mask is not None:  # a 4D mask handed in by the caller: it decides
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout
        )
    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None:
        bounds = torch.tensor([0, query.shape[2]])
    edges = [int(x) for x in bounds.tolist()]
    parts = [
        _causal(
            query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], scaling, dropout, sliding_window
        )
        for s, e in zip(edges[:-1], edges[1:], strict=True)
        if e > s
    ]
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make `attn_implementation="sdpa_varlen"` loadable (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, sdpa_varlen)
