"""Dense CRF: the exact version against a plain float64 mean field written from the paper, the
fast (permutohedral) version against the exact one and, when installed, both against
pydensecrf (the ``pydensecrf2`` package); a CRF run sharpens boundaries; bad input is refused."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minseg import crf
from minseg.crf import DEEPLAB_VOC, PYDENSECRF_DEFAULTS, dense_crf, dense_crf_exact, dense_crf_fast

@pytest.fixture(autouse=True)
def _one_thread():
    """Many small sparse/tensor ops: on a busy shared CPU, extra OpenMP threads only wait for
    each other (seen here: 2 threads 5x slower). Results do not depend on the thread count."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


SMALL = dict(gauss_sxy=2.0, gauss_compat=3.0, bilateral_sxy=5.0, bilateral_srgb=20.0,
             bilateral_compat=4.0, iterations=3)


def scene(size: int, num_classes: int, seed: int, noise: float = 1.0, hw: tuple | None = None):
    """A few coloured discs and boxes on a background; probs = softmax(3 x smoothed one-hot +
    Gaussian noise): a noisy classifier whose mistakes a CRF can fix."""
    g = torch.Generator().manual_seed(seed)
    H, W = hw or (size, size)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    label = torch.zeros(H, W, dtype=torch.long)
    for k in range(1, num_classes):
        cy, cx = (int(torch.randint(0, n, (1,), generator=g)) for n in (H, W))
        r = int(torch.randint(max(2, H // 8), max(3, H // 3), (1,), generator=g))
        shape = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) if k % 2 else \
            (((yy - cy).abs() < r) & ((xx - cx).abs() < 0.7 * r))
        label[shape] = k
    palette = torch.randint(0, 256, (num_classes, 3), generator=g).float()
    image = (palette[label] + 10 * torch.randn(H, W, 3, generator=g)).clamp(0, 255).round()
    onehot = F.one_hot(label, num_classes).permute(2, 0, 1).float()[None]
    smooth = F.avg_pool2d(onehot, 5, 1, 2, count_include_pad=False)[0]
    probs = torch.softmax(3 * smooth + noise * torch.randn(num_classes, H, W, generator=g), 0)
    return image.to(torch.uint8), probs, label


def brute_force_mean_field(image: np.ndarray, probs: np.ndarray, gauss_sxy, gauss_compat,
                           bilateral_sxy, bilateral_srgb, bilateral_compat, iterations) -> np.ndarray:
    """Krähenbühl & Koltun 2011, eq. 4, with loops: Potts *penalty* mu(l, l') = [l != l'],
    kernels normalised as pydensecrf does (symmetric, the pixel itself included)."""
    C, H, W = probs.shape
    pix = [(x, y) for y in range(H) for x in range(W)]
    rgb = image.reshape(-1, 3).astype(np.float64)
    N = H * W

    def kernel(i, j, bilateral):
        (xi, yi), (xj, yj) = pix[i], pix[j]
        if not bilateral:
            return math.exp(-((xi - xj) ** 2 + (yi - yj) ** 2) / (2 * gauss_sxy ** 2))
        d = ((xi - xj) ** 2 + (yi - yj) ** 2) / (2 * bilateral_sxy ** 2)
        d += sum((rgb[i, c] - rgb[j, c]) ** 2 for c in range(3)) / (2 * bilateral_srgb ** 2)
        return math.exp(-d)

    kn = []
    for bilateral, w in ((False, gauss_compat), (True, bilateral_compat)):
        k = np.array([[kernel(i, j, bilateral) for j in range(N)] for i in range(N)])
        norm = k.sum(1)
        kn.append(w * k / np.sqrt(norm[:, None] * norm[None, :]))
    pairwise = kn[0] + kn[1]
    unary = -np.log(np.clip(probs.reshape(C, N).astype(np.float64), 1e-5, 1.0))

    def softmax(e):  # of -energy, over labels
        z = np.exp(-(e - e.min()))
        return z / z.sum()

    Q = np.stack([softmax(unary[:, i]) for i in range(N)], 1)
    for _ in range(iterations):
        new = np.empty_like(Q)
        for i in range(N):
            energy = unary[:, i].copy()
            for l in range(C):
                for j in range(N):
                    energy[l] += pairwise[i, j] * sum(Q[l2, j] for l2 in range(C) if l2 != l)
            new[:, i] = softmax(energy)
        Q = new
    return Q.reshape(C, H, W)


def agreement(a, b) -> float:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return float((a.argmax(0) == b.argmax(0)).double().mean())


# --------------------------------------------------------------------------------------------
# parity
# --------------------------------------------------------------------------------------------

def test_exact_equals_brute_force_mean_field():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(3), size=(6, 7)).transpose(2, 0, 1)
    probs[0, 0, 0], probs[1, 0, 0], probs[2, 0, 0] = 1.0, 0.0, 0.0  # exercises the clip
    params = dict(gauss_sxy=1.5, gauss_compat=3.0, bilateral_sxy=4.0, bilateral_srgb=60.0,
                  bilateral_compat=5.0, iterations=3)
    ref = brute_force_mean_field(image, probs, **params)
    out = dense_crf_exact(image, probs, **params)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (3, 6, 7)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("params", [PYDENSECRF_DEFAULTS, DEEPLAB_VOC, SMALL])
def test_fast_agrees_with_exact(params):
    for size, classes, seed in ((32, 4, 0), (32, 3, 1), (40, 5, 2)):
        image, probs, _ = scene(size, classes, seed)
        exact = dense_crf_exact(image, probs, **params)
        fast = dense_crf_fast(image, probs, **params)
        assert agreement(exact, fast) >= 0.99, (size, classes, seed)
        assert float((exact - fast).abs().mean()) < 0.02  # near-ties may flip: no max bound


def test_lattice_filter_is_close_to_the_gaussian():
    # Sum over a 2-D grid of a Gaussian of width 2 (in pixels): the lattice's normalised
    # kernel row sums to about the same mass as the exact one, away from the border.
    H = W = 24
    ys, xs = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    feats = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1) / 2.0
    lattice = crf.PermutohedralLattice(feats)
    delta = torch.zeros(H * W, 1)
    delta[12 * W + 12] = 1
    approx = lattice.filter(delta)[:, 0]
    exact = torch.exp(-0.5 * ((feats - feats[12 * W + 12]) ** 2).sum(1))
    assert abs(float(approx.sum() / exact.sum()) - 1) < 0.2
    assert float((approx - exact).abs().max()) < 0.3  # measured 0.23: a coarse bump, not a Gaussian
    # linear: L(2a + b) = 2 L(a) + L(b)
    a, b = torch.rand(H * W, 2, dtype=torch.float64), torch.rand(H * W, 2, dtype=torch.float64)
    assert torch.allclose(lattice.filter(2 * a + b), 2 * lattice.filter(a) + lattice.filter(b))


def _pydensecrf(image: np.ndarray, probs: np.ndarray, p: dict) -> np.ndarray:
    dcrf = pytest.importorskip("pydensecrf.densecrf")
    from pydensecrf.utils import unary_from_softmax

    C, H, W = probs.shape
    d = dcrf.DenseCRF2D(W, H, C)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=p["gauss_sxy"], compat=p["gauss_compat"])
    d.addPairwiseBilateral(sxy=p["bilateral_sxy"], srgb=p["bilateral_srgb"],
                           rgbim=np.ascontiguousarray(image), compat=p["bilateral_compat"])
    return np.array(d.inference(p["iterations"]), dtype=np.float32).reshape(C, H, W)


@pytest.mark.parametrize("params", [PYDENSECRF_DEFAULTS, DEEPLAB_VOC, SMALL])
def test_pydensecrf_parity(params):
    pytest.importorskip("pydensecrf.densecrf")
    for size, classes, seed, hw in ((32, 4, 0, None), (0, 5, 3, (45, 70))):
        image, probs, _ = scene(size, classes, seed, hw=hw)
        image, probs = image.numpy(), probs.numpy()
        ref = _pydensecrf(image, probs, params)
        fast = dense_crf_fast(image, probs, **params)
        # the same lattice, float32: equal up to rounding
        assert np.abs(fast - ref).max() < 1e-4
        assert agreement(fast, ref) >= 0.999
        # the exact Gaussian kernels: the same decisions almost everywhere
        assert agreement(dense_crf_exact(image, probs, **params), ref) >= 0.99


def test_crf_improves_boundaries():
    metrics = pytest.importorskip("minseg.metrics")
    image, probs, label = scene(64, 4, 7, noise=1.5)
    before = probs.argmax(0)
    after = dense_crf(image, probs, method="fast", **DEEPLAB_VOC).argmax(0)
    f1_before = metrics.boundary_f1(before, label, tolerance_px=1, num_classes=4)
    f1_after = metrics.boundary_f1(after, label, tolerance_px=1, num_classes=4)
    assert f1_after > f1_before + 0.1, (f1_before, f1_after)
    assert (after == label).float().mean() > (before == label).float().mean()


# --------------------------------------------------------------------------------------------
# interface
# --------------------------------------------------------------------------------------------

def test_output_type_follows_probs():
    image, probs, _ = scene(16, 3, 0)
    out = dense_crf_fast(image.numpy(), probs.double(), iterations=2)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == (3, 16, 16)
    assert torch.allclose(out.sum(0), torch.ones(16, 16, dtype=torch.float64), atol=1e-5)
    out = dense_crf_exact(image, probs.numpy(), iterations=2)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    # zero iterations: the (clipped, renormalised) input
    out = dense_crf_fast(image, probs, iterations=0)
    assert torch.allclose(out, probs, atol=1e-4)


def test_auto_dispatch_and_disabled_kernels():
    image, probs, _ = scene(16, 3, 4)
    assert torch.equal(dense_crf(image, probs), dense_crf_exact(image, probs))
    big_image, big_probs, _ = scene(40, 3, 4)
    assert torch.equal(dense_crf(big_image, big_probs), dense_crf_fast(big_image, big_probs))
    only_bilateral = dict(gauss_compat=0, bilateral_sxy=6.0, bilateral_srgb=20.0)
    assert agreement(dense_crf_exact(image, probs, **only_bilateral),
                     dense_crf_fast(image, probs, **only_bilateral)) >= 0.99
    none = dense_crf_fast(image, probs, gauss_compat=0, bilateral_compat=0)
    assert torch.allclose(none, probs, atol=1e-4)


def test_bad_input():
    image, probs, _ = scene(8, 3, 0)
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(image.float(), probs)
    with pytest.raises(ValueError, match="H,W,3"):
        dense_crf(image.permute(2, 0, 1), probs)
    with pytest.raises(ValueError, match="H,W,3"):
        dense_crf(image[..., 0], probs)
    with pytest.raises(ValueError, match="must match"):
        dense_crf(image[:7], probs)
    with pytest.raises(ValueError, match="sum to 1"):
        dense_crf(image, probs * 2)
    with pytest.raises(ValueError, match=">= 0"):
        dense_crf(image, probs - probs.mean())
    with pytest.raises(ValueError, match="NaN"):
        bad = probs.clone()
        bad[0, 0, 0] = float("nan")
        dense_crf(image, bad)
    with pytest.raises(ValueError, match="C,H,W"):
        dense_crf(image, probs[0])
    with pytest.raises(ValueError, match="floating"):
        dense_crf(image, probs.argmax(0, keepdim=True).expand(3, 8, 8))
    with pytest.raises(ValueError, match="numpy array or a torch.Tensor"):
        dense_crf(image.tolist(), probs)
    with pytest.raises(ValueError, match="method"):
        dense_crf(image, probs, method="slow")
    with pytest.raises(ValueError, match="gauss_sxy"):
        dense_crf(image, probs, gauss_sxy=0)
    with pytest.raises(ValueError, match="iterations"):
        dense_crf(image, probs, iterations=-1)
    big_image, big_probs, _ = scene(65, 3, 0)
    with pytest.raises(ValueError, match="dense_crf_fast"):
        dense_crf_exact(big_image, big_probs)
