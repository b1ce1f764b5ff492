"""scripts/fold_probe.py is the eval-mode cached-feature linear probe of ``run_class_finetuning.py`` run
in-process: the same data, seed and flags through both give the same test predictions (docs/evidence.md)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from reporting.results import load_predictions, read_results
from scripts import fold_probe as fp
from tests._train_data import make_downstream
from utils.metrics import probabilities

MODEL, N_CLASSES, EPOCHS = "HeartLang_finetune_tiny", 3, 4


def _finetune(argv: list[str]) -> None:
    import run_class_finetuning

    os.environ["HEARTLANG_NO_PROGRESS"] = "1"
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(var, None)
    run_class_finetuning.main(run_class_finetuning.get_args_parser().parse_args(argv))


def _both(tmp_path, down, ratio: float, seed: int, finetune: str | None, name: str):
    """(run's test probabilities, fold_probe's, run's best epoch, fold_probe's fold record, run's validation
    AUC per epoch): run_class_finetuning.py (train, then --eval) and fold_probe with train split = fold 1,
    val = fold 2, test = fold 3."""
    pool = fp.load_pool(down, np.repeat([1, 2, 3], [24, 12, 12]), [str(i) for i in range(48)])
    n_keep = (
        len(fp.subsample_indices(pool.labels[pool.folds == 1], ratio, "random", seed)) if ratio < 1 else 24
    )
    cfg = fp.ProbeConfig(epochs=EPOCHS, batch_size=8)
    batch = max(1, min(cfg.batch_size, n_keep // 3))  # the batch fold_probe trains with
    out, csv = tmp_path / name, tmp_path / "results.csv"
    common = ["--model", MODEL, "--trainable", "linear", "--nb_classes", str(N_CLASSES), "--is_binary",
              "--dataset_dir", str(down), "--output_dir", str(out), "--split_ratio", f"{ratio:g}",
              "--sampling_method", "random", "--seed", str(seed), "--batch_size", str(batch), "--num_workers", "0",
              *(["--finetune", finetune] if finetune else [])]  # fmt: skip
    _finetune([*common, "--probe_backbone_eval", "--cache_features", "--epochs", str(EPOCHS), "--lr", str(cfg.lr),
               "--min_lr", str(cfg.min_lr), "--warmup_epochs", str(cfg.warmup_epochs), "--weight_decay",
               str(cfg.weight_decay), "--save_ckpt_freq", str(EPOCHS)])  # fmt: skip
    _finetune([*common, "--eval", "--results_csv", str(csv)])
    row = [r for r in read_results(csv) if r["output_dir"] == str(out)][-1]
    run_probs = load_predictions(row["predictions"])["probs"]
    log = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    aucs = [r["val_macro_auc"] for r in log]
    run_best = int(np.argmax(aucs)) + 1  # the first best epoch, 1-based

    model = fp.build_encoder(MODEL, N_CLASSES, finetune, seed)
    feats = fp.extract_features(model, down)
    res = fp.rotate_probe(feats, pool, model.mlp_head, ratio, seed, cfg, pairs=[(3, 2)])
    assert res["rows"].tolist() == list(range(36, 48))
    assert res["folds"][0]["n_train"] == n_keep
    return run_probs, probabilities(res["logits"], True), run_best, res["folds"][0], aucs


def test_fold_probe_equals_run_class_finetuning(tmp_path):
    """The random encoder at ratio 0.5 with seed 3 (subset draw, head and encoder draw, a sampler seed that is
    not the probe seed), then a loaded checkpoint at ratio 1 with seed 0."""
    down = make_downstream(tmp_path, n_train=24, n_val=12, n_test=12, n_classes=N_CLASSES)
    for ratio, seed, finetune, name in ((0.5, 3, None, "random"),
                                        (1.0, 0, str(tmp_path / "random" / "checkpoint-best.pth"), "loaded")):  # fmt: skip
        run_p, probe_p, run_best, fold, aucs = _both(tmp_path, down, ratio, seed, finetune, name)
        # Every epoch's head, not only the best one: the same validation AUC epoch by epoch.
        assert fold["val_auc_per_epoch"] == pytest.approx(aucs, abs=1e-6), name
        assert fold["best_epoch"] == run_best and fold["val_auc"] == pytest.approx(max(aucs), abs=1e-6), name
        # Tolerance: float32 features and head, the run evaluating the whole classifier in other batches. (The
        # test macro AUC is not compared: this tiny model scores records within 1e-4 of each other, so a 1e-6
        # difference can swap two ranks.)
        np.testing.assert_allclose(probe_p, run_p, rtol=0, atol=1e-5, err_msg=name)
