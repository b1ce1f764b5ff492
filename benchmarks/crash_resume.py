"""Crash and resume of the data stages at scale: kill -9 each stage mid-run, rerun, compare (docs/robustness.md).

    python -m benchmarks crash_resume [--n_records 10000] [--batch_size 2000] [--num_workers 2] [--seed 0]

1. Generates ``--n_records`` MIMIC-IV-ECG-like raw records (``datasets.synthetic.scale``; ``--batch_size``
   records per preprocessing ``batch_k`` folder, so 10,000 records give 5 folders).
2. Reference: each data stage once, uninterrupted: MIMIC-IV preprocessing (``mimic_preprocess.py``), the QRS
   tokenizer (``QRSTokenizer.py``) and the pre-training target cache (``python -m engine.targets``, a random
   ``vqhbr_tiny`` tokenizer: the cache's bookkeeping does not depend on the tokenizer's size); wall time and
   the SHA-256 of every output file except the JSON records (they hold times and paths).
3. For each stage, on a fresh output folder (the inputs are the reference's): start it, ``kill -9`` its whole
   process group (the stage and its worker processes) at a random moment between 20 % and 80 % of the
   reference's wall time (``--seed``), note which output files exist, then rerun the same command to the
   end. Reported: where the kill landed, the rerun's wall time next to the reference's, which output files
   the rerun kept (same inode and mtime as after the kill) and which it wrote, the bytes it wrote as a
   fraction of all output bytes, and whether every output file's SHA-256 equals the reference's.
4. Prints one line per stage and writes ``benchmarks/results/crash_resume.json`` (benchmarks/common.py).

``--kill_after_first`` kills each stage right after its first unit of work is complete (a batch folder of
preprocessing, a split of the tokenizer or of the target cache) instead of at a random moment: the test
(``tests/test_crash_resume_data.py``) uses it with a few hundred records so that its check is deterministic.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import add_output_args, write_results

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("preprocess", "tokenizer", "targets")
# The file that says one unit of a stage's work is complete (--kill_after_first waits for the first one).
UNIT_DONE = {"preprocess": "batch_*/DONE.json", "tokenizer": "batch_*/*_tokenizer_summary.json",
             "targets": "batch_*/*_targets.json"}  # fmt: skip


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def outputs(folder: Path, stage: str) -> list[Path]:
    """The stage's output files under ``folder`` (for the target cache: only its own files, beside the
    sentences it reads), temp files and JSON records left out."""
    if stage == "targets":
        files = [p for p in folder.rglob("*_targets*") if p.suffix == ".u16"]
    else:
        files = [p for p in folder.rglob("*") if p.is_file() and p.suffix != ".json"]
    return sorted(p for p in files if not p.name.startswith(".")
                  and not any(part.endswith(".tmp") for part in p.relative_to(folder).parts))  # fmt: skip


def checksums(folder: Path, stage: str) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256(p) for p in outputs(folder, stage)}


def identities(folder: Path, stage: str) -> dict[str, tuple[int, int, int]]:
    out = {}
    for p in outputs(folder, stage):
        st = p.stat()
        out[str(p.relative_to(folder))] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HEARTLANG_NO_PROGRESS="1")


def stage_cmd(stage: str, work: Path, args) -> tuple[list[str], Path]:
    """(command, the folder whose outputs are compared) of ``stage`` writing under ``work``."""
    py = sys.executable
    if stage == "preprocess":
        return [py, "mimic_preprocess.py", "--dataset_path", str(args.raw), "--output_path", str(work / "MIMIC-IV"),
                "--batch_size", str(args.batch_size), "--num_workers", str(args.num_workers)], work / "MIMIC-IV"  # fmt: skip
    if stage == "tokenizer":
        return [py, "QRSTokenizer.py", "--dataset_name", "MIMIC-IV", "--data_root", str(args.ref),
                "--output_root", str(work), "--num_workers", str(args.num_workers), "--no_progress"], work / "MIMIC-IV_QRS"  # fmt: skip
    return [py, "-m", "engine.targets", "--dataset_dir", str(work / "MIMIC-IV_QRS"), "--tokenizer_model", "vqhbr_tiny",
            "--tokenizer_weight", str(args.tokenizer), "--all_batch_folders", "--splits", "train", "val"], work / "MIMIC-IV_QRS"  # fmt: skip


def prepare(stage: str, work: Path, args) -> None:
    """The target cache is written beside the sentences it reads: a copy of the reference's sentences
    (mtimes kept, so their identity is the reference's) without any cached targets."""
    if stage == "targets":
        shutil.copytree(args.ref / "MIMIC-IV_QRS", work / "MIMIC-IV_QRS", ignore=shutil.ignore_patterns("*_targets*"))


def run(cmd: list[str], log: Path) -> float:
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, env=env(), stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
    return time.monotonic() - t0


def unit_complete(folder: Path, unit_glob: str) -> bool:
    """A record matching ``unit_glob`` exists and says its unit is complete (utils/artifacts.py writes the
    record first with ``"state": "running"`` and last with the outputs' identities)."""
    for path in folder.glob(unit_glob):
        if any(part.endswith(".tmp") for part in path.relative_to(folder).parts):
            continue  # a batch folder still being written (renamed into place when it is complete)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        stamp = record.get("stamp", record) if isinstance(record, dict) else {}
        if stamp.get("state", "complete") != "running":
            return True
    return False


def run_and_kill(cmd: list[str], log: Path, at_s: float | None, unit_glob: str, folder: Path) -> dict:
    """Start ``cmd`` in its own process group; SIGKILL the group after ``at_s`` seconds (or, with ``at_s``
    None, as soon as a file matching ``unit_glob`` exists under ``folder``)."""
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while proc.poll() is None:
            elapsed = time.monotonic() - t0
            if (at_s is not None and elapsed >= at_s) or (at_s is None and unit_complete(folder, unit_glob)):
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    time.sleep(0.5)  # let the killed group's processes disappear
    return {"killed_after_s": round(time.monotonic() - t0, 2), "finished_before_kill": proc.returncode == 0}


def rehearse(stage: str, args, reference: dict, rng: random.Random) -> dict:
    at = None if args.kill_after_first else rng.uniform(0.2, 0.8) * reference["seconds"]
    attempts = 0
    while True:
        attempts += 1
        work = args.work / f"crash_{stage}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        prepare(stage, work, args)
        cmd, folder = stage_cmd(stage, work, args)
        kill = run_and_kill(cmd, work / "killed.log", at, UNIT_DONE[stage], folder)
        if not kill["finished_before_kill"] or at is None or attempts == 4:
            break
        # The stage ran faster than the reference (the machine's load changed) and finished before the kill:
        # that is no crash. Start again on a fresh folder with the kill at half the moment.
        print(f"{stage}: finished before the kill at {at:.1f} s; again with the kill at {at / 2:.1f} s", flush=True)
        at /= 2
    kill["attempts"] = attempts
    after_kill = identities(folder, stage) if folder.is_dir() else {}
    rerun_s = run(cmd, work / "rerun.log")
    final = identities(folder, stage)
    kept = sorted(k for k, v in final.items() if after_kill.get(k) == v)
    written = sorted(k for k in final if k not in kept)
    total = sum(v[2] for v in final.values())
    written_bytes = sum(final[k][2] for k in written)
    sums = checksums(folder, stage)
    differing = sorted(k for k in set(sums) | set(reference["sha256"]) if sums.get(k) != reference["sha256"].get(k))
    return {
        "stage": stage,
        "kill_at_s": None if at is None else round(at, 2),
        **kill,
        "reference_s": round(reference["seconds"], 2),
        "rerun_s": round(rerun_s, 2),
        "rerun_time_fraction": round(rerun_s / reference["seconds"], 3),
        "outputs": len(final),
        "outputs_present_after_kill": len(after_kill),
        "kept_by_rerun": len(kept),
        "written_by_rerun": len(written),
        "rerun_written_bytes_fraction": round(written_bytes / total, 3) if total else 0.0,
        "identical_to_reference": not differing,
        "differing_files": differing[:20],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser("python -m benchmarks crash_resume", description=__doc__.split("\n")[0])
    ap.add_argument("--n_records", type=int, default=10_000, help="raw records generated (default: 10000)")
    ap.add_argument("--batch_size", type=int, default=2000, help="records per preprocessing batch folder (default: 2000)")
    ap.add_argument("--num_workers", type=int, default=2, help="worker processes of each stage (default: 2)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default: 0)")
    ap.add_argument("--kill_after_first", action="store_true",
                    help="kill right after the first completed unit instead of at a random moment (default: off)")  # fmt: skip
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES, help="stages rehearsed (default: all three)")
    ap.add_argument("--work_dir", default=None, help="scratch folder (default: a temporary one, removed)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        args.work = Path(tmp)
        args.raw, args.ref = args.work / "raw", args.work / "ref"
        args.ref.mkdir()
        t = time.monotonic()
        run([sys.executable, "-m", "datasets.synthetic.scale", "--output_dir", str(args.raw), "--n_records",
             str(args.n_records), "--seed", str(args.seed), "--num_workers", str(args.num_workers)], args.work / "generate.log")  # fmt: skip
        print(f"{args.n_records} raw records in {time.monotonic() - t:.1f} s", flush=True)
        from dataclasses import asdict

        from engine.checkpoint import atomic_torch_save, build_state
        from modeling import create_model

        model = create_model("vqhbr_tiny")
        args.tokenizer = atomic_torch_save(build_state(model, 0, model_config=asdict(model.config)),
                                           args.work / "tokenizer.pth")  # fmt: skip
        references, rows = {}, []
        for stage in STAGES:  # the reference chain (each stage reads the one before)
            cmd, folder = stage_cmd(stage, args.ref, args)
            seconds = run(cmd, args.work / f"ref_{stage}.log")
            references[stage] = {"seconds": seconds, "sha256": checksums(folder, stage)}
            mib = sum(p.stat().st_size for p in outputs(folder, stage)) / (1 << 20)
            print(f"reference {stage}: {seconds:.1f} s, {len(references[stage]['sha256'])} files, {mib:.0f} MiB",
                  flush=True)  # fmt: skip
        for stage in args.stages:
            row = rehearse(stage, args, references[stage], rng)
            rows.append(row)
            print(f"{stage}: killed after {row['killed_after_s']:.1f} s (finished before: {row['finished_before_kill']}), "
                  f"{row['outputs_present_after_kill']}/{row['outputs']} outputs present; rerun {row['rerun_s']:.1f} s vs "
                  f"{row['reference_s']:.1f} s uninterrupted ({row['rerun_time_fraction']:.0%}), kept {row['kept_by_rerun']}, "
                  f"wrote {row['written_by_rerun']} ({row['rerun_written_bytes_fraction']:.0%} of the bytes); "
                  f"identical to the reference: {row['identical_to_reference']}", flush=True)  # fmt: skip
    result = {
        "settings": {k: v for k, v in vars(args).items() if k in
                     ("n_records", "batch_size", "num_workers", "seed", "kill_after_first", "stages")},  # fmt: skip
        "references": {s: {"seconds": round(r["seconds"], 2), "files": len(r["sha256"])} for s, r in references.items()},
        "rows": rows,
    }
    write_results("crash_resume", result, argv, label=args.label, out=args.out)
    return result


if __name__ == "__main__":
    main()
