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


def _macro_sklearn(y, p):
    classes = [c for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    return (np.mean([roc_auc_score(y[:, c], p[:, c]) for c in classes]),
            np.mean([average_precision_score(y[:, c], p[:, c]) for c in classes]))  # fmt: skip


def test_fold_mean_is_the_mean_of_each_folds_macro_and_pairs_runs():
    rng = np.random.default_rng(0)
    y = (rng.random((90, 3)) < 0.4).astype(int)
    folds = np.repeat([1, 2, 3], 30)
    a = [y + rng.normal(0, 0.8, y.shape) for _ in range(2)]
    b = [y + rng.normal(0, 1.5, y.shape) for _ in range(2)]
    d = metrics.fold_mean_paired_seeds(y, a, b, folds, n_boot=200)
    want_a = [np.mean([_macro_sklearn(y[folds == k], p[folds == k])[0] for k in (1, 2, 3)]) for p in a]
    assert d["per_seed_auc_a"] == pytest.approx(want_a, abs=1e-12)
    assert d["macro_auc_a"] == pytest.approx(np.mean(want_a), abs=1e-12)
    want_ap = np.mean([np.mean([_macro_sklearn(y[folds == k], p[folds == k])[1] for k in (1, 2, 3)]) for p in a])
    assert d["macro_auprc_a"] == pytest.approx(want_ap, abs=1e-12)
    assert d["macro_auc_diff"] == pytest.approx(d["macro_auc_a"] - d["macro_auc_b"], abs=1e-12)
    lo, hi = d["macro_auc_diff_ci"]
    assert lo < d["macro_auc_diff"] < hi and d["n_folds"] == 3
    same = metrics.fold_mean_paired_seeds(y, a, a, folds, n_boot=50)  # paired draws: a run minus itself is 0
    assert same["macro_auc_diff"] == 0 and same["macro_auc_diff_ci"] == (0.0, 0.0)
    with pytest.raises(ValueError, match="89 fold ids for 90 test records"):
        metrics.fold_mean_paired_seeds(y, a, b, folds[:-1])


def test_pooling_differently_calibrated_folds_understates_auc_and_the_fold_mean_does_not():
    """Each fold's probe ranks its own records perfectly but is shifted by its own offset, anti-correlated
    with the fold's prevalence (a head that learnt the training folds' prior): pooling the folds ranks the
    probes against each other and falls far below 1; the fold mean is 1."""
    y = np.zeros((60, 1), int)
    folds = np.repeat([1, 2, 3], 20)
    for k, share in zip((1, 2, 3), (0.2, 0.5, 0.8)):
        rows = np.flatnonzero(folds == k)
        y[rows[: int(share * 20)], 0] = 1
    offset = {1: 2.0, 2: 1.0, 3: 0.0}  # the fold with most positives gets the lowest scores
    p = (y[:, 0] * 0.5 + np.array([offset[k] for k in folds]))[:, None]
    pooled = metrics.macro_scores(y, p)[0]
    folded = metrics.fold_mean_paired_seeds(y, [p], [], folds, n_boot=20)
    assert pooled < 0.6 and folded["macro_auc_a"] == 1.0
