"""reporting/: traceable result rows (provenance, recipe, smoke caveat, header mismatch), tables, plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn.metrics import average_precision_score, roc_auc_score

from reporting import plots
from reporting.results import (
    LEGACY_FIELDS,
    RESULT_FIELDS,
    SCHEMA2_FIELDS,
    append_result_row,
    count_leads,
    describe_dataset_dir,
    format_recipe,
    is_meaningful,
    load_predictions,
    read_results,
    run_id,
    schema_sibling,
    smoke_caveat,
    write_result,
)
from reporting.tables import collect_probe_results, paired_differences, probe_table, seed_mean_differences
from utils.integrity import sha256_file

TASK_ROW = {
    "dataset": "PTBXL", "subset": "superdiagnostic", "leads": 12, "ratio": 0.1, "sampling": "random", "seed": 0,
    "trainable": "linear", "finetune": "pre.pth", "macro_auc": "0.812345", "macro_f1": "0.5", "accuracy": "0.4",
    "n_test": 2158, "classes_without_auc": "", "output_dir": "runs/super_pretrained_0.1",
}  # fmt: skip


def _axes_count(png_fig_call):
    """Number of axes of the Figure a plotting call saved (captured through Figure.savefig)."""
    from matplotlib.figure import Figure

    seen = []
    orig = Figure.savefig

    def spy(self, *a, **k):
        seen.append(len(self.axes))
        return orig(self, *a, **k)

    Figure.savefig = spy
    try:
        path = png_fig_call()
    finally:
        Figure.savefig = orig
    return path, seen[-1]


# ------------------------------------------------------------------------------------------- results CSV
def test_describe_dataset_dir_and_count_leads():
    assert describe_dataset_dir("datasets/ecg_datasets/PTBXL_QRS/form/") == ("PTBXL", "form")
    assert describe_dataset_dir("datasets/ecg_datasets/PTBXL_QRS_3Leads/rhythm") == ("PTBXL", "rhythm")
    assert describe_dataset_dir("datasets/ecg_datasets/CPSC2018_QRS") == ("CPSC2018", "all")
    assert count_leads(np.array([[0, 1, 2, 2], [7, 0, 0, 0]])) == 3


@pytest.mark.parametrize(
    "recipe, expected",
    [
        (None, "unknown"),
        ({}, "official"),
        ({"padding_attention_mask": False, "mask_before_conv": False}, "official"),
        ({"padding_attention_mask": True, "mask_before_conv": False}, "corrected:padding_attention_mask"),
        ({"padding_attention_mask": True, "mask_before_conv": True}, "corrected:mask_before_conv+padding_attention_mask"),
        ({"mask_ratio": 0.5, "x": None}, "corrected:mask_ratio=0.5"),
    ],
)  # fmt: skip
def test_format_recipe(recipe, expected):
    assert format_recipe(recipe) == expected


@pytest.mark.parametrize(
    "n_test, model, meaningful, text",
    [
        (2158, "HeartLang_finetune_base", True, ""),
        (99, "HeartLang_finetune_base", False, "n_test 99 < 100"),
        (100, "HeartLang_finetune_base", True, ""),
        (5000, "HeartLang_finetune_tiny", False, "HeartLang_finetune_tiny is a test-size model"),
        (5, "HeartLang_finetune_tiny", False, "n_test 5 < 100; HeartLang_finetune_tiny"),
        (151, "HeartLang_finetune_small", True, "demo-size model HeartLang_finetune_small"),
    ],
)
def test_smoke_rule(n_test, model, meaningful, text):
    caveat = smoke_caveat(n_test, model)
    assert is_meaningful({"caveat": caveat}) is meaningful
    assert text in caveat and (caveat.startswith("not meaningful (smoke size") == (not meaningful))
    if not text:
        assert caveat == ""


def test_write_result_row_carries_provenance(tmp_path, repo_root):
    ckpt = tmp_path / "checkpoint-best.pth"
    ckpt.write_bytes(b"weights" * 100)
    csv_path = tmp_path / "results" / "finetune_results.csv"
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]] * 5)
    scores = labels + np.random.default_rng(0).normal(0, 0.6, labels.shape)
    written = write_result(
        csv_path, TASK_ROW, ckpt, "HeartLang_finetune_base", {"padding_attention_mask": True},
        roc=(labels, scores, ["NORM", "MI"]),
    )  # fmt: skip
    assert written.path == csv_path
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
        assert list(rows[0]) == RESULT_FIELDS
    row = rows[0]
    assert row["checkpoint"] == str(ckpt) and row["checkpoint_sha256"] == sha256_file(ckpt)
    assert len(row["checkpoint_sha256"]) == 64
    assert row["model"] == "HeartLang_finetune_base"
    assert row["recipe"] == "corrected:padding_attention_mask"
    assert row["n_test"] == "20" and row["caveat"] == "not meaningful (smoke size: n_test 20 < 100)"  # the predictions count
    assert row["utc"].endswith("Z") and row["utc"][:2] == "20"
    # This test runs inside the repository's git checkout: a 40-hex commit and a dirty flag.
    assert len(row["git_commit"]) == 40 and row["git_dirty"] in ("true", "false")
    rid = run_id("runs/super_pretrained_0.1")
    assert row["run_id"] == rid and len(rid) == 12
    assert (tmp_path / "results" / "roc" / f"PTBXL_superdiagnostic_super_pretrained_0.1_{rid}.png").is_file()
    assert row["roc_png"].endswith(f"PTBXL_superdiagnostic_super_pretrained_0.1_{rid}.png")
    # The metric columns come from the labels and scores: AUPRC, per-class values, positives, intervals.
    probs = 1 / (1 + np.exp(-scores))
    assert float(row["macro_auc"]) == pytest.approx(
        np.mean([roc_auc_score(labels[:, c], probs[:, c]) for c in range(2)]), abs=1e-6
    )
    assert float(row["macro_auprc"]) == pytest.approx(
        np.mean([average_precision_score(labels[:, c], probs[:, c]) for c in range(2)]), abs=1e-6
    )
    assert row["positives"] == "NORM=10;MI=10" and row["n_test"] == "20"
    assert row["per_class_auc"].startswith("NORM=0.") and row["per_class_auprc"].count(";") == 1
    assert float(row["macro_auc_ci_low"]) <= float(row["macro_auc"]) <= float(row["macro_auc_ci_high"])
    assert float(row["macro_auprc_ci_low"]) <= float(row["macro_auprc"]) <= float(row["macro_auprc_ci_high"])
    assert row["bootstrap"] == "plain,1000,seed0"
    pred = load_predictions(row["predictions"])
    assert np.array_equal(pred["labels"], labels) and np.allclose(pred["probs"], probs, atol=1e-6)
    assert written.row["checkpoint_sha256"] == row["checkpoint_sha256"]
    json.dumps(written.row)  # the full row goes to a JSON log as it is


def test_smoke_size_row_is_marked(tmp_path):
    csv_path = tmp_path / "r.csv"
    write_result(csv_path, {**TASK_ROW, "n_test": 5}, None, "HeartLang_finetune_tiny", {})
    (row,) = read_results(csv_path)
    assert row["caveat"].startswith("not meaningful (smoke size") and row["checkpoint"] == ""
    assert row["recipe"] == "official"


def test_old_header_is_not_misaligned(tmp_path, capsys):
    csv_path = tmp_path / "finetune_results.csv"
    old = ",".join(LEGACY_FIELDS) + "\n" + "PTBXL,form,12,1.0,random,0,linear,m,,0.700000,0,0,500,,runs/a\n"
    csv_path.write_text(old)
    written = append_result_row(
        csv_path, {**TASK_ROW, "model": "HeartLang_finetune_base", "recipe": "official"}
    )
    assert written == schema_sibling(csv_path) == tmp_path / "finetune_results.schema3.csv"
    assert csv_path.read_text() == old  # the old file is untouched
    assert "another header" in capsys.readouterr().err
    with open(written, newline="") as fh:
        assert next(csv.reader(fh)) == RESULT_FIELDS
    # A second row goes to the sibling too; reading gives both files' rows, old first, all keys present.
    append_result_row(csv_path, {**TASK_ROW, "output_dir": "runs/b"})
    rows = read_results(csv_path)
    assert [r["output_dir"] for r in rows] == ["runs/a", "runs/super_pretrained_0.1", "runs/b"]
    assert all(set(RESULT_FIELDS) <= set(r) for r in rows)
    assert rows[0]["checkpoint_sha256"] == "" and rows[1]["recipe"] == "official"
    # The sibling with yet another header is refused, not appended to.
    schema_sibling(csv_path).write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="unexpected header"):
        append_result_row(csv_path, TASK_ROW)


def test_schema2_file_keeps_its_rows_and_new_rows_go_to_a_sibling(tmp_path):
    # A file of the version before the intervals (23 columns) and an older sibling: all rows are read.
    csv_path = tmp_path / "finetune_results.csv"
    old2 = (
        ",".join(SCHEMA2_FIELDS)
        + "\n"
        + ",".join(["PTBXL", "form", "12", "1.0"] + ["x"] * 10 + ["runs/s2"] + [""] * 8)
        + "\n"
    )
    csv_path.write_text(old2)
    schema_sibling(csv_path, 2).write_text(
        ",".join(LEGACY_FIELDS) + "\n" + "PTBXL,form,12,1.0,random,0,linear,m,,0.7,0,0,500,,runs/a\n"
    )
    written = append_result_row(csv_path, {**TASK_ROW, "output_dir": "runs/new", "macro_auprc": "0.5"})
    assert written == tmp_path / "finetune_results.schema3.csv" and csv_path.read_text() == old2
    rows = read_results(csv_path)
    assert [r["output_dir"] for r in rows] == ["runs/s2", "runs/a", "runs/new"]
    assert rows[0]["macro_auprc"] == "" and rows[2]["macro_auprc"] == "0.5"


def test_unterminated_last_line_gets_no_row_glued_on(tmp_path):
    csv_path = tmp_path / "r.csv"
    append_result_row(csv_path, {**TASK_ROW, "output_dir": "runs/a"})
    # Edited by hand: the last newline is gone.
    csv_path.write_text(csv_path.read_text().rstrip("\n"))
    append_result_row(csv_path, {**TASK_ROW, "output_dir": "runs/b"})
    assert [r["output_dir"] for r in read_results(csv_path)] == ["runs/a", "runs/b"]
    # A file whose rows were glued before this rule existed: an error naming the file and line, no lost row.
    header, row_a, row_b = csv_path.read_text().splitlines()
    csv_path.write_text(f"{header}\n{row_a}{row_b}\n")
    with pytest.raises(ValueError, match=r"r\.csv, line 2: \d+ fields, the header has"):
        read_results(csv_path)


def test_runs_with_the_same_folder_name_get_their_own_figures(tmp_path):
    csv_path = tmp_path / "results" / "r.csv"
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]] * 3)
    rows = []
    for parent, noise in (("a", 0.1), ("b", 2.0)):
        scores = labels + np.random.default_rng(1).normal(0, noise, labels.shape)
        row = {**TASK_ROW, "output_dir": str(tmp_path / parent / "probe")}
        rows.append(write_result(csv_path, row, None, "m", {}, roc=(labels, scores, ["NORM", "MI"])).row)
    assert rows[0]["run_id"] != rows[1]["run_id"]
    assert rows[0]["roc_png"] != rows[1]["roc_png"] and rows[0]["predictions"] != rows[1]["predictions"]
    assert all(Path(r["roc_png"]).is_file() and Path(r["predictions"]).is_file() for r in rows)
    for r in rows:
        assert load_predictions(r["predictions"])["output_dir"] == r["output_dir"]
    read = read_results(csv_path)
    assert [r["roc_png"] for r in read] == [r["roc_png"] for r in rows]
    assert read[0]["macro_auc"] != read[1]["macro_auc"]


def test_read_results_rejects_other_csv(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a results CSV"):
        read_results(tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError, match="did the --eval runs finish"):
        read_results(tmp_path / "missing.csv")


def test_probe_table_says_smoke_numbers_are_not_meaningful(tmp_path):
    csv_path = tmp_path / "r.csv"
    for init, auc, name in (("pre.pth", "0.9", "a"), ("", "0.6", "b")):
        row = {
            **TASK_ROW,
            "finetune": init,
            "macro_auc": auc,
            "n_test": 5,
            "output_dir": str(tmp_path / "ft" / name),
        }
        write_result(csv_path, row, None, "HeartLang_finetune_tiny", {})
    rows = collect_probe_results(csv_path, tmp_path / "ft")
    table = probe_table(rows)
    assert table.startswith(
        "**These numbers are not meaningful (smoke size: n_test 5 < 100; HeartLang_finetune_tiny is a test-size model).**"
    )
    assert "| superdiagnostic (n_test 5) | 0.1 | 0 | 0.9000 | 0.6000 | +0.3000 | n/a |" in table
    # A full-size row has no note.
    write_result(
        csv_path,
        {**TASK_ROW, "output_dir": str(tmp_path / "ft" / "big")},
        None,
        "HeartLang_finetune_base",
        {},
    )
    big = [r for r in collect_probe_results(csv_path, tmp_path / "ft") if r["n_test"] == 2158]
    assert "not meaningful" not in probe_table(big)


def test_probe_table_pairs_runs_and_summarises_seeds(tmp_path):
    csv_path = tmp_path / "results" / "r.csv"
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (150, 3))
    for seed in (0, 1, 2):
        for init, signal in (("pre.pth", 2.0), ("", 0.2)):
            scores = signal * labels + rng.normal(0, 1, labels.shape)
            row = {
                **TASK_ROW,
                "finetune": init,
                "seed": seed,
                "output_dir": str(tmp_path / "ft" / f"{init or 'rnd'}{seed}"),
            }
            write_result(
                csv_path, row, None, "HeartLang_finetune_base", {}, roc=(labels, scores, ["A", "B", "C"])
            )
    rows = collect_probe_results(csv_path, tmp_path / "ft")
    assert len(rows) == 6 and all(r["macro_auc_ci"][0] < r["macro_auc"] < r["macro_auc_ci"][1] for r in rows)
    diffs = paired_differences(rows, n_boot=200)
    assert [d["seed"] for d in diffs] == [0, 1, 2] and all(d["paired"] for d in diffs)
    assert all(d["macro_auc_diff_ci"][0] > 0 for d in diffs)  # a strong signal vs almost none: excludes 0
    table = probe_table(rows, n_boot=200)
    assert "plain,1000,seed0" in table
    assert "| superdiagnostic | 0.1 | pre-trained | 0 | 150 | 0." in table
    means = [
        ln for ln in table.splitlines() if ln.startswith("| superdiagnostic | 0.1 | difference | 0, 1, 2 |")
    ]
    assert len(means) == 1 and " +- " in means[0]
    # The mean over seeds of the paired differences, with one interval (records resampled jointly).
    (m,) = seed_mean_differences(rows, n_boot=200)
    assert m["seeds"] == [0, 1, 2] and m["n_test"] == 150
    assert m["macro_auc_diff"] == pytest.approx(np.mean([d["macro_auc_diff"] for d in diffs]))
    assert m["per_seed_auc_diff"] == pytest.approx([d["macro_auc_diff"] for d in diffs])
    assert (
        m["macro_auc_diff_ci"][0] > 0
        and m["macro_auc_diff_ci"][0] < m["macro_auc_diff"] < m["macro_auc_diff_ci"][1]
    )
    assert "| superdiagnostic (n_test 150) | 0.1 | 0, 1, 2 | +0." in table
    assert seed_mean_differences([r for r in rows if r["seed"] == 0]) == []  # one seed: nothing to average
    # Runs that do not share a test set cannot be paired.
    other = write_result(csv_path, {**TASK_ROW, "finetune": "", "seed": 0, "output_dir": str(tmp_path / "ft" / "rnd0")},
                         None, "m", {}, roc=(labels[:100], rng.normal(size=(100, 3)), ["A", "B", "C"]))  # fmt: skip
    assert other.row["n_test"] == 100
    with pytest.raises(ValueError, match="do not share a test set"):
        paired_differences(collect_probe_results(csv_path, tmp_path / "ft"))


# ------------------------------------------------------------------------------------------------- plots
def _write_log(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


VQ_LOG = [
    {"epoch": e, "n_parameters": 10, "train_loss": 1.0 / (e + 1), "train_quant_loss": 0.1, "train_rec_loss": 0.5,
     "train_lr": 1e-3, "train_ema_unused_codes": 20 - e, "train_ema_perplexity": 5.0 + e,
     **({"val_quant_loss": 0.2, "val_rec_loss": 0.4, "val_unused_codes": 19, "val_perplexity": 7.0} if e == 2 else {})}
    for e in range(3)
]  # fmt: skip
PRETRAIN_LOG = [
    {"epoch": e, "train_loss": 4.0 - e, "train_mlm_acc": 0.1 * e, "train_grad_norm": 1.0, "train_lr": 1e-3,
     "val_loss": 4.1 - e, "val_mlm_acc": 0.1 * e}
    for e in range(3)
]  # fmt: skip
PROBE_LOG = [
    {"epoch": e, "train_loss": 0.7, "train_lr": 5e-3, "val_loss": 0.6, "val_macro_auc": None if e == 0 else 0.6 + e / 10,
     "val_macro_f1": 0.1, "val_accuracy": 0.0, "val_n_undefined_auc": 0, "best_val_auc": 0.7}
    for e in range(3)
]  # fmt: skip


def test_series_grouping_keeps_quantities_apart():
    groups = plots.group_series(PRETRAIN_LOG)
    assert list(groups) == ["loss", "mlm_acc", "grad_norm", "lr"]  # loss and accuracy: different panels
    assert set(groups["loss"]) == {"train", "val"}  # train and val of one quantity: one panel
    vq = plots.group_series(VQ_LOG)
    assert set(vq["unused_codes"]) == {"train (EMA)", "val"} and vq["unused_codes"]["val"] == ([3], [19.0])
    assert "n_parameters" not in vq and "epoch" not in vq
    probe = plots.group_series(PROBE_LOG)
    assert probe["macro_auc"]["val"][0] == [2, 3]  # the null (NaN) epoch is skipped
    assert set(probe["macro_auc"]) == {"val", "best val"}


def test_training_curves_one_panel_per_quantity(tmp_path):
    vq = _write_log(tmp_path / "vq.txt", VQ_LOG)
    pt = _write_log(tmp_path / "pt.txt", PRETRAIN_LOG)
    png, n_axes = _axes_count(
        lambda: plots.plot_training_curves({"VQ-HBR": vq, "pre-training": pt}, tmp_path / "p" / "curves.png")
    )
    # VQ-HBR: loss, quant_loss, rec_loss, lr, unused_codes, perplexity; pre-training: loss, mlm_acc, grad_norm, lr.
    assert n_axes == 6 + 4
    assert imread(png).shape[2] in (3, 4)
    _, n_single = _axes_count(lambda: plots.plot_training_curves(pt, tmp_path / "one.png"))
    assert n_single == 4


def test_codebook_and_probe_plots(tmp_path):
    vq = _write_log(tmp_path / "vq.txt", VQ_LOG)
    png, n_axes = _axes_count(lambda: plots.plot_codebook_usage(vq, tmp_path / "usage.png"))
    assert png.is_file() and n_axes == 2
    with pytest.raises(ValueError, match="no codebook usage keys"):
        plots.plot_codebook_usage(_write_log(tmp_path / "pt.txt", PRETRAIN_LOG), tmp_path / "x.png")
    probes = {"super_pretrained_1": _write_log(tmp_path / "a.txt", PROBE_LOG), "super_random_1": PROBE_LOG}
    png, n_axes = _axes_count(lambda: plots.plot_probe_val_auc(probes, tmp_path / "auc.png"))
    assert png.is_file() and n_axes == 1
    png, n_axes = _axes_count(
        lambda: plots.plot_code_histogram(np.r_[np.zeros(3), np.arange(1, 30)], tmp_path / "h.png")
    )
    assert png.is_file() and n_axes == 2


def test_plot_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        plots.plot_training_curves(tmp_path / "nope.txt", tmp_path / "x.png")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty.txt: the log is empty"):
        plots.plot_training_curves(tmp_path / "empty.txt", tmp_path / "x.png")


def test_plot_roc_one_panel_per_class(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(200, 4))
    y[:, 3] = 0  # no positive: no ROC, but a panel that says so
    scores = y + rng.normal(0, 0.5, y.shape)
    png, n_axes = _axes_count(
        lambda: plots.plot_roc(y, scores, ["NORM", "MI", "STTC", "HYP"], tmp_path / "roc" / "r.png", "test")
    )
    assert png.is_file() and n_axes == 4
    # Single-label class ids are accepted too.
    ids = rng.integers(0, 3, size=60)
    png, n_axes = _axes_count(
        lambda: plots.plot_roc(ids, rng.normal(size=(60, 3)), ["a", "b", "c"], tmp_path / "s.png")
    )
    assert n_axes == 3
    with pytest.raises(ValueError, match="2 class names for 4 score columns"):
        plots.plot_roc(y, scores, ["a", "b"], tmp_path / "bad.png")


def test_plot_roc_matches_sklearn_auc(tmp_path):
    """The AUC printed in a panel is the one utils.metrics reports for that class."""
    from utils.metrics import per_class_auc

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(80, 2))
    scores = y * 0.8 + rng.normal(0, 0.7, y.shape)
    from matplotlib.figure import Figure

    titles = []
    orig = Figure.savefig

    def spy(self, *a, **k):
        titles.extend(ax.get_title() for ax in self.axes)
        return orig(self, *a, **k)

    Figure.savefig = spy
    try:
        plots.plot_roc(y, scores, ["a", "b"], tmp_path / "r.png")
    finally:
        Figure.savefig = orig
    aucs, _ = per_class_auc(y, scores)
    for title, auc in zip(titles, aucs):
        assert f"AUC {auc:.3f}" in title and not math.isnan(auc)


def test_command_line(tmp_path, capsys):
    from reporting.__main__ import main

    for name, log in (("vqhbr", VQ_LOG), ("pretrain", PRETRAIN_LOG), ("form_pretrained_0.1", PROBE_LOG)):
        (tmp_path / name).mkdir()
        _write_log(tmp_path / name / "log.txt", log)
    png, n_axes = _axes_count(
        lambda: Path(
            main(
                ["curves", str(tmp_path / "vqhbr"), str(tmp_path / "pretrain"), "-o", str(tmp_path / "c.png")]
            )
        )
    )
    assert png.is_file() and n_axes == 10
    assert Path(
        main(["codebook", str(tmp_path / "vqhbr" / "log.txt"), "-o", str(tmp_path / "u.png")])
    ).is_file()
    assert Path(
        main(["probes", str(tmp_path / "form_pretrained_0.1"), "-o", str(tmp_path / "p.png")])
    ).is_file()
    csv_path = tmp_path / "r.csv"
    write_result(
        csv_path, {**TASK_ROW, "output_dir": str(tmp_path / "ft" / "a")}, None, "HeartLang_finetune_base", {}
    )
    assert "| superdiagnostic | 0.1 | pre-trained | 0 | 2158 | 0.8123 | n/a |" in main(
        ["table", str(csv_path)]
    )
    with pytest.raises(FileNotFoundError, match="nope"):
        main(["curves", str(tmp_path / "nope"), "-o", str(tmp_path / "x.png")])


def test_the_caveat_counts_the_test_records_of_the_predictions(tmp_path):
    """A row written from predictions (``roc=``) without an ``n_test`` column of its own gets the caveat of
    its real test size: 150 records are not smoke size, 12 are."""
    row = {k: v for k, v in TASK_ROW.items() if k != "n_test"}
    for n, smoke in ((150, False), (12, True)):
        labels = np.array([[1, 0], [0, 1], [1, 1]] * (n // 3))
        scores = labels + np.random.default_rng(n).normal(0, 1, labels.shape)
        out = {**row, "output_dir": str(tmp_path / f"run{n}")}
        written = write_result(tmp_path / "r.csv", out, None, "HeartLang_finetune", {}, roc=(labels, scores, ["A", "B"]))
        assert int(written.row["n_test"]) == n
        assert ("n_test" in written.row["caveat"]) == smoke, written.row["caveat"]


def test_fold_mean_differences_pair_the_runs_of_each_seed_and_score_fold_by_fold(tmp_path):
    from reporting.tables import collect_probe_results, fold_mean_differences, fold_mean_table
    from utils.metrics import fold_mean_paired_seeds

    csv_path = tmp_path / "results" / "r.csv"
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]] * 6)
    folds = np.repeat([1, 2, 3], 8)
    probs = {}
    for init, finetune, noise in (("pre", "pre.pth", 0.3), ("rnd", "", 1.5)):
        for seed in (0, 1):
            scores = labels + np.random.default_rng(seed).normal(0, noise, labels.shape)
            row = {**TASK_ROW, "finetune": finetune, "seed": seed, "output_dir": str(tmp_path / f"{init}{seed}")}
            write_result(csv_path, row, None, "m", {}, roc=(labels, scores, ["NORM", "MI"]))
            probs[init, seed] = 1 / (1 + np.exp(-scores))  # what the predictions file stores (sigmoid)
    rows = collect_probe_results(csv_path)
    (d,) = fold_mean_differences(rows, {"superdiagnostic": folds}, n_boot=50)
    assert d["seeds"] == [0, 1] and d["n_folds"] == 3 and d["n_test"] == 24
    want = fold_mean_paired_seeds(labels, [probs["pre", s] for s in (0, 1)], [probs["rnd", s] for s in (0, 1)],
                                  folds, n_boot=50)  # fmt: skip
    assert d["macro_auc_diff"] == pytest.approx(want["macro_auc_diff"], abs=1e-6) and d["macro_auc_diff"] > 0
    assert fold_mean_differences(rows, {}, n_boot=50) == []  # no folds known for the task: no row
    assert "| superdiagnostic (24) | 0.1 | 3 | 2 |" in fold_mean_table([d])
