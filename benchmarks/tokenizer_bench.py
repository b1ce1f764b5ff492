"""Benchmark of the QRS tokenizer (HeartLang Sec. 3.1) and identity check of the fast detector.

Measures records/s on real PTB-XL records (shared/data, 12 x 1000 at 100 Hz) for
  (a) a straightforward one-record-at-a-time reference written here (Python loops over leads and
      beats, as the original does it), checked to give the same output as ours,
  (b) ours (`tokenize_array`) with 1 worker, (c) ours with all workers,
  (d) the same two with ``detector="xqrs_fast"``,
plus the share of time spent in R-peak detection, and (unless --skip_identity) whether
``xqrs_fast`` gives IDENTICAL R peaks to ``xqrs`` on every lead of every shared real record
(PTB-XL at 100 Hz; CPSC2018 / CSN resampled to 100 Hz; the MIT-BIH / PTB / Challenge-2015 samples
at their own rates) and on the fixture records.

    .venv/bin/python benchmarks/tokenizer_bench.py [--records 512] [--skip_identity]

Writes benchmarks/results/tokenizer_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

from datasets.qrs.detect import run_detector  # noqa: E402
from datasets.qrs.parallel import tokenize_array  # noqa: E402
from datasets.qrs.tokenizer import cut_words, detect_r_peaks  # noqa: E402


def reference_tokenize(signal, used, fs=100, max_len=256, token_len=96):
    """One record, Python loops over leads and beats: the straightforward way (the baseline)."""
    from wfdb import processing

    x = signal[used].astype(np.float32)
    qrs = processing.xqrs_detect(sig=x[0], fs=fs, verbose=False)
    half = token_len // 2
    words, chans, times = [], [], []
    for li, lead in enumerate(x):
        for i, r in enumerate(qrs):
            start = max(0, r - half) if i == 0 else (qrs[i - 1] + r) // 2
            end = min(len(lead), r + half) if i == len(qrs) - 1 else (r + qrs[i + 1]) // 2
            if end - start > token_len:
                start, end = max(0, r - half), min(len(lead), r + half)
            seg = lead[start:end]
            offset = max(half - (r - start), 0)
            n = min(len(seg), token_len - offset)
            word = np.zeros(token_len, dtype=np.float32)
            word[offset : offset + n] = seg[:n]
            words.append(word)
            chans.append(used[li] + 1)
            times.append(r // fs + 1)
    data = np.zeros((max_len, token_len), dtype=np.float32)
    c = np.zeros(max_len, dtype=np.int32)
    t = np.zeros(max_len, dtype=np.int32)
    n = min(len(words), max_len)
    if n:
        data[:n], c[:n], t[:n] = np.stack(words[:n]), chans[:n], times[:n]
    return data, c, t


def load_ptbxl(n: int) -> np.ndarray:
    """Up to n real PTB-XL 100 Hz records as (n, 12, 1000) float32, in sorted path order."""
    import wfdb

    heads = sorted((SHARED / "data" / "ptbxl" / "records100").rglob("*_lr.hea"))[: n or None]
    if not heads:
        raise SystemExit(f"no PTB-XL records under {SHARED / 'data' / 'ptbxl'}")
    return np.stack([wfdb.rdsamp(str(h.with_suffix("")))[0].T.astype(np.float32) for h in heads])


def _records_for_identity():
    """Yield (name, (leads, T) float, fs) for every shared real record at the rate it is tokenised."""
    import scipy.io
    import wfdb
    from scipy.signal import resample

    for h in sorted((SHARED / "data" / "ptbxl" / "records100").rglob("*_lr.hea")):
        yield f"ptbxl/{h.stem}", wfdb.rdsamp(str(h.with_suffix("")))[0].T.astype(np.float32), 100
    for h in sorted((SHARED / "data" / "ptbxl" / "records500").rglob("*_hr.hea")):
        sig = wfdb.rdsamp(str(h.with_suffix("")))[0].T
        yield f"ptbxl500->100/{h.stem}", resample(sig, 1000, axis=1).astype(np.float32), 100
    for f in sorted((SHARED / "data" / "cpsc2018" / "icbeb2018").glob("*.mat")):
        sig = scipy.io.loadmat(f)["ECG"][0][0][2][:, :5000]
        yield f"cpsc2018/{f.stem}", resample(sig, sig.shape[1] // 5, axis=1).astype(np.float32), 100
    for folder in ("cpsc2018/cinc2020", "csn/cinc2021"):
        for h in sorted((SHARED / "data" / folder).glob("*.hea")):
            sig = wfdb.rdsamp(str(h.with_suffix("")))[0].T[:, :5000]
            yield f"{folder}/{h.stem}", resample(sig, sig.shape[1] // 5, axis=1).astype(np.float32), 100
    for name in ("100", "s0010_re", "a103l"):
        rec = wfdb.rdrecord(str(SHARED / "data" / "wfdb_samples" / name))
        sig = np.nan_to_num(rec.p_signal.T) if rec.p_signal is not None else None
        if sig is not None:
            yield f"wfdb_samples/{name}", sig.astype(np.float32), int(rec.fs)
    with np.load(SHARED / "fixtures" / "tokenizer_ptbxl.npz") as z:
        for i, x in enumerate(np.concatenate([z["input"], z["edge_input"]])):
            yield f"fixture/{i}", x, 100


def identity_check() -> dict:
    records = leads = peaks = 0
    mismatches, t_ref, t_fast = [], 0.0, 0.0
    for name, sig, fs in _records_for_identity():
        records += 1
        for li, lead in enumerate(sig):
            t0 = time.perf_counter()
            a, err_a = detect_r_peaks(lead, fs, "xqrs")
            t1 = time.perf_counter()
            b, err_b = detect_r_peaks(lead, fs, "xqrs_fast")
            t_fast += time.perf_counter() - t1
            t_ref += t1 - t0
            leads += 1
            peaks += a.size
            if not np.array_equal(a, b) or err_a != err_b:
                mismatches.append(f"{name} lead {li}")
    return {
        "records": records,
        "leads": leads,
        "r_peaks": peaks,
        "mismatching_leads": len(mismatches),
        "mismatch_examples": mismatches[:20],
        "xqrs_s": round(t_ref, 2),
        "xqrs_fast_s": round(t_fast, 2),
        "detection_speedup": round(t_ref / t_fast, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=0, help="PTB-XL records to time (0 = all shared ones)")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--chunk_size", type=int, default=32)
    p.add_argument("--skip_identity", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tokenizer_bench.json"))
    args = p.parse_args()

    X = load_ptbxl(args.records)
    N = len(X)
    used = list(range(12))
    res: dict = {
        "records": N,
        "input": "PTB-XL records100, 12 leads x 1000, raw mV",
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],  # shared machines skew timings
    }
    run_detector(X[0, 0], 100)  # import wfdb / warm caches outside the timings

    t0, cpu0 = time.perf_counter(), time.process_time()
    ref_out = [reference_tokenize(x, used) for x in X]
    res["reference_loops_rec_s"] = round(N / (time.perf_counter() - t0), 1)
    res["reference_loops_cpu_ms_per_record"] = round(1e3 * (time.process_time() - cpu0) / N, 3)

    # Where the time goes inside one record: detection vs everything else.
    t_det = t_cut = 0.0
    for x in X:
        t0 = time.perf_counter()
        q, _ = detect_r_peaks(x[0])
        t1 = time.perf_counter()
        if q.size:
            cut_words(x, q)
        t_cut += time.perf_counter() - t1
        t_det += t1 - t0
    res["detection_share_xqrs"] = round(t_det / (t_det + t_cut), 3)
    res["ms_per_record"] = {"xqrs_detect": round(1e3 * t_det / N, 3), "cut_words": round(1e3 * t_cut / N, 3)}

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "input_data.npy"  # a .npy path, as QRSTokenizer.py passes it (workers mmap it)
        np.save(src, X)
        for det in ("xqrs", "xqrs_fast"):
            for workers in sorted({1, args.workers}):
                cpu0 = time.process_time()  # CPU of this process: all of it when workers == 1
                s = tokenize_array(
                    src,
                    tmp,
                    f"{det}_{workers}",
                    num_workers=workers,
                    chunk_size=args.chunk_size,
                    detector=det,
                    progress=False,
                    verbose=False,
                )
                assert s["num_workers"] == workers, "too few records for the workers: lower --chunk_size"
                res[f"ours_{det}_{workers}w_rec_s"] = s["records_per_s"]
                # Load-independent cost: CPU ms per record in-process, and (more workers) what the
                # main process itself spends per record, which bounds the scaling with cores.
                key = "cpu_ms_per_record" if workers == 1 else "main_process_cpu_ms_per_record"
                res.setdefault(key, {})[det] = round(1e3 * (time.process_time() - cpu0) / N, 3)
                data = np.load(Path(tmp) / f"{det}_{workers}_data.npy", mmap_mode="r")
                chans = np.load(Path(tmp) / f"{det}_{workers}_data_in_chans.npy", mmap_mode="r")
                same = all(
                    np.array_equal(data[i], r[0], equal_nan=True) and np.array_equal(chans[i], r[1])
                    for i, r in enumerate(ref_out)
                )
                res[f"ours_{det}_{workers}w_equals_reference"] = bool(same)
    base = res["reference_loops_rec_s"]
    res["speedup_vs_reference"] = {
        k.replace("ours_", "").replace("_rec_s", ""): round(v / base, 2)
        for k, v in res.items()
        if k.startswith("ours_") and k.endswith("_rec_s")
    }
    if not args.skip_identity:
        t0 = time.perf_counter()
        res["xqrs_fast_identity"] = identity_check()
        res["xqrs_fast_identity"]["seconds"] = round(time.perf_counter() - t0, 1)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
