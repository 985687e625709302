"""Pure mixture planning: target token weights, a budget and epoch caps -> per-source token counts.

The planner sees one small record per source (the train tokens available, the target weight,
the epoch cap) and decides how many train tokens each source contributes. It does no IO; the
mix stage (``stages/mix.py``) feeds it the totals from its tokenisation pass.

Feasibility: source ``i`` with ``A_i`` available train tokens and an epoch cap ``M_i`` can give
at most ``C_i = floor(A_i * M_i)`` tokens. A request (normalised weights ``w_i``, budget ``B``)
is feasible when ``round(w_i * B) <= C_i`` for every source. When it is not, :func:`plan`
raises :class:`InfeasibleMixError` naming every source that runs short, the largest budget the
target weights can reach, and the weights closest to the targets that the requested budget can
reach (capped sources at their cap, the rest in their target proportions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from curate.errors import CurateError


class InfeasibleMixError(CurateError):
    """The requested mixture cannot be met within the sources' epoch caps."""


@dataclass(frozen=True)
class SourceSupply:
    """What one source can give.

    Attributes:
        name: the source name (as in the mixture YAML).
        available: train tokens available in one epoch (EOS tokens included).
        weight: target weight (any non-negative scale; normalised over all sources).
        max_epochs: upsampling cap: at most ``available * max_epochs`` tokens are drawn.
    """

    name: str
    available: int
    weight: float
    max_epochs: float


@dataclass(frozen=True)
class SourcePlan:
    """The planner's decision for one source.

    Attributes:
        target_weight: the normalised target weight.
        tokens: train tokens to draw (``full_epochs * available + partial_tokens``).
        full_epochs: number of complete passes over the source.
        partial_tokens: tokens drawn in the final, partial pass (``< available``).
        epochs: ``tokens / available`` (0 when nothing is available).
        achieved_weight: ``tokens / budget``.
    """

    name: str
    available: int
    max_epochs: float
    target_weight: float
    tokens: int
    full_epochs: int
    partial_tokens: int
    epochs: float
    achieved_weight: float


@dataclass(frozen=True)
class MixPlan:
    budget: int
    sources: tuple[SourcePlan, ...]

    def by_name(self) -> dict[str, SourcePlan]:
        return {s.name: s for s in self.sources}

    @property
    def max_passes(self) -> int:
        """The largest number of (full or partial) passes any source makes, at least 1."""
        return max([1] + [s.full_epochs + (1 if s.partial_tokens else 0) for s in self.sources])


def normalise(weights: list[float]) -> list[float]:
    total = math.fsum(weights)
    if total <= 0:
        raise InfeasibleMixError("mixture weights sum to 0: give at least one source a positive weight")
    return [w / total for w in weights]


def capacity(s: SourceSupply) -> int:
    """Most tokens a source can give under its epoch cap."""
    return int(math.floor(s.available * s.max_epochs + 1e-9))


def max_budget(supplies: list[SourceSupply]) -> int:
    """The largest budget the target weights can reach within every source's cap."""
    w = normalise([s.weight for s in supplies])
    limits = [capacity(s) / wi for s, wi in zip(supplies, w) if wi > 0]
    b = int(math.floor(min(limits)))
    # Rounding of targets can push one source a token over its cap: step down until feasible.
    while b > 0 and any(t > capacity(s) for s, t in zip(supplies, split_budget(w, b))):
        b -= 1
    return b


def split_budget(weights: list[float], budget: int) -> list[int]:
    """Integer token targets summing to ``budget`` (largest-remainder rounding, ties by order)."""
    raw = [w * budget for w in weights]
    base = [int(math.floor(r)) for r in raw]
    short = budget - sum(base)
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - base[i]), i))
    for i in order[:short]:
        base[i] += 1
    return base


def reachable_weights(supplies: list[SourceSupply], budget: int) -> dict[str, float] | None:
    """Weights closest to the targets that ``budget`` can reach, or None if no weights can.

    Sources whose share would exceed their cap are fixed at the cap; the remaining budget is
    split over the others in proportion to their target weights (repeated until no source is
    over its cap).
    """
    w = normalise([s.weight for s in supplies])
    caps = [capacity(s) for s in supplies]
    if sum(caps) < budget:
        return None
    fixed: dict[int, float] = {}
    while True:
        free = [i for i in range(len(supplies)) if i not in fixed]
        remaining = budget - sum(fixed.values())
        wsum = math.fsum(w[i] for i in free)
        if wsum <= 0:
            # Only zero-weight sources are left: fill them in order of capacity.
            for i in free:
                take = min(caps[i], remaining)
                fixed[i] = take
                remaining -= take
            break
        share = {i: w[i] / wsum * remaining for i in free}
        over = [i for i in free if share[i] > caps[i]]
        if not over:
            fixed.update(share)
            break
        for i in over:
            fixed[i] = caps[i]
    return {s.name: fixed.get(i, 0.0) / budget for i, s in enumerate(supplies)}


def _fmt(n: float) -> str:
    return f"{n:,.0f}"


def plan(supplies: list[SourceSupply], budget: int | None) -> MixPlan:
    """Decide how many train tokens each source contributes.

    Args:
        supplies: one entry per source, in mixture order.
        budget: total train tokens, or None for the largest budget the targets can reach.

    Returns:
        A :class:`MixPlan` whose per-source tokens sum to the budget exactly.

    Raises:
        InfeasibleMixError: a source with positive weight runs short of its share even at
            ``max_epochs`` (or has no tokens at all); the message names each such source and
            what is reachable instead.
    """
    if not supplies:
        raise InfeasibleMixError("mixture has no sources")
    names = [s.name for s in supplies]
    if len(set(names)) != len(names):
        raise InfeasibleMixError(f"duplicate source names in {names}")
    for s in supplies:
        if s.weight < 0 or s.max_epochs < 0 or s.available < 0:
            raise InfeasibleMixError(f"source {s.name!r}: weight, max_epochs and tokens must be >= 0")
    w = normalise([s.weight for s in supplies])
    empty = [s.name for s, wi in zip(supplies, w) if wi > 0 and capacity(s) == 0]
    if empty:
        detail = ", ".join(
            f"{s.name!r} ({_fmt(s.available)} train tokens, max_epochs={s.max_epochs:g})"
            for s in supplies
            if s.name in empty
        )
        raise InfeasibleMixError(
            f"source(s) with a positive weight have nothing to give: {detail}; check their `where` "
            f"predicates or give them weight 0"
        )
    if budget is None:
        budget = max_budget(supplies)
    if budget <= 0:
        raise InfeasibleMixError(f"budget must be positive, got {budget}")
    targets = split_budget(w, budget)
    short = [(s, t) for s, t in zip(supplies, targets) if t > capacity(s)]
    if short:
        lines = []
        for s, t in short:
            need = t / s.available if s.available else math.inf
            lines.append(
                f"source {s.name!r} runs short: needs {_fmt(t)} train tokens ({need:.2f} epochs of "
                f"{_fmt(s.available)}) but max_epochs={s.max_epochs:g} allows {_fmt(capacity(s))}"
            )
        bmax = max_budget(supplies)
        reach = reachable_weights(supplies, budget)
        if reach is None:
            alt = (
                f"no weights reach a budget of {_fmt(budget)}: all sources together allow "
                f"{_fmt(sum(capacity(s) for s in supplies))} tokens"
            )
        else:
            alt = "weights reachable at this budget: " + ", ".join(f"{k}={v:.4f}" for k, v in reach.items())
        raise InfeasibleMixError(
            "infeasible mixture: "
            + "; ".join(lines)
            + f". The target weights are reachable up to a budget of {_fmt(bmax)} tokens; {alt}; "
            + "or raise max_epochs."
        )
    out = []
    for s, t, wi in zip(supplies, targets, w):
        full, part = (divmod(t, s.available) if s.available else (0, 0))
        out.append(
            SourcePlan(
                name=s.name,
                available=s.available,
                max_epochs=s.max_epochs,
                target_weight=wi,
                tokens=t,
                full_epochs=int(full),
                partial_tokens=int(part),
                epochs=(t / s.available) if s.available else 0.0,
                achieved_weight=t / budget,
            )
        )
    return MixPlan(budget=budget, sources=tuple(out))
