"""A held-out prompt family: seeded random arithmetic in phrasings and operand ranges the demo tasks do not use.

The demo tasks (assets/demo_tasks.jsonl) ask "What is a + b?" with small operands. This family is what the
defaults are checked on without having been tuned on it (issue 18, item 4), and what the hint models are measured
on (bench/hint_models.py): `arithmetic_family(n, seed)` draws n tasks, each a `Record` with the question as the
user turn, the exact result as `reference`, and `meta` = {family: "arithmetic", split, template, op, a, b}.
The same (n, seed) always gives the same tasks; `split` alternates curation / held-out.
"""

from __future__ import annotations

import random

from opd_studio.records import Record

# (operation, template): bare questions, imperative forms and word problems, none in the demo tasks' "What is a ± b?".
TEMPLATES = [
    ("+", "Compute {a} plus {b}."),
    ("+", "Add {a} and {b}. What do you get?"),
    ("+", "Maria has {a} stickers and her friend gives her {b} more. How many stickers does Maria have now?"),
    ("+", "A library had {a} books and received {b} new ones. How many books does it have?"),
    ("-", "Subtract {b} from {a}."),
    ("-", "What is {a} minus {b}?"),
    ("-", "A baker made {a} rolls and sold {b} of them. How many rolls are left?"),
    ("-", "Tom had {a} marbles and lost {b}. How many marbles does Tom have left?"),
    ("*", "Multiply {a} by {b}."),
    ("*", "What is the product of {a} and {b}?"),
    ("*", "There are {a} boxes with {b} pens in each box. How many pens are there in total?"),
    ("*", "A garden has {a} rows of {b} tulips. How many tulips are in the garden?"),
]


def _operands(op: str, rng: random.Random) -> tuple[int, int]:
    if op == "+":
        return rng.randint(23, 389), rng.randint(18, 276)
    if op == "-":
        a = rng.randint(41, 512)
        return a, rng.randint(12, a - 5)
    return rng.randint(6, 31), rng.randint(7, 24)


def arithmetic_family(n: int, seed: int = 18) -> list[Record]:
    """n tasks, the templates taken in turn, operands drawn from `random.Random(seed)`."""
    rng = random.Random(seed)
    tasks = []
    for k in range(n):
        op, template = TEMPLATES[k % len(TEMPLATES)]
        a, b = _operands(op, rng)
        result = a + b if op == "+" else a - b if op == "-" else a * b
        tasks.append(Record(f"family-{seed}-{k:03d}", [{"role": "user", "content": template.format(a=a, b=b)}],
                            reference=str(result),
                            meta={"family": "arithmetic", "split": "curation" if k % 2 == 0 else "heldout",
                                  "template": k % len(TEMPLATES), "op": op, "a": a, "b": b}))
    return tasks


def family_rollouts(model, tokenizer, tasks: list[Record], samples: int = 0, max_new_tokens: int = 64,
                    seed: int = 0) -> list[Record]:
    """The model's answers to `tasks` as records (the task plus its assistant turn): the greedy answer of each, then
    `samples` sampled ones (temperature 0.7, seeds seed..seed+samples−1), batched by `fix_rate.regenerate`.
    `meta.run` is "greedy" or "sampled-<seed>"; the ids carry the same suffix."""
    from opd_studio.fix_rate import FixRateConfig, regenerate

    config = FixRateConfig(samples=samples, max_new_tokens=max_new_tokens, seed=seed)
    answers = regenerate(model, tokenizer, [(t.messages, t.tools) for t in tasks], config)
    out = []
    for task, runs in zip(tasks, answers):
        for mode, run_seed, text in runs:
            run = "greedy" if mode == "greedy" else f"sampled-{run_seed}"
            out.append(Record(task.id if run == "greedy" else f"{task.id}-{run}",
                              [*task.messages, {"role": "assistant", "content": text}], reference=task.reference,
                              meta={**task.meta, "run": run}))
    return out
