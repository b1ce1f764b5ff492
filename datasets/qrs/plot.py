"""Inspection plots of tokenised records (HeartLang Sec. 3.1: what an ECG word looks like).

One PNG per record: the detection lead with its R peaks and word spans, the words of one lead
stacked on top of each other (R peak normally at index 48), and the whole sentence as an image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets.preprocess.signal import STANDARD_LEADS
from datasets.qrs.tokenizer import tokenize_record, word_bounds
from utils.artifacts import atomic_path


def lead_name(index: int) -> str:
    return STANDARD_LEADS[index] if 0 <= index < len(STANDARD_LEADS) else f"lead {index}"


def plot_record(
    signal: np.ndarray,
    path: str | Path,
    used_channels=None,
    plot_lead: int | None = None,
    title: str = "",
    **tokenize_kwargs,
) -> Path:
    """Tokenise ``signal`` (n_leads, T) and save an inspection PNG to ``path``.

    plot_lead: standard lead index whose words are stacked (default: the detection lead).
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers
    import matplotlib.pyplot as plt

    leads = list(range(signal.shape[0])) if used_channels is None else [int(c) for c in used_channels]
    data, lead_ids, _, info = tokenize_record(signal, leads, **tokenize_kwargs)
    plot_lead = leads[0] if plot_lead is None else int(plot_lead)
    fs = tokenize_kwargs.get("fs", 100)
    det = np.asarray(signal[leads[0]], dtype=np.float32)
    t = np.arange(det.size) / fs

    fig, axes = plt.subplots(3, 1, figsize=(11, 9), gridspec_kw={"height_ratios": [1.2, 1.2, 1.4]})
    ax = axes[0]
    ax.plot(t, det, lw=0.8, color="k")
    q = info.qrs_inds
    if q.size:
        start, length, _ = word_bounds(q, det.size, tokenize_kwargs.get("token_len", 96))
        for k, (s, n) in enumerate(zip(start, length)):
            ax.axvspan(s / fs, (s + n) / fs, color=f"C{k % 2}", alpha=0.12, lw=0)
        ax.plot(q / fs, det[q], "rv", ms=6, label=f"{q.size} R peaks (xqrs)")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_title(
        f"{title}  detection lead {lead_name(leads[0])}" + (f"  [{info.reason}]" if info.reason else "")
    )
    ax.set_xlabel("s")

    ax = axes[1]
    words = data[lead_ids == plot_lead + 1]
    for k, w in enumerate(words):
        ax.plot(w, lw=0.8, color=plt.cm.viridis(k / max(len(words) - 1, 1)))
    ax.axvline(data.shape[1] // 2, color="r", ls="--", lw=0.8)
    ax.set_title(f"{len(words)} words of lead {lead_name(plot_lead)} stacked (dashed: index 48)")
    ax.set_xlabel("sample in word")

    ax = axes[2]
    finite = data[np.isfinite(data)]
    lim = float(np.percentile(np.abs(finite), 99)) if finite.size else 1.0
    ax.imshow(data, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_title(
        f"sentence: {info.num_words} words"
        + (f", truncated to {data.shape[0]}" if info.truncated else "")
        + " (rows: words, lead-major)"
    )
    ax.set_ylabel("word")
    ax.set_xlabel("sample in word")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:  # never written through a symlink at ``path``
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
