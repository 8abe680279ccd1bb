"""Many records at once: length-bucketed batched scoring and generation, exact against one record at a time.

Scoring. Every record needs two passes: the original trajectory (the student) and the hinted one (the teacher).
`score_records` builds and validates every trajectory first (a bad record fails before any model work), sorts the
originals by length and runs them through the decoder in right-padded batches (at most `batch_size` sequences and
`max_batch_tokens` padded tokens each, and at most MAX_CACHE_TOKENS real tokens, whose key/value cache is kept).
Pads come after every real token, so under causal attention no real token attends to one: each sequence's hidden
states are those of its own pass, up to float rounding of the batched matmuls. The prefix a hinted (or placebo)
sequence shares with its original, everything before the first hint, is not run again: the hinted passes run only
their suffixes, batched, on the originals' cached keys/values (left-padded to the batch's longest prefix, with
position ids counted per row), and their hidden states are the original's on the prefix followed by the suffix's.
The per-position statistics and the table are then `scoring.HintScorer`'s own, fed the precomputed hidden
states (`_BatchedScorer`), so there is one definition of every column; tests check the tables against
`HintScorer.score` run one record at a time.

Generation. `generate_records` decodes up to `batch_size` prompts together: left-padded prompts, position ids
counted over real tokens only, one key/value cache, and a per-row `torch.Generator` seeded with the row's
`SamplingConfig.seed`, so a row samples the same tokens whatever else is in its batch. Greedy rows match
`rollout.generate` (transformers' `generate`) token for token; sampled rows match this loop run on that row alone.

Both yield results batch by batch, in length order, for `resume.ResumableOutput` to keep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch

from .alignment import Alignment, Spliced, align, pad_id, pad_right
from .records import Record
from .rollout import SamplingConfig, prompt_ids, rollout_record
from .scoring import (ForwardPass, HintScorer, ScoreResult, check_trajectory_length, common_prefix, forward_reusing,
                      kv_cache)
from .trajectory import Trajectory, TrajectoryError, build_trajectory

# ------------------------------------------------------------------------------------------------------------------
# Batched decoder passes


def length_batches(lengths: list[int], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), each within `batch_size` sequences and
    `max_batch_tokens` padded tokens (a sequence longer than that budget runs alone)."""
    order = sorted(range(len(lengths)), key=lambda n: -lengths[n])
    batches, current = [], []
    for n in order:
        width = lengths[current[0]] if current else lengths[n]  # longest first: the first sets the padded width
        if current and (len(current) == batch_size or width * (len(current) + 1) > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(n)
    if current:
        batches.append(current)
    return batches


@dataclass
class Prefix:
    """A sequence's first `length` tokens as a pass left them: per layer (heads, length, head_dim) keys and values,
    and the (length, H) final hidden states."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    hidden: torch.Tensor

    @property
    def length(self) -> int:
        return self.hidden.shape[0]


@torch.no_grad()
def decoder_hidden(model, sequences: list[list[int]], pad: int, keep: list[int] | None = None
                   ) -> tuple[list[torch.Tensor], list[Prefix | None]]:
    """Final hidden states of each sequence, one right-padded batch: [(T_b, H)]; with `keep`, also the first
    `keep[b]` positions' keys/values of each sequence (None where `keep[b]` is 0)."""
    ids, mask = pad_right(sequences, pad, model.device)
    cache = bool(keep and any(keep))
    out = model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=cache)
    hidden = [out.last_hidden_state[b, : len(seq)] for b, seq in enumerate(sequences)]  # (B, T, H) → [(T_b, H)]
    prefixes: list[Prefix | None] = [None] * len(sequences)
    if cache:
        layers = out.past_key_values.layers
        # Several rows: clone, else a slice would keep the whole batch's cache alive. One row: the slice keeps only
        # its own cache alive (its tail past the prefix), and a clone would double the largest allocation of a long
        # record (0.35 GB at 8k tokens of the default model).
        copy = (lambda t: t.clone()) if len(sequences) > 1 else (lambda t: t)
        for b, n in enumerate(keep):
            if n:
                prefixes[b] = Prefix([(copy(layer.keys[b, :, :n]), copy(layer.values[b, :, :n]))
                                      for layer in layers], hidden[b][:n])
    return hidden, prefixes


@torch.no_grad()
def suffix_hidden(model, suffixes: list[list[int]], prefixes: list[Prefix], pad: int) -> list[torch.Tensor]:
    """Final hidden states of each `prefix + suffix` sequence, [(P_b + S_b, H)], running only the suffixes, one
    batch: the prefixes' cached keys/values left-padded to the longest prefix P (masked), the suffixes right-padded
    to the longest suffix S, position ids P_b + 0, 1, … per row."""
    width_p, width_s = max(p.length for p in prefixes), max(len(s) for s in suffixes)
    rows = len(suffixes)
    ids = torch.full((rows, width_s), pad, dtype=torch.long)
    mask = torch.zeros((rows, width_p + width_s), dtype=torch.long)
    positions = torch.zeros((rows, width_s), dtype=torch.long)
    for b, (suffix, prefix) in enumerate(zip(suffixes, prefixes)):
        ids[b, : len(suffix)] = torch.tensor(suffix)
        mask[b, width_p - prefix.length: width_p + len(suffix)] = 1
        positions[b] = prefix.length + torch.arange(width_s)

    def padded(layer: int, which: int) -> torch.Tensor:  # (rows, heads, P, head_dim), left-padded with zeros
        if rows == 1:  # nothing to pad: a view, no copy (the forward's concatenation is the one copy)
            return prefixes[0].kv[layer][which][None]
        first = prefixes[0].kv[layer][which]
        out = first.new_zeros((rows,) + first.shape[:1] + (width_p,) + first.shape[2:])
        for b, prefix in enumerate(prefixes):
            out[b, :, width_p - prefix.length:] = prefix.kv[layer][which]
        return out

    # read-only: each layer's (prefix + suffix) keys/values exist only during its attention (a long record's
    # grown cache would be its largest allocation, and nothing reads it afterwards)
    cache = kv_cache(model, [(padded(layer, 0), padded(layer, 1)) for layer in range(len(prefixes[0].kv))],
                     grow=False)
    device = model.device
    out = model.get_decoder()(input_ids=ids.to(device), attention_mask=mask.to(device),
                              position_ids=positions.to(device), past_key_values=cache, use_cache=True)
    return [torch.cat([prefix.hidden, out.last_hidden_state[b, : len(suffix)]])
            for b, (suffix, prefix) in enumerate(zip(suffixes, prefixes))]


# ------------------------------------------------------------------------------------------------------------------
# Batched scoring


GROUP_BATCHES = 4  # batches of passes per group of records: hidden states of a group are held until it is scored
MAX_CACHE_TOKENS = 8192  # real tokens per batch of originals whose prefixes' keys/values are kept (~0.4 GB fp32, 135M)


@dataclass
class ScoreJob:
    record: Record
    alignment: Alignment  # the record under its hints (and placebo lane), built once
    sequences: list[tuple[int, ...]] = field(default_factory=list)  # the passes its table needs
    placebo: str | None = None

    @property
    def trajectory(self) -> Trajectory:
        return self.alignment.trajectory

    @property
    def n_tokens(self) -> int:
        return sum(len(s) for s in self.sequences)


class _BatchedScorer(HintScorer):
    """`HintScorer` whose passes come from a batch: same statistics, same table. A pass the batch did not compute
    (another hint set scored on the same scorer) runs one-at-a-time, as in `HintScorer`."""

    def __init__(self, *args, passes: dict[tuple[int, ...], torch.Tensor], **kwargs):
        super().__init__(*args, **kwargs)
        self.passes = passes
        self.whole: ForwardPass | None = None  # the original sequence's pass

    def _pass(self, ids: list[int]) -> ForwardPass:
        hidden = self.passes.get(tuple(ids))
        if hidden is None:
            with self.weights():
                return forward_reusing(self.model, ids)
        return ForwardPass(list(ids), [], hidden)

    def original_pass(self, upto: int | None = None) -> ForwardPass:
        if self.whole is None:
            self.whole = self._pass(self.trajectory.input_ids)
        return self.whole

    def spliced_pass(self, spliced: Spliced, last, what: str) -> ForwardPass:
        return self._pass(spliced.ids)  # the placebo's spliced sequence is one more entry of `passes`


def prepare_scoring(tokenizer, records: list[Record], include_rejected: bool = False,
                    placebo: str | None = None) -> list[ScoreJob]:
    """Tokenize and align every record's hints (and placebos, see `HintScorer.score`); the first bad record
    raises, naming it."""
    jobs = []
    for record in records:
        hints = record.hints if include_rejected else record.usable_hints
        try:
            trajectory = build_trajectory(tokenizer, record)
            # a record without hints has no placebo lane
            alignment = align(tokenizer, trajectory, hints, error=record.error,
                              placebo=placebo if hints else None)
        except TrajectoryError as exc:
            raise TrajectoryError(f"record {record.id!r}: {exc}") from None
        job = ScoreJob(record, alignment, [tuple(trajectory.input_ids)], placebo if hints else None)
        for spliced in (alignment.hinted, alignment.placebo):
            if spliced and spliced.hints and any(trajectory.student_mask[i] for i in
                                                 range(spliced.hints[0].insert_at, len(trajectory))):
                job.sequences.append(tuple(spliced.ids))
        jobs.append(job)
    return jobs


def score_records(model, tokenizer, jobs: list[ScoreJob], span: str = "turn", top_k: int = 5,
                  batch_size: int = 16, max_batch_tokens: int = 32768,
                  on_tokens=None) -> Iterator[tuple[Record, ScoreResult]]:
    """(record, scores) for every job, as `scoring.score_record` would give it. Records of similar length are taken
    GROUP_BATCHES batches at a time, their sequences sorted by length into batches (a wider pool pads less), and
    their scores yielded when the group's passes are done. `on_tokens(n)` is told how many tokens each group ran."""
    for job in jobs:  # every record is checked before any model work
        check_trajectory_length(model, len(job.trajectory), job.record.id)
    pad = pad_id(tokenizer)
    record_batches = length_batches([j.n_tokens for j in jobs], batch_size * GROUP_BATCHES,
                                    max_batch_tokens * GROUP_BATCHES * 2)
    for record_batch in record_batches:
        group = [jobs[n] for n in record_batch]
        passes = group_passes(model, group, pad, batch_size, max_batch_tokens)
        for job in group:
            scorer = _BatchedScorer(model, tokenizer, job.trajectory, top_k=top_k, passes=passes)
            yield job.record, scorer.score_aligned(job.alignment.with_span(span))
        if on_tokens:
            on_tokens(sum(len(s) for s in passes))


def group_passes(model, group: list[ScoreJob], pad: int, batch_size: int, max_batch_tokens: int
                 ) -> dict[tuple[int, ...], torch.Tensor]:
    """Hidden states of every sequence the group's tables need: originals in length-sorted batches keeping each
    one's prefix before its first hint, then those originals' hinted/placebo sequences from their first hint on."""
    derived: dict[tuple[int, ...], list[tuple[int, ...]]] = {}  # original → its other sequences
    for job in group:
        original = tuple(job.sequences[0])
        derived.setdefault(original, [])
        derived[original] += [s for s in job.sequences[1:] if s not in derived[original]]
    originals = list(derived)
    passes: dict[tuple[int, ...], torch.Tensor] = {}
    for seq_batch in length_batches([len(s) for s in originals], batch_size,
                                    min(max_batch_tokens, MAX_CACHE_TOKENS)):
        batch = [originals[n] for n in seq_batch]
        # each original's prefix shared by all of its derived sequences (at least one token of each is run)
        keep = [min((min(common_prefix(s, d), len(d) - 1) for d in derived[s]), default=0) for s in batch]
        hidden, prefixes = decoder_hidden(model, [list(s) for s in batch], pad, keep)
        passes.update(zip(batch, hidden))
        runs = [(d, prefix) for s, prefix in zip(batch, prefixes) for d in derived[s] if d not in passes]
        whole = [d for d, prefix in runs if prefix is None]  # nothing shared with the original: a pass of its own
        if whole:
            passes.update(zip(whole, decoder_hidden(model, [list(d) for d in whole], pad)[0]))
        runs = [(d, prefix) for d, prefix in runs if prefix is not None]
        for run_batch in length_batches([len(d) - prefix.length for d, prefix in runs], batch_size, max_batch_tokens):
            chosen = [runs[n] for n in run_batch]
            passes.update(zip((d for d, _ in chosen), suffix_hidden(
                model, [list(d[prefix.length:]) for d, prefix in chosen], [p for _, p in chosen], pad)))
        del prefixes, runs  # the batch's keys/values go before the next batch runs
    return passes


# ------------------------------------------------------------------------------------------------------------------
# Batched generation


@dataclass
class GenerationJob:
    record_id: str
    messages: list[dict]
    config: SamplingConfig
    tools: list | None = None
    meta: dict = field(default_factory=dict)
    reference: str | None = None

    def prompt(self, tokenizer) -> list[int]:
        messages = self.messages[:-1] if self.messages and self.messages[-1]["role"] == "assistant" else self.messages
        if not messages:
            raise ValueError(f"record {self.record_id!r}: a rollout needs at least one message to answer")
        return prompt_ids(tokenizer, messages, self.tools)


def _sample(logits: torch.Tensor, config: SamplingConfig, generator: torch.Generator | None) -> int:
    """One token from (V,) raw logits: greedy, or temperature then nucleus (top-p) sampling, as transformers'
    warpers do it."""
    if config.temperature == 0:
        return int(logits.argmax())
    scores = logits / config.temperature
    if config.top_p < 1.0:
        sorted_scores, order = scores.sort(descending=False)
        cumulative = sorted_scores.softmax(-1).cumsum(-1)
        remove = cumulative <= (1 - config.top_p)
        remove[-1] = False  # keep at least the most likely token
        scores = scores.scatter(0, order, sorted_scores.masked_fill(remove, -float("inf")))
    probs = scores.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def generate_batch(model, tokenizer, jobs: list[GenerationJob], prompts: list[list[int]] | None = None
                   ) -> list[Record]:
    """Decode one batch of jobs together (left-padded, one cache); a row stops at its end-of-turn token or its own
    `max_new_tokens`."""
    from transformers import DynamicCache

    prompts = prompts or [job.prompt(tokenizer) for job in jobs]
    device = model.device
    pad = pad_id(tokenizer)
    eos_id = tokenizer.eos_token_id
    width = max(len(p) for p in prompts)
    ids = torch.full((len(jobs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(jobs), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):] = torch.tensor(p)
        mask[b, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)  # (B, T) real tokens count from 0 whatever the padding
    generators = []
    for job in jobs:
        generator = torch.Generator(device=device)
        generator.manual_seed(job.config.seed)
        generators.append(generator)

    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    new_ids: list[list[int]] = [[] for _ in jobs]
    done = [False] * len(jobs)
    next_position = positions[:, -1] + 1  # (B,)
    while True:
        logits = out.logits[:, -1].float()  # (B, V)
        step = []
        for b, job in enumerate(jobs):
            if done[b]:
                step.append(pad)
                continue
            token = _sample(logits[b], job.config, generators[b])
            new_ids[b].append(token)
            done[b] = token == eos_id or len(new_ids[b]) >= job.config.max_new_tokens
            step.append(token)
        if all(done):
            break
        mask = torch.cat([mask, mask.new_ones((len(jobs), 1))], dim=1)
        out = model(input_ids=torch.tensor([step], device=device).T, attention_mask=mask,
                    position_ids=next_position[:, None], past_key_values=out.past_key_values, use_cache=True)
        next_position = next_position + 1

    name = model.config.name_or_path
    records = []
    for job, generated in zip(jobs, new_ids):
        messages = job.messages[:-1] if job.messages[-1]["role"] == "assistant" else job.messages
        record = rollout_record(tokenizer, messages, generated, job.config, job.tools, job.record_id, job.meta, name)
        record.reference = job.reference
        records.append(record)
    return records


def generate_records(model, tokenizer, jobs: list[GenerationJob], batch_size: int = 16,
                     max_batch_tokens: int = 65536, on_tokens=None) -> Iterator[Record]:
    """Rollouts for every job, batch by batch (prompts of similar length together). The padded width of a batch
    counts its prompts plus the longest `max_new_tokens` against `max_batch_tokens`."""
    prompts = [job.prompt(tokenizer) for job in jobs]  # every prompt is checked before any decoding
    widths = [len(p) + job.config.max_new_tokens for p, job in zip(prompts, jobs)]
    for batch in length_batches(widths, batch_size, max_batch_tokens):
        records = generate_batch(model, tokenizer, [jobs[n] for n in batch], [prompts[n] for n in batch])
        if on_tokens:
            on_tokens(sum(len(r.response_token_ids) for r in records))
        yield from records
