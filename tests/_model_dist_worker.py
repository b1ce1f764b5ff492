"""Worker for test_model_quantizer: NormEMA quantizer under a 2-process gloo group (torchrun).

Each rank feeds DIFFERENT data; the codebook must stay identical on every rank after the k-means init
and after several EMA steps. A control quantizer whose broadcast is disabled shows that the ranks
would disagree without the sync. Writes <out_dir>/rank<r>.pt with the states.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from modeling.quantizer import NormEMAVectorQuantizer


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(100 + rank)  # different data AND different k-means draws per rank
    synced = NormEMAVectorQuantizer(16, 8, decay=0.9, kmeans_init=True).train()
    control = NormEMAVectorQuantizer(16, 8, decay=0.9, kmeans_init=True, broadcast_fn=lambda t: None).train()
    states = {}
    for step in range(4):
        z = torch.randn(3, 40, 8) + rank
        synced(z)
        control(z)
        if step == 0:
            states["after_init"] = synced.embedding.weight.clone()
            states["init_bins"] = synced.embedding.cluster_size.clone()
            states["control_after_init"] = control.embedding.weight.clone()
    states["after_steps"] = synced.embedding.weight.clone()
    states["cluster_size"] = synced.cluster_size.clone()
    states["z_last"] = z
    torch.save(states, Path(out_dir) / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
