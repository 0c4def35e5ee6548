"""The gpu profile's starting point: ImageNet weights where a profile asks for them and they are
there, a from-scratch fallback that says so, ``MINSEG_PRETRAINED=0`` to turn it off. Offline:
the weights are a randomly initialised torchvision state dict in torchvision's cache layout."""
from __future__ import annotations

import pytest
import torch

from minseg.config import profile
from minseg.models import build_model
from minseg.models import weights as W


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torchvision cache, MINSEG_PRETRAINED unset."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(W.PRETRAINED_ENV, raising=False)
    return tmp_path


def _put_weights(monkeypatch, backbone="resnet18"):
    """A random torchvision state dict where torchvision keeps ``backbone``'s weights; the hash
    check is told its digest matches (the real digest of a random file cannot)."""
    import torchvision

    wf = W.weights_file(backbone)
    wf.path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    state = getattr(torchvision.models, backbone)(weights=None).state_dict()
    torch.save(state, wf.path)
    monkeypatch.setattr(W, "_sha256", lambda path: wf.sha256 + "0" * 56)
    return wf, state


def gpu_like(backbone="resnet18"):
    # the gpu profile's policy on a small backbone, without needing CUDA
    return profile("smoke").replace(name="gpu", backbone=backbone)


def test_the_gpu_profile_asks_for_resnet50_and_the_others_for_nothing(hub):
    assert profile("gpu").backbone == "resnet50"
    said = []
    for name in ("smoke", "cpu"):
        cfg = profile(name)
        assert cfg.backbone is None
        start = W.starting_point(cfg, "deeplabv3", say=said.append)
        assert not start.pretrained and start.kwargs == {} and start.lr(3e-3) == 3e-3
    assert said == []   # the laptop profiles teach from scratch and say nothing


def test_absent_weights_fall_back_to_scratch_with_a_notice(hub):
    said = []
    start = W.starting_point(gpu_like(), "deeplabv3", say=said.append)
    assert start.kwargs == {} and start.lr(3e-3) == 3e-3
    wf = W.weights_file("resnet18")
    assert len(said) == 1 and "from scratch" in said[0] and str(wf.path) in said[0]
    assert "python -m minseg data weights --backbones resnet18" in said[0]
    assert "[profile gpu]" in said[0]


def test_present_weights_start_the_encoder_and_lower_the_lr(hub, monkeypatch):
    wf, state = _put_weights(monkeypatch)
    said = []
    start = W.starting_point(gpu_like(), "deeplabv3", say=said.append)
    assert start.pretrained and start.kwargs == {"backbone": "resnet18", "pretrained": True}
    assert start.lr(3e-3) == W.FINETUNE_LR
    assert str(wf.path) in said[0] and f"{W.PRETRAINED_ENV}=0" in said[0]
    model = build_model("deeplabv3", 3, **start.kwargs)
    torch.testing.assert_close(model.encoder.stages[0][0].weight, state["conv1.weight"])
    torch.testing.assert_close(model.encoder.stages[4][-1].conv2.weight, state["layer4.1.conv2.weight"])


def test_minseg_pretrained_0_turns_it_off_and_bad_values_are_named(hub, monkeypatch):
    _put_weights(monkeypatch)
    said = []
    for off in ("0", "false", "OFF"):
        monkeypatch.setenv(W.PRETRAINED_ENV, off)
        assert not W.starting_point(gpu_like(), "deeplabv3", say=said.append).pretrained
    assert all(f"{W.PRETRAINED_ENV}=0" in s for s in said)
    monkeypatch.setenv(W.PRETRAINED_ENV, "1")
    assert W.starting_point(gpu_like(), "deeplabv3", say=None).pretrained
    monkeypatch.setenv(W.PRETRAINED_ENV, "maybe")
    with pytest.raises(ValueError, match="MINSEG_PRETRAINED='maybe'"):
        W.starting_point(gpu_like(), "deeplabv3", say=None)


def test_models_with_their_own_encoder_stay_from_scratch(hub, monkeypatch):
    _put_weights(monkeypatch)
    for name in ("fastscnn", "segformer", "fcn8s"):
        said = []
        start = W.starting_point(gpu_like(), name, say=said.append)
        assert not start.pretrained and "own encoder" in said[0]
        build_model(name, 3, width=4, **start.kwargs)   # the kwargs suit the model
    for name in W.BACKBONE_MODELS:   # and the ones that can start from ImageNet do
        kw = W.starting_point(gpu_like(), name, say=None).kwargs
        build_model(name, 3, **kw)


def test_a_file_that_fails_its_hash_is_an_error_not_a_fallback(hub):
    import torchvision

    wf = W.weights_file("resnet18")
    wf.path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wf.path)
    with pytest.raises(ValueError, match=r"resnet18-f37072fd\.pth is not torchvision's"):
        W.starting_point(gpu_like(), "deeplabv3", say=None)


def test_train_command_follows_the_policy(hub, monkeypatch, tmp_path, capsys):
    """`python -m minseg train` on a profile with a backbone: the notice, the backbone and the
    fine-tuning rate; an explicit --lr or backbone in --model-kwargs wins."""
    import minseg.__main__ as cli
    import minseg.config as config

    _put_weights(monkeypatch)
    base = config._base_profiles
    monkeypatch.setattr(config, "_base_profiles",
                        lambda dev: {**base(dev), "smoke": base(dev)["smoke"].replace(backbone="resnet18")})
    monkeypatch.setenv("MINSEG_DATA", str(tmp_path / "data"))
    args = ["train", "--profile", "smoke", "--model", "deeplabv3", "--max-steps", "1",
            "--classes", "person,car", "--out", str(tmp_path / "run")]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "starts from torchvision's ImageNet-pretrained resnet18" in out
    assert f"lr {W.FINETUNE_LR:g}" in out
    assert cli.main(args + ["--lr", "0.002"]) == 0
    assert "lr 0.002" in capsys.readouterr().out
    monkeypatch.setenv(W.PRETRAINED_ENV, "0")
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "trains from scratch: MINSEG_PRETRAINED=0" in out and "lr 0.003" in out
    # weights asked for explicitly are fine-tuned gently too
    assert cli.main(args + ["--model-kwargs", '{"backbone": "resnet18", "pretrained": true}']) == 0
    assert f"lr {W.FINETUNE_LR:g}" in capsys.readouterr().out
