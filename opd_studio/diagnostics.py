"""Where does a hint work, which text works best, and where does it leak?

    position sweep     for an error span [s, e) and hint h, every insertion point k in a window before s:
                       drop(k) = Σ_{i∈[s,e)} log q_k(y_i) − log p(y_i)   (negative: the error became less likely)
                       collateral(k) = mean_{k≤i<s} |log q_k(y_i) − log p(y_i)|   (tokens the hint should not move)
    text comparison    several hint texts at one point, to the end of the turn: drop on the error span, mean
                       |Δ log p| on the turn's other tokens, selectivity = −drop / (collateral + 0.01)
    content drop       both report beside `drop` the drop of a placebo (a content-free hint of the same shape at the
                       same place, `records.placebo_text`) and content_drop = drop − placebo_drop: the part of
                       the drop that what the hint says explains, not that a parenthetical is there at all
    flags              per target position of a hinted trajectory: `leak` — the teacher's top token is a token
                       only the hint contains (the student cannot know it at inference); `continues_hint` — the
                       teacher's top token is what followed the same token inside the hint (the teacher copies the
                       hint text instead of continuing the trajectory)

Candidates run as one batch over the original pass's cached prefix. Sequences of different lengths are padded on
the right (`alignment.pad_right`), which needs no attention mask: with causal attention no real token ever attends
to a later pad.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from .alignment import pad_id, pad_right, place_hints, predicting_row, predicting_rows
from .records import Hint, placebo_text
from .scoring import HintScorer, ScoreResult, logits_from_hidden


@torch.no_grad()
def _batched_hidden(scorer: HintScorer, shared: int, suffixes: list[list[int]]) -> torch.Tensor:
    """(B, L, H) hidden states of `ids[:shared] + suffix_b` for each b, positions `shared…` only."""
    from transformers import DynamicCache

    if scorer.model is None:  # a served scorer (served.py): no hidden states here
        raise ValueError("the position sweep and the hint-text comparison batch many variants through the model's "
                         "cache; with a served model (--base-url) they are not available: run the studio with the "
                         "model loaded for them")
    model = scorer.model
    original = scorer.original_pass()
    batch, _ = pad_right(suffixes, pad_id(scorer.tokenizer), model.device)  # no mask needed: causal, pads last
    n = len(suffixes)
    cache = DynamicCache(ddp_cache_data=[(k[..., :shared, :].expand(n, -1, -1, -1),
                                          v[..., :shared, :].expand(n, -1, -1, -1)) for k, v in original.kv],
                         config=model.config)
    with scorer.weights():
        return model.get_decoder()(input_ids=batch, past_key_values=cache, use_cache=True).last_hidden_state


def _logp_of(model, hidden_rows: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    logprobs = torch.log_softmax(logits_from_hidden(model, hidden_rows), dim=-1)
    return logprobs.gather(1, torch.tensor(token_ids, device=hidden_rows.device)[:, None])[:, 0]


def _before(scorer: HintScorer, positions: range) -> torch.Tensor:
    hidden = scorer.original_pass().hidden
    ids = scorer.trajectory.input_ids
    return _logp_of(scorer.model, hidden[predicting_rows(positions)], [ids[i] for i in positions])


def _placebo_of(text: str, placebo: str | None) -> str | None:
    if placebo is None:
        return None
    if not placebo.strip():
        raise ValueError("the placebo text is empty: give a content-free text, 'default', or None for no placebo")
    return placebo_text(text) if placebo == "default" else placebo


def position_sweep(scorer: HintScorer, hint_text: str, error: tuple[int, int], window: int = 12,
                   placebo: str | None = "default") -> pd.DataFrame:
    """One row per insertion point k (student tokens in `window` before the error start, and the start itself).

    With `placebo` ("default": `records.placebo_text(hint_text)`; a text; None: none) the placebo is swept the same
    way: columns placebo_drop and content_drop = drop − placebo_drop."""
    trajectory, tokenizer = scorer.trajectory, scorer.tokenizer
    start, end = error
    if not trajectory.student_mask[start]:
        raise ValueError(f"the error span must start at a generated token; token {start} is context")
    message = trajectory.message_index[start]
    first_generated = trajectory.student_token_spans[message][0]
    points = [k for k in range(max(first_generated, start - window), start + 1) if trajectory.student_mask[k]]
    hint_ids = tokenizer(hint_text, add_special_tokens=False)["input_ids"]
    if not hint_ids:
        raise ValueError("the hint text is empty")
    placebo = _placebo_of(hint_text, placebo)
    placebo_ids = tokenizer(placebo, add_special_tokens=False)["input_ids"] if placebo is not None else None
    ids = trajectory.input_ids
    shared = points[0]
    inserted = [hint_ids] + ([placebo_ids] if placebo_ids else [])
    suffixes = [ids[shared:k] + h + ids[k:end] for h in inserted for k in points]
    hidden = _batched_hidden(scorer, shared, suffixes)  # hint at every point, then the placebo at every point
    before = _before(scorer, range(points[0], end))  # log p(y_i), i = points[0] … end-1

    def error_drop(b: int, k: int, h: list[int]) -> tuple[float, float]:
        # original token i ≥ k sits at index i + len(h) of the hinted sequence, (i - shared) + len(h) of the suffix
        affected = range(k, end)
        rows_idx = [predicting_row(i + len(h)) - shared for i in affected]
        delta = _logp_of(scorer.model, hidden[b, rows_idx], [ids[i] for i in affected]) - before[k - points[0]:]
        collateral = delta[: start - k].abs().mean().item() if start > k else 0.0
        return delta[start - k:].sum().item(), collateral

    rows = []
    for b, k in enumerate(points):
        drop, collateral = error_drop(b, k, hint_ids)
        row = {"insert_at": k, "before_token": trajectory.token_texts[k], "drop": drop,
               "p_error_before": before[start - points[0]:].sum().exp().item(),
               "p_error_after": math.exp(drop) * before[start - points[0]:].sum().exp().item(),
               "collateral": collateral}
        if placebo_ids:
            row["placebo_drop"] = error_drop(len(points) + b, k, placebo_ids)[0]
            row["content_drop"] = drop - row["placebo_drop"]
        rows.append(row)
    table = pd.DataFrame(rows)
    # Recommend the strongest drop among points whose collateral stays small; ties go to the point nearest the error.
    quiet = table[table.collateral <= max(0.05, table.collateral.min())]
    best = quiet.sort_values(["drop", "insert_at"], ascending=[True, False]).index[0]
    table["recommended"] = table.index == best
    return table


def compare_hint_texts(scorer: HintScorer, texts: list[str], anchor: int, error: tuple[int, int] | None = None,
                       placement: str = "inline", template: str | None = None,
                       placebo: str | None = "default") -> pd.DataFrame:
    """Rank candidate hint texts at one anchor by their drop on the error span and their selectivity.

    With `placebo` ("default": each text's `records.placebo_text`; a text; None: none), also each text's
    placebo_drop and content_drop = drop − placebo_drop (the ranking stays by the raw drop)."""
    if not texts:
        raise ValueError("give at least one hint text to compare")
    trajectory, tokenizer = scorer.trajectory, scorer.tokenizer
    start, end = error or (anchor, anchor + 1)
    turn_end = trajectory.turn_end(anchor)
    placebos = [_placebo_of(t, placebo) for t in texts] if placebo is not None else []
    distinct = list(dict.fromkeys(placebos))  # candidates of the same frame share one placebo
    candidates = [Hint(text=t, token=anchor, placement=placement, template=template) for t in [*texts, *distinct]]
    placed = [place_hints(tokenizer, trajectory, [hint])[0] for hint in candidates]
    shared = min(p.insert_at for p in placed)
    ids = trajectory.input_ids
    suffixes = [ids[shared:p.insert_at] + p.ids + ids[p.insert_at:turn_end] for p in placed]
    hidden = _batched_hidden(scorer, shared, suffixes)
    scored = [i for i in range(anchor, turn_end) if trajectory.student_mask[i]]
    before = _before(scorer, range(anchor, turn_end))
    rows = []
    for b, p in enumerate(placed):
        rows_idx = [predicting_row(i + len(p.ids)) - shared for i in range(anchor, turn_end)]
        delta = _logp_of(scorer.model, hidden[b, rows_idx], ids[anchor:turn_end]) - before
        in_error = torch.tensor([start <= i < end for i in range(anchor, turn_end)])
        student = torch.tensor([i in scored for i in range(anchor, turn_end)])
        drop = delta[in_error & student].sum().item()
        others = delta[~in_error & student]
        collateral = others.abs().mean().item() if len(others) else 0.0
        rows.append({"text": p.hint.text, "n_tokens": len(p.ids), "drop": drop, "collateral": collateral,
                     "selectivity": -drop / (collateral + 0.01)})
    placebo_rows = {text: row["drop"] for text, row in zip(distinct, rows[len(texts):])}
    rows = rows[: len(texts)]
    for row, text in zip(rows, placebos):
        row["placebo_drop"] = placebo_rows[text]
        row["content_drop"] = row["drop"] - row["placebo_drop"]
    table = pd.DataFrame(rows).sort_values(["drop", "selectivity"], ascending=[True, False], ignore_index=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


@torch.no_grad()
def hint_flags(scorer: HintScorer, scores: ScoreResult) -> pd.DataFrame:
    """Leak and contamination flags at the target positions of `scores` (what `scorer.score(hints)` gave, on the
    alignment it was scored on)."""
    trajectory, table, alignment = scorer.trajectory, scores.table, scores.alignment
    placed = alignment.hints
    hinted = scorer.hinted_pass(alignment)
    ids = trajectory.input_ids
    targets = table.index[table.target & table.logp_after.notna()].tolist()
    if not targets:
        return pd.DataFrame(columns=["i", "text", "teacher_top", "leak", "continues_hint", "p_hint_only"])
    teacher_rows = alignment.rows("hinted", targets)
    logprobs = scorer.logprobs(hinted.hidden, teacher_rows)  # (n, V); served: top-k rebuilt
    top = logprobs.argmax(-1).tolist()
    rows = []
    for n, i in enumerate(targets):
        # the hints in context at position i, and the tokens only they contain
        active = [p for p in placed if p.insert_at <= i]
        hint_only = set().union(*(set(p.ids) for p in active)) - set(ids[: min(p.insert_at for p in active)])
        previous = hinted.ids[teacher_rows[n]]  # the token the teacher has just read
        copied = {h.ids[j + 1] for h in active for j in range(len(h.ids) - 1) if h.ids[j] == previous}
        rows.append({
            "i": i, "text": trajectory.token_texts[i], "teacher_top": scorer.tokenizer.decode([top[n]]),
            "leak": top[n] in hint_only and top[n] != ids[i],
            "continues_hint": top[n] in copied and top[n] != ids[i],
            "p_hint_only": logprobs[n, sorted(hint_only)].exp().sum().item() if hint_only else 0.0,
        })
    return pd.DataFrame(rows)


def summarize_flags(flags: pd.DataFrame) -> dict:
    """Per-record summary: how many target positions leak or copy the hint."""
    n = len(flags)
    return {"targets": n, "leaks": int(flags.leak.sum()) if n else 0,
            "continues_hint": int(flags.continues_hint.sum()) if n else 0,
            "max_p_hint_only": float(flags.p_hint_only.max()) if n else 0.0}
