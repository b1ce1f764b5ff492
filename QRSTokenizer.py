"""Turn preprocessed ECG arrays into ECG sentences (HeartLang Sec. 3.1), the original README's command::

    python QRSTokenizer.py --dataset_name PTBXL [--used_channels 0 1 7] [--num_workers 8] [--plot 5]

<NAME> is a folder the preprocessing wrote (MIMIC-IV, PTBXL, CPSC2018, CSN). Reads
datasets/ecg_datasets/<NAME>/<subset>/{split}_data.npy and writes
datasets/ecg_datasets/<NAME>_QRS/<subset>/{split}_data.npy, _data_in_chans.npy, _data_in_times.npy
(<NAME>_QRS_3Leads etc. for a lead subset: see --output_name), copying the label / class-list files.
The logic lives in datasets/qrs/; see docs/tokenizer.md.
"""

from __future__ import annotations

import argparse
import os

from datasets.qrs.detect import DEFAULT_DETECTOR, DETECTORS
from datasets.qrs.tokenizer import NAN_POLICIES


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        "QRS tokenizer: ECG records -> ECG sentences of heartbeat words", add_help=True
    )
    _add_data_args(p.add_argument_group("data"))
    _add_tokenizer_args(p.add_argument_group("tokenizer"))
    _add_run_args(p.add_argument_group("run"))
    return p


def _add_data_args(io) -> None:
    io.add_argument(
        "--dataset_name",
        required=True,
        help="folder under --data_root written by preprocessing: MIMIC-IV, PTBXL, CPSC2018, CSN (required)",
    )
    io.add_argument("--data_root", default="datasets/ecg_datasets",
                    help="folder holding the preprocessed data sets (default: %(default)s)")  # fmt: skip
    io.add_argument(
        "--output_root", default=None, help="folder the output is written under (default: --data_root)"
    )
    io.add_argument(
        "--output_name",
        default=None,
        help="output folder name under --output_root (default: <dataset_name>_QRS; with a lead subset: "
        "<dataset_name>_QRS_<n>Leads for the scripts' 1/3/6-lead sets, else <dataset_name>_QRS_<lead names>)",
    )
    io.add_argument(
        "--subsets",
        nargs="+",
        default=None,
        help="subfolders to tokenise (default: every subfolder holding *_data.npy)",
    )
    io.add_argument(
        "--splits",
        nargs="+",
        default=None,
        help="splits to tokenise, e.g. train val (default: every {split}_data.npy of a subset)",
    )
    io.add_argument(
        "--layout",
        choices=("auto", "nct", "ntc"),
        default="auto",
        help="array layout: nct = (N, leads, T), ntc = (N, T, leads), auto: from the shape (default: %(default)s)",
    )
    io.add_argument(
        "--n_leads", type=int, default=12, help="number of leads in the input arrays (default: %(default)s)"
    )
    io.add_argument("--overwrite", action="store_true", help="redo splits that are already tokenised")


def _add_tokenizer_args(tok) -> None:
    tok.add_argument(
        "--used_channels",
        nargs="+",
        default=None,
        help="lead indices or names, e.g. '0 1 7' or 'I,II,V2' (default: all leads)",
    )
    tok.add_argument(
        "--fs", type=int, default=100, help="sampling rate of the input arrays in Hz (default: %(default)s)"
    )
    tok.add_argument("--max_len", type=int, default=256, help="words per sentence (default: %(default)s)")
    tok.add_argument("--token_len", type=int, default=96, help="samples per word (default: %(default)s)")
    tok.add_argument(
        "--nan_policy",
        choices=NAN_POLICIES,
        default="official",
        help="official: as the original (NaN in the detection lead -> empty sentence, NaN copied into words; "
        "such records are named in a warning, the summary and {split}_nonfinite_records.csv); "
        "interpolate: fill NaN/inf by linear interpolation first; zero: set them to 0 first; "
        "skip: leave the record's sentence empty (all padding) (default: %(default)s)",
    )

    tok.add_argument(
        "--detector",
        choices=DETECTORS,
        default=DEFAULT_DETECTOR,
        help="xqrs_fast (default): wfdb's XQRS with its loops compiled (numba) and its filters batched; "
        "the same R peaks, words, lead and time ids as xqrs on every shared real record, ~10x faster; "
        "leads it cannot promise to match (NaN/inf, too short) go to wfdb and are counted in the summary. "
        "xqrs: wfdb.processing.xqrs_detect itself, as the original calls it",
    )


def _add_run_args(run) -> None:
    run.add_argument("--num_workers", type=int, default=os.cpu_count(), help="processes (default: all cores)")
    run.add_argument(
        "--chunk_size", type=int, default=128, help="records per worker task (default: %(default)s)"
    )
    run.add_argument("--no_progress", action="store_true", help="no progress bar (default: shown)")
    run.add_argument(
        "--plot", type=int, default=0, help="save PNGs of N tokenised records per subset (default: 0, none)"
    )
    run.add_argument(
        "--plot_lead", type=int, default=None, help="lead whose words are stacked (default: first used)"
    )


def main(args: argparse.Namespace) -> dict:
    from datasets.qrs.cli import TokenizerConfig, tokenize_dataset

    return tokenize_dataset(TokenizerConfig.from_args(args))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
