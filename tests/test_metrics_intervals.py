"""utils/metrics.py: macro AUPRC and the bootstrap intervals (plain resampling of test records, seeded)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from utils import metrics


def _sk_macro(y, p):
    keep = [c for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    if not keep:
        return np.nan, np.nan
    return (
        np.mean([roc_auc_score(y[:, c], p[:, c]) for c in keep]),
        np.mean([average_precision_score(y[:, c], p[:, c]) for c in keep]),
    )


def test_every_resample_equals_scikit_learn_on_the_drawn_records():
    rng = np.random.default_rng(3)
    for trial in range(40):
        n = int(rng.integers(3, 30))
        y = rng.integers(0, 2, (n, 3))
        p = np.round(rng.normal(size=(n, 3)), int(rng.integers(0, 3)))  # rounding makes ties
        idx = metrics.resample_indices(n, 6, seed=trial)
        auc, ap = metrics._weighted_macro(y, p, metrics._counts(idx, n))
        for b in range(6):
            want = _sk_macro(y[idx[b]], p[idx[b]])
            np.testing.assert_allclose([auc[b], ap[b]], want, atol=1e-12)


def test_report_has_auprc_and_positives():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])
    s = np.array([[2.0, -1, 0], [-1, 1, 0], [0.5, 0.2, 0], [-2, -1, 0], [-0.1, 0.3, 0]])
    rep = metrics.classification_report(y, s, is_binary=True)
    assert rep.positives.tolist() == [3, 2, 0] and rep.undefined_classes == [2]
    assert np.isnan(rep.per_class_ap[2])
    assert rep.macro_auprc == pytest.approx(
        np.mean([average_precision_score(y[:, c], s[:, c]) for c in (0, 1)])
    )
    table = metrics.format_table(rep, ["a", "b", "c"])
    assert "AUPRC" in table and "pos" in table.splitlines()[0]


def test_interval_is_seeded_and_holds_the_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (200, 4))
    p = rng.random((200, 4)) + 0.5 * y
    a = metrics.bootstrap_macro(y, p, n_boot=300, seed=5)
    assert a == metrics.bootstrap_macro(y, p, n_boot=300, seed=5)
    assert a != metrics.bootstrap_macro(y, p, n_boot=300, seed=6)
    auc, ap = metrics.macro_scores(y, p)
    assert a["macro_auc_ci"][0] < auc < a["macro_auc_ci"][1]
    assert a["macro_auprc_ci"][0] < ap < a["macro_auprc_ci"][1]
    assert a["n_boot"] == 300 and "plain resampling" in a["method"]
    # Fewer records: a wider interval.
    small = metrics.bootstrap_macro(y[:30], p[:30], n_boot=300, seed=5)
    assert np.diff(small["macro_auc_ci"])[0] > np.diff(a["macro_auc_ci"])[0]


def test_paired_difference():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (300, 3))
    good = rng.random((300, 3)) + 1.0 * y
    noise = rng.random((300, 3))
    same = metrics.paired_bootstrap(y, good, good, n_boot=200)
    assert same["macro_auc_diff"] == 0 and same["macro_auc_diff_ci"] == (0.0, 0.0)
    d = metrics.paired_bootstrap(y, good, noise, n_boot=200)
    assert d["macro_auc_diff"] == pytest.approx(_sk_macro(y, good)[0] - _sk_macro(y, noise)[0])
    assert d["macro_auc_diff_ci"][0] > 0 and d["macro_auprc_diff_ci"][0] > 0  # clearly better: excludes 0
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.paired_bootstrap(y, good, noise[:10])


def test_paired_difference_over_seeds():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (200, 3))
    a = [rng.random((200, 3)) + 0.8 * y for _ in range(3)]
    b = [rng.random((200, 3)) for _ in range(3)]
    d = metrics.paired_bootstrap_seeds(y, a, b, n_boot=200)
    per_seed = [metrics.paired_bootstrap(y, x, z, n_boot=10)["macro_auc_diff"] for x, z in zip(a, b)]
    assert d["per_seed_auc_diff"] == pytest.approx(per_seed)
    assert d["macro_auc_diff"] == pytest.approx(np.mean(per_seed))
    assert 0 < d["macro_auc_diff_ci"][0] < d["macro_auc_diff"] < d["macro_auc_diff_ci"][1]
    # One seed: the same as the single-pair interval.
    one = metrics.paired_bootstrap_seeds(y, a[:1], b[:1], n_boot=200)
    assert (
        one["macro_auc_diff_ci"] == metrics.paired_bootstrap(y, a[0], b[0], n_boot=200)["macro_auc_diff_ci"]
    )
    with pytest.raises(ValueError, match="one pair per seed"):
        metrics.paired_bootstrap_seeds(y, a, b[:2])
