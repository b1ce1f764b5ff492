"""PTB-XL downstream data with the benchmark protocol of Strodthoff et al. 2020 (docs/preprocessing.md).

Paper Sec. 4.1 / Table 1: PTB-XL super, sub, form and rhythm. For each label set
(``all`` 71, ``diagnostic`` 44, ``subdiagnostic`` 23, ``superdiagnostic`` 5, ``form`` 19,
``rhythm`` 12 statements) this writes

    <output_path>/<subset>/{train,val,test}_data.npy     (N, 12, 1000) float32, standardised
                          {train,val,test}_labels.npy   (N, C) int64 multi-hot
                          {train,val,test}_ecg_ids.npy  (N,) int64, which record each row is
                          classes.json, scaler.json

Folds 1-8 train, 9 val, 10 test. Every code of ``scp_codes`` counts whatever its likelihood;
records without a label in a subset are dropped from it; rows stay in ``ecg_id`` order; the
label columns are the class names sorted as scikit-learn's MultiLabelBinarizer sorts them.

    python -m datasets.preprocess.ptbxl --dataset_path RAW --output_path datasets/ecg_datasets/PTBXL
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from datasets.preprocess.config import PtbxlConfig
from datasets.preprocess.labels import labels_summary, multi_hot, save_labelled_split, write_classes
from datasets.preprocess.records import (
    SkipLog,
    default_num_workers,
    parallel_map,
    read_wfdb,
    resolve_inside,
    write_summary,
)
from datasets.preprocess.signal import (
    TARGET_LEN,
    SignalError,
    check_record,
    finite_float32,
    reorder_leads,
    resample_fft,
)
from utils.artifacts import Step, write_json
from utils.integrity import check_finite, file_identity, files_identity

SUBSETS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")
SCALER_FILE = "scaler.json"  # next to {split}_data.npy of every subset; read by load_scaler
FOLDS = {"train": tuple(range(1, 9)), "val": (9,), "test": (10,)}
STAMP_FILE = "preprocess_stamp.json"  # per subset folder: its completion record (utils.artifacts.Step)
#: Every file a run writes into a subset folder (a rerun removes them all first).
OUTPUTS = (
    *(f"{s}_{k}.npy" for s in FOLDS for k in ("data", "labels", "ecg_ids")), "classes.json", SCALER_FILE,
)  # fmt: skip
#: What defines the arrays beyond their bytes (read by the QRS tokenizer): standardised, not mV.
SPECS = {f"{s}_data.npy": {"dtype": "float32", "shape": "(N, 12, 1000)", "fs": 100,
                           "unit": f"standardised mV ((x - mean) / std, {SCALER_FILE})"} for s in FOLDS}  # fmt: skip
REQUIRED_COLUMNS = ("scp_codes", "strat_fold", "filename_lr", "filename_hr")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("PTB-XL preprocessing (Strodthoff et al. 2020 protocol)")
    p.add_argument(
        "--dataset_path", required=True, type=Path, help="folder with ptbxl_database.csv, records100/"
    )
    p.add_argument("--output_path", default=Path("datasets/ecg_datasets/PTBXL"), type=Path,
                   help="output folder, one subfolder per label set (default: %(default)s)")  # fmt: skip
    p.add_argument(
        "--sampling_rate",
        default=100,
        type=int,
        choices=(100, 500),
        help="records to read, in Hz: 100 = records100; 500 = records500, resampled to 100 (default: %(default)s)",
    )
    p.add_argument("--subsets", nargs="+", default=list(SUBSETS), choices=SUBSETS,
                   help="label sets to write (default: all)")  # fmt: skip
    p.add_argument(
        "--classes",
        default="data",
        choices=("data", "statements"),
        help="data: classes present in the labelled records (the protocol); statements: every statement "
        "of scp_statements.csv of that set (same list on the full data set) (default: %(default)s)",
    )
    p.add_argument("--num_workers", default=default_num_workers(), type=int,
                   help="processes reading records (default: all cores)")  # fmt: skip
    return p


def load_tables(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    db_path, st_path = root / "ptbxl_database.csv", root / "scp_statements.csv"
    for f in (db_path, st_path):
        if not f.is_file():
            raise FileNotFoundError(f"PTB-XL table {f} not found")
    try:
        db = pd.read_csv(db_path, index_col="ecg_id").sort_index()
    except (ValueError, pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise SystemExit(f"{db_path}: not PTB-XL's database table with an ecg_id column ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in db.columns]
    if missing:
        raise SystemExit(f"{db_path}: missing column(s) {missing}")
    db["scp_codes"] = [parse_scp_codes(v, f"{db_path}, ecg_id {i}") for i, v in db["scp_codes"].items()]
    statements = pd.read_csv(st_path, index_col=0)
    return db, statements


def parse_scp_codes(cell, where: str) -> dict:
    """One ``scp_codes`` cell, e.g. ``{'NORM': 100.0, 'SR': 0.0}`` -> dict (literal_eval: no code runs).

    A cell that is not a dict literal of ``code: likelihood`` stops the run naming the row."""
    try:
        value = ast.literal_eval(str(cell))
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise SystemExit(
            f"{where}: scp_codes {str(cell)[:80]!r} is not a dict literal ({type(exc).__name__})"
        ) from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise SystemExit(f"{where}: scp_codes {str(cell)[:80]!r} must be a dict of code -> likelihood")
    return value


def _cell(v) -> str:
    return "(missing)" if pd.isna(v) else str(v)


def check_rows(args: PtbxlConfig, db: pd.DataFrame, column: str, skipped: SkipLog) -> pd.DataFrame:
    """Rows that can be used: record paths must stay inside --dataset_path (else the run stops, naming
    the rows) and strat_fold must be an integer 1-10 (else the row is skipped as ``bad_strat_fold`` and
    reported: it would belong to no split)."""
    where = args.dataset_path / "ptbxl_database.csv"
    bad = []
    for ecg_id, rel in db[column].items():
        try:
            resolve_inside(
                args.dataset_path, str(rel) if pd.notna(rel) else "", f"{where}, ecg_id {ecg_id} ({column})"
            )
        except ValueError as exc:
            bad.append(str(exc))
    if bad:
        raise SystemExit(f"{len(bad)} record path(s) refused:\n  " + "\n  ".join(bad[:10]))
    fold = pd.to_numeric(db["strat_fold"], errors="coerce")
    ok = fold.isin(range(1, 11)) & (fold == fold.round())
    for ecg_id in db.index[~ok]:
        skipped.add(
            f"ecg_id {ecg_id} ({db.loc[ecg_id, column]})",
            "bad_strat_fold",
            f"{where}: strat_fold {_cell(db.loc[ecg_id, 'strat_fold'])} is not an integer 1-10 (1-8 train, 9 val, 10 test)",
        )
    if (~ok).any():
        print(
            f"PTB-XL: {int((~ok).sum())} row(s) without a valid strat_fold skipped (bad_strat_fold in skipped_records.csv)"
        )
    out = db[ok].copy()
    out["strat_fold"] = fold[ok].astype(int)
    return out


def aggregate_labels(scp_codes: dict, statements: pd.DataFrame, subset: str) -> list[str]:
    """Labels of one record in one subset (sorted, unique), from its ``scp_codes`` dict.

    # Official behaviour: every code counts whatever its likelihood (0.0 included), as in the
    # Strodthoff benchmark code the original README uses.
    """
    codes = list(scp_codes.keys())
    if subset == "all":
        return sorted(set(codes))
    if subset in ("diagnostic", "subdiagnostic", "superdiagnostic"):
        diag = statements[statements["diagnostic"] == 1]
        known = [c for c in codes if c in diag.index]
        if subset == "diagnostic":
            return sorted(set(known))
        column = "diagnostic_subclass" if subset == "subdiagnostic" else "diagnostic_class"
        return sorted({str(diag.loc[c, column]) for c in known if pd.notna(diag.loc[c, column])})
    flagged = statements[statements[subset] == 1]  # form / rhythm
    return sorted({c for c in codes if c in flagged.index})


def statement_classes(statements: pd.DataFrame, subset: str) -> list[str]:
    """Every class of a subset according to the statement table (71/44/23/5/19/12)."""
    if subset == "all":
        return sorted(statements.index.astype(str))
    if subset in ("diagnostic", "subdiagnostic", "superdiagnostic"):
        diag = statements[statements["diagnostic"] == 1]
        if subset == "diagnostic":
            return sorted(diag.index.astype(str))
        column = "diagnostic_subclass" if subset == "subdiagnostic" else "diagnostic_class"
        return sorted(diag[column].dropna().astype(str).unique())
    return sorted(statements[statements[subset] == 1].index.astype(str))


def ptbxl_chain(sig: np.ndarray, names: list[str]) -> np.ndarray:
    """One 10 s record (n_leads, T) in header lead order -> (12, 1000) float32 in mV, standard lead order.

    records100 (T = 1000) is used as it is; records500 (T = 5000) is FFT-resampled to 1000 samples.
    The scaler (:func:`standardise`) is applied afterwards, per label subset.
    """
    return resample_fft(reorder_leads(sig, names), TARGET_LEN).astype(np.float32)


def standardise(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """The subset's scalar StandardScaler: ``(x - mean) / std`` in float64, returned as float32."""
    return ((np.asarray(x, dtype=np.float64) - mean) / std).astype(np.float32)


def load_scaler(path: str | Path) -> tuple[float, float]:
    """``(mean, std)`` of a ``scaler.json`` written by :func:`write_subset`; ``path`` is the file or the folder
    holding it (``PTBXL/<subset>``, or ``PTBXL_QRS/<subset>``, where the QRS tokenizer copies it)."""
    path = Path(path)
    if path.is_dir():
        path = path / SCALER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"PTB-XL scaler {path} not found (written by datasets.preprocess.ptbxl)")
    try:
        obj = json.loads(path.read_text())
        mean, std = float(obj["mean"]), float(obj["std"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a scaler file with numeric 'mean' and 'std' ({exc})") from exc
    if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
        raise ValueError(f"{path}: scaler mean {mean} / std {std} must be finite with std > 0")
    return mean, std


def _read_one(task: tuple[str, int]) -> tuple[np.ndarray | None, str, str]:
    path, fs_wanted = task
    try:
        if not Path(path + ".hea").is_file():
            raise SignalError("missing_file", f"{path}.hea not on disk")
        sig, names, fs, _ = read_wfdb(path)
        if fs != fs_wanted:
            raise SignalError("wrong_fs", f"{path}: fs {fs:g} Hz, expected {fs_wanted}")
        if sig.shape[1] != fs_wanted * 10:
            raise SignalError("wrong_shape", f"{path}: {sig.shape[1]} samples, expected {fs_wanted * 10}")
        check_record(sig, path)  # non-finite, implausible amplitude (gain error), flat: skipped, reported
        return finite_float32(ptbxl_chain(sig, names), path), "", ""
    except SignalError as exc:
        return None, exc.reason, exc.detail


def count_unlisted(root: Path, listed: pd.Series) -> int:
    """Records of the chosen rate present on disk but without a database row (ignored, unlabelled)."""
    folder = root / str(listed.iloc[0]).split("/")[0] if len(listed) else root
    on_disk = (
        {str(p.relative_to(root).with_suffix("")) for p in folder.rglob("*.hea")}
        if folder.is_dir()
        else set()
    )
    return len(on_disk - set(listed.astype(str)))


def fit_scalar_scaler(data: np.ndarray, chunk: int = 1024) -> tuple[float, float]:
    """StandardScaler on all values of ``data`` (N, 12, 1000), flattened: returns (mean, std).

    Float64 accumulation in two passes (mean, then centred squares), chunked so no float64 copy
    of the whole split is made. A constant split gives std 1, as StandardScaler does.
    """
    n = data.size
    total = sum(float(np.sum(data[i : i + chunk], dtype=np.float64)) for i in range(0, len(data), chunk))
    mean = total / n
    sq = sum(
        float(np.sum((data[i : i + chunk].astype(np.float64) - mean) ** 2))
        for i in range(0, len(data), chunk)
    )
    std = float(np.sqrt(sq / n))
    return mean, (std if std > 0 else 1.0)


def subset_step(args: PtbxlConfig, subset: str, inputs: dict) -> Step:
    """The declaration of one subset folder: settings, the tables and records read, the files written."""
    settings = {"sampling_rate": args.sampling_rate, "classes": args.classes, "subset": subset}
    return Step("ptbxl_preprocess", args.output_path / subset, STAMP_FILE, settings, inputs, OUTPUTS, SPECS)


def run(args: PtbxlConfig) -> dict:
    t0 = time.time()
    if args.num_workers < 1:
        raise SystemExit(f"--num_workers must be >= 1, got {args.num_workers}")
    db_all, statements = load_tables(args.dataset_path)
    column = "filename_lr" if args.sampling_rate == 100 else "filename_hr"
    skipped = SkipLog()
    db = check_rows(args, db_all, column, skipped)
    root = args.dataset_path
    inputs = {
        "ptbxl_database.csv": file_identity(root / "ptbxl_database.csv", root),
        "scp_statements.csv": file_identity(root / "scp_statements.csv", root),
        "records": files_identity([str(root / f) + e for f in db[column] for e in (".hea", ".dat")], root),
    }
    todo = []
    for subset in args.subsets:
        decision = subset_step(args, subset, inputs).decide()
        if not decision.reuse and not decision.fresh:
            print(f"PTB-XL {subset}: redone: " + decision.explain())
        if not decision.reuse:
            todo.append(subset)
    if not todo:
        print(
            f"PTB-XL: {args.output_path} already holds {args.subsets} made from these inputs with these settings: skipped"
        )
        old = args.output_path / "summary.json"
        return (
            json.loads(old.read_text())
            if old.is_file()
            else {"source": "PTB-XL", "subsets_up_to_date": args.subsets}
        )
    tasks = [(str(args.dataset_path / f), args.sampling_rate) for f in db[column]]
    signals, ok_ids = [], []
    for ecg_id, (arr, reason, detail) in zip(db.index, parallel_map(_read_one, tasks, args.num_workers, 32)):
        if arr is None:
            skipped.add(f"ecg_id {ecg_id} ({db.loc[ecg_id, column]})", reason, detail)
        else:
            signals.append(arr)
            ok_ids.append(ecg_id)
    if not ok_ids:
        raise SystemExit(
            f"no PTB-XL record could be read under {args.dataset_path} (see the skip reasons above)"
        )
    data = np.stack(signals)  # (N_ok, 12, 1000) float32, ecg_id order
    del signals
    ok = db.loc[ok_ids]
    folds = ok["strat_fold"].to_numpy()
    summary = {
        "source": "PTB-XL",
        "sampling_rate": args.sampling_rate,
        "records_in": len(db_all),
        "records_read": len(ok_ids),
        "records_on_disk_without_row": count_unlisted(args.dataset_path, db[column]),
        "skipped": len(skipped.rows),
        "skipped_by_reason": skipped.counts(),
        "subsets": {},
    }
    for subset in args.subsets:
        if subset not in todo:  # intact and made from the same inputs with the same settings
            summary["subsets"][subset] = "up to date (kept)"
            continue
        step = subset_step(args, subset, inputs)
        step.begin()  # running until complete(); every file of the earlier run removed
        summary["subsets"][subset] = write_subset(args, subset, data, ok, folds, statements)
        step.complete()  # last: the record of every output file
    skipped.write(args.output_path / "skipped_records.csv")
    summary["seconds"] = round(time.time() - t0, 2)
    write_summary(args.output_path / "summary.json", summary)
    return summary


def write_subset(
    args: PtbxlConfig, subset: str, data: np.ndarray, ok: pd.DataFrame, folds: np.ndarray, statements
) -> dict:
    labels = [aggregate_labels(c, statements, subset) for c in ok["scp_codes"]]
    keep = np.array([len(lab) > 0 for lab in labels])
    if args.classes == "statements":
        classes = statement_classes(statements, subset)
    else:
        classes = sorted({c for lab, k in zip(labels, keep) if k for c in lab})
    y = multi_hot([lab for lab, k in zip(labels, keep) if k], classes)
    idx_kept = np.flatnonzero(keep)
    split_of = {s: np.flatnonzero(np.isin(folds[idx_kept], f)) for s, f in FOLDS.items()}
    # Official behaviour: one scalar mean/std (StandardScaler on the flattened train signals of this
    # subset), applied to every split.
    # Every record in ``data`` passed check_record and finite_float32, so no record can poison the fit.
    mean, std = fit_scalar_scaler(data[idx_kept[split_of["train"]]])
    out = args.output_path / subset
    check_finite(np.array([mean, std]), f"{out}: scaler (mean, std) fitted on train")
    for split, rows in split_of.items():
        x = standardise(data[idx_kept[rows]], mean, std)
        check_finite(x, f"{out}/{split}_data.npy after standardisation")
        save_labelled_split(out, split, x, y[rows], ok.index.to_numpy()[idx_kept[rows]], "ecg_ids")
    write_classes(out, classes)
    write_json(out / SCALER_FILE, {"mean": mean, "std": std, "fitted_on": "train"})
    return {
        "n_classes": len(classes),
        "dropped_without_label": int((~keep).sum()),
        "records_out": {s: int(len(r)) for s, r in split_of.items()},
        "label_counts": labels_summary(y, classes, split_of),
        "scaler": {"mean": mean, "std": std},
    }


def main(argv: list[str] | None = None) -> dict:
    return run(PtbxlConfig.from_args(get_args_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
