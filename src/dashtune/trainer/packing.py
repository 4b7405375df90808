"""Packed, padding-free batches: each batch's samples laid end to end in rows of at most
`max_length` tokens, each sample with its own position ids 0..n-1.

Why per batch and not TRL's whole-dataset packing (`packing=True`): a step still holds
exactly the `batch_size` samples the unpacked sampler gives it, so the steps, the schedule,
the resume data position, the estimate and the loss are those of the unpacked run; only
the padding goes. Attention stays inside each sample because the batch carries
`position_ids` and no `attention_mask`: transformers then derives a block-diagonal causal
mask from where the positions restart (`masking_utils.find_packed_sequence_indices`) for
SDPA and eager. FlashAttention-2 finds sample boundaries only in a batch of one row
(`modeling_flash_attention_utils._is_packed_sequence`), so for it the whole batch is one
row and the varlen boundaries (`cu_seq_lens_*`) are passed, as TRL's padding-free collator
does. SDPA and eager compute every (query, key) pair of a row, masked or not, so their
rows are as long as the batch's longest sample (never above `max_length`): then a packed
batch never costs more than the padded one in attention (fewer rows of the same width) nor
in the linear layers (about the real tokens instead of batch x longest).
tests/trainer/test_packing.py checks that each packed token's log-prob equals the sample's
run alone.
"""

from __future__ import annotations

from typing import Any

import torch

Sample = dict[str, Any]


def best_fit_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into rows of at most `capacity` tokens, best-fit
    decreasing: longest first, each into the fullest row it still fits (a sample longer
    than `capacity` gets a row of its own; the data step drops those before training)."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        fits = [r for r, room in enumerate(free) if room >= lengths[i]]
        if fits:
            r = min(fits, key=lambda r: free[r])
            rows[r].append(i)
            free[r] -= lengths[i]
        else:
            rows.append([i])
            free.append(capacity - lengths[i])
    return rows


class PackedCollator:
    """Samples -> input_ids, labels, position_ids (and loss_weights) of packed rows.

    Rows: as long as the batch's longest sample (capped at `max_length`), filled best-fit.
    The first token of each sample is never a target (it would be predicted from the end of
    the previous sample), as in the unpacked batch where the shift drops it. Rows are padded
    to the longest row; padding has label -100, weight 0 and position 0 (each pad token is
    then its own one-token sequence and attends only to itself). `num_real_tokens` carries the
    count of non-padding tokens for usage, since the pad id may also be a real token (EOS).
    """

    def __init__(self, pad_token_id: int, max_length: int, one_row: bool = False) -> None:
        self.pad_token_id = pad_token_id
        self.max_length = max_length
        self.one_row = one_row  # FlashAttention-2: one row with varlen boundaries

    def __call__(self, examples: list[Sample]) -> dict[str, Any]:
        lengths = [len(e["input_ids"]) for e in examples]
        if self.one_row:
            rows = [list(range(len(examples)))]
        else:
            rows = best_fit_rows(lengths, min(self.max_length, max(lengths)))
        width = max(sum(len(examples[i]["input_ids"]) for i in row) for row in rows)
        weighted = "loss_weights" in examples[0]
        shape = (len(rows), width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        labels = torch.full(shape, -100, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        weights = torch.zeros(shape, dtype=torch.float32)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                e = examples[i]
                n = len(e["input_ids"])
                input_ids[r, at : at + n] = torch.tensor(e["input_ids"])
                labels[r, at + 1 : at + n] = torch.tensor(e["labels"][1:])
                position_ids[r, at : at + n] = torch.arange(n)
                if weighted:
                    weights[r, at + 1 : at + n] = torch.tensor(e["loss_weights"][1:])
                at += n
        batch: dict[str, Any] = {
            "input_ids": input_ids,
            "labels": labels,
            "position_ids": position_ids,
            "num_real_tokens": torch.tensor(sum(lengths)),
        }
        if self.one_row:
            starts = torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)
            batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = starts
            batch["max_length_q"] = batch["max_length_k"] = max(lengths)
        if weighted:
            batch["loss_weights"] = weights
        return batch
