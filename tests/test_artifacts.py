"""The one artifact rule (utils/artifacts.py), hostile cases for every class it closes (docs/robustness.md):

* atomic writes: an interrupted or full-disk write never leaves a damaged file under the final name, and a
  symlink planted at an output path is replaced, never written through (unit level and in each stage);
* a reader checks its producer completed on the files there now: the QRS tokenizer refuses a PTB-XL folder
  an interrupted rerun left half old, half new, a file rewritten or truncated after completion, and an
  unfinished MIMIC batch; ``finished`` answers "is this run finished?";
* a step owns all its outputs: a rerun with other inputs removes every file of the earlier run;
* what defines an output is declared: integer (ADC count) arrays are refused by the tokenizer.
"""

from __future__ import annotations

import errno
import json
import shutil

import numpy as np
import pytest

import QRSTokenizer
from datasets.preprocess import csn, mimic, ptbxl
from datasets.preprocess.npy_writer import ChunkedNpyWriter
from datasets.qrs.parallel import tokenize_array
from datasets.synthetic.cohort import generate_mimic_like, generate_ptbxl_like, simulate_cohort
from tests.test_robustness_data import LEADS12, _csn_raw, _ecg, _set_gain, _wrsamp
from utils.artifacts import (
    IncompleteInputError,
    Step,
    copy_file,
    finished,
    require_complete,
    run_fingerprint,
    save_npy,
    write_json,
    write_text,
)
from utils.integrity import StaleOutputError


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def ptbxl_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("ptbxl_raw")
    generate_ptbxl_like(root, 24, seed=3)
    return root


@pytest.fixture
def praw(ptbxl_raw, tmp_path):
    shutil.copytree(ptbxl_raw, tmp_path / "raw")
    return tmp_path / "raw"


def _ptbxl(root, out):
    argv = ["--dataset_path", str(root), "--output_path", str(out), "--num_workers", "1", "--subsets",
            "superdiagnostic"]  # fmt: skip
    return ptbxl.main(argv)


def _tokenize(root, name, *extra):
    argv = ["--dataset_name", name, "--data_root", str(root), "--num_workers", "1", "--no_progress", *extra]
    return QRSTokenizer.main(QRSTokenizer.get_args_parser().parse_args(argv))


def _outside(tmp_path, content=b"precious"):
    """A file outside every output folder, and a symlink target that must never be written through."""
    victim = tmp_path / "elsewhere" / "victim.bin"
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_bytes(content)
    return victim


# ================================================================================ class: atomic writes
def test_writers_replace_a_planted_symlink_and_write_the_same_bytes(tmp_path):
    victim = _outside(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    for name, write in [("a.npy", lambda p: save_npy(p, x)), ("b.txt", lambda p: write_text(p, "hi")),
                        ("c.json", lambda p: write_json(p, {"k": 1})), ("d.bin", lambda p: copy_file(victim, p))]:  # fmt: skip
        (out / name).symlink_to(victim)
        write(out / name)
        assert not (out / name).is_symlink() and (out / name).is_file()
        assert victim.read_bytes() == b"precious"
    np.save(tmp_path / "ref.npy", x)
    assert (out / "a.npy").read_bytes() == (tmp_path / "ref.npy").read_bytes()
    assert (out / "c.json").read_text() == '{\n "k": 1\n}\n' and (out / "d.bin").read_bytes() == b"precious"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp left


def test_full_disk_during_a_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "x.npy"
    save_npy(target, np.ones(4))
    good = target.read_bytes()

    def full_disk(fh, arr, *a, **k):
        fh.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_npy(target, np.zeros(4))
    assert target.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_row_writer_publishes_only_on_close_and_never_through_a_symlink(tmp_path):
    victim = _outside(tmp_path)
    path = tmp_path / "out" / "train_data.npy"
    path.parent.mkdir()
    path.symlink_to(victim)
    w = ChunkedNpyWriter(path, 5, (2, 3), chunk_rows=2)
    for i in range(3):
        w.append(np.full((2, 3), i, np.float32))
    assert path.is_symlink()  # nothing published yet: an interrupted run leaves no array under the name
    assert w.close() == 3  # fewer rows than planned: shrunk, then renamed into place
    assert not path.is_symlink() and victim.read_bytes() == b"precious"
    assert np.load(path).shape == (3, 2, 3) and np.load(path)[2, 0, 0] == 2
    w2 = ChunkedNpyWriter(path, 4, (2, 3))
    w2.append(np.zeros((2, 3), np.float32))
    w2.abort()  # a crash: the old array stays, the temp file goes
    assert np.load(path).shape == (3, 2, 3) and sorted(p.name for p in path.parent.iterdir()) == [
        "train_data.npy"
    ]


def test_ptbxl_and_csn_replace_symlinks_planted_at_their_outputs(praw, tmp_path):
    victim = _outside(tmp_path)
    out = tmp_path / "ptb"
    sub = out / "superdiagnostic"
    sub.mkdir(parents=True)
    for name in ("train_data.npy", "val_labels.npy", "scaler.json", "classes.json"):
        (sub / name).symlink_to(victim)
    (out / "summary.json").symlink_to(victim)
    _ptbxl(praw, out)
    assert victim.read_bytes() == b"precious"
    assert not any(p.is_symlink() for p in [*sub.iterdir(), out / "summary.json"])
    assert np.load(sub / "train_data.npy").shape[1:] == (12, 1000)
    raw, cout = _csn_raw(tmp_path), tmp_path / "csn"
    (cout / "splits").mkdir(parents=True)
    for name in ("test_records.json", "skipped_records.csv", "splits/val.csv", "train_data.npy"):
        (cout / name).symlink_to(victim)
    csn.main(["--dataset_path", str(raw), "--output_path", str(cout), "--num_workers", "1"])
    assert victim.read_bytes() == b"precious" and not any(p.is_symlink() for p in cout.rglob("*"))


def test_tokenizer_replaces_symlinks_at_its_outputs_and_copied_side_files(tmp_path):
    victim = _outside(tmp_path)
    src = tmp_path / "D" / "sub"
    src.mkdir(parents=True)
    np.save(src / "train_data.npy", simulate_cohort(3, seed=5)["signals"])
    np.save(src / "train_labels.npy", np.eye(3, dtype=np.int64))
    dst = tmp_path / "D_QRS" / "sub"
    dst.mkdir(parents=True)
    for name in (
        "train_data.npy",
        "train_data_in_chans.npy",
        "train_labels.npy",
        "train_tokenizer_summary.json",
    ):
        (dst / name).symlink_to(victim)
    _tokenize(tmp_path, "D")
    assert victim.read_bytes() == b"precious" and not any(p.is_symlink() for p in dst.iterdir())
    assert np.load(dst / "train_data.npy").shape == (3, 256, 96)
    assert np.array_equal(np.load(dst / "train_labels.npy"), np.eye(3, dtype=np.int64))


# ====================================================================== class: a reader checks its producer
def _interrupted_ptbxl_rerun(praw, out, monkeypatch):
    """A completed PTB-XL folder, then a rerun on changed records killed after the train split was written:
    new train split, old val/test and scaler."""
    _ptbxl(praw, out)
    old_val = (out / "superdiagnostic" / "val_data.npy").read_bytes()
    _set_gain(praw / "records100/00000/00003_lr.hea", "500.0")
    real = ptbxl.save_labelled_split
    calls = []

    def dies_after_train(folder, split, *a, **k):
        if split != "train":
            raise KeyboardInterrupt("killed")
        calls.append(split)
        return real(folder, split, *a, **k)

    monkeypatch.setattr(ptbxl, "save_labelled_split", dies_after_train)
    with pytest.raises(KeyboardInterrupt):
        _ptbxl(praw, out)
    monkeypatch.setattr(ptbxl, "save_labelled_split", real)
    return calls, old_val


def test_tokenizer_refuses_a_ptbxl_folder_left_half_old_half_new(praw, tmp_path, monkeypatch):
    out = tmp_path / "PTBXL"
    calls, _ = _interrupted_ptbxl_rerun(praw, out, monkeypatch)
    assert calls == ["train"]
    sub = out / "superdiagnostic"
    with pytest.raises(IncompleteInputError, match=rf"{sub} is not a finished output of ptbxl_preprocess"):
        _tokenize(tmp_path, "PTBXL")
    assert not (tmp_path / "PTBXL_QRS" / "superdiagnostic" / "train_data.npy").exists()
    _ptbxl(praw, out)  # the rerun the message asks for completes the folder; then it is read
    summary = _tokenize(tmp_path, "PTBXL")
    assert summary["records"] == sum(len(np.load(sub / f"{s}_data.npy")) for s in ("train", "val", "test"))


def test_tokenizer_refuses_preprocessed_files_rewritten_or_truncated_after_completion(praw, tmp_path):
    out = tmp_path / "PTBXL"
    _ptbxl(praw, out)
    sub = out / "superdiagnostic"
    x = np.load(sub / "val_data.npy")
    np.save(sub / "val_data.npy", x[::-1].copy())  # same size and shape, other content
    with pytest.raises(IncompleteInputError, match=r"val_data.npy was rewritten after the step completed"):
        _tokenize(tmp_path, "PTBXL")
    _ptbxl(praw, out)  # the producer sees it too and redoes the folder
    good = (sub / "scaler.json").read_text()
    (sub / "scaler.json").write_text(good[:5])
    with pytest.raises(IncompleteInputError, match=r"scaler.json: \d+ bytes, \d+ when it was completed"):
        _tokenize(tmp_path, "PTBXL")


def test_tokenizer_refuses_a_mimic_folder_with_an_unfinished_batch(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    generate_mimic_like(raw, 6, seed=3)
    out = tmp_path / "MIMIC"
    monkeypatch.setenv(mimic.ABORT_ENV, "4")
    argv = ["--dataset_path", str(raw), "--output_path", str(out), "--num_workers", "1", "--batch_size", "3"]
    with pytest.raises(mimic.SimulatedCrash):
        mimic.main(argv)
    assert (out / "batch_0" / "DONE.json").is_file() and (out / "batch_1.tmp").is_dir()
    with pytest.raises(
        IncompleteInputError, match=r"batch_1.tmp is a batch the preprocessing did not finish"
    ):
        _tokenize(tmp_path, "MIMIC")
    with pytest.raises(
        IncompleteInputError, match=r"batch_1.tmp is not a finished output of mimic_preprocess"
    ):
        require_complete(out / "batch_1.tmp", ["DONE.json"], nests={"DONE.json": "stamp"})
    monkeypatch.delenv(mimic.ABORT_ENV)
    done = mimic.main(argv)
    assert _tokenize(tmp_path, "MIMIC")["records"] == sum(done["records_out"].values())


def test_finished_answers_for_a_run_killed_after_a_few_epochs(tmp_path):
    """The API a training run uses: begin at the start (checkpoints kept), complete after the last epoch."""
    run = Step("pretrain", tmp_path, "run.json", {"epochs": 3}, {"dataset": "d1"}, ("checkpoint-*.pth",),
               keep_outputs=True)  # fmt: skip
    (tmp_path / "checkpoint-0.pth").write_bytes(b"w0")
    run.begin(extra={"fingerprint": run_fingerprint(run.settings, run.inputs)})
    assert (tmp_path / "checkpoint-0.pth").is_file()  # a training run resumes from its checkpoints
    ok, why = finished(tmp_path, "run.json")
    assert not ok and "still being written" in why and str(tmp_path) in why
    (tmp_path / "checkpoint-2.pth").write_bytes(b"w2")
    run.complete()
    assert finished(tmp_path, "run.json") == (True, "")
    (tmp_path / "checkpoint-2.pth").write_bytes(b"other")
    ok, why = finished(tmp_path, "run.json")
    assert not ok and "checkpoint-2.pth" in why
    assert finished(tmp_path / "none", "run.json") == (False, f"{tmp_path / 'none' / 'run.json'} is missing")
    assert run_fingerprint({"a": 1}, {}) == run_fingerprint({"a": 1}, {}) != run_fingerprint({"a": 2}, {})


def test_step_decides_reuse_redo_with_reasons_and_refuse(tmp_path):
    def step(seed=0, on_change="redo"):
        return Step("s", tmp_path, "rec.json", {"seed": seed}, {"in": "a"}, ("x.npy",), on_change=on_change)

    assert step().decide().fresh
    step().begin()
    assert step().decide().reasons[0].startswith("an earlier run did not finish (rec.json says running")
    save_npy(tmp_path / "x.npy", np.zeros(3))
    step().complete()
    assert step().decide().reuse
    assert step(seed=1).decide().reasons == ("setting seed: 0 -> 1",)
    with pytest.raises(StaleOutputError, match="setting seed: 0 -> 1"):
        step(seed=1, on_change="refuse").decide()
    with open(tmp_path / "x.npy", "r+b") as fh:
        fh.truncate(90)
    assert step().decide().reasons[0].startswith(f"damaged output {tmp_path / 'x.npy'}: 90 bytes")
    (tmp_path / "rec.json").write_text("{trunc")
    with pytest.raises(StaleOutputError, match="rec.json is damaged"):
        step().decide()


# ======================================================================== class: a step owns its outputs
def test_step_rerun_removes_every_file_of_the_earlier_run(tmp_path):
    old = Step("s", tmp_path, "rec.json", {"v": 1}, {}, ("a.npy", "extra_*.csv"))
    old.begin()
    save_npy(tmp_path / "a.npy", np.zeros(2))
    write_text(tmp_path / "extra_1.csv", "x")
    write_text(tmp_path / "user_notes.txt", "mine")
    old.complete()
    (tmp_path / ".a.npy.abc123.tmp").write_bytes(b"left by a crash")
    new = Step("s", tmp_path, "rec.json", {"v": 2}, {}, ("a.npy",))  # declares fewer outputs
    new.begin()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.json", "user_notes.txt"]


def test_a_record_naming_files_outside_its_folder_never_removes_them(tmp_path):
    victim = _outside(tmp_path)
    folder = tmp_path / "out"
    folder.mkdir()
    forged = {"stage": "s", "state": "complete", "settings": {}, "inputs": {},
              "outputs": [{"name": "../elsewhere/victim.bin", "size": 8}, {"name": str(victim), "size": 8}]}  # fmt: skip
    write_json(folder / "rec.json", forged)
    Step("s", folder, "rec.json", {"v": 1}, {}, ("a.npy",)).begin()
    assert victim.read_bytes() == b"precious"


def test_mimic_replaces_a_batch_folder_symlinked_elsewhere(tmp_path):
    raw = tmp_path / "raw"
    generate_mimic_like(raw, 3, seed=4)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "train_data.npy").write_bytes(b"precious")
    out = tmp_path / "MIMIC"
    out.mkdir()
    (out / "batch_0").symlink_to(elsewhere, target_is_directory=True)
    (out / "summary.json").symlink_to(elsewhere / "train_data.npy")
    mimic.main(["--dataset_path", str(raw), "--output_path", str(out), "--num_workers", "1"])
    assert (elsewhere / "train_data.npy").read_bytes() == b"precious" and sorted(elsewhere.iterdir()) == [
        elsewhere / "train_data.npy"
    ]
    assert not (out / "batch_0").is_symlink() and (out / "batch_0" / "DONE.json").is_file()
    assert not (out / "summary.json").is_symlink()


def test_export_rerun_without_labels_removes_the_earlier_labels(tmp_path):
    export_features = pytest.importorskip("export_features")
    from tests._train_data import make_downstream
    from tests.test_export_features import _save_ours

    _save_ours(tmp_path / "m.pth", "HeartLang_tiny")
    labelled = make_downstream(tmp_path / "a", n_train=2, n_val=2, n_test=3, n_classes=2)
    unlabelled = tmp_path / "b"
    shutil.copytree(labelled, unlabelled)
    (unlabelled / "test_labels.npy").unlink()
    out = tmp_path / "f" / "feats.npy"
    victim = _outside(tmp_path)
    out.parent.mkdir()
    out.symlink_to(victim)  # planted at the output: replaced, never written through

    def export(data):
        args = ["--checkpoint", str(tmp_path / "m.pth"), "--dataset_dir", str(data), "--output", str(out),
                "--device", "cpu", "--pool", "cls"]  # fmt: skip
        export_features.main(export_features.get_args_parser().parse_args(args))
        return json.loads(out.with_suffix(".json").read_text())

    assert "labels" in export(labelled) and (tmp_path / "f" / "feats_labels.npy").is_file()
    assert victim.read_bytes() == b"precious" and not out.is_symlink()
    meta = export(unlabelled)
    assert "labels" not in meta and not (tmp_path / "f" / "feats_labels.npy").exists()
    assert [o["name"] for o in meta["stamp"]["outputs"]] == ["feats.npy"]


def test_csn_rerun_as_cpsc_leaves_no_class_names_of_the_earlier_source(tmp_path):
    from datasets.preprocess import cpsc2018

    out = tmp_path / "o"
    csn.main(["--dataset_path", str(_csn_raw(tmp_path)), "--output_path", str(out), "--num_workers", "1"])
    assert (out / "class_names.json").is_file()
    raw = tmp_path / "cpsc_raw"
    for i in range(8):
        _wrsamp(raw, f"R{i:03d}", _ecg(i), 500, LEADS12, ["Dx: "])
    rows = ["Recording,First_label,Second_label,Third_label"] + [f"R{i:03d},{1 + i % 2},," for i in range(8)]
    (raw / "REFERENCE.csv").write_text("\n".join(rows) + "\n")
    cpsc2018.main(["--dataset_path", str(raw), "--output_path", str(out), "--num_workers", "1"])
    assert not (out / "class_names.json").exists()


def test_tokenizer_rerun_on_clean_input_removes_the_nonfinite_report(tmp_path):
    x = simulate_cohort(3, seed=7)["signals"]
    bad = x.copy()
    bad[1, 0, 100:110] = np.nan
    tokenize_array(bad, tmp_path, "train", num_workers=1, progress=False, verbose=False)
    assert (tmp_path / "train_nonfinite_records.csv").is_file()
    tokenize_array(x, tmp_path, "train", num_workers=1, progress=False, verbose=False)
    assert not (tmp_path / "train_nonfinite_records.csv").exists()


# ======================================================================= class: declared output specs
def test_tokenizer_refuses_integer_adc_counts(tmp_path):
    counts = (simulate_cohort(3, seed=5)["signals"] * 200).astype(np.int16)  # raw ADC counts, gain 200/mV
    with pytest.raises(ValueError, match=r"int16 samples; the tokenizer takes floating-point signals in mV"):
        tokenize_array(counts, tmp_path / "o", "train", num_workers=1, progress=False, verbose=False)
    src = tmp_path / "D" / "sub"
    src.mkdir(parents=True)
    np.save(src / "train_data.npy", counts)
    with pytest.raises(ValueError, match=rf"{src / 'train_data.npy'}: int16 samples"):
        _tokenize(tmp_path, "D")
    assert not (tmp_path / "D_QRS" / "sub" / "train_data.npy").exists()


def test_preprocessing_declares_what_its_arrays_are_and_the_tokenizer_records_it(praw, tmp_path):
    _ptbxl(praw, tmp_path / "PTBXL")
    stamp = json.loads((tmp_path / "PTBXL" / "superdiagnostic" / "preprocess_stamp.json").read_text())
    assert stamp["state"] == "complete" and stamp["specs"]["train_data.npy"]["dtype"] == "float32"
    assert "standardised" in stamp["specs"]["train_data.npy"]["unit"]
    _tokenize(tmp_path, "PTBXL")
    summary = json.loads(
        (tmp_path / "PTBXL_QRS" / "superdiagnostic" / "val_tokenizer_summary.json").read_text()
    )
    assert summary["stamp"]["specs"]["input"] == {"dtype": "float32", "unit": stamp["specs"]["val_data.npy"]["unit"],
                                                  "fs": 100}  # fmt: skip
    assert not (tmp_path / "PTBXL_QRS" / "superdiagnostic" / "preprocess_stamp.json").exists()


# ===================================================================== data stages do not load torch
def test_preprocessing_and_tokenizer_entry_modules_do_not_import_torch(repo_root):
    """No data stage imports torch unless it trains or embeds (~1 s start-up and ~190 MB per process)."""
    import subprocess
    import sys

    modules = ["mimic_preprocess", "QRSTokenizer", "datasets.preprocess.ptbxl", "datasets.preprocess.cpsc2018",
               "datasets.preprocess.csn", "datasets.qrs.cli", "datasets.synthetic.cohort", "utils.artifacts"]  # fmt: skip
    code = f"import importlib, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
    code += "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout[:300]


def test_interrupted_tokenizer_rerun_leaves_no_split_that_looks_finished(tmp_path, monkeypatch):
    from datasets.qrs import parallel

    x = simulate_cohort(6, seed=9)["signals"]
    kw = dict(num_workers=1, chunk_size=2, progress=False, verbose=False)
    tokenize_array(x[:3], tmp_path, "train", **kw)
    real = parallel._tokenize_chunk

    def dies_on_second_chunk(source, start, *a):
        if start >= 2:
            raise OSError(28, "No space left on device")
        return real(source, start, *a)

    monkeypatch.setattr(parallel, "_tokenize_chunk", dies_on_second_chunk)
    with pytest.raises(OSError, match="No space left"):
        tokenize_array(x, tmp_path, "train", **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_tokenizer_summary.json"]  # no array, no temp
    assert json.loads((tmp_path / "train_tokenizer_summary.json").read_text())["stamp"]["state"] == "running"
    settings = parallel.tokenizer_settings(range(12), x.shape, "nct", 100, 256, 96, "official", "xqrs_fast")
    decision = parallel.split_step(tmp_path, "train", settings).decide()
    assert not decision.reuse and decision.reasons[0].startswith("an earlier run did not finish")


def test_training_data_refuses_sentences_changed_after_tokenisation(tmp_path):
    from sentences.dataset import SentenceDataset

    x = simulate_cohort(4, seed=3)["signals"]
    tokenize_array(x, tmp_path, "train", num_workers=1, progress=False, verbose=False)
    assert len(SentenceDataset(tmp_path, "train", with_labels=False)) == 4
    chans = np.load(tmp_path / "train_data_in_chans.npy")
    np.save(tmp_path / "train_data_in_chans.npy", chans[::-1].copy())  # another run's ids, same shape
    with pytest.raises(IncompleteInputError, match=r"train_data_in_chans.npy was rewritten after the step"):
        SentenceDataset(tmp_path, "train", with_labels=False)
    summary = json.loads((tmp_path / "train_tokenizer_summary.json").read_text())
    summary["stamp"]["state"] = "running"  # what a tokenisation killed half-way leaves
    write_json(tmp_path / "train_tokenizer_summary.json", summary)
    with pytest.raises(IncompleteInputError, match=rf"{tmp_path} is not a finished output of qrs_tokenizer"):
        SentenceDataset(tmp_path, "train", with_labels=False)
