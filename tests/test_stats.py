from __future__ import annotations

import numpy as np
import pytest

from sgsr.stats import paired_bootstrap, seed_effect, t_interval


def test_ci_contains_known_shift_and_mean_is_the_sample_mean() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(30.0, 2.0, size=60)  # e.g. per-image PSNR of the baseline
    shift = 0.25
    cand = base + shift + rng.normal(0.0, 0.3, size=60)
    diffs = cand - base
    mean, low, high = paired_bootstrap(diffs, n_resamples=5000, ci=0.95, seed=0)
    assert mean == pytest.approx(diffs.mean(), abs=1e-12)
    assert low < shift < high
    assert low < mean < high
    # the interval is about +-1.96 standard errors wide
    se = diffs.std(ddof=1) / np.sqrt(diffs.size)
    assert (high - low) == pytest.approx(2 * 1.96 * se, rel=0.15)
    # and excludes zero: a real improvement, not noise
    assert low > 0


def test_deterministic_for_a_seed_and_seed_dependent() -> None:
    d = np.random.default_rng(2).normal(size=25)
    assert paired_bootstrap(d, 2000, 0.9, seed=7) == paired_bootstrap(d, 2000, 0.9, seed=7)
    assert paired_bootstrap(d, 2000, 0.9, seed=7) != paired_bootstrap(d, 2000, 0.9, seed=8)


def test_wider_level_gives_wider_interval() -> None:
    d = np.random.default_rng(3).normal(size=40)
    _, lo90, hi90 = paired_bootstrap(d, 4000, 0.90, seed=0)
    _, lo99, hi99 = paired_bootstrap(d, 4000, 0.99, seed=0)
    assert lo99 < lo90 < hi90 < hi99


def test_coverage_is_close_to_nominal_over_repeated_draws() -> None:
    rng = np.random.default_rng(4)
    true_shift, trials, n = 0.1, 200, 40
    hits = 0
    for _ in range(trials):
        diffs = true_shift + rng.normal(0.0, 0.5, size=n)
        _, low, high = paired_bootstrap(
            diffs, n_resamples=1000, ci=0.95, seed=int(rng.integers(1e9))
        )
        hits += low <= true_shift <= high
    assert hits / trials >= 0.90
    assert hits / trials <= 0.99  # not trivially wide either


def test_small_blocks_give_the_same_interval_up_to_resampling_noise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Resamples are drawn in memory-bounded blocks; tiny blocks must not bias the interval."""
    import sgsr.stats as stats

    d = np.random.default_rng(5).normal(size=30)
    mean, low, high = paired_bootstrap(d, 4000, 0.95, seed=3)
    monkeypatch.setattr(stats, "_BLOCK", 30 * 7)  # 7 resamples per block
    mean2, low2, high2 = paired_bootstrap(d, 4000, 0.95, seed=3)
    assert mean2 == mean
    assert low2 == pytest.approx(low, abs=0.05)
    assert high2 == pytest.approx(high, abs=0.05)


def test_single_difference_gives_a_degenerate_interval() -> None:
    assert paired_bootstrap([0.5], 100, 0.95, 0) == (0.5, 0.5, 0.5)


@pytest.mark.parametrize(
    ("diffs", "kwargs", "match"),
    [
        ([], {}, "at least one"),
        ([1.0, float("inf")], {}, "finite"),
        ([1.0, float("nan")], {}, "finite"),
        ([1.0, 2.0], {"n_resamples": 0}, "n_resamples"),
        ([1.0, 2.0], {"ci": 1.0}, "ci"),
    ],
)
def test_bad_input_is_refused(diffs: list[float], kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        paired_bootstrap(diffs, **{"n_resamples": 100, "ci": 0.95, "seed": 0, **kwargs})


# --------------------------------------------------------------------------------------------
# over seeds: the t interval and the seed-spread rule


def test_t_interval_matches_the_formula_and_covers_at_the_nominal_rate() -> None:
    from scipy.stats import t as student_t

    mean, low, high = t_interval([1.0, 1.0, 2.0], 0.95)
    assert mean == pytest.approx(4 / 3)
    assert high - mean == pytest.approx(student_t.ppf(0.975, 2) * np.sqrt(1 / 3) / np.sqrt(3))
    assert mean - low == pytest.approx(high - mean)
    # 3 seeds of normal noise: the 95 % t interval covers the true mean ~95 % of the time,
    # where [min, max] of the 3 values (the best a 3-seed bootstrap can do) covers only 75 %
    rng = np.random.default_rng(0)
    draws = rng.normal(0.3, 1.0, size=(4000, 3))
    hits = [t_interval(d, 0.95) for d in draws]
    cover = np.mean([lo < 0.3 < hi for _, lo, hi in hits])
    minmax = np.mean((draws.min(1) < 0.3) & (draws.max(1) > 0.3))
    assert 0.935 < cover < 0.965
    assert 0.72 < minmax < 0.78


def test_t_interval_refuses_fewer_than_two_or_non_finite_values() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([1.0])
    with pytest.raises(ValueError, match="finite"):
        t_interval([1.0, np.inf])


def test_seed_effect_needs_both_a_ci_away_from_zero_and_a_difference_beyond_the_range() -> None:
    # consistent +0.5 over 3 seeds, baseline seeds within 0.2 of each other: an effect
    eff = seed_effect([0.5, 0.6, 0.55], [30.0, 30.1, 30.2], higher_is_better=True)
    assert eff is not None and eff.exceeds_seed_spread and eff.effect == "better"
    assert eff.baseline_range == pytest.approx(0.2) and eff.baseline_sd == pytest.approx(0.1)
    # the same differences against a baseline whose seeds span 0.6: inside the noise
    eff = seed_effect([0.5, 0.6, 0.55], [30.0, 30.6, 30.2], higher_is_better=True)
    assert eff is not None and not eff.exceeds_seed_spread and eff.effect == "none"
    # beyond the range but the CI over seeds includes zero (one seed says the opposite)
    eff = seed_effect([2.0, 2.5, -1.0], [30.0, 30.1, 30.2], higher_is_better=True)
    assert eff is not None and eff.ci_low < 0 < eff.ci_high and eff.effect == "none"
    # direction: lower is better, a consistent increase is "worse"
    eff = seed_effect([0.01, 0.011, 0.012], [0.1, 0.1005, 0.101], higher_is_better=False)
    assert eff is not None and eff.exceeds_seed_spread and eff.effect == "worse"
    eff = seed_effect([-0.01, -0.011, -0.012], [0.1, 0.1005, 0.101], higher_is_better=False)
    assert eff is not None and eff.effect == "better"


def test_seed_effect_is_undefined_not_false_with_one_seed_or_nan() -> None:
    assert seed_effect([0.5], [30.0], True) is None
    assert seed_effect([0.5, np.nan], [30.0, 30.1], True) is None
    with pytest.raises(ValueError, match="2 differences but 3"):
        seed_effect([0.5, 0.6], [30.0, 30.1, 30.2], True)
