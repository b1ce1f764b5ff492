"""The real-data check's pieces (scripts/ptbxl_real_check.py, scripts/fold_probe.py): which records pre-train
(development subset and a PhysioNet download of PTB-XL), the fold rotation and the pooled probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scripts import fold_probe as fp
from scripts import ptbxl_real_check as rc


def _ptbxl_folder(root, rows, on_disk):
    (root / "records100" / "00000").mkdir(parents=True)
    lines = ["ecg_id,patient_id,scp_codes,strat_fold,filename_lr,filename_hr"]
    for ecg_id, fold in rows:
        lines.append(
            f"{ecg_id},1,\"{{'NORM': 100.0}}\",{fold},records100/00000/{ecg_id:05d}_lr,records500/00000/{ecg_id:05d}_hr"
        )
    (root / "ptbxl_database.csv").write_text("\n".join(lines) + "\n")
    for ecg_id in on_disk:
        (root / "records100" / "00000" / f"{ecg_id:05d}_lr.hea").write_text("")
    return root


def test_pretraining_records_of_a_physionet_layout(tmp_path):
    # Records on disk without a database row are the pre-training records (no file of the development folder).
    a = _ptbxl_folder(tmp_path / "a", [(1, 3), (2, 9)], on_disk=[1, 2, 3, 4])
    names, source, labeled = rc.unlabeled_records(a)
    assert names == ["records100/00000/00003_lr", "records100/00000/00004_lr"] and not labeled
    assert "without a row" in source
    assert rc.unlabeled_records(a, max_records=1)[0] == ["records100/00000/00003_lr"]
    # Every record has a row (a full download): the training folds 1-8, flagged as labeled records.
    b = _ptbxl_folder(tmp_path / "b", [(1, 3), (2, 9), (3, 10), (4, 8)], on_disk=[1, 2, 3, 4])
    names, source, labeled = rc.unlabeled_records(b)
    assert names == ["records100/00000/00001_lr", "records100/00000/00004_lr"] and labeled
    # The development subset's list wins when it exists.
    (b / "RECORDS_WITHOUT_METADATA").write_text("records100/00000/00009_lr\n")
    assert rc.unlabeled_records(b) == (["records100/00000/00009_lr"], "RECORDS_WITHOUT_METADATA", False)
    with pytest.raises(FileNotFoundError, match="ptbxl_database.csv"):
        rc.unlabeled_records(tmp_path)


def test_physionet_files_alone_give_the_same_records_as_the_development_list(tmp_path, shared_data):
    """The shared PTB-XL subset seen as PhysioNet ships it (no RECORDS_WITHOUT_METADATA): the records found on
    disk without a row are exactly the development folder's list."""
    src = shared_data / "ptbxl"
    view = tmp_path / "ptbxl"
    view.mkdir()
    for name in ("ptbxl_database.csv", "scp_statements.csv", "records100", "records500"):
        (view / name).symlink_to(src / name)
    names, _, labeled = rc.unlabeled_records(view)
    assert sorted(names) == sorted((src / "RECORDS_WITHOUT_METADATA").read_text().split()) and not labeled


def test_round_robin_folds_and_rotation():
    folds = fp.round_robin_folds(20, 5, seed=0)
    assert sorted(np.bincount(folds)[1:].tolist()) == [4] * 5
    assert np.array_equal(folds, fp.round_robin_folds(20, 5, seed=0))
    assert fp.round_robin_folds(9, 5).max() == 5 and fp.round_robin_folds(4, 5).max() == 4
    with pytest.raises(ValueError, match="at least 3"):
        fp.round_robin_folds(2, 5)
    assert fp.rotation(10)[0] == (1, 2) and fp.rotation(10)[-1] == (10, 1) and len(fp.rotation(10)) == 10


def test_rotation_tests_every_record_once_and_pools_the_predictions(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 200, 16
    labels = rng.integers(0, 2, (n, 3))
    feats = (rng.normal(size=(n, d)) + np.pad(labels * 3.0, ((0, 0), (0, d - 3)))).astype(np.float32)
    pool = fp.Pool(tmp_path, labels, fp.round_robin_folds(n, 10), [str(i) for i in range(n)], {})
    torch.manual_seed(0)
    head = torch.nn.Linear(d, 3)
    w0 = head.weight.detach().clone()
    cfg = fp.ProbeConfig(epochs=20, batch_size=16)
    res = fp.rotate_probe(feats, pool, head, 1.0, 0, cfg)
    assert res["rows"].tolist() == list(range(n))  # every record tested exactly once
    assert [(f["test"], f["val"]) for f in res["folds"]] == fp.rotation(10)
    assert sum(f["n_test"] for f in res["folds"]) == n
    assert all(f["n_train"] + f["n_val"] + f["n_test"] == n for f in res["folds"])
    from utils.metrics import macro_scores

    auc, _ = macro_scores(res["labels"], res["logits"])
    assert auc > 0.8  # the labels are in the features: the pooled probe finds them (chance: 0.5)
    assert torch.equal(head.weight, w0)  # the caller's head is not trained in place
    again = fp.rotate_probe(feats, pool, head, 1.0, 0, cfg, pairs=[(1, 2)])
    np.testing.assert_array_equal(again["logits"], res["logits"][pool.folds == 1])  # seeded
    # A label ratio keeps that share of each training fold; the fixed protocol tests one fold.
    small = fp.rotate_probe(feats, pool, head, 0.1, 0, cfg, pairs=[(10, 9)])
    assert small["folds"][0]["n_train"] == int(0.1 * (n - 40)) and len(small["rows"]) == 20
