"""QRS tokenizer at dataset scale: memmap outputs, worker determinism, layouts, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from datasets.qrs.cli import default_output_name, find_subsets, parse_channels
from datasets.qrs.parallel import infer_layout, tokenize_array


@pytest.fixture(scope="module")
def ref(ref_fixtures):
    with np.load(ref_fixtures / "tokenizer_ptbxl.npz") as z:
        return {k: z[k] for k in z.files}


def _load(out, split="train", mmap=True):
    mode = "r" if mmap else None
    return [
        np.load(out / f"{split}{s}", mmap_mode=mode)
        for s in ("_data.npy", "_data_in_chans.npy", "_data_in_times.npy")
    ]


def test_tokenize_array_workers_layouts_and_memmap(ref, tmp_path):
    """1 worker on (N,12,T) == 2 workers on (N,T,12) == the original's files; readable with mmap."""
    x = ref["input"][:24]
    np.save(tmp_path / "ntc.npy", x.transpose(0, 2, 1))
    s1 = tokenize_array(
        x, tmp_path / "w1", "train", num_workers=1, chunk_size=5, progress=False, verbose=False
    )
    s2 = tokenize_array(
        tmp_path / "ntc.npy", tmp_path / "w2", "train", num_workers=2, chunk_size=5, progress=False
    )
    a, b = _load(tmp_path / "w1"), _load(tmp_path / "w2")
    for arr_a, arr_b, key in zip(a, b, ("data", "in_chans", "in_times")):
        assert isinstance(arr_b, np.memmap)
        assert arr_a.dtype == arr_b.dtype == ref[f"all12_{key}"].dtype
        assert arr_a.tobytes() == arr_b.tobytes() == ref[f"all12_{key}"][:24].tobytes()
    assert s1["input_layout"] == "nct" and s2["input_layout"] == "ntc" and s2["num_workers"] == 2
    assert not list((tmp_path / "w2").glob(".*partial"))  # temp names renamed away
    on_disk = json.loads((tmp_path / "w2" / "train_tokenizer_summary.json").read_text())
    assert on_disk["records"] == 24 and on_disk["words_per_sentence"] == s1["words_per_sentence"]
    nb = ref["all12_num_beats"][:24] * 12
    assert on_disk["truncated_sentences"] == int((nb > 256).sum())
    assert on_disk["words_per_sentence"]["max"] == min(int(nb.max()), 256)
    assert on_disk["words_per_sentence"]["median"] == float(np.median(np.minimum(nb, 256)))


def test_summary_counts_edge_cases(ref, tmp_path):
    x = np.concatenate([ref["edge_input"], np.full((1, 12, 1000), 2.5, np.float32)])  # + a constant record
    s = tokenize_array(x, tmp_path, "val", num_workers=1, progress=False, verbose=False)
    assert s["records"] == 5 and s["empty_sentences"] == 3 and s["truncated_sentences"] == 1
    assert s["empty_by_reason"] == {"flat_detection_lead": 2, "nonfinite_detection_lead": 1}
    assert s["records_with_nonfinite_input"] == 2 and s["records_with_nonfinite_words"] == 1
    assert s["empty_examples"]["flat_detection_lead"] == [0, 4]
    assert s["words_per_sentence"]["min"] == 0 and s["words_per_sentence"]["max"] == 256


def test_infer_layout_errors():
    assert infer_layout((3, 12, 1000)) == "nct" and infer_layout((3, 1000, 12)) == "ntc"
    assert infer_layout((3, 6, 1000), n_leads=6) == "nct"
    with pytest.raises(ValueError, match="ambiguous"):
        infer_layout((3, 12, 12))
    assert infer_layout((3, 12, 12), layout="ntc") == "ntc"
    with pytest.raises(ValueError, match="no axis of 12 leads"):
        infer_layout((3, 8, 1000))
    with pytest.raises(ValueError, match="3-d"):
        infer_layout((12, 1000))


def test_default_output_name_keeps_lead_subsets_apart():
    assert default_output_name("PTBXL", None) == "PTBXL_QRS"
    assert default_output_name("PTBXL", [str(i) for i in range(12)]) == "PTBXL_QRS"
    assert default_output_name("PTBXL", ["0", "1", "7"]) == "PTBXL_QRS_3Leads"  # what the 3-lead scripts read
    assert default_output_name("PTBXL", ["I,II,V2"]) == "PTBXL_QRS_3Leads"
    assert default_output_name("PTBXL", ["0"]) == "PTBXL_QRS_1Leads"
    assert default_output_name("PTBXL", ["0", "1", "2", "3", "4", "5"]) == "PTBXL_QRS_6Leads"
    assert default_output_name("PTBXL", ["0", "6"]) == "PTBXL_QRS_I-V1"
    assert default_output_name("PTBXL", ["7", "1", "0"]) == "PTBXL_QRS_V2-II-I"  # another order: other words


def test_parse_channels():
    assert parse_channels(None) is None
    assert parse_channels(["0", "1,7"]) == [0, 1, 7]
    assert parse_channels(["I,II", "v2"]) == [0, 1, 7]
    with pytest.raises(ValueError, match="unknown lead"):
        parse_channels(["X1"])
    with pytest.raises(ValueError, match="twice"):
        parse_channels(["0", "I"])


def _make_dataset(root, ref):
    ptb = root / "PTB-XL" / "super"
    ptb.mkdir(parents=True)
    np.save(ptb / "train_data.npy", ref["input"][:6].transpose(0, 2, 1))  # original PTB-XL layout
    np.save(ptb / "train_labels.npy", np.eye(6, 5, dtype=np.int64))
    np.save(ptb / "test_data.npy", ref["input"][6:10])  # our preprocessors' layout
    np.save(ptb / "test_labels.npy", np.ones((4, 5), dtype=np.int64))
    (ptb / "classes.json").write_text('["CD", "HYP", "MI", "NORM", "STTC"]')
    for k in (0, 10, 2):
        b = root / "MIMIC-IV" / f"batch_{k}"
        b.mkdir(parents=True)
        np.save(b / "train_data.npy", ref["input"][k : k + 2])
        np.save(b / "val_data.npy", ref["input"][k + 2 : k + 3])


def test_cli_end_to_end(ref, tmp_path, repo_root):
    _make_dataset(tmp_path, ref)
    cmd = [
        sys.executable,
        "QRSTokenizer.py",
        "--data_root",
        str(tmp_path),
        "--num_workers",
        "2",
        "--no_progress",
    ]
    run = subprocess.run(
        cmd + ["--dataset_name", "PTB-XL", "--used_channels", "0", "1", "7", "--plot", "1"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    # a lead subset gets its own folder by default: the full-lead PTB-XL_QRS is never replaced by it
    assert not (tmp_path / "PTB-XL_QRS").exists()
    out = tmp_path / "PTB-XL_QRS_3Leads" / "super"
    for split, sl in (("train", slice(0, 6)), ("test", slice(6, 10))):
        data, chans, times = _load(out, split)
        assert data.tobytes() == ref["leads_0_1_7_data"][sl].tobytes()
        assert chans.tobytes() == ref["leads_0_1_7_in_chans"][sl].tobytes()
        assert times.tobytes() == ref["leads_0_1_7_in_times"][sl].tobytes()
    assert np.array_equal(np.load(out / "train_labels.npy"), np.eye(6, 5, dtype=np.int64))
    assert np.array_equal(np.load(out / "test_labels.npy"), np.ones((4, 5), dtype=np.int64))
    assert (out / "classes.json").read_text() == '["CD", "HYP", "MI", "NORM", "STTC"]'
    assert len(list((tmp_path / "PTB-XL_QRS_3Leads" / "plots").glob("*.png"))) == 1
    total = json.loads((tmp_path / "PTB-XL_QRS_3Leads" / "tokenizer_summary.json").read_text())
    assert total["records"] == 10 and set(total["splits"]) == {"super/train", "super/test"}

    # Re-running with the same settings skips finished splits; other settings redo them.
    again = subprocess.run(
        cmd + ["--dataset_name", "PTB-XL", "--used_channels", "0,1,7"],
        cwd=repo_root,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0 and again.stdout.count("skipped") == 2

    # MIMIC-IV batches: natural order, train/val only, no labels to copy.
    assert find_subsets(tmp_path / "MIMIC-IV") == ["batch_0", "batch_2", "batch_10"]
    mimic = subprocess.run(
        cmd + ["--dataset_name", "MIMIC-IV"], cwd=repo_root, capture_output=True, text=True
    )
    assert mimic.returncode == 0, mimic.stderr
    data, chans, _ = _load(tmp_path / "MIMIC-IV_QRS" / "batch_10", "train", mmap=False)
    assert data.tobytes() == ref["all12_data"][10:12].tobytes() and chans.dtype == np.int32


def test_cli_reports_bad_layout(tmp_path, repo_root):
    d = tmp_path / "BAD" / "s"
    d.mkdir(parents=True)
    np.save(d / "train_data.npy", np.zeros((2, 8, 1000), dtype=np.float32))
    run = subprocess.run(
        [
            sys.executable,
            "QRSTokenizer.py",
            "--dataset_name",
            "BAD",
            "--data_root",
            str(tmp_path),
            "--no_progress",
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0 and "no axis of 12 leads" in run.stderr
    assert not (tmp_path / "BAD_QRS" / "s" / "train_data.npy").exists()


def test_summary_lists_detector_errors(tmp_path):
    # Two things the original crashed on: fewer than 5 records (its unconditional
    # np.random.choice(bs, 5, replace=False)) and records too short for xqrs. Ours finishes and reports.
    x = np.random.default_rng(0).normal(size=(3, 12, 10)).astype(np.float32)  # too short for xqrs
    s = tokenize_array(x, tmp_path, "train", num_workers=1, chunk_size=2, progress=False, verbose=False)
    assert s["empty_by_reason"] == {"detector_error": 3} and s["empty_examples"]["detector_error"] == [
        0,
        1,
        2,
    ]
    assert [e["index"] for e in s["detector_errors"]] == [0, 1, 2] and "padlen" in s["detector_errors"][0][
        "error"
    ]
    assert not np.load(tmp_path / "train_data.npy").any()


def test_empty_split_and_edge_plots(ref, tmp_path):
    s = tokenize_array(np.zeros((0, 12, 1000), np.float32), tmp_path, "val", progress=False, verbose=False)
    data, chans, _ = _load(tmp_path, "val", mmap=False)
    assert s["records"] == 0 and data.shape == (0, 256, 96) and chans.shape == (0, 256)

    from datasets.qrs.plot import plot_record

    for k in (0, 3):  # flat record (no R peak) and a record with NaN words: plotting must not fail
        png = plot_record(ref["edge_input"][k], tmp_path / f"edge{k}.png", title=str(ref["edge_names"][k]))
        assert png.stat().st_size > 10_000
