"""Benchmark: ``minseg.crf.dense_crf_fast`` vs pydensecrf (``pip install pydensecrf2``) and vs
``dense_crf_exact``.

Run by hand (not by pytest)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/crf.py                 # 1 thread (pydensecrf's)
    .venv/bin/python bench/crf.py --threads 2 --repeats 7

Workload: a 500 x 375 (W x H) image from the built-in synthetic VOC generator (a 500 x 500
scene cropped to 375 rows), 21 classes, probabilities = softmax(3 x smoothed one-hot of the
true mask + Gaussian noise), 10 mean-field iterations, with pydensecrf's default kernels and
with DeepLab-v2's VOC kernels. Every timing is the median over ``--repeats`` runs, the
contenders interleaved round-robin so that load from other processes hits each alike; each
includes everything from the probabilities to the refined probabilities (unaries, lattice
construction, inference). ``fast (cold)`` builds both lattices; ``fast (warm)`` reuses the
position-only (Gaussian kernel) lattice that ``dense_crf_fast`` caches per image size, as in a
loop over same-size images. Agreement = fraction of pixels whose argmax class is the same.

The exact O(N^2) version cannot run on the full image (the two N x N float64 kernels would need
about 560 GB), so it is compared on a 64 x 64 crop of the same scene (same kernels, same
parameters), and its full-size time is extrapolated from the crop as (N_full / N_crop)^2.

pydensecrf is single-threaded, hence the default ``--threads 1``. On a machine whose cores are
busy with other processes, more torch threads than free cores is much slower (OpenMP
threads wait for each other), so compare thread counts only on an idle machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minseg import crf  # noqa: E402
from minseg.crf import DEEPLAB_VOC, PYDENSECRF_DEFAULTS  # noqa: E402
from minseg.data.synthetic import render_scene  # noqa: E402

try:
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax
except ImportError:  # optional peer
    dcrf = None


def workload(seed: int, classes: int = 21, height: int = 375, width: int = 500):
    scene = render_scene(0, seed, width)
    image = np.ascontiguousarray(scene["image"][:height, :width])
    mask = torch.from_numpy(scene["mask"][:height, :width].astype(np.int64))
    mask[mask == 255] = 0  # void band: call it background for the synthetic classifier
    g = torch.Generator().manual_seed(seed)
    onehot = F.one_hot(mask, classes).permute(2, 0, 1).float()[None]
    smooth = F.avg_pool2d(onehot, 9, 1, 4, count_include_pad=False)[0]
    probs = torch.softmax(3 * smooth + torch.randn(classes, height, width, generator=g), 0)
    return image, probs.numpy(), mask.numpy()


def pydensecrf_run(image: np.ndarray, probs: np.ndarray, p: dict) -> np.ndarray:
    C, H, W = probs.shape
    d = dcrf.DenseCRF2D(W, H, C)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=p["gauss_sxy"], compat=p["gauss_compat"])
    d.addPairwiseBilateral(sxy=p["bilateral_sxy"], srgb=p["bilateral_srgb"], rgbim=image,
                           compat=p["bilateral_compat"])
    return np.array(d.inference(p["iterations"]), dtype=np.float32).reshape(C, H, W)


def fast_cold(image, probs, p):
    crf._position_lattice.cache_clear()
    return crf.dense_crf_fast(image, probs, **p)


def fast_warm(image, probs, p):
    return crf.dense_crf_fast(image, probs, **p)


def timed(contenders: dict, repeats: int) -> tuple[dict, dict]:
    times = {k: [] for k in contenders}
    outs = {}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, outs


def agree(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(0) == b.argmax(0)).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    image, probs, mask = workload(args.seed)
    H, W = mask.shape
    print(f"# dense CRF, {W} x {H}, 21 classes, 10 iterations; torch {torch.__version__}, "
          f"{args.threads} thread(s), {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f}; pydensecrf: "
          f"{'installed' if dcrf else 'not installed'}\n")
    print("| kernels | contender | time (s) | vs pydensecrf | argmax agreement with pydensecrf "
          "| max abs diff | pixel acc (unary " f"{(probs.argmax(0) == mask).mean():.3f}) |")
    print("|---|---|---|---|---|---|---|")
    for label, params in (("pydensecrf defaults", PYDENSECRF_DEFAULTS), ("DeepLab-v2 VOC", DEEPLAB_VOC)):
        p = dict(params, iterations=10)
        contenders = {"fast (cold)": lambda: fast_cold(image, probs, p),
                      "fast (warm)": lambda: fast_warm(image, probs, p)}
        if dcrf is not None:
            contenders["pydensecrf"] = lambda: pydensecrf_run(image, probs, p)
        med, outs = timed(contenders, args.repeats)
        ref = outs.get("pydensecrf")
        for name, t in med.items():
            ratio = f"{t / med['pydensecrf']:.2f}x" if ref is not None else "-"
            ag = f"{agree(outs[name], ref):.5f}" if ref is not None else "-"
            diff = f"{np.abs(outs[name] - ref).max():.1e}" if ref is not None else "-"
            acc = (outs[name].argmax(0) == mask).mean()
            print(f"| {label} | {name} | {t:.3f} | {ratio} | {ag} | {diff} | {acc:.3f} |")

    print("\n## exact vs fast on a 64 x 64 crop (exact needs N x N matrices)\n")
    print("| kernels | exact (s) | fast (s) | fast vs exact agreement | exact vs pydensecrf "
          "| fast vs pydensecrf | exact extrapolated to 500 x 375 |")
    print("|---|---|---|---|---|---|---|")
    y0, x0 = H // 2 - 32, W // 2 - 32
    crop_img = np.ascontiguousarray(image[y0:y0 + 64, x0:x0 + 64])
    crop_p = np.ascontiguousarray(probs[:, y0:y0 + 64, x0:x0 + 64])
    crop_p /= crop_p.sum(0, keepdims=True)
    for label, params in (("pydensecrf defaults", PYDENSECRF_DEFAULTS), ("DeepLab-v2 VOC", DEEPLAB_VOC)):
        p = dict(params, iterations=10)
        contenders = {"exact": lambda: crf.dense_crf_exact(crop_img, crop_p, **p),
                      "fast": lambda: crf.dense_crf_fast(crop_img, crop_p, **p)}
        if dcrf is not None:
            contenders["pydensecrf"] = lambda: pydensecrf_run(crop_img, crop_p, p)
        med, outs = timed(contenders, args.repeats)
        ref = outs.get("pydensecrf")
        ex_ref = f"{agree(outs['exact'], ref):.4f}" if ref is not None else "-"
        fa_ref = f"{agree(outs['fast'], ref):.4f}" if ref is not None else "-"
        extrapolated = med["exact"] * (H * W / 64 ** 2) ** 2
        print(f"| {label} | {med['exact']:.3f} | {med['fast']:.4f} | "
              f"{agree(outs['exact'], outs['fast']):.4f} | {ex_ref} | {fa_ref} | "
              f"~{extrapolated / 3600:.0f} h |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
