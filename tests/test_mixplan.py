"""The pure mixture planner: feasibility, exact budgets, weights, epochs and the infeasible error."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filters.mixplan import (
    InfeasibleMixError,
    SourceSupply,
    capacity,
    max_budget,
    plan,
    reachable_weights,
    split_budget,
)


def _supplies():
    return [
        SourceSupply("web", 1_000_000, 0.6, 1),
        SourceSupply("wiki", 100_000, 0.3, 4),
        SourceSupply("code", 300_000, 0.1, 2),
    ]


def test_feasible_plan_hits_budget_and_weights():
    p = plan(_supplies(), 1_000_000)
    got = p.by_name()
    assert sum(s.tokens for s in p.sources) == 1_000_000
    assert got["wiki"].tokens == 300_000 and got["wiki"].full_epochs == 3 and got["wiki"].partial_tokens == 0
    assert got["web"].full_epochs == 0 and got["web"].partial_tokens == 600_000
    assert got["wiki"].epochs == pytest.approx(3.0)
    for s in p.sources:
        assert abs(s.achieved_weight - s.target_weight) <= 0.01
    assert p.max_passes == 3


def test_weights_are_relative():
    a = plan([SourceSupply("d", 10_000, 1, 4), SourceSupply("g", 100_000, 5, 1)], 60_000).by_name()
    assert a["d"].target_weight == pytest.approx(1 / 6)
    assert a["d"].tokens == 10_000 and a["g"].tokens == 50_000


def test_infeasible_names_source_and_reachable_weights():
    with pytest.raises(InfeasibleMixError) as e:
        plan(_supplies(), 2_000_000)
    msg = str(e.value)
    assert "'web' runs short" in msg and "max_epochs=1 allows 1,000,000" in msg
    assert "'wiki'" in msg  # 600,000 needed > 400,000 allowed
    assert "'code'" not in msg.split("The target")[0]
    assert "reachable up to a budget of 1,333,333" in msg
    assert "weights reachable at this budget" in msg


def test_infeasible_beyond_total_capacity():
    with pytest.raises(InfeasibleMixError, match="no weights reach a budget of 3,000,000"):
        plan(_supplies(), 3_000_000)


def test_source_without_tokens_is_an_error_unless_weight_zero():
    with pytest.raises(InfeasibleMixError, match="'empty'"):
        plan([SourceSupply("a", 100, 1, 1), SourceSupply("empty", 0, 1, 3)], 50)
    p = plan([SourceSupply("a", 100, 1, 1), SourceSupply("empty", 0, 0, 3)], 50).by_name()
    assert p["a"].tokens == 50 and p["empty"].tokens == 0 and p["empty"].epochs == 0.0


def test_max_budget_is_feasible_and_near_tight():
    s = _supplies()
    b = max_budget(s)
    assert b == 1_333_333
    assert plan(s, b).by_name()["wiki"].tokens == 400_000  # wiki is at its cap
    with pytest.raises(InfeasibleMixError):
        plan(s, b + 10)
    assert plan(s, None).budget == b


def test_reachable_weights_respect_caps():
    s = _supplies()
    r = reachable_weights(s, 1_500_000)
    assert r is not None and sum(r.values()) == pytest.approx(1.0)
    for x in s:
        assert r[x.name] * 1_500_000 <= capacity(x) + 1e-6
    assert r["code"] > 0.1  # code absorbs what web and wiki cannot give
    assert reachable_weights(s, 10**9) is None


def test_split_budget_exact():
    assert split_budget([1 / 3, 1 / 3, 1 / 3], 10) == [4, 3, 3]
    assert sum(split_budget([0.123, 0.456, 0.421], 999_999)) == 999_999


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 10**7), st.floats(0.01, 10), st.floats(0.5, 8)),
        min_size=1,
        max_size=6,
    ),
    st.integers(1, 10**8),
)
def test_property_plan_or_error(specs, budget):
    supplies = [SourceSupply(f"s{i}", a, w, m) for i, (a, w, m) in enumerate(specs)]
    try:
        p = plan(supplies, budget)
    except InfeasibleMixError as e:
        if "nothing to give" in str(e):
            assert any(capacity(x) == 0 for x in supplies)
        else:
            assert "runs short" in str(e) and budget > max_budget(supplies)
        return
    assert sum(s.tokens for s in p.sources) == budget
    for s, sup in zip(p.sources, supplies):
        assert s.tokens <= capacity(sup)
        assert s.full_epochs * sup.available + s.partial_tokens == s.tokens
        assert 0 <= s.partial_tokens < sup.available
        assert abs(s.achieved_weight - s.target_weight) <= max(0.01, 1 / budget)
