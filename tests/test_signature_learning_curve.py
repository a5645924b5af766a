"""benchmarks/signature_learning_curve.py: the training subsets, the power-law lines, and
agreement with signature_set.py at fraction 1 (real data: data/ganesan2020)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench_helpers import load_benchmark


@pytest.fixture(scope="module")
def curve():
    return load_benchmark("signature_learning_curve")


def test_keep_fraction_keeps_whole_phone_models(curve):
    groups = np.repeat([f"phone{i}" for i in range(20)], 2)  # synthetic: 20 models, 2 files each
    train = ~np.isin(groups, ["phone0", "phone1", "phone2", "phone3", "phone4", "phone5"])
    kept = curve.keep_fraction(groups, train, 0.5, seed=3)
    assert not (kept & ~train).any()
    assert len(set(groups[kept])) == 7  # round(0.5 * 14)
    for model in set(groups[kept]):  # every file of a kept model
        assert kept[groups == model].all()
    assert np.array_equal(kept, curve.keep_fraction(groups, train, 0.5, seed=3))
    assert not np.array_equal(kept, curve.keep_fraction(groups, train, 0.5, seed=4))
    assert not np.array_equal(kept, curve.keep_fraction(groups, train, 0.5, seed=3, draw=1))
    assert curve.keep_fraction(groups, train, 1.0, seed=3) is train
    assert len(set(groups[curve.keep_fraction(groups, train, 0.01, seed=3)])) == 2


def test_power_law_finds_exponent_and_crossing(curve):
    # synthetic points on exact power laws: MAPE = 40 n^-0.5 (4% at n = 100),
    # miss share = 32 n^-0.25 (8% at n = 256)
    points = [{"n_train_files_mean": n, "mape_pct": 40 * n ** -0.5, "acc10_pct": 100 - 32 * n ** -0.25}
              for n in (16.0, 36.0, 64.0)]
    fit = curve.power_law(points)
    assert fit["mape_pct"]["exponent"] == pytest.approx(-0.5, abs=1e-3)
    assert fit["mape_pct"]["train_files_at_target"] == pytest.approx(100, rel=1e-3)
    assert fit["miss10_pct"]["exponent"] == pytest.approx(-0.25, abs=1e-3)
    assert fit["miss10_pct"]["train_files_at_target"] == pytest.approx(256, rel=1e-3)
    rising = [dict(p, mape_pct=p["n_train_files_mean"] / 10) for p in points]
    assert curve.power_law(rising)["mape_pct"]["train_files_at_target"] is None


def test_fraction_one_is_signature_set_result(curve, capsys):
    method = "pqr+robust_knn"
    assert curve.main(["--reps", "1", "--fractions", "0.5,1", "--methods", method, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    half, full = out["points"]
    assert half["n_train_phone_models_mean"] == pytest.approx(full["n_train_phone_models_mean"] / 2, abs=0.5)
    assert half["n_train_files_mean"] < full["n_train_files_mean"]
    whole = load_benchmark("signature_set").run(curve.g20.default_data_dir(), 10, 1, [method])["methods"][method]
    assert full["mape_pct"] == pytest.approx(whole["mape_pct"], rel=1e-9)
    assert full["acc10_pct"] == pytest.approx(whole["acc10_pct"], rel=1e-9)


def test_bad_fractions_are_a_clear_error(curve, capsys):
    with pytest.raises(SystemExit) as exc:
        curve.main(["--fractions", "0,1"])
    assert exc.value.code == 2
    assert "fractions must lie in (0, 1]" in capsys.readouterr().err
    assert curve.main(["--methods", "pqr+lowrank,pqr+robust_knn"]) == 2
    assert "give one method" in capsys.readouterr().err
