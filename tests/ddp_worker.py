"""Run by ``tests/test_ddp.py`` under ``torchrun --nproc_per_node 2`` (Gloo on CPU).

Every rank trains the same tiny model with :func:`minseg.train.fit` (DDP, DistributedSampler)
and evaluates it (each rank a share of the data, confusion matrices summed with all_reduce),
then trains another one that a callback on rank 1 alone stops, then a third one from a
:class:`minseg.data.TensorLoader` over the synthetic VOC tree at ``argv[2]`` (the decoded-tensor
path: each rank takes its shard of every epoch, augmented with the rank's own seed).
Rank r writes ``rank{r}.pt`` with its weights, history and confusion matrix into ``argv[1]``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ddp import BATCH, EPOCHS, ddp_data, ddp_net  # noqa: E402

from minseg.train import evaluate, fit  # noqa: E402


def main(out: Path, voc_root: Path) -> None:
    train_ds, val_ds = ddp_data()
    model = ddp_net()
    train = torch.utils.data.DataLoader(train_ds, batch_size=BATCH, shuffle=True)
    val = torch.utils.data.DataLoader(val_ds, batch_size=5)
    history = fit(model, train, val, num_classes=3, epochs=EPOCHS, lr=0.05, optimizer="sgd",
                  device="cpu", checkpoint_dir=out / "ckpt", seed=0)
    assert dist.is_initialized() and dist.get_world_size() == 2, "fit did not start DDP"
    res = evaluate(model, val, 3, device="cpu")
    rank = dist.get_rank()

    def rank1_stops(event, state):  # one rank asks to stop: all must stop at the same step
        if event == "step" and rank == 1 and state["step"] == 2:
            state["stop"] = True

    stopped = fit(ddp_net(), train, None, num_classes=3, epochs=5, device="cpu",
                  callbacks=[rank1_stops])
    from minseg.data import BatchAugment, TensorLoader, decoded_split

    split = decoded_split(voc_root, "train", size=32, classes=["person", "car"],
                          cache_dir=out / "cache")  # both ranks may write it: atomic
    tensors = TensorLoader(split, batch_size=BATCH, augment=BatchAugment())
    tensor_model = ddp_net()
    tensor_hist = fit(tensor_model, tensors, None, num_classes=3, epochs=2, device="cpu", seed=5)
    torch.save({"state": model.state_dict(), "history": [dict(r) for r in history],
                "tensor_state": tensor_model.state_dict(), "tensor_steps": tensor_hist.steps,
                "tensor_images": len(split),
                "cm": res["confusion_matrix"], "images": res["images"],
                "world": int(os.environ["WORLD_SIZE"]),
                "stopped": (stopped.last["step"], stopped.stop_reason)}, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
