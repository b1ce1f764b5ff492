"""Run under ``torchrun --nproc_per_node=2``: exercises utils.dist and writes what each rank saw."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from utils import dist as D  # noqa: E402
from utils.logging import MetricLogger  # noqa: E402

out = Path(sys.argv[1])
info = D.init_distributed_mode(device="cpu")
seed = D.seed_everything(100)
draw = torch.rand(1).item()
mean = D.all_reduce_mean(float(info.rank + 1))  # ranks 0,1 -> (1+2)/2 = 1.5
tensor_mean = D.all_reduce_mean(torch.tensor([float(info.rank)] * 3)).tolist()
broadcast = D.broadcast_object({"from_rank": info.rank, "draw": draw})  # rank 0's object on every rank
ml = MetricLogger()
ml.update(loss=float(info.rank))  # rank0: 0, rank1: 1
ml.synchronize_between_processes()
D.print0(f"only-rank-0-prints rank={info.rank}")
D.barrier()
(out / f"rank{info.rank}.json").write_text(
    json.dumps(
        {
            "rank": info.rank,
            "world_size": info.world_size,
            "local_rank": info.local_rank,
            "distributed": info.distributed,
            "backend": torch.distributed.get_backend(),
            "is_main": D.is_main_process(),
            "seed": seed,
            "draw": draw,
            "mean": mean,
            "tensor_mean": tensor_mean,
            "broadcast": broadcast,
            "synced_loss_avg": ml.loss.global_avg,
        }
    )
)
D.destroy_distributed()
