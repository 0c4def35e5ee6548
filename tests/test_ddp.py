"""fit / evaluate under torchrun: 2 processes, Gloo on CPU, compared with one process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

BATCH, EPOCHS = 4, 2  # per rank; one process uses 2 * BATCH


def ddp_data():
    """24 training images (no void pixels: every rank's mean loss then weighs the same pixels)
    and 13 validation images (void pixels, an uneven split over 2 ranks)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 3, 12, 12, generator=g)
    y = x.argmax(1)
    yv = y[24:].clone()
    yv[:, :, 0] = 255
    return TensorDataset(x[:24], y[:24]), TensorDataset(x[24:], yv)


def ddp_net() -> nn.Module:
    """No BatchNorm or dropout, so 2 ranks x BATCH is the same computation as 1 x 2*BATCH."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))


def test_two_gloo_ranks_match_one_process(tmp_path, voc_root):
    from minseg.train import evaluate, fit, load_checkpoint

    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINSEG_QUIET": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(worker), str(tmp_path), str(voc_root)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))

    # DDP keeps the replicas identical; metrics are reduced, so both ranks report the same
    assert r0["world"] == 2
    assert r0["stopped"] == r1["stopped"] == (2, "callback")  # the ranks agreed to stop
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert torch.equal(r0["cm"], r1["cm"])
    untimed = [[{k: v for k, v in r.items() if "_s" not in k} for r in x["history"]] for x in (r0, r1)]
    assert untimed[0] == untimed[1]

    # the decoded-tensor path: replicas stay identical, each rank runs half the batches
    for k in r0["tensor_state"]:
        assert torch.equal(r0["tensor_state"][k], r1["tensor_state"][k]), k
    per_rank = -(-r0["tensor_images"] // 2)  # a DistributedSampler pads to equal shares
    assert r0["tensor_steps"] == r1["tensor_steps"] == 2 * (per_rank // BATCH)

    # the summed confusion matrix equals the single-process one on the same data and weights
    train_ds, val_ds = ddp_data()
    model = ddp_net()
    model.load_state_dict(r0["state"])
    single = evaluate(model, DataLoader(val_ds, batch_size=5), 3, device="cpu")
    assert torch.equal(r0["cm"], single["confusion_matrix"]) and r0["images"] == 13
    assert int(r0["cm"].sum()) == 13 * 12 * 11  # every valid pixel counted exactly once

    # the DistributedSampler splits each global batch of one process between the ranks
    ref = ddp_net()
    h = fit(ref, DataLoader(train_ds, batch_size=2 * BATCH, shuffle=True), num_classes=3,
            epochs=EPOCHS, lr=0.05, optimizer="sgd", device="cpu", seed=0)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-4, atol=1e-5)
    for a, b in zip(r0["history"], h):  # the logged loss is averaged over the ranks
        assert a["step"] == b["step"] and a["loss"] == pytest.approx(b["loss"], rel=1e-4)

    # rank 0 alone wrote the checkpoint (atomically: no temporary files left)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.pt"]
    ck = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert ck["args"]["world_size"] == 2 and len(ck["rng"]) == 2
    assert torch.equal(ck["model"]["0.weight"], r0["state"]["0.weight"])
