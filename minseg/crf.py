"""Dense (fully connected) CRF post-processing by mean-field inference.

Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
Potentials", NeurIPS 2011, https://arxiv.org/abs/1210.5644.

Every pixel ``i`` takes a label ``x_i``; the energy is

    E(x) = sum_i U_i(x_i) + sum_{i<j} mu(x_i, x_j) sum_m w_m k_m(f_i, f_j)

with unaries ``U_i(l) = -log p_i(l)`` (``p`` clipped at ``1e-5`` as pydensecrf's
``unary_from_softmax`` does), the Potts compatibility ``mu(l, l') = [l != l']`` and two
Gaussian kernels on per-pixel features ``f``:

* the *Gaussian* (smoothness) kernel on positions, ``f = (x, y) / gauss_sxy``, weight
  ``gauss_compat``: nearby pixels prefer the same label;
* the *bilateral* (appearance) kernel on positions and colours,
  ``f = (x / bilateral_sxy, y / bilateral_sxy, r / bilateral_srgb, g / ..., b / ...)``, weight
  ``bilateral_compat``: nearby pixels of similar colour prefer the same label,

each ``k(f_i, f_j) = exp(-|f_i - f_j|^2 / 2)``. Mean-field inference repeats

    Q_i(l) <- softmax_l( -U_i(l) + sum_m w_m sum_j kn_m(i, j) Q_j(l) )

where ``kn`` is the kernel matrix normalised symmetrically, ``kn = D^-1/2 K D^-1/2`` with
``D = diag(K 1)``. These are exactly pydensecrf's conventions (``DenseCRF2D`` with
``addPairwiseGaussian``/``addPairwiseBilateral``, ``NORMALIZE_SYMMETRIC``, ``DIAG_KERNEL``,
``PottsCompatibility``), checked against its C++ source:

* the sum over ``j`` includes ``j = i`` (the lattice filter does not remove the pixel itself,
  so neither does :func:`dense_crf_exact`); the paper writes ``j != i``. One consequence:
  each pixel also reinforces its own most likely label (a lone pixel with p = (0.3, 0.7)
  ends at (1e-6, 1 - 1e-6) with the default weights, in pydensecrf too);
* Potts is applied as a *reward* ``+w (kn Q)_i(l)`` for agreeing with the neighbours rather than
  the paper's penalty ``-w sum_{l' != l} (kn Q)_i(l')``. The two differ by
  ``w (kn 1)_i``, the same for every label, so the softmax (and the result) is identical;
* ``Q`` starts at ``softmax(-U)`` and each iteration uses the previous ``Q`` for every pixel
  (parallel updates), ``iterations`` times.

Parameters are named after pydensecrf's arguments. Its defaults are :data:`PYDENSECRF_DEFAULTS`
(also this module's defaults); DeepLab-v2's cross-validated VOC setting is :data:`DEEPLAB_VOC`
(``dense_crf(image, probs, **DEEPLAB_VOC)``).

Size: one job (mean-field inference in a dense CRF) in about 500 lines, because the exact
reference and the permutohedral-lattice filter it is tested against share the kernels, the
checks and the update, and are read side by side in lesson 16.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import numpy as np
import torch

PYDENSECRF_DEFAULTS: dict[str, float | int] = dict(
    gauss_sxy=3.0, gauss_compat=3.0, bilateral_sxy=80.0, bilateral_srgb=13.0,
    bilateral_compat=10.0, iterations=5)
"""pydensecrf's defaults (``addPairwiseGaussian(sxy=3, compat=3)``,
``addPairwiseBilateral(sxy=80, srgb=13, compat=10)``) with 5 iterations, as in its README."""

DEEPLAB_VOC: dict[str, float | int] = dict(
    gauss_sxy=1.0, gauss_compat=3.0, bilateral_sxy=67.0, bilateral_srgb=3.0,
    bilateral_compat=4.0, iterations=10)
"""DeepLab-v2 (ResNet-101) on PASCAL VOC 2012 (Chen et al. 2017, https://arxiv.org/abs/1606.00915):
``pos_w=3, pos_xy_std=1, bi_w=4, bi_xy_std=67, bi_rgb_std=3``, 10 mean-field iterations.
(Their VGG-16 model used ``pos_w=2, pos_xy_std=2, bi_w=4, bi_xy_std=65, bi_rgb_std=3``.)"""

EXACT_MAX_PIXELS = 64 * 64
"""Largest image (``H * W``) that :func:`dense_crf_exact` accepts: it stores N x N matrices."""

AUTO_EXACT_PIXELS = 32 * 32
"""``dense_crf(method="auto")`` uses the exact version up to this many pixels, else the fast one."""

PROB_CLIP = 1e-5
SUM_ATOL = 1e-3


# ---------------------------------------------------------------------------------------------
# Input checks and conversions shared by both versions
# ---------------------------------------------------------------------------------------------

def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        # ascontiguousarray: from_numpy rejects negative strides (a flipped view)
        return torch.from_numpy(np.ascontiguousarray(x))
    raise ValueError(f"{name} must be a numpy array or a torch.Tensor, got {type(x).__name__}")


def _check_inputs(image: Any, probs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``image`` (``H,W,3`` uint8) and ``probs`` (``C,H,W`` probabilities)."""
    img = _as_tensor(image, "image")
    if img.ndim != 3 or img.shape[2] != 3:
        hint = ""
        if img.ndim == 3 and img.shape[0] == 3:
            hint = " (it looks like 3,H,W: use image.permute(1, 2, 0) or np.transpose(image, (1, 2, 0)))"
        raise ValueError(f"image must be an RGB array of shape H,W,3; got shape {tuple(img.shape)}{hint}")
    if img.dtype != torch.uint8:
        raise ValueError(f"image must have dtype uint8 (0..255 RGB), got {img.dtype}; the CRF's "
                         f"colour scale (bilateral_srgb) is in 0..255 units, so convert a float "
                         f"image with (image * 255).round() to uint8 before normalising it")
    p = _as_tensor(probs, "probs")
    if p.ndim != 3:
        raise ValueError(f"probs must have shape C,H,W; got shape {tuple(p.shape)}")
    if not p.is_floating_point():
        raise ValueError(f"probs must be floating point probabilities, got dtype {p.dtype}")
    if p.shape[0] < 2:
        raise ValueError(f"probs must have at least 2 classes along dim 0; got shape {tuple(p.shape)}")
    if tuple(p.shape[1:]) != tuple(img.shape[:2]):
        raise ValueError(f"image is {img.shape[0]}x{img.shape[1]} (H x W) but probs are "
                         f"{p.shape[1]}x{p.shape[2]}; they must match (probs has shape C,H,W)")
    # One sum and one min cover everything (NaN/inf poison both); details only on failure.
    lowest = float(p.amin())
    # summed in >= float32: a float16 sum of C values can be off by more than SUM_ATOL
    err = float((p.sum(0, dtype=torch.float64 if p.dtype == torch.float64 else torch.float32) - 1)
                .abs().amax())
    if not (math.isfinite(lowest) and math.isfinite(err)):
        raise ValueError(f"probs contain {int((~torch.isfinite(p)).sum())} NaN/inf values")
    # tiny negatives from rounding are tolerated, as is a sum off by <= SUM_ATOL
    if lowest < -SUM_ATOL:
        raise ValueError(f"probs must be >= 0; the smallest value is {lowest:.4g} "
                         f"(pass softmax(logits, 0), not logits)")
    if err > SUM_ATOL:
        raise ValueError(f"probs must sum to 1 over the classes (dim 0); the largest deviation is "
                         f"{err:.4g} (pass softmax(logits, 0), not logits)")
    return img, p


def _check_params(gauss_sxy: float, gauss_compat: float, bilateral_sxy: float,
                  bilateral_srgb: float, bilateral_compat: float, iterations: int) -> None:
    for name, v in (("gauss_sxy", gauss_sxy), ("bilateral_sxy", bilateral_sxy),
                    ("bilateral_srgb", bilateral_srgb)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number, got {v!r}")
    for name, v in (("gauss_compat", gauss_compat), ("bilateral_compat", bilateral_compat)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a number >= 0 (0 turns the kernel off), got {v!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")


def _features(img: torch.Tensor, sxy: float, srgb: float | None, dtype: torch.dtype,
              device: torch.device) -> torch.Tensor:
    """Per-pixel features ``(x/sxy, y/sxy[, r/srgb, g/srgb, b/srgb])``, pixels in row-major order."""
    H, W = img.shape[:2]
    ys, xs = torch.meshgrid(torch.arange(H, device=device, dtype=dtype),
                            torch.arange(W, device=device, dtype=dtype), indexing="ij")
    # reshape(-1) is row-major: the same pixel order as probs.reshape(C, -1) in the callers
    cols = [xs.reshape(-1) / sxy, ys.reshape(-1) / sxy]
    if srgb is not None:
        rgb = img.to(device=device, dtype=dtype).reshape(-1, 3) / srgb
        cols += [rgb[:, 0], rgb[:, 1], rgb[:, 2]]
    return torch.stack(cols, 1)


def unary_from_probs(probs: torch.Tensor, clip: float = PROB_CLIP) -> torch.Tensor:
    """Unary energies ``-log(clip(p, clip, 1))``, as pydensecrf's ``unary_from_softmax``.

    Krähenbühl & Koltun 2011, https://arxiv.org/abs/1210.5644 (unaries from a classifier).
    """
    # the floor keeps U finite where p = 0: at most -log(1e-5) ~ 11.5
    return -torch.log(probs.clamp(clip, 1.0))


def _restore(q: torch.Tensor, like: Any) -> Any:
    """``q`` (``C,H,W``) back in the family and dtype of the ``probs`` the caller passed."""
    if isinstance(like, np.ndarray):
        return q.detach().cpu().numpy().astype(like.dtype, copy=False)
    return q.to(dtype=like.dtype, device=like.device)


# ---------------------------------------------------------------------------------------------
# Exact version: N x N kernel matrices
# ---------------------------------------------------------------------------------------------

def normalized_gaussian_kernel(features: torch.Tensor) -> torch.Tensor:
    """``D^-1/2 K D^-1/2`` with ``K_ij = exp(-|f_i - f_j|^2 / 2)`` (diagonal included), N x N.

    pydensecrf's ``NORMALIZE_SYMMETRIC`` (Krähenbühl & Koltun 2011,
    https://arxiv.org/abs/1210.5644; the normalisations are from Krähenbühl & Koltun 2013,
    https://proceedings.mlr.press/v28/kraehenbuehl13.html).
    """
    # the direct |f_i - f_j| form: the matmul shortcut |a|^2 + |b|^2 - 2 a.b cancels badly and
    # can even give small negative squared distances
    sqdist = torch.cdist(features, features, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    k = torch.exp(-0.5 * sqdist)
    d = k.sum(1).rsqrt()  # D^-1/2; every row sum is >= 1 (k_ii = 1), so no division by 0
    # D^-1/2 K D^-1/2 by broadcasting, no diagonal matrices
    return d[:, None] * k * d[None, :]


def dense_crf_exact(image: Any, probs: Any, *, gauss_sxy: float = 3.0, gauss_compat: float = 3.0,
                    bilateral_sxy: float = 80.0, bilateral_srgb: float = 13.0,
                    bilateral_compat: float = 10.0, iterations: int = 5,
                    max_pixels: int = EXACT_MAX_PIXELS) -> Any:
    """Dense-CRF mean field with the kernels as full N x N matrices, in float64 (small images only).

    Krähenbühl & Koltun 2011, https://arxiv.org/abs/1210.5644. The reference that
    :func:`dense_crf_fast` approximates: O(N^2) memory and time per iteration, so images with
    more than ``max_pixels`` pixels are refused with a ``ValueError``.

    ``image``: RGB ``H,W,3`` uint8 (numpy or tensor). ``probs``: ``C,H,W`` class probabilities
    (numpy or tensor, >= 0, summing to 1 over ``C``). Returns refined probabilities ``C,H,W``
    of the same kind as ``probs``: a numpy array of the same dtype, or a tensor of the same
    dtype on the same device. Parameters as in the module docstring.
    """
    _check_params(gauss_sxy, gauss_compat, bilateral_sxy, bilateral_srgb, bilateral_compat, iterations)
    img, p = _check_inputs(image, probs)
    C, H, W = p.shape
    if H * W > max_pixels:
        raise ValueError(f"dense_crf_exact stores N x N kernels and is limited to {max_pixels} "
                         f"pixels; this image has {H}x{W} = {H * W}. Use dense_crf_fast (or "
                         f"dense_crf(method='auto')) for larger images")
    # float64 throughout: this is the reference the float32 lattice version is tested against
    dev, f64 = p.device, torch.float64
    # sum_m w_m kn_m as one N x N matrix, so each iteration is a single matmul
    pairwise = torch.zeros(H * W, H * W, dtype=f64, device=dev)
    if gauss_compat > 0:
        pairwise += gauss_compat * normalized_gaussian_kernel(_features(img, gauss_sxy, None, f64, dev))
    if bilateral_compat > 0:
        feats = _features(img, bilateral_sxy, bilateral_srgb, f64, dev)
        pairwise += bilateral_compat * normalized_gaussian_kernel(feats)
    unary = unary_from_probs(p.to(f64)).reshape(C, -1).T  # N, C
    q = torch.softmax(-unary, 1)  # Q_0 = softmax(-U) = the clipped probs, renormalised
    for _ in range(iterations):
        # parallel update: every pixel reads the previous Q; Potts as a reward +w kn Q (module doc)
        q = torch.softmax(-unary + pairwise @ q, 1)
    # N, C -> C, N -> C, H, W (pixels are in row-major order)
    return _restore(q.T.reshape(C, H, W), probs if isinstance(probs, np.ndarray) else p)


# ---------------------------------------------------------------------------------------------
# Fast version: the permutohedral lattice
# ---------------------------------------------------------------------------------------------

def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta" and friends
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        return torch.sparse_csr_tensor(crow, col, val, size=size)


class PermutohedralLattice:
    """Approximate Gaussian filtering ``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j`` in O(N d^2).

    Adams, Baek & Davis, "Fast High-Dimensional Filtering Using the Permutohedral Lattice",
    Eurographics 2010, https://graphics.stanford.edu/papers/permutohedral/. Each feature
    vector (dimension ``d``) is embedded in a lattice of uniform simplices; the value of a
    pixel is *splatted* onto the ``d + 1`` vertices of its enclosing simplex with barycentric
    weights, the lattice is *blurred* with the kernel ``[1/2, 1, 1/2]`` along each of its
    ``d + 1`` axes, and every pixel *slices* its result back from the same vertices with the
    same weights. Only the ``M`` vertices that some pixel touches are stored (a sorted array of
    integer keys stands in for the hash table of the original code); lattice values are an
    ``M + 1`` row tensor whose last row is a zero "missing neighbour".

    The construction follows the C++ lattice that pydensecrf runs (feature scale
    ``sqrt(2/3) (d + 1)``, rounding to the nearest 0-coloured point, blur order, final scale
    ``alpha = 1 / (1 + 2^-d)``), so :meth:`filter` agrees with pydensecrf's filter to float32
    rounding. Splatting and slicing are sparse (CSR) matrix products.
    """

    def __init__(self, features: torch.Tensor) -> None:
        if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
            raise ValueError(f"features must be N,d with N, d >= 1; got shape {tuple(features.shape)}")
        n, d = features.shape
        dev = features.device
        self.n, self.d = n, d
        self.alpha = 1.0 / (1.0 + 2.0 ** -d)
        ft = features.float().T.contiguous()  # d, N: one contiguous row per coordinate

        # Elevate f onto the hyperplane sum(x) = 0 of R^(d+1) (Adams et al., section 3.1),
        # summing in the same order as the C++ code.
        # (d+1) sqrt(2/3): splat + blur + slice then spread with variance 1 per dimension, as the
        # kernel exp(-|f|^2 / 2) needs; 1 / sqrt((i+2)(i+1)) gives E's column i unit length
        scale = torch.tensor([math.sqrt(2.0 / 3.0) * (d + 1) / math.sqrt((i + 2) * (i + 1))
                              for i in range(d)]).tolist()  # rounded to float32
        elevated = torch.empty(d + 1, n, device=dev)
        partial = torch.zeros(n, device=dev)
        # E's structure makes each coordinate a running sum: O(d) per pixel, not a (d+1) x d product
        for j in range(d, 0, -1):
            cf = ft[j - 1] * scale[j - 1]
            elevated[j] = partial - j * cf
            partial = partial + cf
        elevated[0] = partial

        # The nearest point whose coordinates are multiples of d+1 ("0-coloured"); the simplex
        # around the feature comes from ranking the coordinates of the remainder (descending,
        # ties to the lower index), then shifting so that the point lies on the plane.
        v = torch.round(elevated * (1.0 / (d + 1)))
        rem0 = v * (d + 1)
        diff = elevated - rem0
        # rank[i] = how many remainders exceed diff[i] (0 = largest), by pairwise comparison
        rank = torch.zeros(d + 1, n, dtype=torch.long, device=dev)
        for i in range(d + 1):
            for j in range(i + 1, d + 1):
                smaller = diff[i] < diff[j]
                rank[i] += smaller
                rank[j] += ~smaller
        # sum(v) != 0 means the rounded point is off the plane; shifting the ranks moves it back
        rank += v.sum(0).long()
        # ranks pushed outside 0..d wrap around, and rem0 moves by +/-(d+1) in that coordinate
        wrap = (d + 1) * ((rank < 0).long() - (rank > d).long())
        rank += wrap
        rem0 += wrap

        # Barycentric weights of the d+1 vertices (Adams et al., section 3.2).
        frac = (elevated - rem0) * (1.0 / (d + 1))
        bary = torch.zeros(d + 2, n, device=dev)
        # coordinate i adds its offset to weight d - rank_i and takes it from d - rank_i + 1
        bary.scatter_add_(0, d - rank, frac)
        bary.scatter_add_(0, d - rank + 1, -frac)
        # slot d+1 is a spill-over column: it wraps around to vertex 0, and the weights sum to 1
        bary[0] += 1 + bary[d + 1]
        bary = bary[: d + 1]

        # Vertex r of a pixel's simplex is rem0 + r - (d+1) [rank >= d+1-r], coordinate-wise; a
        # vertex is identified by its first d coordinates (they sum to 0), encoded as one
        # integer in mixed radix so that a neighbour's code is the code plus a constant.
        rem0 = rem0[:d].long()
        # margins of 2(d+1): every vertex and its blur neighbours keep digits in 0..span-1
        lo = rem0.amin(1) - 2 * (d + 1)
        span = (rem0.amax(1) - lo + 2 * (d + 1) + 1).tolist()
        # codes are < prod(span); staying below 2^62 leaves room for code +/- step in int64
        if sum(math.log2(s) for s in span) > 62:
            raise ValueError("the features span too wide a range for the lattice's 64-bit keys; "
                             "use larger sxy/srgb (coarser kernels) or a smaller image")
        # row-major mixed radix: the last of the d coordinates has stride 1
        stride = [1] * d
        for k in range(d - 2, -1, -1):
            stride[k] = stride[k + 1] * span[k + 1]
        total = sum(stride)  # adding 1 to every coordinate adds sum(stride) to a code
        codes = torch.zeros(d + 1, n, dtype=torch.long, device=dev)
        for k in range(d):
            codes[0] += (rem0[k] - lo[k]) * stride[k]
        stride_at_rank = torch.zeros(d + 1, n, dtype=torch.long, device=dev)
        stride_at_rank.scatter_add_(0, rank[:d], torch.tensor(stride, device=dev)[:, None].expand(d, n))
        # wrapped[r - 1] = sum of the strides of the coordinates with rank >= d + 1 - r
        wrapped = stride_at_rank.flip(0).cumsum(0)
        codes[1:] = codes[0] + torch.arange(1, d + 1, device=dev)[:, None] * total - (d + 1) * wrapped[:d]

        # Number the distinct vertices: one sort of the N (d+1) codes stands in for the hash
        # table. The sorted order, grouped by vertex, is also the splat matrix's layout.
        sorted_codes, order = torch.sort(codes.reshape(-1))
        is_new = torch.ones_like(sorted_codes, dtype=torch.bool)
        is_new[1:] = sorted_codes[1:] != sorted_codes[:-1]
        vertex_sorted = is_new.cumsum(0) - 1  # 0-based vertex id of every sorted code
        self.keys = sorted_codes[is_new]
        self.m = m = int(self.keys.numel())
        offset = torch.empty_like(vertex_sorted)
        offset[order] = vertex_sorted  # back from sorted order to the (vertex r, pixel i) layout
        # offset[i, r]: the lattice row of vertex r of pixel i; bary[i, r] its weight.
        self.offset = offset.view(d + 1, n).T.contiguous()
        self.bary = bary.T.contiguous()
        self._splat_cols = order % n  # flat index r * n + i -> pixel i
        self._splat_vals = bary.reshape(-1)[order]
        # m + 1 rows; the last one (the zero 'missing neighbour') gets no entries
        self._splat_crow = torch.zeros(m + 2, dtype=torch.long, device=dev)
        self._splat_crow[1: m + 1] = torch.bincount(vertex_sorted, minlength=m).cumsum(0)
        self._splat_crow[m + 1] = self._splat_crow[m]

        # Blur along lattice axis j: the neighbours of a vertex are its key -/+ (1, ..., 1) with
        # -/+ (d+1) added at coordinate j; one sparse matrix I + (P_minus + P_plus) / 2 per
        # axis, 3 entries per row (a missing neighbour points to the zero row m).
        self.blur_matrices: list[torch.Tensor] = []
        rows = torch.arange(m + 1, device=dev)
        for j in range(d + 1):
            # coordinate d is implied (coordinates sum to 0): its -/+(d+1) leaves the code alone
            step = total - (d + 1) * stride[j] if j < d else total
            cols = [rows]
            for delta in (-step, step):
                target = self.keys + delta
                # find the neighbour among the sorted keys; a key that is absent -> the zero row m
                pos = torch.searchsorted(self.keys, target).clamp_(max=m - 1)
                pos = torch.where(self.keys[pos] == target, pos, torch.full_like(pos, m))
                cols.append(torch.cat([pos, rows[m:]]))  # row m's neighbours are row m itself
            # exactly 3 entries per row (self, minus, plus), so the row pointers are 0, 3, 6, ...
            vals = torch.tensor([1.0, 0.5, 0.5], device=dev).repeat(m + 1)
            self.blur_matrices.append(_csr(torch.arange(0, 3 * (m + 1) + 1, 3, device=dev),
                                           torch.stack(cols, 1).reshape(-1), vals, (m + 1, m + 1)))

    def splat_matrix(self, scale: torch.Tensor | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """CSR matrix ``(M + 1) x N``: lattice values = it @ (scale * pixel values)."""
        w = self._splat_vals.to(dtype)
        if scale is not None:
            w = w * scale.to(dtype)[self._splat_cols]
        return _csr(self._splat_crow, self._splat_cols, w, (self.m + 1, self.n))

    def slice_matrix(self, scale: torch.Tensor | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """CSR matrix ``N x (M + 1)``: pixel values = scale * alpha * (it @ lattice values)."""
        w = self.bary.to(dtype) * self.alpha
        if scale is not None:
            w = w * scale.to(dtype)[:, None]
        # every pixel row has exactly d+1 entries: the vertices of its simplex
        crow = torch.arange(0, self.n * (self.d + 1) + 1, self.d + 1, device=self.bary.device)
        return _csr(crow, self.offset.reshape(-1), w.reshape(-1), (self.n, self.m + 1))

    def blur(self, values: torch.Tensor) -> torch.Tensor:
        """Blur lattice values (``M + 1`` rows, the last one zero) along every axis in turn."""
        for blur_j in self.blur_matrices:
            values = blur_j.to(values.dtype) @ values
        return values

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Approximately ``sum_j exp(-|f_i - f_j|^2 / 2) values_j`` for ``values`` of shape N,C."""
        lattice = self.splat_matrix(dtype=values.dtype) @ values
        return self.slice_matrix(dtype=values.dtype) @ self.blur(lattice)

    def symmetric_normalizer(self) -> torch.Tensor:
        """``1 / sqrt(filter(1))`` per pixel, pydensecrf's ``NORMALIZE_SYMMETRIC`` scale."""
        # the splat of an all-ones image (splat_matrix() @ 1, without building the matrix)
        ones = torch.bincount(self.offset.reshape(-1), weights=self.bary.reshape(-1),
                              minlength=self.m + 1).float()[:, None]
        blurred = self.blur(ones)[:, 0]
        # slice: sum_r bary[i, r] * lattice[vertex r of pixel i], times alpha
        total = (blurred[self.offset] * self.bary).sum(1) * self.alpha
        return (total + 1e-20).rsqrt()  # the epsilon guards rsqrt(0) = inf

    def normalized_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Entries of the splat and slice matrices with the symmetric normalisation folded in
        (computed once per lattice: a cached lattice reuses them)."""
        if not hasattr(self, "_normalized"):
            # D^-1/2 K D^-1/2: scale the splat's columns (pixels j) and the slice's rows (pixels i)
            norm = self.symmetric_normalizer()
            self._normalized = (self._splat_vals * norm[self._splat_cols],
                                self.bary * (self.alpha * norm)[:, None])
        return self._normalized


class _MeanField:
    """Mean-field updates ``Q <- softmax(-U + sum_m w_m D_m^-1/2 K_m D_m^-1/2 Q)`` on lattices.

    All kernels share two sparse products per iteration: the splat matrices stacked
    vertically (Q is read once) and the slice matrices stacked horizontally (every kernel's
    message is added at once, on top of the unary term), with the symmetric normalisation
    and the weights folded into their entries.
    """

    def __init__(self, terms: list[tuple[PermutohedralLattice, float]], unary: torch.Tensor) -> None:
        self.lattices = [lat for lat, _ in terms]
        self.rows = [lat.m + 1 for lat in self.lattices]
        n, dev = unary.shape[0], unary.device
        crow, cols, vals, slice_cols, slice_vals, shift = [], [], [], [], [], 0
        for lat, weight in terms:
            splat_vals, slice_vals_unit = lat.normalized_weights()
            # stacked CSR row pointers: later blocks drop their leading 0, shifted by the nnz so far
            crow.append(lat._splat_crow[(1 if crow else 0):] + (crow[-1][-1] if crow else 0))
            cols.append(lat._splat_cols)
            vals.append(splat_vals)
            # this kernel's lattice rows start at `shift` in the stacked lattice values
            slice_cols.append(lat.offset + shift)
            slice_vals.append(slice_vals_unit * weight)
            shift += lat.m + 1
        self.splat = _csr(torch.cat(crow), torch.cat(cols), torch.cat(vals), (shift, n))
        # each pixel row of the stacked slice holds d_m + 1 entries per kernel
        width = sum(lat.d + 1 for lat in self.lattices)
        self.slice = _csr(torch.arange(0, n * width + 1, width, device=dev),
                          torch.cat(slice_cols, 1).reshape(-1), torch.cat(slice_vals, 1).reshape(-1),
                          (n, shift))
        # Messages are >= 0 and at most bound_i = the messages of Q = 1; -U <= 0 and
        # max_l -U_i(l) >= -log C. Shifting the logits by -bound_i makes exp() safe without the
        # per-pixel max that torch.softmax would compute each iteration (when bound is sane).
        bound = self.messages(torch.ones(n, 1, device=dev, dtype=unary.dtype))
        self.shifted_unary = -unary - bound
        self.plain_exp = float(bound.max()) + math.log(unary.shape[1]) < 60.0

    def messages(self, q: torch.Tensor, add_to: torch.Tensor | None = None) -> torch.Tensor:
        """``add_to + sum_m w_m D_m^-1/2 K_m D_m^-1/2 q`` for ``q`` of shape N,C."""
        # one splat for every kernel, then each kernel's lattice is blurred on its own
        parts = (self.splat @ q).split(self.rows)
        blurred = torch.cat([lat.blur(v) for lat, v in zip(self.lattices, parts)])
        if add_to is None:
            return self.slice @ blurred
        return torch.addmm(add_to, self.slice, blurred)

    def step(self, q: torch.Tensor) -> torch.Tensor:
        logits = self.messages(q, add_to=self.shifted_unary)
        if not self.plain_exp:
            return torch.softmax(logits, 1)
        e = logits.exp_()  # in place: logits is a fresh tensor that nothing else holds
        return e.div_(e.sum(1, keepdim=True))


@functools.lru_cache(maxsize=4)
def _position_lattice(height: int, width: int, sxy: float, device: torch.device) -> PermutohedralLattice:
    """The Gaussian kernel's lattice depends only on the image size: build it once per size."""
    # the Gaussian kernel ignores colour (srgb=None): a black image stands in
    img = torch.zeros(height, width, 3, dtype=torch.uint8)
    return PermutohedralLattice(_features(img, sxy, None, torch.float32, device))


def dense_crf_fast(image: Any, probs: Any, *, gauss_sxy: float = 3.0, gauss_compat: float = 3.0,
                   bilateral_sxy: float = 80.0, bilateral_srgb: float = 13.0,
                   bilateral_compat: float = 10.0, iterations: int = 5) -> Any:
    """Dense-CRF mean field with both kernels filtered on a permutohedral lattice.

    Krähenbühl & Koltun 2011, https://arxiv.org/abs/1210.5644, with the lattice of Adams et
    al. 2010 (:class:`PermutohedralLattice`). Why the lattice: the bilateral kernel's spatial
    extent (``bilateral_sxy=80`` px) covers most of a VOC image, so a local window (ConvCRF,
    https://arxiv.org/abs/1805.04777) would have to drop most of it, and a dense 5-D
    bilateral grid fine enough to be accurate is too large for 21 classes; the lattice costs
    O(N d^2) per class whatever the kernel widths, and it is the algorithm pydensecrf runs.

    The approximation: the lattice's effective kernel is a piecewise-linear bump of roughly
    the right width, not an exact Gaussian (for one pixel its response differs from
    ``exp(-r^2 / 2)`` by up to ~0.2 of the peak; it is a little wider, slightly anisotropic
    and has compact support), so the result differs a little from :func:`dense_crf_exact`,
    mostly where two classes are nearly tied (argmax agreement >= 99% on the synthetic scenes
    of the tests). It matches pydensecrf to float32 rounding (max abs difference ~1e-5).

    Computed in float32 on ``probs``' device. The bilateral lattice is built once per call;
    the Gaussian kernel's lattice depends only on ``H, W, gauss_sxy`` and is cached (4 sizes).
    Each iteration is one stacked splat, the blurs, one stacked slice (sparse products) and
    a softmax.

    Inputs, outputs and parameters as in :func:`dense_crf_exact` (no size limit).
    """
    _check_params(gauss_sxy, gauss_compat, bilateral_sxy, bilateral_srgb, bilateral_compat, iterations)
    img, p = _check_inputs(image, probs)
    C, H, W = p.shape
    dev, f32 = p.device, torch.float32
    terms = []
    if gauss_compat > 0:
        terms.append((_position_lattice(H, W, float(gauss_sxy), dev), float(gauss_compat)))
    if bilateral_compat > 0:
        feats = _features(img, bilateral_sxy, bilateral_srgb, f32, dev)
        terms.append((PermutohedralLattice(feats), float(bilateral_compat)))
    clipped = p.to(f32).clamp(PROB_CLIP, 1.0).reshape(C, -1).T.contiguous()  # N, C
    unary = -torch.log(clipped)
    q = clipped / clipped.sum(1, keepdim=True)  # = softmax(-unary)
    # no kernel or no iteration: Q stays softmax(-U), the clipped probs renormalised
    if terms and iterations > 0:
        mean_field = _MeanField(terms, unary)
        for _ in range(iterations):
            q = mean_field.step(q)
    return _restore(q.T.reshape(C, H, W), probs if isinstance(probs, np.ndarray) else p)


def dense_crf(image: Any, probs: Any, *, method: str = "auto", **params: Any) -> Any:
    """Refine class probabilities with a dense CRF: ``probs`` ``C,H,W`` -> refined ``C,H,W``.

    Krähenbühl & Koltun 2011, https://arxiv.org/abs/1210.5644. ``method``: ``"exact"``
    (:func:`dense_crf_exact`, small images), ``"fast"`` (:func:`dense_crf_fast`, permutohedral
    lattice) or ``"auto"`` (exact up to :data:`AUTO_EXACT_PIXELS` pixels, fast above).
    ``params``: ``gauss_sxy, gauss_compat, bilateral_sxy, bilateral_srgb, bilateral_compat,
    iterations`` (defaults :data:`PYDENSECRF_DEFAULTS`; DeepLab's are :data:`DEEPLAB_VOC`).
    The result has the kind of ``probs`` (numpy array or tensor, same dtype and device).
    """
    if method == "auto":
        shape = getattr(probs, "shape", None)
        small = shape is not None and len(shape) == 3 and shape[1] * shape[2] <= AUTO_EXACT_PIXELS
        method = "exact" if small else "fast"
    if method == "exact":
        return dense_crf_exact(image, probs, **params)
    if method == "fast":
        return dense_crf_fast(image, probs, **params)
    raise ValueError(f"method must be 'auto', 'exact' or 'fast', got {method!r}")
