import math

import pytest

from pyromm.train import (
    Constant,
    Cosine,
    EpochWarmup,
    Exponential,
    Linear,
    Schedule,
    as_schedule,
    schedule_from_config,
)

T = 100
STEPS = [0, 1, 25, 50, 99, 100, 101, 250]


def linear(t, a0, a1):
    return (1 - t / T) * a0 + (t / T) * a1 if t < T else a1


def cosine(t, a0, a1):
    return a1 + 0.5 * (a0 - a1) * (1 + math.cos(math.pi * t / T)) if t < T else a1


def exponential(t, a0, a1):
    return max(a0 * math.exp(t * (math.log(a1 + 1e-10) - math.log(a0 + 1e-10)) / T), a1)


@pytest.mark.parametrize("t", STEPS)
@pytest.mark.parametrize("a0, a1", [(0.0, 1.0), (1.0, 0.0), (2.0, 0.5)])
def test_linear_and_cosine_follow_closed_forms(t, a0, a1):
    assert Linear(a0, a1, T)(t, 1) == pytest.approx(linear(t, a0, a1), abs=1e-12)
    assert Cosine(a0, a1, T)(t, 1) == pytest.approx(cosine(t, a0, a1), abs=1e-12)


@pytest.mark.parametrize("t", STEPS)
@pytest.mark.parametrize("a0, a1", [(1.0, 0.01), (5.0, 0.0), (1.0, 2.0)])
def test_exponential_follows_closed_form(t, a0, a1):
    assert Exponential(a0, a1, T)(t, 1) == pytest.approx(exponential(t, a0, a1), rel=1e-12, abs=1e-12)


def test_endpoints():
    for cls in (Linear, Cosine, Exponential):
        s = cls(1.0, 0.1, T)
        assert s(0, 1) == pytest.approx(1.0)
        assert s(T, 1) == pytest.approx(0.1)
        assert s(10 * T, 7) == pytest.approx(0.1)
    assert Linear(0.0, 1.0, T)(T // 2, 1) == pytest.approx(0.5)
    assert Cosine(0.0, 1.0, T)(T // 2, 1) == pytest.approx(0.5)


def test_epoch_warmup_is_jmvae_schedule():
    s = EpochWarmup(2.0, warmup_epochs=4)
    expected = [2.0 * (e / 4 if e < 4 else 1.0) for e in range(1, 8)]
    assert [s(0, e) for e in range(1, 8)] == pytest.approx(expected)
    assert s(10_000, 1) == pytest.approx(0.5)


def test_constant_and_plain_numbers():
    assert Constant(0.3)(123, 4) == 0.3
    s = as_schedule(2)
    assert isinstance(s, Constant) and s(0, 1) == 2.0
    assert as_schedule(s) is s


@pytest.mark.parametrize(
    "schedule",
    [Constant(0.5), Linear(0.0, 1.0, 10), Cosine(1.0, 0.0, 7), Exponential(1.0, 0.1, 3), EpochWarmup(1.0, 5)],
)
def test_config_round_trip(schedule):
    config = schedule.config()
    rebuilt = schedule_from_config(config)
    assert rebuilt == schedule and isinstance(rebuilt, Schedule)
    assert [rebuilt(t, e) for t, e in [(0, 1), (5, 2), (50, 9)]] == [schedule(t, e) for t, e in [(0, 1), (5, 2), (50, 9)]]


def test_bounds():
    assert Linear(1.0, -0.5, 10).bounds() == (-0.5, 1.0)
    assert Cosine(0.0, 2.0, 10).bounds() == (0.0, 2.0)
    assert EpochWarmup(3.0, 2).bounds() == (0.0, 3.0)


def test_invalid_schedules():
    with pytest.raises(ValueError, match="steps"):
        Linear(0.0, 1.0, 0)
    with pytest.raises(ValueError, match="value"):
        Constant(float("nan"))
    with pytest.raises(ValueError, match="Exponential"):
        Exponential(-1.0, 0.0, 10)
    with pytest.raises(ValueError, match="warmup_epochs"):
        EpochWarmup(1.0, 0)
    with pytest.raises(ValueError, match="unknown schedule kind"):
        schedule_from_config({"kind": "sawtooth"})
