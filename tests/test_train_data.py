"""Training data and metrics: memory-mapped sentence datasets, label-fraction sampling, masking, AUC."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.pretrain import random_masking, random_masking_real_words
from sentences.dataset import ConcatSentenceDataset, SentenceDataset, build_sentence_dataset
from sentences.labels import SAMPLING_METHODS, subsample_indices
from tests._train_data import make_downstream, make_pretrain, write_qrs_split
from utils.metrics import classification_report, format_table


def test_batch_folders_concatenate_lazily_in_numeric_order(tmp_path):
    root = tmp_path / "MIMIC-IV_QRS"
    for k, n in ((0, 3), (2, 2), (10, 4)):
        write_qrs_split(root / f"batch_{k}", "train", n, None, seed=k)
    ds = build_sentence_dataset(root, "train", with_labels=False)
    assert isinstance(ds, ConcatSentenceDataset) and len(ds) == 9
    assert [p.root.name for p in ds.parts] == ["batch_0", "batch_2", "batch_10"]
    assert all(isinstance(p.data, np.memmap) for p in ds.parts)
    x, c, t, y = ds[8]
    last = np.load(root / "batch_10" / "train_data.npy")[3]
    assert torch.equal(x, torch.from_numpy(last)) and y == -1
    assert x.shape == (256, 96) and c.dtype == torch.int64 and t.shape == (256,)
    assert torch.equal(ds[-1][0], x)


def test_batch_1_is_left_out_by_default_as_in_the_original(tmp_path):
    root = tmp_path / "MIMIC-IV_QRS"
    for k, n in ((0, 3), (1, 5), (2, 2), (10, 4)):
        for split in ("train", "val"):
            write_qrs_split(root / f"batch_{k}", split, n, None, seed=k)
    for split in ("train", "val"):
        ds = build_sentence_dataset(root, split, with_labels=False)
        assert [p.root.name for p in ds.parts] == ["batch_0", "batch_2", "batch_10"] and len(ds) == 9
        assert ds.skipped_batch_folders == ("batch_1",)
        full = build_sentence_dataset(root, split, with_labels=False, all_batch_folders=True)
        assert [p.root.name for p in full.parts] == ["batch_0", "batch_1", "batch_2", "batch_10"]
        assert len(full) == 14 and full.skipped_batch_folders == ()
        assert torch.equal(full[3][0], torch.from_numpy(np.load(root / "batch_1" / f"{split}_data.npy")[0]))
    # only batch_1: refused with the way out, not an empty data set
    only = tmp_path / "only"
    write_qrs_split(only / "batch_1", "train", 2, None, seed=0)
    with pytest.raises(FileNotFoundError, match="only batch folder .* is batch_1.*all_batch_folders"):
        build_sentence_dataset(only, "train", with_labels=False)
    assert len(build_sentence_dataset(only, "train", with_labels=False, all_batch_folders=True)) == 2
    # a folder holding the arrays itself is not affected
    assert build_sentence_dataset(root / "batch_1", "train", with_labels=False).skipped_batch_folders == ()


def test_missing_files_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_sentence_dataset(tmp_path / "nope", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="train_data.npy"):
        build_sentence_dataset(tmp_path / "empty", "train")
    folder = make_downstream(tmp_path)
    (folder / "val_labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match="val_labels.npy"):
        SentenceDataset(folder, "val")


def test_labelled_items_are_float_multi_hot(tmp_path):
    ds = SentenceDataset(make_downstream(tmp_path), "train")
    x, c, t, y = ds[0]
    assert y.dtype == torch.float32 and y.shape == (3,) and set(y.tolist()) <= {0.0, 1.0}


def _labels(n=1000, c=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, c)) < np.linspace(0.02, 0.5, c)).astype(np.int64)


@pytest.mark.parametrize("method", SAMPLING_METHODS)
@pytest.mark.parametrize("ratio", [0.01, 0.1, 1.0])
def test_split_ratio_sizes_and_seeding(method, ratio):
    labels = _labels()
    idx = subsample_indices(labels, ratio, method, seed=0)
    assert idx.dtype == np.int64
    assert abs(len(idx) - ratio * len(labels)) <= max(6, 0.02 * ratio * len(labels))
    assert len(np.unique(idx)) == len(idx) and idx.min() >= 0 and idx.max() < len(labels)
    np.testing.assert_array_equal(idx, subsample_indices(labels, ratio, method, seed=0))
    if ratio < 1:
        assert not np.array_equal(idx, subsample_indices(labels, ratio, method, seed=1))
    else:  # ratio 1 keeps every row, in dataset order
        np.testing.assert_array_equal(idx, np.arange(len(labels)))


def _recipe_subsets(ref_fixtures):
    import json

    fx = json.loads((ref_fixtures / "recipe_original.json").read_text())["subset_indices"]
    return np.asarray(fx["labels"]), fx["selected_rows_in_order"]


def test_split_ratio_rows_equal_the_originals_in_order(ref_fixtures):
    labels, cases = _recipe_subsets(ref_fixtures)
    assert labels.shape == (600, 5) and len(cases) == 12
    for name, want in cases.items():
        method, ratio, seed = name.split("_")
        got = subsample_indices(labels, float(ratio), method, int(seed.removeprefix("seed")))
        assert got.tolist() == want, name


def test_split_ratio_rows_ignore_the_global_generators(ref_fixtures):
    """The run seeds the global RNGs and may draw from them before; the subset must not change."""
    import random

    labels, cases = _recipe_subsets(ref_fixtures)
    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    assert subsample_indices(labels, 0.1, "random", 1).tolist() == cases["random_0.1_seed1"]
    assert subsample_indices(labels, 0.1, "stratified", 2).tolist() == cases["stratified_0.1_seed2"]
    assert (random.random(), np.random.rand()) == before  # the global streams were not consumed


def test_stratified_is_per_argmax_class_with_int_and_at_least_one():
    labels = np.zeros((203, 4), dtype=np.int64)
    labels[:150, 0] = 1
    labels[150:190, 1] = 1
    labels[190:200, 2] = 1
    labels[200:, 3] = 1
    labels[:20, 3] = 1  # multi-label rows count for their arg-max (first positive) class only
    idx = subsample_indices(labels, 0.05, "stratified", seed=4)
    cls = labels[idx].argmax(1)
    assert np.bincount(cls, minlength=4).tolist() == [7, 2, 1, 1]  # int(7.5), int(2.0), max(1, 0), max(1, 0)
    assert not np.all(np.diff(cls) >= 0)  # shuffled after the per-class draws, not grouped by class


def test_iterative_keeps_label_shares_better_than_random_and_stratified():
    labels = _labels(2000, 6, seed=3)
    full = labels.mean(0)
    err = {}
    for method in SAMPLING_METHODS:
        errs = [
            np.abs(labels[subsample_indices(labels, 0.1, method, s)].mean(0) - full).max() for s in range(5)
        ]
        err[method] = float(np.mean(errs))
    assert err["iterative"] < err["random"] and err["iterative"] < err["stratified"]
    assert err["iterative"] < 0.01


def test_bad_ratio_and_method_raise():
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="--split_ratio must be in"):
            subsample_indices(_labels(), bad, "random", 0)
    with pytest.raises(ValueError, match="sampling_method must be one of"):
        subsample_indices(_labels(), 0.5, "balanced", 0)
    with pytest.raises(ValueError, match="keeps int\\(50 \\* 0.01\\) = 0 rows"):
        subsample_indices(_labels(50), 0.01, "random", 0)


def test_random_masking_matches_the_original_bit_for_bit(ref_fixtures):
    io = torch.load(ref_fixtures / "tiny_heartlang_io.pt", weights_only=True)
    torch.manual_seed(int(io["mask_seed"]))
    mask = random_masking(io["x"], 0.5)
    assert torch.equal(mask, io["mask"])
    assert mask.sum(1).tolist() == [128] * io["x"].shape[0]  # padding positions included


def test_real_word_masking_never_masks_padding(tmp_path):
    ds = SentenceDataset(make_pretrain(tmp_path) / "batch_0", "train", with_labels=False)
    c = torch.stack([ds[i][1] for i in range(len(ds))])
    x = torch.zeros(*c.shape, 96)
    mask = random_masking_real_words(x, c, 0.5)
    assert not mask[c == 0].any()
    assert mask.sum(1).tolist() == ((c > 0).sum(1) // 2).tolist()


def test_metrics_report_classes_without_positives_instead_of_crashing():
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    scores = np.array([[3.0, -1, -1], [-2, 2, -1], [1, 1, -1], [-1, -3, -1]])
    rep = classification_report(targets, scores, is_binary=True)
    assert rep.undefined_classes == [2]
    assert np.isnan(rep.per_class_auc[2]) and rep.macro_auc == pytest.approx(1.0)
    assert "n/a" in format_table(rep, ["a", "b", "c"]) and "left out of the macro: c" in format_table(
        rep, ["a", "b", "c"]
    )
    assert rep.accuracy == pytest.approx(1.0)


def test_single_label_metrics_use_softmax_and_top1():
    targets = np.eye(3)[[0, 1, 2, 0]]
    scores = np.array([[2.0, 0, 0], [0, 2, 0], [2, 0, 1], [1, 0, 0]])
    rep = classification_report(targets, scores, is_binary=False)
    assert rep.accuracy == pytest.approx(0.75)
    assert rep.undefined_classes == []
