"""`python -m minseg ...`: help, data generation, the demo and train/eval in the smoke profile."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run(*args, env=None, timeout=240):
    e = dict(os.environ, MINSEG_PROFILE="smoke", MINSEG_QUIET="1", OMP_NUM_THREADS="1")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "minseg", *args], capture_output=True,
                          text=True, env=e, timeout=timeout)


def test_help_lists_commands():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("demo", "data", "train", "eval"):
        assert cmd in out.stdout
    assert "--budget" in run("demo", "--help").stdout


def test_unknown_profile_is_a_clear_error(tmp_path):
    out = run("data", "synthetic", "--root", str(tmp_path), env={"MINSEG_PROFILE": "fast"})
    assert out.returncode == 2 and "valid profiles are smoke, cpu, gpu" in out.stderr


def test_data_synthetic(tmp_path):
    out = run("data", "synthetic", "--root", str(tmp_path / "s"), "--num-train", "4",
              "--num-val", "2", "--image-size", "32")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "s/VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read_text().count("\n") == 2


def test_demo_runs_in_smoke_profile(tmp_path):
    out = run("demo", "--out", str(tmp_path / "demo"), "--budget", "3",
              env={"MINSEG_DATA": str(tmp_path / "data")})
    assert out.returncode == 0, out.stderr
    assert "val mIoU" in out.stdout and "task: person, car, boat, aeroplane, train" in out.stdout
    res = json.loads((tmp_path / "demo/results.json").read_text())
    assert 0.0 <= res["miou"] <= 1.0 and res["steps"] == res["planned_steps"] == 4
    assert res["model"] == "fastscnn" and res["model_kwargs"] == {} and res["scale"] == [1, 1]
    assert res["classes"][0] == "background" and len(res["classes"]) == 6
    assert (tmp_path / "demo/predictions.png").stat().st_size > 1000


def test_demo_recipe_options_reach_the_run(tmp_path):
    out = run("demo", "--out", str(tmp_path / "demo"), "--model", "deeplabv3", "--model-kwargs",
              '{"encoder_blocks": [1, 1]}', "--scale", "0.75,1.25", "--steps", "1",
              env={"MINSEG_DATA": str(tmp_path / "data")})
    assert out.returncode == 0, out.stderr
    assert "random scale 0.75-1.25" in out.stdout
    res = json.loads((tmp_path / "demo/results.json").read_text())
    assert res["model_kwargs"] == {"encoder_blocks": [1, 1]} and res["steps"] == 1


@pytest.mark.parametrize("args, message", [
    (("--scale", "2"), "two numbers"), (("--scale", "1.5,0.5"), "LO <= HI"),
    (("--model-kwargs", "{width: 8}"), "not JSON"), (("--model-kwargs", "[1]"), "JSON object")])
def test_demo_rejects_bad_recipe_options(args, message):
    out = run("demo", *args)
    assert out.returncode == 2 and message in out.stderr


def test_train_then_eval_checkpoint(tmp_path):
    env = {"MINSEG_DATA": str(tmp_path / "data")}
    out = run("train", "--model", "fcn32s", "--max-steps", "2", "--classes", "person,car",
              "--out", str(tmp_path / "run"), env=env)
    assert out.returncode == 0, out.stderr
    ckpt = tmp_path / "run" / "last.pt"
    assert ckpt.is_file()
    out = run("eval", "--checkpoint", str(ckpt), "--scales", "0.75,1", "--flip", env=env)
    assert out.returncode == 0, out.stderr
    assert "mIoU" in out.stdout and "person" in out.stdout and "car" in out.stdout
    out = run("eval", "--checkpoint", str(ckpt), "--window", "48", env=env)
    assert out.returncode == 0, out.stderr
    assert "full resolution, sliding window 48 px (stride 32)" in out.stdout
    out = run("eval", "--checkpoint", str(ckpt), "--full-resolution", env=env)
    assert out.returncode == 0, out.stderr
    assert "full resolution, whole image" in out.stdout


def test_data_weights_offline_says_where_to_put_them(tmp_path):
    out = run("data", "weights", "--backbones", "resnet18", timeout=120,
              env={"TORCH_HOME": str(tmp_path), "HTTPS_PROXY": "http://127.0.0.1:9",
                   "HTTP_PROXY": "http://127.0.0.1:9"})
    assert out.returncode == 1
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in out.stdout
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in out.stdout
    bad = run("data", "weights", "--backbones", "vgg16")
    assert bad.returncode != 0 and "unknown backbone" in bad.stderr


def test_eval_missing_voc_explains(tmp_path):
    out = run("train", "--data", "voc", "--max-steps", "1", env={"MINSEG_DATA": str(tmp_path)})
    assert out.returncode != 0 and "python -m minseg data voc" in (out.stderr + out.stdout)
