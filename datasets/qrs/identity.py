"""Proof that the default ``xqrs_fast`` detector tokenises exactly like wfdb's ``xqrs_detect`` (Sec. 3.1).

``shared_real_records`` yields every real record of ``shared/data`` as the preprocessing
scripts hand it to the tokenizer: PTB-XL records100 (12 x 1000 at 100 Hz) and records500
(FFT-resampled to 1000 samples), CPSC2018 (ICBEB ``.mat`` and CinC-2020 WFDB, ``cpsc_chain``),
CSN (``csn_chain``), the MIMIC-IV-ECG chain (``mimic_chain``; shared/data has no MIMIC waveform,
so it runs on the 10 s / 500 Hz PTB-XL and CSN records, which have MIMIC's format) and the
MIT-BIH / PTB / Challenge-2015 samples (first 10 s at their own rate, and resampled to 100 Hz).
``compare_on_records`` tokenises each record with both detectors for every lead subset the
scripts use and counts any difference in R peaks, words, lead ids or time ids.
Used by tests/test_tokenizer_detect.py (a subset) and benchmarks/tokenizer_bench.py (everything).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import numpy as np

from datasets.qrs.tokenizer import detect_r_peaks, detect_r_peaks_batch, tokenize_record, tokenize_records

# The lead subsets the scripts use (docs/tokenizer.md): detection runs on the first used lead.
LEAD_SUBSETS = {
    "all12": None,
    "lead0": [0],
    "leads_0_1_7": [0, 1, 7],
    "leads_6to11": list(range(6, 12)),
}


def shared_real_records(data_root: str | Path, stride: int = 1) -> Iterator[tuple[str, np.ndarray, int]]:
    """Yield ``(source/name, signal (12, T) float32, fs)`` for the real records under ``data_root``.

    ``stride`` keeps every stride-th PTB-XL records100 record (the other sources are small and
    always fully read). Records the preprocessing would reject (wrong length, NaN) are skipped.
    """
    from datasets.preprocess.cpsc2018 import cpsc_chain
    from datasets.preprocess.cpsc2018 import find_records as cpsc_records
    from datasets.preprocess.csn import csn_chain
    from datasets.preprocess.downstream import load_standard_500hz
    from datasets.preprocess.records import read_wfdb
    from datasets.preprocess.signal import SignalError, mimic_chain, reorder_leads, resample_fft

    root = Path(data_root)
    ptb = root / "ptbxl"
    for k, h in enumerate(sorted((ptb / "records100").rglob("*_lr.hea"))):
        if k % stride == 0:
            sig, names, _, _ = read_wfdb(h.with_suffix(""))
            yield f"ptbxl100/{h.stem}", reorder_leads(sig, names).astype(np.float32), 100
    for h in sorted((ptb / "records500").rglob("*_hr.hea")):
        sig, names, _, _ = read_wfdb(h.with_suffix(""))
        yield f"ptbxl500/{h.stem}", resample_fft(reorder_leads(sig, names), 1000).astype(np.float32), 100
        yield f"mimic_chain(ptbxl500)/{h.stem}", mimic_chain(sig, names), 100
    refs, _ = cpsc_records(root / "cpsc2018")
    for ref in refs:
        try:
            yield f"cpsc2018/{ref.name}", cpsc_chain(load_standard_500hz(ref)).astype(np.float32), 100
        except SignalError:
            continue
    for h in sorted((root / "csn").rglob("*.hea")):
        sig, names, fs, _ = read_wfdb(h.with_suffix(""))
        try:
            yield f"csn/{h.stem}", csn_chain(reorder_leads(sig, names)).astype(np.float32), 100
            if fs == 500 and sig.shape[1] == 5000:
                yield f"mimic_chain(csn)/{h.stem}", mimic_chain(sig, names), 100
        except SignalError:
            continue
    for name in ("100", "s0010_re", "a103l"):
        if not (root / "wfdb_samples" / f"{name}.hea").is_file():
            continue
        sig, _, fs, _ = read_wfdb(root / "wfdb_samples" / name)
        sig = np.nan_to_num(sig[:, : int(10 * fs)])  # a103l holds NaN gaps; the pipeline fills them
        yield f"wfdb_samples/{name}@{fs:g}Hz", sig.astype(np.float32), int(fs)
        yield f"wfdb_samples/{name}->100Hz", resample_fft(sig, 1000).astype(np.float32), 100


def compare_on_records(records, batch: int = 64) -> dict:
    """Tokenise ``records`` ((name, signal, fs) items) with ``xqrs`` and ``xqrs_fast``; count differences.

    For every record and lead subset: the R peaks of the detection lead and the tokenizer's
    outputs (data bytes, in_chans, in_times) must be identical. ``xqrs_fast`` runs batched
    (``tokenize_records`` with the default detector, as ``QRSTokenizer.py`` does); ``xqrs``
    record by record (its peaks are computed once per detection lead and reused for the subsets
    that share that lead).
    """
    res = {"records": 0, "by_source": {}, "detection_leads": 0, "r_peaks": 0, "sentences": 0}
    res.update(peak_mismatches=0, sentence_mismatches=0, reference_path_leads=0, examples=[])
    t_ref = t_fast = 0.0
    pending: list = []

    def flush():
        nonlocal t_ref, t_fast
        by_fs: dict = {}
        for item in pending:
            by_fs.setdefault((item[2], item[1].shape), []).append(item)
        for (fs, _), items in by_fs.items():
            X = np.stack([x for _, x, _ in items])
            # Subsets that exist for this lead count (the MIT-BIH sample has 2 leads).
            subsets = {k: u for k, u in LEAD_SUBSETS.items() if u is None or max(u) < X.shape[1]}
            ref_peaks = {}
            for lead in sorted({0 if used is None else used[0] for used in subsets.values()}):
                t0 = time.process_time()
                ref = [detect_r_peaks(x, fs, "xqrs") for x in X[:, lead]]
                t1 = time.process_time()
                fast = detect_r_peaks_batch(X[:, lead], fs, "xqrs_fast")
                t_fast += time.process_time() - t1
                t_ref += t1 - t0
                ref_peaks[lead] = ref
                for (name, _, _), r, f in zip(items, ref, fast):
                    res["detection_leads"] += 1
                    res["r_peaks"] += int(r[0].size)
                    res["reference_path_leads"] += int(f.fallback)
                    if not (r[1] == f[1] and np.array_equal(r[0], f[0])):
                        res["peak_mismatches"] += 1
                        res["examples"].append(f"{name} lead {lead}: R peaks differ")
            for subset, used in subsets.items():
                lead = 0 if used is None else used[0]
                # Reference sentences: wfdb's peaks, record by record; ours: the batched default path.
                t0 = time.process_time()
                want = [
                    tokenize_record(x, used, fs=fs, detector="xqrs", peaks=(p, x[lead]))
                    for x, p in zip(X, ref_peaks[lead])
                ]
                t1 = time.process_time()
                got = tokenize_records(X, used, fs=fs)
                t_fast += time.process_time() - t1
                t_ref += t1 - t0
                for (name, _, _), r, f in zip(items, want, got):
                    res["sentences"] += 1
                    same = r[0].tobytes() == f[0].tobytes() and all(
                        np.array_equal(r[k], f[k]) for k in (1, 2)
                    )
                    if not same:
                        res["sentence_mismatches"] += 1
                        res["examples"].append(f"{name} {subset}: sentence differs")
        pending.clear()

    for name, x, fs in records:
        res["records"] += 1
        src = name.split("/")[0]
        res["by_source"][src] = res["by_source"].get(src, 0) + 1
        pending.append((name, x, fs))
        if len(pending) >= batch:
            flush()
    flush()
    res["examples"] = res["examples"][:20]
    res["cpu_s"] = {"xqrs": round(t_ref, 2), "xqrs_fast": round(t_fast, 2)}
    return res
