"""The statistics of a tokenised split (HeartLang Sec. 3.1 at corpus scale): per-record ``STATS_DTYPE`` rows,
their summary (``{split}_tokenizer_summary.json``, docs/tokenizer.md "Summary"), the console lines, and the
report naming every record with NaN/inf input or words (``{split}_nonfinite_records.csv``).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from datasets.qrs.tokenizer import (
    REASON_DETECTOR_ERROR,
    REASON_FLAT,
    REASON_NO_BEAT,
    REASON_NONFINITE,
    REASON_NONFINITE_SKIPPED,
)
from utils.artifacts import atomic_path

# Per-record statistics, ~16 bytes a record (a list of Python objects would be ~10x larger on MIMIC-IV).
REASONS = (REASON_NONFINITE, REASON_FLAT, REASON_NO_BEAT, REASON_DETECTOR_ERROR, REASON_NONFINITE_SKIPPED)
STATS_DTYPE = np.dtype(
    [
        ("num_beats", np.int32),
        ("num_words", np.int32),
        ("reason", np.int8),  # index into REASONS, -1 = the sentence has words
        ("truncated", np.bool_),
        ("nonfinite_input", np.bool_),
        ("nonfinite_words", np.int16),
        ("flat_leads", np.int16),
        ("detector_fallback", np.bool_),
    ]
)
MAX_LISTED = 10  # record indices / error messages listed per category in the summary
MAX_NAMED = 100  # records with NaN/inf named in the summary (all of them in {split}_nonfinite_records.csv)


def _describe(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"min": 0, "median": 0.0, "max": 0, "mean": 0.0}
    return {
        "min": int(values.min()),
        "median": float(np.median(values)),
        "max": int(values.max()),
        "mean": round(float(values.mean()), 3),
    }


def report_nonfinite(
    summary: dict,
    stats: np.ndarray,
    nonfinite_csv: Path,
    split: str,
    source: str,
    nan_policy: str,
    record_names,
) -> None:
    """Name every record with NaN/inf input or words: in ``nonfinite_csv``, the summary, and a warning."""
    name = record_names or (lambda idx: [f"row {i}" for i in idx])
    bad = np.flatnonzero(stats["nonfinite_input"] | (stats["nonfinite_words"] > 0))
    if not bad.size:
        return
    names = list(name(bad.tolist()))
    with atomic_path(nonfinite_csv) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "record", "nonfinite_input", "nonfinite_words", "outcome"])
        for i, n in zip(bad.tolist(), names):
            outcome = (
                "sentence left empty" if stats["reason"][i] >= 0 else
                "NaN/inf copied into words" if stats["nonfinite_words"][i] > 0 else f"{nan_policy}: words finite"
            )  # fmt: skip
            w.writerow([i, n, bool(stats["nonfinite_input"][i]), int(stats["nonfinite_words"][i]), outcome])
    summary["nonfinite_records"] = [{"index": int(i), "record": n} for i, n in zip(bad[:MAX_NAMED], names)]
    summary["nonfinite_report"] = str(nonfinite_csv)
    n_words = summary["records_with_nonfinite_words"]
    print(
        f"WARNING [{split}] {source}: {bad.size} record(s) hold NaN/inf (nan_policy={nan_policy}); "
        f"{n_words} of them have NaN/inf copied into their words: {', '.join(names[:5])}"
        + (" ..." if bad.size > 5 else "")
        + f" (all in {nonfinite_csv})."
        + (
            " VQ-HBR and pre-training on these words stop with 'loss is nan': tokenise with "
            "--nan_policy interpolate, zero or skip."
            if n_words
            else ""
        ),
        file=sys.stderr,
    )


def summarize(stats: np.ndarray, errors: list, max_len: int = 256) -> dict:
    """Aggregate per-record ``stats`` (N,) STATS_DTYPE and ``errors`` [(index, message)] into the summary."""
    beats = stats["num_beats"].astype(np.int64)
    words = stats["num_words"].astype(np.int64)
    reason = stats["reason"]
    by_reason = {REASONS[k]: int((reason == k).sum()) for k in range(len(REASONS)) if (reason == k).any()}
    examples = {
        REASONS[k]: np.flatnonzero(reason == k)[:MAX_LISTED].tolist()
        for k in range(len(REASONS))
        if (reason == k).any()
    }
    return {
        "records": int(stats.size),
        "words_per_sentence": _describe(np.minimum(words, max_len)),
        "words_before_truncation": _describe(words),
        "beats_per_record": _describe(beats),
        "truncated_sentences": int(stats["truncated"].sum()),
        "empty_sentences": int((reason >= 0).sum()),
        "empty_by_reason": dict(sorted(by_reason.items())),
        "empty_examples": dict(sorted(examples.items())),
        "detector_errors": [{"index": int(i), "error": e} for i, e in errors],
        "single_beat_records": int((beats == 1).sum()),
        "records_with_nonfinite_input": int(stats["nonfinite_input"].sum()),
        "records_with_nonfinite_words": int((stats["nonfinite_words"] > 0).sum()),
        "records_skipped_nonfinite": int((reason == REASONS.index(REASON_NONFINITE_SKIPPED)).sum()),
        "records_with_flat_leads": int((stats["flat_leads"] > 0).sum()),
        # xqrs_fast handed these records' detection lead to wfdb itself (NaN/inf, too short, ...)
        "detector_reference_path_records": int(stats["detector_fallback"].sum()),
    }


def format_summary(summary: dict) -> str:
    """A few human-readable lines for the console."""
    w = summary["words_per_sentence"]
    lines = [
        f"[{summary.get('split', '?')}] {summary['records']} records"
        + (f" in {summary['seconds']} s ({summary['records_per_s']} rec/s)" if "seconds" in summary else ""),
        f"  words/sentence min {w['min']} median {w['median']} max {w['max']}; "
        f"truncated at {summary.get('max_len', 256)}: {summary['truncated_sentences']}",
        f"  empty sentences: {summary['empty_sentences']} {summary['empty_by_reason'] or ''}",
        f"  single beat: {summary['single_beat_records']}; NaN/inf input: "
        f"{summary['records_with_nonfinite_input']} (NaN/inf in words: {summary['records_with_nonfinite_words']}); "
        f"flat leads: {summary['records_with_flat_leads']}",
    ]
    return "\n".join(lines)
