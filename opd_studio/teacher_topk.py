"""The hinted teacher's top-k next tokens at every target position: offline distillation targets.

Per record with usable hints: `input_ids` (the original trajectory) and, for each target position i (the hinted
turn's student tokens, `alignment.target_mask`), the ids and log-probabilities of the k most likely tokens the hinted
teacher gives for token i — from the hinted pass's row that predicts i. One batched hinted pass per length bucket.
`exports.write_teacher_topk` writes the rows; this module is the engine side (it runs the model).
"""

from __future__ import annotations

from typing import Any

import torch

from .alignment import align, pad_id
from .batching import decoder_hidden, length_batches
from .records import Record
from .scoring import logits_from_hidden
from .trajectory import TrajectoryError, build_trajectory


def teacher_topk_rows(model, tokenizer, records: list[Record], top_k: int = 20, span: str = "turn",
                      batch_size: int = 16) -> list[dict[str, Any]]:
    """Per record with hints: the hinted teacher's top-k at every target position (batched hinted passes)."""
    aligned = []
    for record in records:
        hints = record.usable_hints
        if not hints:
            continue
        try:
            aligned.append((record, align(tokenizer, build_trajectory(tokenizer, record), hints, span, record.error)))
        except TrajectoryError as exc:
            raise TrajectoryError(f"record {record.id!r}: {exc}") from None
    rows: dict[int, dict] = {}
    with torch.no_grad():
        for batch in length_batches([len(a.hinted.ids) for _, a in aligned], batch_size, 32768):
            hidden, _ = decoder_hidden(model, [aligned[n][1].hinted.ids for n in batch], pad_id(tokenizer))
            for n, states in zip(batch, hidden):
                record, alignment = aligned[n]
                targets = alignment.targets
                rows_at = torch.tensor(alignment.rows("hinted", targets), device=states.device, dtype=torch.long)
                logprobs = torch.log_softmax(logits_from_hidden(model, states[rows_at]), dim=-1)  # (n, V)
                top_lp, top_ids = logprobs.topk(top_k, dim=-1)
                rows[n] = {"id": record.id, "input_ids": list(alignment.input_ids), "target_positions": targets,
                           "topk_ids": top_ids.tolist(), "topk_logprobs": top_lp.tolist()}
    return [rows[n] for n in range(len(aligned))]
