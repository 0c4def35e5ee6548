"""Every registered model: shapes at odd sizes, gradients, batch size 1, a tiny overfit, bad
input; parity of ASPP with torchvision's and of the Linear -> conv conversion."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from minseg.models import (ASPP, BACKBONES, MODELS, DenseClassifier, VGGClassifier, build_model,
                           count_parameters, deeplabv3, fcn8s, fully_convolutional,
                           linear_to_conv1x1, pspnet, unet)
from minseg.models.backbones import torchvision_backbone

NAMES = list(MODELS)
W = 4  # tiny width: the tests check wiring, not accuracy


def tiny(name, num_classes=3, **kw):
    torch.manual_seed(0)
    return build_model(name, num_classes, width=W, **kw)


def test_registry_has_the_lesson_models():
    assert {"fcn32s", "fcn16s", "fcn8s", "unet", "deeplabv3", "pspnet", "fastscnn",
            "segformer"} <= set(MODELS)


@pytest.mark.parametrize("name", NAMES)
def test_odd_sizes_give_input_size(name):
    model = tiny(name, 5)
    for h, w in [(97, 131), (33, 47)]:
        assert model(torch.randn(2, 3, h, w)).shape == (2, 5, h, w)


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_finite_gradient(name):
    model = tiny(name)
    F.cross_entropy(model(torch.randn(2, 3, 37, 45)), torch.randint(0, 3, (2, 37, 45))).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", NAMES)
def test_batch_size_one_eval_and_train(name):
    model = tiny(name)
    x = torch.randn(1, 3, 33, 47)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (1, 3, 33, 47)
    model.train()  # ASPP's and PPM's image-level branches must not need batch statistics
    out = model(x)
    assert out.shape == (1, 3, 33, 47) and torch.isfinite(out).all()


def overfit_data(n=4, size=32, num_classes=4):
    """Each image mostly one class with a square of another; colour (plus noise) marks the class."""
    g = torch.Generator().manual_seed(0)
    mask = torch.empty(n, size, size, dtype=torch.long)
    for i in range(n):
        mask[i] = i % num_classes
        y0, x0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
        mask[i, y0:y0 + size // 2, x0:x0 + size // 2] = (i + 1) % num_classes
    colours = torch.randn(num_classes, 3, generator=g)
    # contiguous NCHW, as a loader gives: the permuted (channels-last) tensor sends the 4-channel
    # stride-2 1x1 shortcut to oneDNN's jit_1x1 backward-weights kernel, which hangs on AVX2 with
    # 2 threads when in_channels < 8 (uxlfoundation/oneDNN#6035)
    x = colours[mask].permute(0, 3, 1, 2).contiguous()
    x = x + 0.3 * torch.randn(n, 3, size, size, generator=g)
    return x, mask


@pytest.mark.parametrize("name", NAMES)
def test_tiny_overfit(name):
    x, y = overfit_data()
    model = tiny(name, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


# --- bad input -------------------------------------------------------------------------------

def test_build_model_records_how_to_rebuild():
    model = build_model("unet", 3, width=W, skips=False)
    assert model.minseg_name == "unet" and model.minseg_kwargs == {"width": W, "skips": False}
    rebuilt = build_model(model.minseg_name, 3, **model.minseg_kwargs)
    rebuilt.load_state_dict(model.state_dict())


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unet") as e:
        build_model("segnet", 3)
    assert all(n in str(e.value) for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_num_classes_below_two_raises(name):
    with pytest.raises(ValueError, match="num_classes"):
        build_model(name, 1, width=W)


@pytest.mark.parametrize("name", NAMES)
def test_bad_images_raise(name):
    model = tiny(name)
    with pytest.raises(ValueError, match="batch dimension"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="3 channels"):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="floating"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_in_channels():
    model = build_model("unet", 3, width=W, in_channels=1)
    assert model(torch.randn(1, 1, 21, 23)).shape == (1, 3, 21, 23)
    with pytest.raises(ValueError, match="1 channels"):
        model(torch.randn(1, 3, 21, 23))


def test_unknown_upsampler_and_backbone():
    with pytest.raises(ValueError, match="pixelshuffle"):
        unet(3, width=W, up="deconv")
    with pytest.raises(ValueError, match="pixelshuffle"):
        build_model("fcn32s", 3, up="deconv")
    with pytest.raises(ValueError, match="resnet18"):
        deeplabv3(3, backbone="vgg16")
    for name in ("fastscnn", "segformer"):
        with pytest.raises(ValueError, match="own encoder"):
            build_model(name, 3, backbone="resnet18")
    with pytest.raises(ValueError, match="pretrained"):
        pspnet(3, pretrained=True)


# --- ablation switches -----------------------------------------------------------------------

@pytest.mark.parametrize("kw", [dict(skips=False), dict(depth=2), dict(up="bilinear"),
                                dict(up="pixelshuffle"), dict(skips=False, up="bilinear"),
                                dict(up_kwargs=dict(kernel_size=4, bilinear_init=True))])
def test_unet_switches(kw):
    assert unet(3, width=W, **kw)(torch.randn(1, 3, 29, 35)).shape == (1, 3, 29, 35)


@pytest.mark.parametrize("up", ["bilinear", "pixelshuffle"])
def test_fcn_upsamplers(up):
    assert fcn8s(3, width=W, up=up)(torch.randn(1, 3, 29, 35)).shape == (1, 3, 29, 35)


def test_plain_heads_have_similar_size():
    with_aspp, plain = deeplabv3(21, width=16), deeplabv3(21, width=16, use_aspp=False)
    assert abs(count_parameters(plain) / count_parameters(with_aspp) - 1) < 0.05
    assert plain(torch.randn(2, 3, 33, 47)).shape == (2, 21, 33, 47)
    with_ppm, local = pspnet(21, width=16), pspnet(21, width=16, use_ppm=False)
    assert abs(count_parameters(local) / count_parameters(with_ppm) - 1) < 0.05
    assert local(torch.randn(2, 3, 33, 47)).shape == (2, 21, 33, 47)
    assert pspnet(3, width=W, bins=(1, 3))(torch.randn(1, 3, 33, 47)).shape == (1, 3, 33, 47)


def test_deeplab_rates_and_output_stride():
    m = deeplabv3(3, width=W, rates=(6, 12, 18), output_stride=16)
    assert m.encoder.strides[-1] == 16
    assert m(torch.randn(1, 3, 65, 67)).shape == (1, 3, 65, 67)


@pytest.mark.parametrize("name", ["deeplabv3", "pspnet"])
def test_shallow_encoder_blocks(name):
    from minseg.receptive import chain_layers, receptive_field

    m = tiny(name, 3, encoder_blocks=(1, 1))
    assert m.encoder.strides == [2, 4, 8] and m.encoder.channels == [W, 2 * W, 4 * W]
    assert receptive_field(chain_layers(m.encoder)).size == 43   # smaller than a 96-px image
    assert receptive_field(chain_layers(tiny(name, 3).encoder)).size == 235
    assert m(torch.randn(2, 3, 65, 67)).shape == (2, 3, 65, 67)
    for bad in [(), (1, 1, 1, 1, 1), (1, 0)]:
        with pytest.raises(ValueError, match="blocks"):
            tiny(name, 3, encoder_blocks=bad)


# --- parity ----------------------------------------------------------------------------------

def test_aspp_matches_torchvision():
    from torchvision.models.segmentation.deeplabv3 import ASPP as TorchvisionASPP

    torch.manual_seed(0)
    theirs = TorchvisionASPP(16, (2, 4, 6), out_channels=8)
    for m in theirs.modules():  # non-trivial BatchNorm statistics, so they are tested too
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    ours = ASPP(16, 8, (2, 4, 6), pool_norm="batch")
    ours.load_state_dict(theirs.state_dict())  # same layout, strict
    ours.eval(), theirs.eval()
    x = torch.randn(2, 16, 13, 11)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_aspp_batch_one_training():
    x = torch.randn(1, 16, 9, 9)
    for norm in ("none", "group"):
        assert ASPP(16, 8, (1, 2), pool_norm=norm).train()(x).shape == (1, 8, 9, 9)
    with pytest.raises(ValueError, match="more than 1 value"):  # why "batch" is not the default
        ASPP(16, 8, (1, 2), pool_norm="batch").train()(x)


def test_linear_to_conv1x1_identical_logits():
    torch.manual_seed(0)
    linear = nn.Linear(8, 5)
    feat = torch.randn(3, 8, 1, 1)
    conv = linear_to_conv1x1(linear, 8)
    assert conv.kernel_size == (1, 1)
    torch.testing.assert_close(conv(feat).flatten(1), linear(feat.flatten(1)))
    # A Linear on a flattened 4x3x2 map is a 3x2 conv; on a larger map it slides.
    linear = nn.Linear(4 * 3 * 2, 5)
    feat = torch.randn(2, 4, 3, 2)
    conv = linear_to_conv1x1(linear, 4, 3, 2)
    torch.testing.assert_close(conv(feat).flatten(1), linear(feat.flatten(1)))
    assert conv(torch.randn(2, 4, 7, 9)).shape == (2, 5, 5, 8)
    with pytest.raises(ValueError, match="inputs"):
        linear_to_conv1x1(linear, 4)


def test_classifier_becomes_fully_convolutional():
    torch.manual_seed(0)
    clf = VGGClassifier(5, width=W).eval()
    x = torch.randn(2, 3, 96, 128)
    dense = fully_convolutional(clf)
    assert isinstance(dense, DenseClassifier)
    with torch.no_grad():
        logits, scores = clf(x), dense.score_map(x)
        assert logits.shape == (2, 5) and scores.shape == (2, 5, 3, 4)
        # Pooling and the head are linear: averaging the score map gives the logits exactly.
        torch.testing.assert_close(scores.mean(dim=(2, 3)), logits, atol=1e-5, rtol=1e-5)
        assert dense(torch.randn(1, 3, 97, 131)).shape == (1, 5, 97, 131)


# --- torchvision backbones (random weights; never downloaded in tests) -----------------------

@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_stages(name):
    enc = torchvision_backbone(name)
    feats = enc(torch.randn(1, 3, 65, 67))
    assert [f.shape[1] for f in feats] == enc.channels
    assert [f.shape[-1] for f in feats] == [-(-67 // s) for s in (2, 4, 8, 16, 32)]
    enc = torchvision_backbone(name, output_stride=8)
    assert enc.strides == [2, 4, 8, 8, 8]
    assert enc(torch.randn(1, 3, 65, 67))[-1].shape[-1] == -(-67 // 8)


@pytest.mark.parametrize("name,backbone", [("deeplabv3", "mobilenet_v3_large"), ("pspnet", "resnet18"),
                                           ("unet", "resnet18"), ("fcn8s", "resnet18"),
                                           ("deeplabv3", "resnet18")])
def test_models_on_backbones(name, backbone):
    model = build_model(name, 3, backbone=backbone)
    out = model(torch.randn(2, 3, 45, 53))
    assert out.shape == (2, 3, 45, 53)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_backbone_in_channels():
    model = build_model("deeplabv3", 3, backbone="resnet18", in_channels=1, output_stride=16)
    assert model(torch.randn(1, 1, 40, 40)).shape == (1, 3, 40, 40)


# --- parameter table ------------------------------------------------------------------------

def test_parameter_table_at_default_width(capsys):
    rows = [(name, count_parameters(build_model(name, 21))) for name in NAMES]
    with capsys.disabled():
        print("\n| model | params (21 classes, default width) |\n|---|---:|")
        for name, n in rows:
            print(f"| {name} | {n:,} |")
    for name, n in rows:
        assert 2e5 < n < 3e6, f"{name} has {n:,} parameters at default width"


def test_pretrained_weights_come_from_torchvisions_cache_checked(tmp_path, monkeypatch):
    """Offline: a state dict in torchvision's cache layout, built here from a randomly
    initialised torchvision model, exercises the loading path; nothing downloads."""
    import torchvision

    from minseg.models import weights as W

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    wf = W.weights_file("resnet18")
    assert wf.path == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(FileNotFoundError, match="python -m minseg data weights"):
        torchvision_backbone("resnet18", pretrained=True)
    wf.path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    saved = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(saved, wf.path)
    # its SHA-256 is not the one torchvision's file name promises: a clear error, no load
    with pytest.raises(ValueError, match=r"resnet18-f37072fd\.pth is not torchvision's .*resnet18"):
        torchvision_backbone("resnet18", pretrained=True)
    # with the hash check satisfied, the file is what the encoder holds
    monkeypatch.setattr(W, "_sha256", lambda path: wf.sha256 + "0" * 56)
    enc = torchvision_backbone("resnet18", pretrained=True)
    torch.testing.assert_close(enc.stages[0][0].weight, saved["conv1.weight"])
    # a 1-channel input gets the mean of the RGB filters, rescaled
    enc1 = torchvision_backbone("resnet18", pretrained=True, in_channels=1)
    torch.testing.assert_close(enc1.stages[0][0].weight,
                               saved["conv1.weight"].mean(dim=1, keepdim=True) * 3)
    # another architecture's weights under this name: an error naming file and model
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wf.path)
    with pytest.raises(ValueError, match="does not hold weights for torchvision's resnet18"):
        torchvision_backbone("resnet18", pretrained=True)


def test_fetch_weights_offline_says_what_to_put_where(tmp_path, monkeypatch):
    from torchvision.models._api import WeightsEnum

    from minseg.models.weights import fetch_weights, weights_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(self, *a, **k):
        raise OSError("no network")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    said: list[str] = []
    assert fetch_weights(["resnet18", "resnet50"], say=said.append) == 2
    wf = weights_file("resnet50")
    assert any(wf.url in line and str(wf.path) in line for line in said)
    with pytest.raises(ValueError, match="unknown backbone"):
        weights_file("vgg16")


def test_deeplab_aux_head_only_in_training():
    """Deep supervision: the auxiliary logits come back in training mode only, at input size,
    from the second-to-last stage; eval mode returns the plain logits of the same network."""
    torch.manual_seed(0)
    m = build_model("deeplabv3", 3, width=8, aux_head=True)
    x = torch.randn(2, 3, 40, 52)
    out = m(x)
    assert set(out) == {"out", "aux"} and len(out["aux"]) == 1
    assert out["out"].shape == out["aux"][0].shape == (2, 3, 40, 52)
    m.eval()
    plain = m(x)
    assert torch.is_tensor(plain) and plain.shape == (2, 3, 40, 52)
    # the aux head is extra: the main path is the plain model's
    ref = build_model("deeplabv3", 3, width=8)
    ref.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("aux.")})
    ref.eval()
    torch.testing.assert_close(ref(x), plain)


def test_high_resolution_refinement_starts_as_the_wrapped_model():
    from minseg.models.refine import HighResolutionRefinement

    torch.manual_seed(0)
    base = build_model("deeplabv3", 4, width=8).eval()
    x = torch.randn(2, 3, 33, 47)
    ref = base(x)
    r = HighResolutionRefinement(base, 4, width=4).eval()
    torch.testing.assert_close(r(x), ref)          # zero-initialised correction
    r.train()
    loss = r(x).logsumexp(1).mean()
    loss.backward()
    assert r.fuse[-1].weight.grad.abs().sum() > 0   # the branch learns
    aux = HighResolutionRefinement(build_model("deeplabv3", 4, width=8, aux_head=True), 4)
    assert set(aux(x)) == {"out", "aux"}
    with pytest.raises(ValueError, match="num_classes|logits"):
        HighResolutionRefinement(base, 5)(x)
    with pytest.raises(ValueError, match="width"):
        HighResolutionRefinement(base, 4, width=0)
