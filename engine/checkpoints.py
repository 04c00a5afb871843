"""Short, user-facing descriptions of checkpoint problems.

``load_state_dict``'s own message for a checkpoint of another architecture lists every
tensor (about 10 KB for MoFA) and reads as a bug. :func:`describe_state_mismatch` says in one
sentence of at most :data:`MAX_MESSAGE` characters which tensors differ and what the
checkpoint was trained for, e.g.::

    the checkpoint was trained for head model 'flame' (5023 vertices): encoder.head.weight is
    456x2048 in it, 306x2048 here; 3 more differ
"""

from __future__ import annotations

from typing import Mapping, Sequence

MAX_MESSAGE = 200


def _size(shape: Sequence[int]) -> str:
    return "x".join(str(int(n)) for n in shape) if len(shape) else "scalar"


def _short_name(name: str, limit: int) -> str:
    """``name``, or "…" and its last dotted parts when it is longer than ``limit`` characters."""
    if len(name) <= limit:
        return name
    parts = name.split(".")
    while len(parts) > 1 and len(".".join(parts)) + 1 > limit:
        parts.pop(0)
    tail = ".".join(parts)
    return "…" + (tail if len(tail) + 1 <= limit else tail[-(limit - 1):])


def describe_state_mismatch(expected: Mapping[str, Sequence[int]], got: Mapping[str, Sequence[int]],
                            trained_for: str) -> str:
    """One sentence (≤ :data:`MAX_MESSAGE` characters) on how a checkpoint's tensors differ
    from the network's.

    ``expected``: name -> shape of the network built here (``{k: v.shape for k, v in
    model.state_dict().items()}``); ``got``: the same for the checkpoint's state dict;
    ``trained_for``: what the checkpoint says it was trained for (e.g. ``"head model 'flame'
    (5023 vertices)"``). Names the first tensors whose shapes differ (in the network's
    order), then counts the rest, the missing and the unexpected ones. Returns ``""``
    when nothing differs.
    """
    differ = [k for k in expected if k in got and tuple(got[k]) != tuple(expected[k])]
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    items = [(k, "differ") for k in differ] + [(k, "missing") for k in missing] + [(k, "unexpected") for k in unexpected]
    if not items:
        return ""

    def phrase(name: str, kind: str, limit: int) -> str:
        short = _short_name(name, limit)
        if kind == "differ":
            return f"{short} is {_size(got[name])} in it, {_size(expected[name])} here"
        return f"{short} is missing from it" if kind == "missing" else f"it has an unexpected {short}"

    def build(n_named: int, name_limit: int, what_limit: int) -> str:
        what = " ".join(trained_for.split()) or "another network"
        if len(what) > what_limit:
            what = what[: max(what_limit - 1, 1)] + "…"
        named = items[:n_named]
        parts = [phrase(k, kind, name_limit) for k, kind in named]
        for kind, label in (("differ", "differ in shape"), ("missing", "missing"), ("unexpected", "unexpected")):
            n = sum(1 for _, c in items[n_named:] if c == kind)
            if n:
                more = "more " if any(c == kind for _, c in named) else ""
                parts.append(f"{n} {more}{label}")
        return f"the checkpoint was trained for {what}: {'; '.join(parts)}"

    text = ""
    for n_named, name_limit, what_limit in ((2, 60, 80), (1, 60, 80), (1, 40, 60), (1, 30, 40), (0, 30, 40)):
        text = build(n_named, name_limit, what_limit)
        if len(text) <= MAX_MESSAGE:
            return text
    return text[: MAX_MESSAGE - 1] + "…"
