"""The reference profile and the drift statistic, checked against scipy and by hand.

The 100-trial false-alarm and detection rates are the benchmark's (benchmarks/drift.py); here a
few seeded trials each, and the numbers on small fixed data.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from taskyard.errors import StepError
from taskyard.ml import drift, profile


def frame(rows: int, seed: int, shift: float = 0.0, cat_p=(0.5, 0.3, 0.2)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = pd.DataFrame({f"x{i}": rng.normal(size=rows) for i in range(5)})
    out["x0"] += shift
    out["color"] = rng.choice(["red", "green", "blue"], size=rows, p=cat_p)
    out["when"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 99, rows), "D")
    return out


def test_profile_shape_and_round_trip(tmp_path) -> None:
    data = frame(3000, 0)
    data.loc[:9, "x1"] = np.nan
    p = profile.build(data, sample_size=500, seed=3)
    assert p["version"] == profile.PROFILE_VERSION and p["rows"] == 3000
    assert p["features"] == ["x0", "x1", "x2", "x3", "x4", "color"]
    assert p["skipped"] == ["when"]  # datetimes: no distribution to compare here
    x1 = p["columns"]["x1"]
    assert x1["kind"] == "numeric" and x1["missing"] == 10 and x1["count"] == 2990
    assert len(x1["edges"]) == 9 and len(x1["proportions"]) == 10
    assert math.isclose(sum(x1["proportions"]), 1.0)
    assert all(abs(p_ - 0.1) < 0.01 for p_ in x1["proportions"])  # deciles
    assert len(x1["sample"]) == 500 and x1["sample"] == sorted(x1["sample"])
    assert profile.build(data, sample_size=500, seed=3) == p  # seeded: the same twice
    color = p["columns"]["color"]
    assert color["kind"] == "categorical" and set(color["frequencies"]) == {
        "red", "green", "blue", profile.OTHER,
    }  # fmt: skip
    assert math.isclose(sum(color["frequencies"].values()), 1.0)
    saved = profile.save(p, tmp_path / "ref.json")
    assert profile.load(saved) == json.loads(json.dumps(p))
    assert len(saved.read_bytes()) < 40_000  # compact: 5 numeric features of 500 values


def test_top_categories_and_the_rest() -> None:
    data = pd.DataFrame({"c": [f"v{i % 80}" for i in range(800)] + ["v0"] * 200})
    freq = profile.build(data, max_categories=50)["columns"]["c"]["frequencies"]
    assert len(freq) == 51 and freq["v0"] == 0.21
    assert math.isclose(freq[profile.OTHER], 30 * 10 / 1000)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[]", "not a taskyard reference profile"),
        ('{"version": 1}', "has no features"),
        ("{", "cannot read the reference profile"),
    ],
)
def test_bad_profiles_are_one_line_errors(tmp_path, text: str, says: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(StepError, match=says):
        profile.load(path)


def test_ks_chi2_and_psi_match_scipy_and_the_formula() -> None:
    ref_frame = frame(2000, 1)
    ref = profile.build(ref_frame, sample_size=2000)
    cur = frame(1500, 2, shift=0.3, cat_p=(0.3, 0.3, 0.4))
    got = drift.compare(ref, cur, min_psi=0.0)
    ks = stats.ks_2samp(ref["columns"]["x0"]["sample"], cur["x0"])
    assert math.isclose(got.features["x0"].statistic, ks.statistic)
    assert math.isclose(got.features["x0"].p_value, ks.pvalue)
    # PSI by hand on the reference deciles.
    col = ref["columns"]["x0"]
    idx = np.searchsorted(col["edges"], cur["x0"], side="right")
    c = np.bincount(idx, minlength=10) / len(cur)
    r = np.asarray(col["proportions"])
    assert math.isclose(got.features["x0"].psi, float(np.sum((c - r) * np.log(c / r))))
    # Chi-square of the current counts against the reference frequencies (other: smoothed).
    freq = ref["columns"]["color"]["frequencies"]
    names = list(freq)
    counts = np.array([(cur["color"] == n).sum() for n in names], dtype=float)
    expected = np.maximum([freq[n] for n in names], drift.EPS)
    expected = expected / expected.sum() * counts.sum()
    chi = stats.chisquare(counts, expected)
    assert math.isclose(got.features["color"].statistic, chi.statistic)
    assert got.features["color"].drifted and got.features["x0"].drifted
    assert got.drifted_features[0] in ("x0", "color")


def test_same_distribution_is_no_drift_and_one_sd_is() -> None:
    ref = profile.build(frame(10_000, 0))
    for seed in range(1, 6):
        same = drift.compare(ref, frame(10_000, seed))
        assert not same.drifted and same.score == 0.0, same.drifted_features
        moved = drift.compare(ref, frame(10_000, 100 + seed, shift=1.0))
        assert moved.drifted and moved.drifted_features == ["x0"]
        assert moved.score == pytest.approx(1 / 6)


def test_a_categorical_shift_and_unseen_values() -> None:
    ref = profile.build(frame(5000, 0))
    shifted = drift.compare(ref, frame(5000, 1, cat_p=(0.2, 0.3, 0.5)))
    assert shifted.drifted_features == ["color"]
    unseen = frame(5000, 2)
    unseen.loc[:1500, "color"] = "purple"  # never in training: counts as __other__
    assert drift.compare(ref, unseen).features["color"].drifted


def test_significance_and_effect_size_both_needed() -> None:
    ref = profile.build(frame(20_000, 0), sample_size=20_000)
    # 200k rows make a 0.05 sd move significant; its PSI is tiny: not drift.
    small = drift.compare(ref, frame(200_000, 1, shift=0.05))
    assert small.features["x0"].p_adjusted < 0.05 and not small.features["x0"].drifted
    assert not small.drifted


def test_missing_features_too_few_rows_and_bad_settings() -> None:
    ref = profile.build(frame(2000, 0))
    cur = frame(500, 1).drop(columns=["x4"])
    got = drift.compare(ref, cur.to_dict(orient="list"))  # a mapping, as the server's window
    assert got.missing_features == ["x4"] and "x4" not in got.features
    with pytest.raises(ValueError, match="has 10 rows; drift needs at least 30"):
        drift.compare(ref, frame(10, 2))
    for kw in ({"alpha": 0}, {"max_share": 1.0}, {"correction": "sidak"}):
        with pytest.raises(ValueError):
            drift.compare(ref, cur, **kw)


def test_holm_is_never_less_powerful_than_bonferroni() -> None:
    p = [0.001, 0.01, 0.02, 0.04, 0.5]
    bonf, holm = drift._adjust(p, "bonferroni"), drift._adjust(p, "holm")
    assert bonf == pytest.approx([0.005, 0.05, 0.1, 0.2, 1.0])
    assert holm == pytest.approx([0.005, 0.04, 0.06, 0.08, 0.5])
    assert all(h <= b for h, b in zip(holm, bonf, strict=True))


def test_text_where_training_had_numbers_is_drift() -> None:
    ref = profile.build(frame(1000, 0))
    cur = frame(200, 1)
    cur["x2"] = "n/a"
    got = drift.compare(ref, cur)
    assert got.features["x2"].drifted and got.drifted


def test_the_benchmark_runs_and_prints_its_figures() -> None:
    """Its figures are the benchmark's business (benchmarks/README.md); here: it runs."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "drift.py"
    got = subprocess.run(
        [sys.executable, str(script), "--trials", "3", "--rows", "3000"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    assert "drifted=false in 3/3" in got.stdout and "drifted=true in 3/3" in got.stdout
