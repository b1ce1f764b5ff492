"""Iterative stratification and split files (docs/preprocessing.md, CPSC2018 / CSN splits)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from datasets.preprocess.splits import (
    PAPER_SPLITS_SHA256,
    iterative_stratification,
    read_split_csv,
    stratified_subset,
    write_split_csv,
)


def _labels(n=1200, seed=0):
    """Multi-label matrix with prevalences from 40 % down to 0.5 % and correlated labels."""
    rng = np.random.default_rng(seed)
    prev = np.array([0.4, 0.25, 0.15, 0.08, 0.04, 0.02, 0.01, 0.005])
    y = (rng.random((n, prev.size)) < prev).astype(np.int64)
    y[:, 5] |= y[:, 6] & (rng.random(n) < 0.5)
    return y


def _max_rel_dev(y, folds, fractions):
    tot = y.sum(axis=0)
    return max(np.abs(y[f].sum(axis=0) - fr * tot).max() for f, fr in zip(folds, fractions))


def test_partition_sizes_and_label_proportions():
    y = _labels()
    fr = (0.7, 0.1, 0.2)
    folds = iterative_stratification(y, fr, seed=3)
    allidx = np.concatenate(folds)
    assert sorted(allidx.tolist()) == list(range(len(y)))  # a partition
    for f, p in zip(folds, fr):
        assert abs(len(f) - p * len(y)) <= 0.01 * len(y)
        assert np.all(np.diff(f) > 0)
    # every label's positives split like the fractions, to within ~1 record
    assert _max_rel_dev(y, folds, fr) <= 1.5
    # a seeded random split of the same sizes is clearly worse
    perm = np.random.default_rng(3).permutation(len(y))
    cuts = np.cumsum([len(f) for f in folds])[:-1]
    rand = [np.sort(p) for p in np.split(perm, cuts)]
    assert _max_rel_dev(y, rand, fr) > 3 * _max_rel_dev(y, folds, fr)


def test_deterministic_and_seed_dependent():
    y = _labels(300, seed=1)
    a = iterative_stratification(y, (0.7, 0.1, 0.2), seed=5)
    b = iterative_stratification(y, (0.7, 0.1, 0.2), seed=5)
    c = iterative_stratification(y, (0.7, 0.1, 0.2), seed=6)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))


def test_rows_without_labels_and_bad_fractions():
    y = np.zeros((50, 3), dtype=int)
    y[:10, 0] = 1
    folds = iterative_stratification(y, (0.5, 0.5), seed=0)
    assert sorted(len(f) for f in folds) == [25, 25]
    assert [int(y[f, 0].sum()) for f in folds] == [5, 5]
    with pytest.raises(ValueError, match="sum to 1"):
        iterative_stratification(y, (0.5, 0.6))


def test_stratified_subset_keeps_prevalence():
    y = _labels(2000, seed=2)
    idx = stratified_subset(y, 0.1, seed=0)
    assert abs(len(idx) - 200) <= 2
    np.testing.assert_allclose(y[idx].mean(axis=0), y.mean(axis=0), atol=0.006)
    assert len(stratified_subset(y, 1.0)) == 2000


def test_split_csv_roundtrip(tmp_path):
    y = np.array([[1, 0], [0, 1], [1, 1]])
    write_split_csv(tmp_path / "s.csv", ["A0001", "A0002", "A0003"], y, ["AF", "RBBB"])
    names, y2, classes = read_split_csv(tmp_path / "s.csv")
    assert names == ["A0001", "A0002", "A0003"] and classes == ["AF", "RBBB"]
    np.testing.assert_array_equal(y, y2)
    (tmp_path / "p.csv").write_text("ecg,AF\nWFDBRecords/01/016/JS00666.mat,1\n")
    assert read_split_csv(tmp_path / "p.csv")[0] == ["JS00666"]


def _git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _mirror(tmp_path, files: dict[str, bytes]) -> tuple[str, str]:
    """A local git repository holding ``files`` (path -> bytes) in one commit: (url, commit)."""
    repo = tmp_path / "mirror"
    for rel, data in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(data)
    _git("init", "-q", cwd=repo)
    _git("add", ".", cwd=repo)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "splits", cwd=repo)
    _git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=repo)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True)
    return f"file://{repo}", sha.stdout.strip()


def _fetch(url, commit, dest):
    env = dict(os.environ, HEARTLANG_REPO_URL=url, HEARTLANG_SPLITS_COMMIT=commit)
    script = Path(__file__).resolve().parents[1] / "scripts" / "fetch_paper_splits.sh"
    return subprocess.run(["bash", str(script), str(dest)], env=env, capture_output=True, text=True)


def test_fetch_script_finds_checks_and_writes_the_paper_files(shared_data, tmp_path):
    names = sorted(PAPER_SPLITS_SHA256)
    # the script's hard-coded sums are the module's, and both are those of the shared byte-identical copies
    script = (Path(__file__).resolve().parents[1] / "scripts" / "fetch_paper_splits.sh").read_text()
    for name in names:
        assert f"[{name}]={PAPER_SPLITS_SHA256[name]}" in script
        assert (
            hashlib.sha256((shared_data / "splits" / name).read_bytes()).hexdigest()
            == PAPER_SPLITS_SHA256[name]
        )
    files = {f"some/dir/{n}": (shared_data / "splits" / n).read_bytes() for n in names}
    files["other/icbeb_val.csv"] = b"record,AF\nA0001,1\n"  # same name, other content: skipped
    url, commit = _mirror(tmp_path, files)
    res = _fetch(url, commit, tmp_path / "dest")
    assert res.returncode == 0, res.stderr
    for n in names:
        assert (tmp_path / "dest" / n).read_bytes() == (shared_data / "splits" / n).read_bytes()
    prov = (tmp_path / "dest" / "PROVENANCE.txt").read_text()
    assert commit in prov and "some/dir/icbeb_val.csv" in prov


def test_fetch_script_refuses_a_changed_file_and_writes_nothing(shared_data, tmp_path):
    files = {n: (shared_data / "splits" / n).read_bytes() for n in PAPER_SPLITS_SHA256}
    files["chapman_test.csv"] = files["chapman_test.csv"].replace(b"JS18048", b"JS18049")
    url, commit = _mirror(tmp_path, files)
    res = _fetch(url, commit, tmp_path / "dest")
    assert res.returncode != 0 and "no file chapman_test.csv with SHA-256" in res.stderr
    assert not (tmp_path / "dest").exists()
