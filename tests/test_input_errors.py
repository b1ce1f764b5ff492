"""Errors a user can act on: each bad input is refused where it enters, naming the file (record, argument)
and the rule it breaks (docs/robustness.md "Errors and what they mean"). Every input is a tiny file in
tmp_path; the Hub is replaced by a local function (no network)."""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import auto_resume, build_state, save_checkpoint
from modeling import create_model, load_model
from modeling.checkpoint import CheckpointError, read_checkpoint
from tests._train_data import make_downstream, make_pretrain
from utils.integrity import NonFiniteError, sha256_file

PT, FT = "run_heartlang_pretraining.py", "run_class_finetuning.py"
COMMON = ["--batch_size", "4", "--num_workers", "0", "--warmup_epochs", "1", "--epochs", "1"]


def _main(script: str, argv: list) -> dict:
    os.environ["HEARTLANG_NO_PROGRESS"] = "1"
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        os.environ.pop(var, None)
    module = importlib.import_module(script[:-3])
    return module.main(module.get_args_parser().parse_args([str(a) for a in argv]))


# ------------------------------------------------------------------------------------ checkpoints
def _not_checkpoints(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the message must say)."""
    out = {}
    (tmp_path / "config.json").write_text(json.dumps({"model": "HeartLang"}))
    out["json"] = (tmp_path / "config.json", "is a JSON file, not a file written by torch.save")
    np.save(tmp_path / "arr.npy", np.ones(3))
    out["npy"] = (tmp_path / "arr.npy", "is a NumPy .npy array")
    np.savez(tmp_path / "arr.npz", a=np.ones(3))
    out["npz"] = (tmp_path / "arr.npz", "a zip archive but not a PyTorch checkpoint (a NumPy .npz archive?)")
    (tmp_path / "empty.pth").write_bytes(b"")
    out["empty"] = (tmp_path / "empty.pth", "is empty (0 bytes)")
    torch.save({"model": create_model("HeartLang_tiny").state_dict()}, tmp_path / "full.pth")
    whole = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[: len(whole) // 2])
    out["truncated"] = (tmp_path / "cut.pth", "is a truncated or corrupt zip archive")
    (tmp_path / "page.pth").write_text("<!DOCTYPE html><html>rate limited</html>")
    out["html"] = (tmp_path / "page.pth", "is an HTML/XML page (a failed download?)")
    torch.save({"model": {}, "extra": Path("x")}, tmp_path / "object.pth")
    out["object"] = (tmp_path / "object.pth", "holds a pickled Python object (pathlib.")
    return out


@pytest.mark.parametrize("kind", ["json", "npy", "npz", "empty", "truncated", "html", "object"])
def test_a_file_that_is_not_a_checkpoint_is_named_with_what_it_is(tmp_path, kind):
    path, said = _not_checkpoints(tmp_path)[kind]
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and said in msg
    assert (
        "weights_only=False" not in msg and "weights_only` set to `False`" not in msg
    )  # no "turn safety off"
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {path}")):  # the same via load_model
        load_model(path)


def test_a_json_file_as_finetune_is_refused_before_anything_is_written(tmp_path):
    down = make_downstream(tmp_path, n_train=4, n_val=2, n_test=2)
    bad = _not_checkpoints(tmp_path)["json"][0]
    argv = ["--model", "HeartLang_finetune_tiny", "--trainable", "linear", "--nb_classes", "3", "--is_binary",
            "--dataset_dir", down, "--finetune", bad, "--output_dir", tmp_path / "out", *COMMON]  # fmt: skip
    with pytest.raises(CheckpointError, match=rf"checkpoint {bad} is a JSON file"):
        _main(FT, argv)
    assert not (tmp_path / "out" / "log.txt").exists()


def test_a_folder_given_as_checkpoint_is_named(tmp_path):
    from modeling.hub import checkpoint_sha256

    with pytest.raises(FileNotFoundError, match=rf"checkpoint {tmp_path} is a folder, not a checkpoint file"):
        read_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"checkpoint {tmp_path} is a folder, not a checkpoint file"):
        checkpoint_sha256(tmp_path)  # what the run fingerprint hashes first


def test_nan_in_the_optimizer_state_of_a_resumed_checkpoint_names_the_file_and_parameter(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = build_state(model, 0, optimizer=opt)
    state["optimizer"]["state"][1]["exp_avg_sq"][0] = float("nan")  # parameter 1 = 0.bias
    path = save_checkpoint(tmp_path, "checkpoint.pth", state)
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with pytest.raises(
        NonFiniteError, match=rf"checkpoint {path}: optimizer state exp_avg_sq of parameter 0.bias"
    ):
        auto_resume(tmp_path, fresh, torch.optim.AdamW(fresh.parameters(), lr=0.1))
    state["optimizer"]["state"][1]["exp_avg_sq"][0] = 1.0
    save_checkpoint(tmp_path, "checkpoint.pth", state)
    assert auto_resume(tmp_path, fresh, torch.optim.AdamW(fresh.parameters(), lr=0.1))[0] == 1


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 0.0])
def test_a_bad_amp_loss_scale_in_a_resumed_checkpoint_names_the_file(tmp_path, scale):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    state = build_state(model, 0, scaler=scaler)
    assert state["scaler"]["scale"] == 1024.0
    state["scaler"]["scale"] = scale
    path = save_checkpoint(tmp_path, "checkpoint.pth", state)
    with pytest.raises(NonFiniteError, match=rf"checkpoint {path}: AMP loss scale is {scale}"):
        auto_resume(tmp_path, torch.nn.Sequential(torch.nn.Linear(3, 2)), scaler=torch.amp.GradScaler("cpu"))
    state["scaler"]["scale"] = 512.0
    save_checkpoint(tmp_path, "checkpoint.pth", state)
    fresh = torch.amp.GradScaler("cpu")
    assert auto_resume(tmp_path, torch.nn.Sequential(torch.nn.Linear(3, 2)), scaler=fresh)[0] == 1
    assert fresh.get_scale() == 512.0


# ------------------------------------------------------------------------------------------ hf://
REPO = "someone/heartlang-test"


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """huggingface_hub.hf_hub_download replaced by a lookup in a local folder (records every call)."""
    hf = pytest.importorskip("huggingface_hub")
    store = tmp_path / "hub_store"
    store.mkdir()
    calls = []

    def download(repo_id, filename, revision=None, **kwargs):
        calls.append((repo_id, filename, revision))
        path = store / repo_id.replace("/", "--") / filename
        if not path.is_file():
            raise hf.errors.EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(path)

    monkeypatch.setattr(hf, "hf_hub_download", download)

    def put(filename: str, state: dict) -> Path:
        path = store / REPO.replace("/", "--") / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
        return path

    return put, calls


def test_hf_tokenizer_weight_trains_and_is_fingerprinted_by_the_resolved_file(tmp_path, fake_hub):
    put, calls = fake_hub
    torch.manual_seed(0)
    vq = put("vq.pth", {"model": create_model("vqhbr_tiny").state_dict()})
    pre = make_pretrain(tmp_path, n_train=8, n_val=4)
    argv = ["--model", "HeartLang_tiny", "--tokenizer_model", "vqhbr_tiny", "--tokenizer_weight",
            f"hf://{REPO}/vq.pth", "--dataset_dir", pre, "--output_dir", tmp_path / "pt", *COMMON]  # fmt: skip
    _main(PT, argv)
    record = json.loads((tmp_path / "pt" / "run.json").read_text())
    assert record["fingerprint"]["inputs"]["tokenizer_sha256"] == sha256_file(vq)
    assert calls and all(c[:2] == (REPO, "vq.pth") for c in calls)
    # the same file given as a local path is the same input: the finished run is recognised, not refused
    out = _main(PT, [*argv[:5], vq, *argv[6:]])
    assert out is not None

    # --finetune hf:// through the same resolver, fingerprinted by the resolved file
    hl = put("hl.pth", {"model": create_model("HeartLang_tiny").state_dict()})
    down = make_downstream(tmp_path, n_train=4, n_val=2, n_test=2)
    ft = ["--model", "HeartLang_finetune_tiny", "--trainable", "linear", "--nb_classes", "3", "--is_binary",
          "--dataset_dir", down, "--finetune", f"hf://{REPO}/hl.pth", "--output_dir", tmp_path / "ft", *COMMON]  # fmt: skip
    _main(FT, ft)
    record = json.loads((tmp_path / "ft" / "run.json").read_text())
    assert record["fingerprint"]["inputs"]["finetune_sha256"] == sha256_file(hl)


def test_hf_spec_of_a_missing_file_is_named(fake_hub):
    from modeling.hub import checkpoint_sha256

    with pytest.raises(FileNotFoundError, match=rf"hf://{REPO}/nope.pth: the repository has no such file"):
        checkpoint_sha256(f"hf://{REPO}/nope.pth")


# ---------------------------------------------------------------------------- generated scripts
def test_finetune_script_passes_a_checkpoint_path_with_spaces_as_one_argument(tmp_path, repo_root):
    """FINETUNE="<dir with space>/x.pth": one --finetune argument, and an output folder name without spaces."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "argv.jsonl"
    fake = bindir / "torchrun"
    fake.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    ckpt = tmp_path / "my runs" / "pre train" / "checkpoint-200.pth"
    script = repo_root / "scripts/finetune/PTBXL/12Leads/super/base_super_linear_prob.sh"
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", FINETUNE=str(ckpt), RATIOS="1")
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    train, evaluate = [json.loads(line) for line in log.read_text().splitlines()]
    assert train[train.index("--finetune") + 1] == str(ckpt), shlex.join(train)
    out_dir = train[train.index("--output_dir") + 1]
    assert " " not in out_dir and out_dir == evaluate[evaluate.index("--output_dir") + 1]
    assert "pre_train_checkpoint-200" in out_dir


# ----------------------------------------------------------------------------- sentence arrays
def _finetune_argv(down: Path, out: Path) -> list:
    return ["--model", "HeartLang_finetune_tiny", "--trainable", "linear", "--nb_classes", "3", "--is_binary",
            "--dataset_dir", down, "--output_dir", out, *COMMON]  # fmt: skip


def _rewrite(path: Path, fn) -> None:
    arr = np.load(path)
    np.save(path, fn(arr))


def test_truncated_data_file_is_named_with_its_expected_size(tmp_path):
    from sentences.dataset import build_sentence_dataset
    from utils.arrays import DataFileError

    down = make_downstream(tmp_path, n_train=4, n_val=2, n_test=2)
    path = down / "train_data.npy"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 1000])
    with pytest.raises(
        DataFileError, match=rf"{path}: truncated: its header says shape \(4, 256, 96\) float32"
    ):
        build_sentence_dataset(down, "train")
    path.write_text("train_data\n1,2,3\n")  # a CSV saved under the .npy name
    with pytest.raises(DataFileError, match=rf"{path}: not a .npy array file"):
        build_sentence_dataset(down, "train")


@pytest.mark.parametrize(
    "labels,said",
    [
        (lambda y: np.where(y == 1, 2, 0), r"row 0, column 0 holds 2"),  # class ids / counts
        (lambda y: np.where(y == 1, 1.0, np.nan), r"holds nan"),
        (lambda y: y - 1, r"holds -1"),  # -1 = unknown
        (lambda y: np.arange(len(y)) + 1, r"row 1 holds 2"),  # 1-D class indices, not 0/1 columns
    ],
)
def test_label_values_other_than_0_and_1_are_refused_when_the_labels_are_loaded(tmp_path, labels, said):
    from utils.arrays import DataFileError

    down = make_downstream(tmp_path, n_train=4, n_val=2, n_test=2)
    _rewrite(down / "val_labels.npy", labels)
    path = down / "val_labels.npy"
    with pytest.raises(DataFileError, match=rf"{path}: label values must be 0 or 1 .*({said})"):
        _main(FT, _finetune_argv(down, tmp_path / "out"))
    assert not (tmp_path / "out" / "log.txt").exists()


def test_words_of_another_length_are_refused_naming_the_file(tmp_path):
    from utils.arrays import DataFileError

    down = make_downstream(tmp_path, n_train=4, n_val=2, n_test=2)
    _rewrite(down / "train_data.npy", lambda x: x[:, :, :48])
    with pytest.raises(DataFileError, match=r"train_data.npy: words of 48 samples .* reads 96-sample words"):
        _main(FT, _finetune_argv(down, tmp_path / "out"))
    assert not (tmp_path / "out" / "log.txt").exists()


@pytest.mark.parametrize(
    "name,value,said",
    [
        (
            "in_times",
            20,
            r"second id 20 at row 3, word 5; --model HeartLang_finetune_tiny embeds second ids 0-15",
        ),
        (
            "in_chans",
            16,
            r"lead id 16 at row 3, word 5; --model HeartLang_finetune_tiny embeds lead ids 0-15",
        ),
        ("in_chans", -1, r"lead id -1 at row 3, word 5"),
    ],
)
def test_ids_beyond_the_models_tables_are_refused_before_training(tmp_path, name, value, said):
    from utils.arrays import DataFileError

    down = make_downstream(tmp_path, n_train=4, n_val=2, n_test=2)

    def poison(ids):
        ids[3, 5] = value
        return ids

    _rewrite(down / f"train_data_{name}.npy", poison)
    with pytest.raises(DataFileError, match=rf"train_data_{name}.npy: {said}"):
        _main(FT, _finetune_argv(down, tmp_path / "out"))
    assert not (tmp_path / "out" / "log.txt").exists()


def test_float_ids_are_refused(tmp_path):
    from sentences.dataset import SentenceDataset
    from utils.arrays import DataFileError

    down = make_downstream(tmp_path, n_train=4, n_val=2, n_test=2)
    _rewrite(down / "test_data_in_times.npy", lambda t: t.astype(np.float64))
    with pytest.raises(
        DataFileError, match=r"test_data_in_times.npy: dtype float64; lead / second ids are integers"
    ):
        SentenceDataset(down, "test")


def test_tokenizer_refuses_records_whose_second_ids_the_models_cannot_embed(tmp_path):
    from datasets.qrs.parallel import tokenize_array

    long = np.zeros((2, 12, 2000), np.float32)  # 20 s at 100 Hz
    with pytest.raises(
        ValueError, match=r"records of 2000 samples = 20 s at 100 Hz give second ids up to 20"
    ):
        tokenize_array(long, tmp_path / "out", num_workers=1, progress=False, verbose=False)
    np.save(tmp_path / "train_data.npy", np.zeros((2, 12, 1000), np.float32))
    whole = (tmp_path / "train_data.npy").read_bytes()
    (tmp_path / "train_data.npy").write_bytes(whole[:-100])
    from utils.arrays import DataFileError

    with pytest.raises(DataFileError, match=r"train_data.npy: truncated"):
        tokenize_array(
            tmp_path / "train_data.npy", tmp_path / "out", num_workers=1, progress=False, verbose=False
        )


# --------------------------------------------------------------------------------- raw records
def test_embed_ecg_of_no_record_says_so():
    from inference import embed_ecg

    model = create_model("HeartLang_tiny")
    for empty in ([], np.zeros((0, 12, 1000))):
        with pytest.raises(ValueError, match="embed_ecg: no record given"):
            embed_ecg(model, empty, fs=100)


def test_mat_without_its_header_is_named(tmp_path):
    from scipy.io import savemat

    from datasets.preprocess.signal import SignalError
    from inference import read_record

    savemat(tmp_path / "JS00001.mat", {"val": np.zeros((12, 5000), np.int16)})  # CinC 2020 / CSN signal file
    with pytest.raises(
        SignalError, match=r"JS00001.mat: a WFDB .mat signal \(variable 'val'\) without its header"
    ):
        read_record(tmp_path / "JS00001.mat")
    savemat(tmp_path / "other.mat", {"signal": np.zeros((12, 10))})
    with pytest.raises(
        SignalError, match=r"other.mat: not an ICBEB 2018 record \(no struct 'ECG'; variables \['signal'\]"
    ):
        read_record(tmp_path / "other.mat")
    (tmp_path / "text.mat").write_text("not matlab")
    with pytest.raises(SignalError, match=r"text.mat: not a readable MATLAB file"):
        read_record(tmp_path / "text.mat")


# ----------------------------------------------------------------------------------- full disk
def test_a_failed_write_names_the_file_and_the_free_space(tmp_path, monkeypatch):
    import errno

    from engine.checkpoint import atomic_torch_save
    from utils.arrays import create_npy
    from utils.artifacts import save_npy
    from utils.integrity import atomic_file

    target = tmp_path / "run" / "checkpoint.pth"
    with pytest.raises(OSError) as info:
        with atomic_file(target, "wb") as fh:
            fh.write(b"x")
            raise OSError(errno.ENOSPC, "No space left on device")  # what a write on a full disk raises
    assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
    assert f"No space left on device while writing {target} (" in str(
        info.value
    ) and "free on the device" in str(info.value)
    assert not target.exists() and not list(target.parent.iterdir())  # no partial file left behind

    def failing_save(obj, fh):  # torch's zip writer on a full disk
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/0: file write failed"
        )

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match=rf"writing checkpoint {target} failed \(\d+ MiB free on its device\)"):
        atomic_torch_save({"a": torch.ones(1)}, target)
    monkeypatch.undo()

    huge = (1 << 40, 256, 96)  # far more than any test machine's disk
    with pytest.raises(
        OSError, match=rf"writing {tmp_path / 'big.npy'} needs .* TiB, the device holding {tmp_path} has"
    ):
        create_npy(tmp_path / "big.npy", np.float32, huge)
    assert not (tmp_path / "big.npy").exists()

    def failing_np_save(path, array):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", failing_np_save)
    with pytest.raises(OSError, match=rf"No space left on device while writing {tmp_path / 'labels.npy'}"):
        save_npy(tmp_path / "labels.npy", np.zeros(3))


def test_export_and_embed_sentences_check_the_sentences_against_the_model(tmp_path):
    import export_features
    from inference import embed_sentences
    from utils.arrays import DataFileError

    down = make_downstream(tmp_path, n_train=2, n_val=2, n_test=3)
    ckpt = tmp_path / "hl.pth"
    torch.save({"model": create_model("HeartLang_tiny").state_dict()}, ckpt)

    def poison(ids):
        ids[1, 7] = 20
        return ids

    _rewrite(down / "test_data_in_times.npy", poison)
    args = export_features.get_args_parser().parse_args(
        [
            "--checkpoint",
            str(ckpt),
            "--dataset_dir",
            str(down),
            "--split",
            "test",
            "--output",
            str(tmp_path / "f.npy"),
        ]
    )
    with pytest.raises(
        DataFileError, match=r"test_data_in_times.npy: second id 20 at row 1, word 7; the checkpoint"
    ):
        export_features.main(args)
    assert not (tmp_path / "f.npy").exists()

    model = create_model("HeartLang_tiny")
    x, c, t = np.zeros((2, 256, 96), np.float32), np.ones((2, 256), np.int64), np.ones((2, 256), np.int64)
    t[1, 3] = 16
    with pytest.raises(ValueError, match=r"time_ids: id 16 at \(1, 3\); the model embeds ids 0-15"):
        embed_sentences(model, x, c, t)
    with pytest.raises(ValueError, match=r"x: shape \(2, 256, 48\); the model reads \(B, 256, 96\)"):
        embed_sentences(model, x[:, :, :48], c, None)


def test_a_broken_classes_json_is_named(tmp_path):
    from sentences.labels import load_class_names
    from utils.arrays import DataFileError

    (tmp_path / "classes.json").write_text('["NORM", "MI"')
    with pytest.raises(DataFileError, match=rf"{tmp_path / 'classes.json'}: not valid JSON"):
        load_class_names(tmp_path, 2)


def test_eval_refuses_a_test_split_the_model_cannot_read(tmp_path):
    """Training reads train and val only; --eval checks the test split before predicting, naming the file."""
    from utils.arrays import DataFileError

    down = make_downstream(tmp_path, n_train=4, n_val=2, n_test=2)

    def poison(ids):
        ids[0, 2] = 17
        return ids

    _rewrite(down / "test_data_in_times.npy", poison)
    argv = _finetune_argv(down, tmp_path / "out")
    _main(FT, argv)
    csv_path = tmp_path / "results.csv"
    with pytest.raises(DataFileError, match=r"test_data_in_times.npy: second id 17 at row 0, word 2"):
        _main(FT, [*argv, "--eval", "--results_csv", csv_path])
    assert not csv_path.exists()


# ------------------------------------------------------------------------------------------ labels
@pytest.mark.parametrize("bad", [2, -1, float("nan")])
def test_the_tokenizer_refuses_non_multi_hot_labels_before_tokenising(tmp_path, bad):
    """Labels that are not 0/1 (class indices, -1 for unknown, NaN) are refused by the tokenizer when it
    would copy them, naming the file and the row, not after tokenising at training time."""
    import QRSTokenizer
    from datasets.synthetic.cohort import simulate_cohort
    from utils.arrays import DataFileError

    src = tmp_path / "D" / "sub"
    src.mkdir(parents=True)
    np.save(src / "train_data.npy", simulate_cohort(3, seed=8)["signals"])
    labels = np.zeros((3, 2), np.float32)
    labels[1, 1] = bad
    np.save(src / "train_labels.npy", labels)
    argv = ["--dataset_name", "D", "--data_root", str(tmp_path), "--num_workers", "1", "--no_progress"]
    with pytest.raises(DataFileError, match=rf"{src / 'train_labels.npy'}: label values must be 0 or 1.*row 1"):
        QRSTokenizer.main(QRSTokenizer.get_args_parser().parse_args(argv))
    assert not list((tmp_path / "D_QRS").rglob("*.npy"))  # nothing was tokenised
