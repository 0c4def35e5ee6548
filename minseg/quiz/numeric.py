"""Numeric interview questions whose answers are computed by ``minseg`` itself.

Each generator draws the question's numbers from a seeded ``random.Random`` (the same seed
always gives the same question), builds the masks, layers or blocks with ``minseg``, runs them,
and reads the answer off the result (the learning-curve items, for which ``minseg`` has no
function, apply the formula their question states): nothing here is a typed-in answer.
``params`` records the drawn inputs so that a test can recompute the answer independently.

>>> item = generate("iou", seed=3)
>>> print(item.question)          # two small masks drawn as text
>>> item.check("0.4")             # True if within the tolerance

Size: one job (computed quiz items) in about 800 lines: one or two short generators for each
of the 20 topics, and the drawing helpers they share.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import torch
import torch.nn as nn


@dataclass(frozen=True)
class NumericItem:
    """A generated question with a numeric answer.

    ``check`` accepts ``|given - answer| <= abs_tol + rel_tol * |answer|``.
    """

    id: str
    topic: str
    kind: str
    seed: int
    question: str
    answer: float
    explanation: str
    abs_tol: float = 0.0
    rel_tol: float = 0.0
    decimals: int = 0
    significant: int = 0
    params: dict = field(default_factory=dict)

    @property
    def answer_text(self) -> str:
        """The answer as it should be typed (integers without decimals)."""
        if self.significant:
            return f"{self.answer:.{self.significant}g}"
        return f"{self.answer:.{self.decimals}f}" if self.decimals else str(int(round(self.answer)))

    def check(self, given: str | float | int) -> bool:
        """Whether ``given`` (a number, or text such as ``"0.4"``, ``"2/5"``, ``"40%"``) is right."""
        value = parse_number(given) if isinstance(given, str) else float(given)
        if value is None or math.isnan(value):
            return False
        return abs(value - self.answer) <= self.abs_tol + self.rel_tol * abs(self.answer) + 1e-12


def parse_number(text: str) -> float | None:
    """``"0.4"``, ``"2/5"``, ``"40%"``, ``"1,024"`` -> float; ``None`` if it is not a number."""
    s = text.strip().replace(",", "").replace("_", "")
    scale = 1.0
    if s.endswith("%"):
        s, scale = s[:-1].strip(), 0.01
    try:
        return float(Fraction(s)) * scale if "/" in s else float(s) * scale
    except (ValueError, ZeroDivisionError):
        return None


# A generator returns (question, answer, explanation, tolerances/decimals, params).
Spec = tuple[str, float, str, dict, dict]
GENERATORS: dict[str, Callable[[random.Random], Spec]] = {}
# What each kind asks, for listings and the report.
DESCRIPTIONS: dict[str, str] = {}


def _register(kind: str, description: str):
    def deco(fn: Callable[[random.Random], Spec]) -> Callable[[random.Random], Spec]:
        GENERATORS[kind] = fn
        DESCRIPTIONS[kind] = description
        return fn
    return deco


def generate(kind: str, seed: int = 0, topic: str = "") -> NumericItem:
    """The numeric question of ``kind`` (see :data:`GENERATORS`) drawn with ``seed``."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown numeric kind {kind!r}; valid kinds are {', '.join(GENERATORS)}")
    threads = torch.get_num_threads()
    # The tensors are tiny; a thread pool only adds synchronisation, which costs whole
    # seconds on a busy machine.
    torch.set_num_threads(1)
    try:
        question, answer, explanation, tol, params = GENERATORS[kind](random.Random(seed))
    finally:
        torch.set_num_threads(threads)
    return NumericItem(id=f"{topic}.n.{kind}" if topic else f"n.{kind}", topic=topic, kind=kind,
                       seed=seed, question=question, answer=float(answer),
                       explanation=explanation, params=params, **tol)


# --------------------------------------------------------------------------------------------
# drawing helpers
# --------------------------------------------------------------------------------------------
def _grid(rows: list[list[int]], symbols: dict[int, str] | None = None) -> list[str]:
    return [" ".join((symbols or {}).get(v, str(v)) for v in row) for row in rows]


def _side_by_side(left: list[str], right: list[str], titles: tuple[str, str]) -> str:
    width = max(len(titles[0]), max(len(r) for r in left)) + 4
    lines = [titles[0].ljust(width) + titles[1]]
    lines += [a.ljust(width) + b for a, b in zip(left, right)]
    return "\n".join("    " + line for line in lines)


def _rect_mask(rng: random.Random, h: int, w: int, minsize: int = 2) -> list[list[int]]:
    rh, rw = rng.randint(minsize, h - 1), rng.randint(minsize, w - 1)
    y, x = rng.randint(0, h - rh), rng.randint(0, w - rw)
    return [[int(y <= i < y + rh and x <= j < x + rw) for j in range(w)] for i in range(h)]


def _two_masks(rng: random.Random) -> tuple[list[list[int]], list[list[int]]]:
    """A target and a prediction rectangle on a 5x6 grid that overlap partly."""
    while True:
        t, p = _rect_mask(rng, 5, 6), _rect_mask(rng, 5, 6)
        inter = sum(a & b for ra, rb in zip(t, p) for a, b in zip(ra, rb))
        if 0 < inter < min(sum(map(sum, t)), sum(map(sum, p))) or (inter == 0 and rng.random() < 0.1):
            return t, p


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _binary_scores(t: list[list[int]], p: list[list[int]]) -> tuple[dict, torch.Tensor]:
    from minseg.metrics import confusion_matrix, scores_from_confusion

    mat = confusion_matrix(torch.tensor(p), torch.tensor(t), num_classes=2, ignore_index=None)
    return scores_from_confusion(mat), mat


# --------------------------------------------------------------------------------------------
# metrics (lessons 06, 07, 09, 15, 17)
# --------------------------------------------------------------------------------------------
@_register("iou", "IoU of two small binary masks (minseg.metrics.confusion_matrix)")
def _iou(rng: random.Random) -> Spec:
    t, p = _two_masks(rng)
    scores, mat = _binary_scores(t, p)
    tp, fn, fp = int(mat[1, 1]), int(mat[1, 0]), int(mat[0, 1])
    q = ("Foreground IoU of the prediction (# = foreground, . = background)? Three decimals.\n"
         + _side_by_side(_grid(t, {0: ".", 1: "#"}), _grid(p, {0: ".", 1: "#"}), ("target", "prediction")))
    e = (f"TP = {tp} pixels are # in both, FP = {fp} only in the prediction, FN = {fn} only in "
         f"the target: IoU = TP / (TP + FP + FN) = {tp}/{tp + fp + fn} = {float(scores['iou'][1]):.3f}.")
    return q, float(scores["iou"][1]), e, {"abs_tol": 0.0015, "decimals": 3}, {"target": t, "pred": p}


@_register("dice", "Dice of two small binary masks (minseg.metrics)")
def _dice(rng: random.Random) -> Spec:
    t, p = _two_masks(rng)
    scores, mat = _binary_scores(t, p)
    tp, fn, fp = int(mat[1, 1]), int(mat[1, 0]), int(mat[0, 1])
    d, iou = float(scores["dice"][1]), float(scores["iou"][1])
    q = ("Foreground Dice of the prediction (# = foreground, . = background)? Three decimals.\n"
         + _side_by_side(_grid(t, {0: ".", 1: "#"}), _grid(p, {0: ".", 1: "#"}), ("target", "prediction")))
    e = (f"|A| = {tp + fp} predicted, |B| = {tp + fn} target, |A and B| = {tp}: Dice = 2*{tp}/"
         f"({tp + fp} + {tp + fn}) = {d:.3f}; check: IoU = {iou:.3f} and 2 IoU / (1 + IoU) = {d:.3f}.")
    return q, d, e, {"abs_tol": 0.0015, "decimals": 3}, {"target": t, "pred": p}


def _two_class_maps(rng: random.Random, h: int, w: int, keep: float) -> tuple[list, list]:
    """A target with two rectangles (classes 1 and 2) on background, and a prediction that
    keeps each pixel's class with probability ``keep`` and draws one of 0, 1, 2 otherwise."""
    t = [[0] * w for _ in range(h)]
    for cls in (1, 2):
        r = _rect_mask(rng, h, w)
        t = [[cls if r[i][j] else t[i][j] for j in range(w)] for i in range(h)]
    p = [[v if rng.random() < keep else rng.choice((0, 1, 2)) for v in row] for row in t]
    return t, p


@_register("miou", "mIoU of a 4-class map with a void pixel and an absent class (minseg.metrics)")
def _miou(rng: random.Random) -> Spec:
    from minseg.metrics import confusion_matrix, scores_from_confusion

    h, w = 4, 6
    while True:
        t, p = _two_class_maps(rng, h, w, keep=0.75)
        vy, vx = rng.randrange(h), rng.randrange(w)
        t[vy][vx] = 255
        if {v for row in t for v in row} >= {0, 1, 2, 255}:
            break
    mat = confusion_matrix(torch.tensor(p), torch.tensor(t), num_classes=4, ignore_index=255)
    s = scores_from_confusion(mat)
    ious = ", ".join(f"IoU_{c} = {float(s['iou'][c]):.3f}" for c in range(3))
    q = ("4 classes (0-3), x = void (255) in the target. mIoU with the dataset convention "
         "(void dropped, classes absent from both maps skipped)? Three decimals.\n"
         + _side_by_side(_grid(t, {255: "x"}), _grid(p), ("target", "prediction")))
    e = (f"Drop the void pixel (its prediction does not count), then {ious}; class 3 appears in "
         f"neither map (0/0) and is skipped, so mIoU = mean of three = {s['miou']:.3f}.")
    return q, s["miou"], e, {"abs_tol": 0.0015, "decimals": 3}, {"target": t, "pred": p, "num_classes": 4}


@_register("boundary_pixels", "pixels on a class boundary around a rectangle (minseg.metrics.boundary_mask)")
def _boundary(rng: random.Random) -> Spec:
    from minseg.metrics import boundary_mask

    H, W = rng.choice((32, 48, 64)), rng.choice((32, 48, 64))
    a, b = rng.randint(4, H // 2), rng.randint(4, W // 2)
    y, x = rng.randint(1, H - a - 1), rng.randint(1, W - b - 1)
    mask = torch.zeros(H, W, dtype=torch.long)
    mask[y:y + a, x:x + b] = 1
    n = int(boundary_mask(mask).sum())
    q = (f"A {H}x{W} label map holds one {a}x{b} object away from the image border. A pixel is "
         "on a boundary when one of its 4 neighbours has another label (pixels on both sides "
         "count). How many boundary pixels are there?")
    e = (f"Inside ring: 2({a}+{b}) - 4 = {2 * (a + b) - 4}; outside ring (corners have no "
         f"4-neighbour inside): 2({a}+{b}) = {2 * (a + b)}; total {n}, only "
         f"{100 * n / (H * W):.1f}% of the image: boundary errors barely move mIoU.")
    return q, n, e, {}, {"H": H, "W": W, "a": a, "b": b, "y": y, "x": x}


@_register("components", "connected components of a mask, 4- vs 8-connectivity (minseg.instances)")
def _components(rng: random.Random) -> Spec:
    from minseg.instances import connected_components

    h, w = 6, 8
    grid = [[0] * w for _ in range(h)]
    for _ in range(rng.randint(2, 4)):  # small blobs ("people") that often touch
        bh, bw = rng.choice(((2, 1), (3, 1), (2, 2), (3, 2), (1, 2)))
        y, x = rng.randint(0, h - bh), rng.randint(0, w - bw)
        for i in range(y, y + bh):
            for j in range(x, x + bw):
                grid[i][j] = 1
    conn = rng.choice((4, 8))
    _, n = connected_components(torch.tensor(grid, dtype=torch.bool), connectivity=conn)
    other = 12 - conn
    _, n_other = connected_components(torch.tensor(grid, dtype=torch.bool), connectivity=other)
    q = (f"A semantic 'person' mask (# = person). How many connected components does it have "
         f"with {conn}-connectivity ({'edges only' if conn == 4 else 'edges and corners'})?\n"
         + "\n".join("    " + line for line in _grid(grid, {0: ".", 1: "#"})))
    e = (f"{n} with {conn}-connectivity ({n_other} with {other}-connectivity). Either way the "
         "count is of blobs, not people: touching people merge into one blob, which is why "
         "separating them needs instance ids.")
    return q, n, e, {}, {"grid": grid, "connectivity": conn}


@_register("pq", "panoptic quality of one thing class from matched segments (minseg.metrics.panoptic_quality)")
def _pq(rng: random.Random) -> Spec:
    from minseg.metrics import panoptic_quality

    ious = [rng.choice((6, 7, 8, 9, 10)) for _ in range(rng.randint(1, 3))]  # tenths
    n_fp, n_fn, n_low = rng.randint(0, 2), rng.randint(0, 2), rng.randint(0, 1)
    gt: list[int] = []
    pr: list[int] = []
    inst = 0

    def segment(g: list[int], p: list[int]) -> None:
        gt.extend(g + [0, 0])
        pr.extend(p + [0, 0])

    for m in ious:  # a matched pair: the prediction covers m of the 10 target pixels
        inst += 1
        segment([1000 + inst] * 10, [1000 + inst] * m + [0] * (10 - m))
    for _ in range(n_fp):  # a predicted person where the target is background
        inst += 1
        segment([0] * 10, [1000 + inst] * 10)
    for _ in range(n_fn):  # a missed person
        inst += 1
        segment([1000 + inst] * 10, [0] * 10)
    low = rng.choice((3, 4))
    for _ in range(n_low):  # overlap too small to match: one FP and one FN
        inst += 1
        segment([1000 + inst] * 10, [1000 + inst] * low + [0] * (10 - low))
    res = panoptic_quality(torch.tensor([pr]), torch.tensor([gt]), thing_classes=[1])
    c = res["per_class"][1]
    listed = ", ".join(f"{m / 10:.1f}" for m in ious)
    q = (f"Panoptic quality of the class person. Predicted and true persons overlap in pairs with "
         f"IoU {listed}" + (f" and {low / 10:.1f}" if n_low else "") + f"; {_n(n_fp, 'predicted person')} "
         f"on background; {_n(n_fn, 'true person')} not predicted at all. PQ? Three decimals.")
    e = (f"Matches need IoU > 0.5: TP = {c['tp']}, FP = {c['fp']}, FN = {c['fn']}"
         + (" (the low-IoU pair is one FP and one FN)" if n_low else "")
         + f". SQ = mean IoU of matches = {c['sq']:.3f}, RQ = TP / (TP + FP/2 + FN/2) = "
           f"{c['rq']:.3f}, PQ = SQ x RQ = {c['pq']:.3f}.")
    return q, c["pq"], e, {"abs_tol": 0.0015, "decimals": 3}, {
        "ious": [m / 10 for m in ious], "fp": n_fp, "fn": n_fn, "low": n_low}


# --------------------------------------------------------------------------------------------
# losses (lessons 08, 10)
# --------------------------------------------------------------------------------------------
@_register("cross_entropy", "per-pixel cross-entropy with an ignored pixel (minseg.losses.cross_entropy)")
def _cross_entropy(rng: random.Random) -> Spec:
    from minseg.losses import cross_entropy

    logits = [[rng.randint(-2, 3) for _ in range(3)] for _ in range(3)]  # pixel x class
    target = [rng.randrange(3) for _ in range(3)]
    target[rng.randrange(3)] = 255
    x = torch.tensor(logits, dtype=torch.float64).T.reshape(1, 3, 1, 3)
    loss = float(cross_entropy(x, torch.tensor(target).reshape(1, 1, 3)))
    rows = "\n".join(f"    pixel {i + 1}: logits {logits[i]}, target {target[i]}" for i in range(3))
    terms = []
    for i in range(3):
        if target[i] != 255:
            nll = float(cross_entropy(x[..., i:i + 1], torch.tensor(target[i]).reshape(1, 1, 1)))
            terms.append((i + 1, nll))
    q = ("Three pixels, three classes. Mean cross-entropy with ignore_index=255 (natural log)? "
         "Two decimals.\n" + rows)
    e = ("-log softmax(logits)[target] per valid pixel: "
         + ", ".join(f"pixel {i}: {v:.3f}" for i, v in terms)
         + f". The ignored pixel leaves both the sum and the count: mean = {loss:.2f}.")
    return q, loss, e, {"abs_tol": 0.006, "decimals": 2}, {"logits": logits, "target": target}


@_register("focal_factor", "focal loss / cross-entropy for one pixel (minseg.losses.focal_loss)")
def _focal(rng: random.Random) -> Spec:
    from minseg.losses import cross_entropy, focal_loss

    p = rng.choice((0.5, 0.6, 0.7, 0.8, 0.9, 0.95))
    gamma = rng.choice((1, 2, 3))
    x = torch.tensor([math.log(p), math.log(1 - p)], dtype=torch.float64).reshape(1, 2, 1, 1)
    y = torch.zeros(1, 1, 1, dtype=torch.long)
    ratio = float(focal_loss(x, y, gamma=gamma) / cross_entropy(x, y))
    q = (f"A pixel's true class has softmax probability p_t = {p}. By what factor does focal loss "
         f"with gamma = {gamma} scale its cross-entropy? (a number in [0, 1]; three significant digits)")
    e = (f"FL = (1 - p_t)^gamma * CE, so the factor is (1 - {p})^{gamma} = {ratio:.4g}: confident "
         "pixels are down-weighted, hard ones keep most of their loss.")
    return q, ratio, e, {"rel_tol": 0.01, "abs_tol": 1e-6, "significant": 3}, {"p": p, "gamma": gamma}


@_register("class_weight", "inverse-frequency class weight (minseg.losses.class_weights)")
def _class_weight(rng: random.Random) -> Spec:
    from minseg.losses import class_weights

    k = rng.choice((3, 4))
    counts = sorted((rng.choice((1, 2, 3, 5, 8, 10, 20, 40, 60)) * 1000 for _ in range(k)), reverse=True)
    w = class_weights(torch.tensor(counts), "inverse")
    q = (f"Pixel counts per class: {counts}. Inverse-frequency weights w_c = total / (K * n_c) "
         f"(all ones for a balanced dataset). Weight of the rarest class? Two decimals.")
    e = (f"total = {sum(counts)}, K = {k}: w = {sum(counts)} / ({k} * {counts[-1]}) = {float(w[-1]):.2f}"
         f"; the most frequent class gets {float(w[0]):.2f}. Large ratios are often clipped or square-rooted.")
    return q, float(w[-1]), e, {"rel_tol": 0.005, "decimals": 2}, {"counts": counts}


# --------------------------------------------------------------------------------------------
# layers and blocks (lessons 02, 03, 04, 05, 11, 12, 13, 20)
# --------------------------------------------------------------------------------------------
@_register("feature_size", "positions in a stride-32 feature map (minseg.models.vgg_encoder run on tensors)")
def _feature_size(rng: random.Random) -> Spec:
    from minseg.models import vgg_encoder

    H, W = rng.choice((224, 256, 320, 375, 480, 500)), rng.choice((224, 320, 375, 500, 512))
    enc = vgg_encoder(1, width=1, blocks=(1, 1, 1, 1, 1)).eval()
    # Convs keep the size and pools act on each axis separately, so an H x 1 and a 1 x W strip
    # give the same map sizes as the full image at a tiny fraction of the cost.
    with torch.no_grad():
        h = enc(torch.zeros(1, 1, H, 1))[-1].shape[-2]
        w = enc(torch.zeros(1, 1, 1, W))[-1].shape[-1]
    q = (f"A VGG-style encoder has five 2x2 max-pools (ceil mode, so odd sizes round up) and no "
         f"other striding. For a {H}x{W} input image, how many spatial positions does its last "
         "feature map have (what global average pooling would collapse into one vector)?")
    e = f"Stride 32: ceil({H}/32) x ceil({W}/32) = {h} x {w} = {h * w} positions."
    return q, h * w, e, {}, {"H": H, "W": W}


@_register("transposed_size", "output height of a transposed conv (minseg.upsample.TransposedUp run on a tensor)")
def _transposed_size(rng: random.Random) -> Spec:
    from minseg.upsample import TransposedUp

    s = rng.choice((2, 2, 4, 8, 32))
    k = rng.choice((s, 2 * s, 2 * s + 1)) if s < 32 else 64
    H = rng.randint(5, 40) if s < 8 else rng.randint(3, 16)
    up = TransposedUp(1, 1, scale=s, kernel_size=k)
    conv = up.up
    if rng.random() < 0.5:  # a plain layer as often written by hand, without TransposedUp's padding
        pad = rng.choice((0, k // 2, (k - s) // 2))
        conv = nn.ConvTranspose2d(1, 1, k, stride=s, padding=pad)
    p, op = conv.padding[0], conv.output_padding[0]
    with torch.no_grad():
        out = conv(torch.zeros(1, 1, H, H)).shape[-1]
    q = (f"ConvTranspose2d(kernel_size={k}, stride={s}, padding={p}, output_padding={op}) on a "
         f"input of size {H}x{H}: output height?")
    e = (f"out = (in - 1) * stride - 2 * padding + kernel + output_padding = ({H} - 1)*{s} - 2*{p} "
         f"+ {k} + {op} = {out}" + (f" (= {s} x {H}: TransposedUp chooses padding so that it is exactly "
                                    f"x{s})." if out == s * H else
                                    f"; an exact x{s} output would be {s * H}, so the map must be "
                                    + ("cropped." if out > s * H else "padded.")))
    return q, out, e, {}, {"H": H, "k": k, "s": s, "p": p, "op": op}


@_register("receptive_field", "receptive field of a dilated 3x3 stack (minseg.blocks measured by gradients)")
def _receptive_field(rng: random.Random) -> Spec:
    from minseg.blocks import conv_bn_relu

    n = rng.randint(2, 4)
    layers = [(rng.choice((1, 2, 3, 4, 6, 8)), 1) for _ in range(n)]
    if rng.random() < 0.4:
        layers[0] = (1, 2)
    net = nn.Sequential(*[conv_bn_relu(1, 1, 3, stride=st, dilation=d) for d, st in layers]).eval()
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.ones_(m.weight)
    # Positive weights and inputs keep every ReLU open, so the gradient of one output pixel
    # is nonzero exactly on its receptive field.
    x = torch.ones(1, 1, 1, 301, requires_grad=True)
    y = net(x)
    y[0, 0, 0, y.shape[-1] // 2].backward()
    nz = (x.grad[0, 0, 0] != 0).nonzero().flatten()
    rf = int(nz.max() - nz.min() + 1)
    desc = ", ".join(f"dilation {d}" + (f" stride {st}" if st > 1 else "") for d, st in layers)
    q = (f"A stack of {n} 3x3 convs (padding keeps the size): {desc}. Receptive field of one "
         "output pixel, in input pixels per side?")
    e = ("Each layer adds (k - 1) * dilation * (product of the strides before it): 1 + "
         + " + ".join(f"2*{d}" + ("*2" if i > 0 and layers[0][1] == 2 else "") for i, (d, _) in enumerate(layers))
         + f" = {rf}.")
    return q, rf, e, {}, {"layers": layers}


def _count(module: nn.Module) -> int:
    from minseg.models import count_parameters

    return count_parameters(module)


@_register("params_doubleconv", "parameters of U-Net's DoubleConv (minseg.blocks, count_parameters)")
def _params_doubleconv(rng: random.Random) -> Spec:
    from minseg.blocks import DoubleConv

    cin, cout = rng.choice((3, 16, 32, 64, 128)), rng.choice((16, 32, 64))
    n = _count(DoubleConv(cin, cout))
    q = (f"DoubleConv({cin}, {cout}): two 3x3 convs without bias ({cin}->{cout}, {cout}->{cout}), "
         "each followed by BatchNorm and ReLU. Number of trainable parameters?")
    e = (f"9*{cin}*{cout} + 9*{cout}*{cout} conv weights + 2 * 2*{cout} BatchNorm scales and "
         f"shifts = {n} (running statistics are buffers, not parameters).")
    return q, n, e, {}, {"cin": cin, "cout": cout}


@_register("params_upsampler", "parameters of the three upsamplers (minseg.upsample)")
def _params_upsampler(rng: random.Random) -> Spec:
    from minseg.upsample import make_upsampler

    kind = rng.choice(("transposed", "bilinear", "pixelshuffle"))
    cin, cout, s = rng.choice((8, 16, 32, 64)), rng.choice((8, 16, 32)), rng.choice((2, 4))
    n = _count(make_upsampler(kind, cin, cout, s))
    what = {"transposed": f"TransposedUp (kernel {2 * s}, stride {s}, with bias)",
            "bilinear": "BilinearUp (bilinear resize, then a 3x3 conv with bias)",
            "pixelshuffle": f"PixelShuffleUp (a 3x3 conv with bias to {cout}*{s}^2 channels, then PixelShuffle)"}[kind]
    how = {"transposed": f"{cin}*{cout}*{2 * s}^2 + {cout}",
           "bilinear": f"{cin}*{cout}*9 + {cout}",
           "pixelshuffle": f"{cin}*({cout}*{s * s})*9 + {cout * s * s}"}[kind]
    q = f"x{s} upsampling from {cin} to {cout} channels with {what}. Number of parameters?"
    e = f"{how} = {n}."
    return q, n, e, {}, {"kind": kind, "cin": cin, "cout": cout, "s": s}


@_register("params_aspp", "parameters of an ASPP module (minseg.models.ASPP)")
def _params_aspp(rng: random.Random) -> Spec:
    from minseg.models import ASPP

    cin, cout = rng.choice((32, 64, 128, 256)), rng.choice((16, 32, 64))
    rates = rng.choice(((6, 12, 18), (2, 4, 6), (12, 24, 36)))
    n = _count(ASPP(cin, cout, rates))
    q = (f"ASPP({cin} -> {cout}, rates {rates}): a 1x1 conv, three 3x3 atrous convs (all without "
         "bias, each + BatchNorm), an image-pooling branch (global pool, 1x1 conv with bias, no "
         f"norm), then a 1x1 projection of the {5 * cout} concatenated channels (+ BatchNorm). "
         "Number of parameters?")
    e = (f"1x1: {cin}*{cout} + 2*{cout}; atrous: 3 * (9*{cin}*{cout} + 2*{cout}); pooling: "
         f"{cin}*{cout} + {cout}; projection: {5 * cout}*{cout} + 2*{cout}; total {n}. The rates "
         "change the receptive field, not the count.")
    return q, n, e, {}, {"cin": cin, "cout": cout, "rates": list(rates)}


@_register("params_ppm", "parameters of PSPNet's pyramid pooling module (minseg.models.PyramidPooling)")
def _params_ppm(rng: random.Random) -> Spec:
    from minseg.models import PyramidPooling

    cin = rng.choice((64, 128, 256, 512, 2048))
    bc = cin // 4
    n = _count(PyramidPooling(cin, (1, 2, 3, 6)))
    q = (f"Pyramid pooling on {cin} channels with bins 1, 2, 3, 6: each branch pools, then a 1x1 "
         f"conv to {bc} channels (bin 1: conv with bias and no norm; the others: no bias + "
         "BatchNorm). Number of parameters?")
    e = (f"bin 1: {cin}*{bc} + {bc}; bins 2, 3, 6: 3 * ({cin}*{bc} + 2*{bc}); total {n}. The "
         f"module outputs {cin} + 4*{bc} = {2 * cin} channels.")
    return q, n, e, {}, {"cin": cin}


@_register("params_depthwise", "parameters of a depthwise-separable block (minseg.blocks)")
def _params_depthwise(rng: random.Random) -> Spec:
    from minseg.blocks import DepthwiseSeparableConv, conv_bn_relu

    cin, cout = rng.choice((32, 64, 128, 256)), rng.choice((64, 128, 256))
    n = _count(DepthwiseSeparableConv(cin, cout))
    full = _count(conv_bn_relu(cin, cout, 3))
    q = (f"DepthwiseSeparableConv({cin}, {cout}): a depthwise 3x3 conv + BatchNorm + ReLU, then a "
         "1x1 conv + BatchNorm + ReLU (convs without bias). Number of parameters?")
    e = (f"9*{cin} + 2*{cin} + {cin}*{cout} + 2*{cout} = {n}, versus {full} for a full 3x3 "
         f"conv_bn_relu: {full / n:.1f}x fewer.")
    return q, n, e, {}, {"cin": cin, "cout": cout}


class _PixelCounter(nn.Module):
    """A stand-in model that records how many pixels each forward pass sees."""

    def __init__(self) -> None:
        super().__init__()
        self.pixels = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.pixels += x.shape[-2] * x.shape[-1]
        return torch.zeros(x.shape[0], 2, *x.shape[-2:])


@_register("tta_cost", "compute of multi-scale + flip inference (minseg.infer.predict, pixels counted)")
def _tta_cost(rng: random.Random) -> Spec:
    from minseg.infer import predict

    pool = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    scales = tuple(sorted(rng.sample(pool, rng.randint(2, 5))))
    flip = rng.random() < 0.6
    counter = _PixelCounter()
    H, W = 64, 96
    predict(counter, torch.zeros(1, 3, H, W), scales=scales, flip=flip)
    cost = counter.pixels / (H * W)
    q = (f"Test-time augmentation with scales {scales}" + (" and horizontal flips" if flip else "")
         + ". The network's cost grows with the pixels it processes; how many single-scale "
           "passes is that worth? Two decimals.")
    e = (f"{'2 * ' if flip else ''}({' + '.join(f'{s}^2' for s in scales)}) = {cost:.2f}: each "
         "view costs its area, so up-scaled views dominate.")
    return q, cost, e, {"abs_tol": 0.006, "decimals": 2}, {"scales": list(scales), "flip": flip}


# --------------------------------------------------------------------------------------------
# what a label map is (lesson 01)
# --------------------------------------------------------------------------------------------
@_register("pixel_acc_void", "pixel accuracy with void pixels left out (minseg.metrics)")
def _pixel_acc_void(rng: random.Random) -> Spec:
    from minseg.metrics import confusion_matrix, scores_from_confusion

    h, w = 4, 6
    while True:
        t, p = _two_class_maps(rng, h, w, keep=0.8)
        for y, x in rng.sample([(i, j) for i in range(h) for j in range(w)], rng.randint(2, 4)):
            t[y][x] = 255
        mat = confusion_matrix(torch.tensor(p), torch.tensor(t), num_classes=3, ignore_index=255)
        valid, right = int(mat.sum()), int(mat.trace())
        if 0 < right < valid:
            break
    acc = scores_from_confusion(mat)["pixel_acc"]
    q = ("3 classes (0-2), x = void (255) in the target. Pixel accuracy with the usual convention "
         "(void pixels are not scored)? Three decimals.\n"
         + _side_by_side(_grid(t, {255: "x"}), _grid(p), ("target", "prediction")))
    e = (f"{h * w - valid} of the {h * w} pixels are void and leave the count, so {valid} are "
         f"scored; the prediction is right on {right} of them: {right}/{valid} = {acc:.3f}. "
         f"Scoring void as wrong would give {right}/{h * w} = {right / (h * w):.3f}: void marks "
         "pixels whose label is uncertain (object outlines in VOC), so no prediction there counts.")
    return q, acc, e, {"abs_tol": 0.0015, "decimals": 3}, {"target": t, "pred": p}


# --------------------------------------------------------------------------------------------
# labelling and data cost (lessons 14, 18)
# --------------------------------------------------------------------------------------------
_PRICED = ("full_mask", "polygon", "box_drawn", "box_extreme", "point", "tags")
_UNIT = {"image": "per image", "object": "per object",
         "class": "per class of the label set, per image"}


def _label_plan(rng: random.Random) -> tuple[int, int, int, str]:
    """A dataset to label: images, objects (a whole number per image on average x images),
    classes of the label set, and the price list of :data:`_PRICED` as question text."""
    from minseg.cost import LABEL_COSTS

    n = rng.choice((500, 1000, 1464, 2000, 5000, 10000))
    objects = int(n * rng.choice((1, 1.5, 2, 2.5, 3, 4)))
    classes = rng.choice((19, 20, 80))
    prices = "\n".join(f"    {k}: {LABEL_COSTS[k].seconds:g} s {_UNIT[LABEL_COSTS[k].unit]} "
                       f"- {LABEL_COSTS[k].label}" for k in _PRICED)
    plan = (f"A dataset of {n} images holding {objects} objects ({objects / n:g} per image on "
            f"average), label set of {classes} classes. Published average labelling times "
            f"(minseg.cost.LABEL_COSTS):\n{prices}\n")
    return n, objects, classes, plan


def _priced(kind: str, n: int, objects: int, classes: int, hours: float) -> str:
    from minseg.cost import LABEL_COSTS

    c = LABEL_COSTS[kind]
    count = {"image": f"{n} images", "object": f"{objects} objects",
             "class": f"{n} images x {classes} classes"}[c.unit]
    return f"{kind}: {c.seconds:g} s x {count} / 3600 = {hours:.1f} h"


@_register("label_hours", "hours to label a dataset one way (minseg.cost.annotation_hours)")
def _label_hours(rng: random.Random) -> Spec:
    from minseg.cost import annotation_hours

    n, objects, classes, plan = _label_plan(rng)
    kind = rng.choice(_PRICED)
    hours = annotation_hours(n, objects, num_classes=classes, costs=_PRICED)
    q = plan + f"How many hours does labelling the dataset with {kind} take? One decimal."
    e = (_priced(kind, n, objects, classes, hours[kind]) + ". The unit decides the count: images, "
         "objects, or one tag decision per class and image. All six: "
         + ", ".join(f"{k} {v:.1f} h" for k, v in hours.items()) + ".")
    return q, hours[kind], e, {"abs_tol": 0.05, "rel_tol": 0.006, "decimals": 1}, {
        "n": n, "objects": objects, "classes": classes, "kind": kind}


@_register("label_ratio", "hours of full labels / weak labels (minseg.cost.annotation_hours)")
def _label_ratio(rng: random.Random) -> Spec:
    from minseg.cost import annotation_hours

    n, objects, classes, plan = _label_plan(rng)
    full = rng.choice(("full_mask", "polygon"))
    weak = rng.choice(("box_drawn", "box_extreme", "point", "tags"))
    hours = annotation_hours(n, objects, num_classes=classes, costs=(full, weak))
    ratio = hours[full] / hours[weak]
    q = plan + (f"How many times longer does labelling with {full} take than with {weak}? "
                "Two decimals.")
    e = (_priced(full, n, objects, classes, hours[full]) + "; "
         + _priced(weak, n, objects, classes, hours[weak]) + f"; ratio {ratio:.2f}. The number of "
         "images cancels; what is left is the price per unit and the objects per image or the "
         "classes. (The times come from different studies and interfaces: an order of magnitude.)")
    return q, ratio, e, {"rel_tol": 0.006, "decimals": 2}, {
        "n": n, "objects": objects, "classes": classes, "full": full, "weak": weak}


def _learning_curve(rng: random.Random) -> tuple[int, int, float, float, float]:
    """Two points of a curve mIoU = m1 + s * log2(n / n1): n2 is a whole number of doublings
    of n1 and mIoU is in percent, on a half-point grid."""
    n1 = rng.choice((100, 250, 500, 1000, 1464))
    n2 = n1 * 2 ** rng.randint(1, 3)
    m1 = rng.randint(70, 120) / 2
    m2 = m1 + rng.choice((1.5, 2.0, 2.5, 3.0, 3.5, 4.0)) * math.log2(n2 / n1)
    return n1, n2, m1, m2, (m2 - m1) / math.log2(n2 / n1)


@_register("learning_curve_miou", "mIoU extrapolated on a curve linear in log2(images)")
def _learning_curve_miou(rng: random.Random) -> Spec:
    n1, n2, m1, m2, slope = _learning_curve(rng)
    n3 = n2 * 2 ** rng.randint(1, 3)
    m3 = m1 + slope * math.log2(n3 / n1)
    q = (f"A model reaches {m1:.1f} mIoU with {n1} labelled images and {m2:.1f} with {n2}. If "
         f"mIoU grows linearly in log2(number of images), what mIoU do you expect with {n3} "
         "images? One decimal.")
    e = (f"{n2}/{n1} = {n2 // n1} is {math.log2(n2 / n1):g} doublings for {m2 - m1:.1f} points: "
         f"{slope:g} per doubling. {n3}/{n1} = {n3 // n1} is {math.log2(n3 / n1):g} doublings: "
         f"{m1:.1f} + {math.log2(n3 / n1):g} x {slope:g} = {m3:.1f}. Each further fixed gain costs "
         "twice the images of the one before.")
    return q, m3, e, {"abs_tol": 0.051, "decimals": 1}, {
        "n1": n1, "n2": n2, "n3": n3, "m1": m1, "m2": m2}


@_register("learning_curve_hours", "labelling hours to a target mIoU on a log2 curve (minseg.cost)")
def _learning_curve_hours(rng: random.Random) -> Spec:
    from minseg.cost import LABEL_COSTS, annotation_hours

    n1, n2, m1, m2, slope = _learning_curve(rng)
    target = m2 + slope * rng.randint(1, 3)
    needed = round(n1 * 2 ** ((target - m1) / slope))
    hours = annotation_hours(needed - n2, 0, costs=["full_mask"])["full_mask"]
    sec = LABEL_COSTS["full_mask"].seconds
    q = (f"A model reaches {m1:.1f} mIoU with {n1} labelled images and {m2:.1f} with {n2}; "
         f"mIoU grows linearly in log2(number of images). A full mask costs {sec:g} s per image "
         f"(minseg.cost.LABEL_COSTS['full_mask']). How many more labelling hours, beyond the {n2} "
         f"images you have, does {target:.1f} mIoU take? One decimal.")
    e = (f"{slope:g} points per doubling (from the two points), so {target - m2:.1f} more points "
         f"take {math.log2(needed / n2):g} more doublings: {n2} -> {needed} images, "
         f"{needed - n2} new ones x {sec:g} s / 3600 = {hours:.1f} h.")
    return q, hours, e, {"abs_tol": 0.05, "rel_tol": 0.005, "decimals": 1}, {
        "n1": n1, "n2": n2, "m1": m1, "m2": m2, "target": target}


# --------------------------------------------------------------------------------------------
# dense CRF (lesson 16)
# --------------------------------------------------------------------------------------------
@_register("crf_potts_energy", "Potts energy of a 3x3 labelling, fully connected (minseg.crf)")
def _crf_potts_energy(rng: random.Random) -> Spec:
    from minseg.crf import _features

    num_labels = rng.choice((2, 3))
    while True:
        labels = [[rng.randrange(num_labels) for _ in range(3)] for _ in range(3)]
        if len({v for row in labels for v in row}) > 1:
            break
    w, theta = rng.choice((1, 2, 3)), rng.choice((1.0, 1.5, 2.0))
    # minseg.crf's Gaussian (smoothness) kernel: features (x, y) / sxy, k = exp(-|f_i - f_j|^2 / 2)
    f = _features(torch.zeros(3, 3, 3), theta, None, torch.float64, torch.device("cpu"))
    k = torch.exp(-0.5 * torch.cdist(f, f, compute_mode="donot_use_mm_for_euclid_dist") ** 2)
    lab = torch.tensor(labels).reshape(-1)
    energy = float(w * (k * (lab[:, None] != lab[None, :])).triu(1).sum())
    kern = {d2: math.exp(-d2 / (2 * theta ** 2)) for d2 in (1, 2, 4, 5, 8)}
    cut = dict.fromkeys(kern, 0)
    total = dict.fromkeys(kern, 0)
    cells = [(i, j) for i in range(3) for j in range(3)]
    for a, (yi, xi) in enumerate(cells):
        for yj, xj in cells[a + 1:]:
            d2 = (yi - yj) ** 2 + (xi - xj) ** 2
            total[d2] += 1
            cut[d2] += labels[yi][xi] != labels[yj][xj]
    q = (f"Dense CRF with a Potts model on a 3x3 image: every one of the 36 pixel pairs i < j "
         f"(fully connected, not only neighbours) pays w * exp(-|p_i - p_j|^2 / (2 theta^2)) when "
         f"its two labels differ; p = (row, column), unit spacing, w = {w}, theta = {theta:g}. "
         "Pairwise energy of this labelling? Two decimals. Kernel values by squared distance: "
         + ", ".join(f"{d2}: {v:.4f}" for d2, v in kern.items()) + ".\n"
         + "\n".join("    " + line for line in _grid(labels)))
    e = ("Pairs with different labels by squared distance: "
         + ", ".join(f"{d2}: {cut[d2]} of {total[d2]}" for d2 in kern)
         + f". E = {w} x (" + " + ".join(f"{cut[d2]} x {kern[d2]:.4f}" for d2 in kern if cut[d2])
         + f") = {energy:.2f}; the 4-neighbour pairs alone (a grid CRF) give "
         f"{w * cut[1] * kern[1]:.2f}. minseg.crf's mean field uses this kernel normalised, "
         "but the model's energy is this sum.")
    params = {"labels": labels, "w": w, "theta": theta}
    return q, energy, e, {"abs_tol": 0.012, "decimals": 2}, params


# --------------------------------------------------------------------------------------------
# transformers (lesson 19)
# --------------------------------------------------------------------------------------------
# SegFormer-B0's first three stages (arXiv:2105.15203): stride, channels, heads, reduction R
_MIT_B0 = ((4, 32, 1, 8), (8, 64, 2, 4), (16, 160, 5, 2))


def _attention_stage(rng: random.Random, allow_no_reduction: bool
                     ) -> tuple[dict, torch.Tensor, int]:
    """A B0 stage on a drawn image size, run through :func:`attention_weights` on the meta
    device (shapes and FLOP counts, no memory): (params, attention weights, Q K^T multiply-adds)."""
    from torch.utils.flop_counter import FlopCounterMode

    from minseg.models.transformer import EfficientSelfAttention, attention_weights

    H, W = rng.choice(((256, 256), (512, 512), (512, 1024), (1024, 1024)))
    stage = rng.randrange(len(_MIT_B0))
    stride, c, heads, r = _MIT_B0[stage]
    if allow_no_reduction and rng.random() < 0.4:
        r = 1
    h, w = H // stride, W // stride
    with torch.device("meta"):
        attn = EfficientSelfAttention(c, heads, r)
        x = torch.empty(1, h * w, c)
    with FlopCounterMode(display=False) as fc:
        weights, _ = attention_weights(attn, x, h, w)
    # Q K^T is the only batched matmul in attention_weights: 2 FLOPs per multiply-add
    macs = fc.get_flop_counts()["Global"][torch.ops.aten.bmm] // 2
    params = {"H": H, "W": W, "stage": stage + 1, "stride": stride, "c": c, "heads": heads,
              "r": r, "h": h, "w": w}
    return params, weights, macs


def _stage_text(P: dict) -> str:
    red = (f"keys/values come from the map reduced R = {P['r']} times per side" if P["r"] > 1
           else "no spatial reduction (R = 1: every token is a key)")
    return (f"SegFormer-B0 stage {P['stage']} on a {P['H']}x{P['W']} image: {P['h']}x{P['w']} "
            f"tokens (stride {P['stride']}), C = {P['c']} channels, {P['heads']} head(s), {red}.")


@_register("attention_macs", "multiply-adds of Q K^T with reduction (minseg.models.transformer)")
def _attention_macs(rng: random.Random) -> Spec:
    P, weights, macs = _attention_stage(rng, allow_no_reduction=False)
    n, nk = weights.shape[-2], weights.shape[-1]
    q = (_stage_text(P) + " How many multiply-adds does Q K^T take for one image, all heads "
         "together, in millions? One decimal.")
    e = (f"N = {P['h']}x{P['w']} = {n} queries, ({P['h']}/{P['r']})x({P['w']}/{P['r']}) = {nk} "
         "keys; each score is a dot product of C/heads numbers, so heads x N x Nk x C/heads = "
         f"{n} x {nk} x {P['c']} = {macs / 1e6:.1f} M. Without reduction R^2 = {P['r'] ** 2} times "
         f"more: {macs * P['r'] ** 2 / 1e6:.1f} M. (A FLOP counter reports twice these.)")
    return q, macs / 1e6, e, {"abs_tol": 0.05, "rel_tol": 0.006, "decimals": 1}, P


@_register("attention_memory", "memory of the attention matrix (minseg.models.transformer)")
def _attention_memory(rng: random.Random) -> Spec:
    P, weights, _ = _attention_stage(rng, allow_no_reduction=True)
    mib = weights.numel() * weights.element_size() / 2 ** 20
    n, nk = weights.shape[-2], weights.shape[-1]
    q = (_stage_text(P) + " If the float32 attention probabilities softmax(Q K^T / sqrt(d)) of "
         "all heads were stored for one image, how many MiB (2^20 bytes) would they take? One "
         "decimal.")
    e = (f"heads x N x Nk x 4 bytes = {P['heads']} x {n} x {nk} x 4 / 2^20 = {mib:.1f} MiB"
         + (f"; without reduction {P['r'] ** 2} times more, {mib * P['r'] ** 2:.1f} MiB"
            if P["r"] > 1
            else f"; a reduction R = {_MIT_B0[P['stage'] - 1][3]} would divide it by "
                 f"{_MIT_B0[P['stage'] - 1][3] ** 2}")
         + ". Fused attention (F.scaled_dot_product_attention) never stores it, but attention "
           "maps for pictures do.")
    return q, mib, e, {"abs_tol": 0.05, "rel_tol": 0.006, "decimals": 1}, P
