"""The hinted teacher's top-k next tokens at every target position: offline distillation targets.

Per record with usable hints: `input_ids` (the original trajectory) and, for each target position i (the hinted
turn's student tokens, `scoring.target_mask`), the ids and log-probabilities of the k most likely tokens the hinted
teacher gives for token i — from the hinted pass's row that predicts i. One batched hinted pass per length bucket.
`exports.write_teacher_topk` writes the rows; this module is the engine side (it runs the model).
"""

from __future__ import annotations

from typing import Any

import torch

from .batching import decoder_hidden, length_batches
from .records import Record
from .scoring import logits_from_hidden, place_hints, splice, target_mask
from .trajectory import TrajectoryError, build_trajectory


def teacher_topk_rows(model, tokenizer, records: list[Record], top_k: int = 20, span: str = "turn",
                      batch_size: int = 16) -> list[dict[str, Any]]:
    """Per record with hints: the hinted teacher's top-k at every target position (batched hinted passes)."""
    prepared = []
    for record in records:
        hints = record.usable_hints
        if not hints:
            continue
        try:
            trajectory = build_trajectory(tokenizer, record)
            placed = place_hints(tokenizer, trajectory, hints)
            error = trajectory.error_token_span(record.error) if record.error else None
        except TrajectoryError as exc:
            raise TrajectoryError(f"record {record.id!r}: {exc}") from None
        targets = [i for i, t in enumerate(target_mask(trajectory, placed, span, error)) if t and i > 0]
        hinted, position = splice(trajectory.input_ids, placed)
        prepared.append((record, trajectory, targets, hinted, position))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows: dict[int, dict] = {}
    with torch.no_grad():
        for batch in length_batches([len(p[3]) for p in prepared], batch_size, 32768):
            hidden, _ = decoder_hidden(model, [prepared[n][3] for n in batch], pad_id)
            for n, states in zip(batch, hidden):
                record, trajectory, targets, _, position = prepared[n]
                rows_at = torch.tensor([position[i] - 1 for i in targets], device=states.device, dtype=torch.long)
                logprobs = torch.log_softmax(logits_from_hidden(model, states[rows_at]), dim=-1)  # (n, V)
                top_lp, top_ids = logprobs.topk(top_k, dim=-1)
                rows[n] = {"id": record.id, "input_ids": list(trajectory.input_ids), "target_positions": targets,
                           "topk_ids": top_ids.tolist(), "topk_logprobs": top_lp.tolist()}
    return [rows[n] for n in range(len(prepared))]
