"""Training challenges: a student's recipe must reach a score within a fixed step budget.

A lesson shows that something helps (skips for thin parts, Dice for a tiny class, balanced
sampling for rare classes...). Its challenge asks the student to *use* that: write a recipe that
reaches a stated score on the lesson's data, within the same step budget for everyone, graded
on images the student never saw.

A :class:`Challenge` fixes the data (synthetic scenes built for the lesson's claim, a class
subset, an image size, a training-set size), the budget (optimizer steps, batch size), the
metric and the bands that turn the score into points. The student writes

    def recipe(num_classes: int, data) -> dict:
        return {"model": ..., "loss": "ce", "lr": 3e-3}

where ``data`` is the training split (``data.images`` uint8 ``N,3,S,S``, ``data.masks`` uint8
``N,S,S`` with 255 for void, ``data.classes``), for recipes that need statistics of it (class
weights, sampling weights).

``"model"`` (an ``nn.Module`` built inside the function, so every grading starts it fresh) is
required; ``"loss"`` (a name of :func:`minseg.losses.get_loss` or a callable), ``"lr"``,
``"weight_decay"``, ``"optimizer"``, ``"warmup_steps"``, ``"grad_clip"``, ``"augment"``
(``True``/``False``) and ``"sampler_weights"`` (one weight per training image, for drawing the
batches) are optional. The steps and the batch size are the challenge's, not the recipe's.

Who does what:

* the grader's process generates a held-out split with the grading seed (:func:`held_out`),
  sends only its images to the student's kernel and keeps the masks (``Case.secret``);
* in the kernel, :func:`call_challenge` (the task's ``call``) builds the recipe, trains it on
  the public training split for the challenge's steps (:func:`train_recipe`), predicts the
  held-out images and returns label maps;
* the grader scores them (:func:`score`): points by the highest band reached.

``check(...)`` in a notebook does the same on a check split generated with the check seed and
prints the score and the bands. With ``MINSEG_CHALLENGE_BUDGET=smoke`` (set by the test suite
whenever ``MINSEG_PROFILE=smoke``) the budget shrinks to a few steps: the pipeline runs, the
bands mean nothing. The grader's own ``MINSEG_PROFILE=smoke`` for student kernels does not
change a challenge's budget.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

import torch

RECIPE_KEYS = ("model", "loss", "lr", "weight_decay", "optimizer", "warmup_steps", "grad_clip",
               "augment", "sampler_weights")
METRICS = ("miou", "boundary_f1", "iou_of", "trimap_iou")
SMOKE_STEPS = 4


@dataclass(frozen=True)
class Challenge:
    """What a training challenge fixes; plain data, so it travels to the student's kernel.

    ``metric``: ``"miou"``; ``"boundary_f1"`` (2 px tolerance); ``"trimap_iou"`` (mIoU within
    2 px of the true boundaries); ``"iou_of"`` (mean IoU of the classes named in ``focus``).
    ``bands``: ``(threshold, share of the points)`` pairs, the highest threshold reached wins.
    ``max_gflops``: optional cap on the model's forward GFLOPs at ``image_size`` (batch 1); a
    model over it scores 0. ``test_scene``: the held-out split's scene options when they differ
    from training's (classes rare in training but common enough in the test to measure).
    """

    classes: tuple[str, ...]
    scene: dict
    metric: str
    bands: tuple[tuple[float, float], ...]
    steps: int = 300
    batch_size: int = 16
    image_size: int = 64
    num_train: int = 1000
    num_test: int = 100
    focus: tuple[str, ...] = ()
    max_gflops: float | None = None
    train_seed: int = 0
    test_scene: dict | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.metric == "iou_of" and not self.focus:
            raise ValueError("metric 'iou_of' needs the classes it averages in focus")
        if not self.bands or any(not 0 < share <= 1 for _, share in self.bands):
            raise ValueError(f"bands must be (threshold, share in (0, 1]) pairs, got {self.bands}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Challenge":
        d = dict(d)
        d["classes"], d["focus"] = tuple(d["classes"]), tuple(d.get("focus", ()))
        d["bands"] = tuple(tuple(b) for b in d["bands"])
        return cls(**d)

    def budget(self) -> int:
        """Optimizer steps: the challenge's, or :data:`SMOKE_STEPS` with the smoke budget."""
        return SMOKE_STEPS if _smoke() else self.steps

    def sizes(self) -> tuple[int, int]:
        """Training and held-out images (at most 64 and 16 with the smoke budget)."""
        return (min(self.num_train, 64), min(self.num_test, 16)) if _smoke() else (self.num_train, self.num_test)

    def describe(self) -> str:
        bands = ", ".join(f">= {t:g}: {share:.0%}" for t, share in sorted(self.bands))
        what = {"miou": "mIoU", "boundary_f1": "boundary F1 (2 px)", "trimap_iou": "trimap IoU (2 px)",
                "iou_of": f"mean IoU of {', '.join(self.focus)}"}[self.metric]
        cap = f", at most {self.max_gflops:g} GFLOPs per {self.image_size}px image" if self.max_gflops else ""
        return (f"{what} on held-out images; {self.steps} steps of {self.batch_size} images at "
                f"{self.image_size}px{cap}; points: {bands}")


BUDGET_ENV = "MINSEG_CHALLENGE_BUDGET"


def _smoke() -> bool:
    return os.environ.get(BUDGET_ENV) == "smoke"


def _scene(ch: Challenge, test: bool = False):
    from minseg.data import SceneOptions

    scene = ch.test_scene if test and ch.test_scene is not None else ch.scene

    def tuples(v: Any) -> Any:          # JSON and pickles may turn tuples into lists
        return tuple(tuples(x) for x in v) if isinstance(v, (list, tuple)) else v

    return SceneOptions(**{k: tuples(v) for k, v in scene.items()})


def training_data(ch: Challenge):
    """The public training split (the same for every student), as a decoded tensor split."""
    from minseg.data import decoded_split, make_synthetic_voc

    n = ch.sizes()[0]
    root = make_synthetic_voc(num_train=n, num_val=1, image_size=ch.image_size,
                              seed=ch.train_seed, scene=_scene(ch))
    return decoded_split(root, "train", size=ch.image_size, classes=ch.classes, limit=n)


def held_out(ch: Challenge, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 N,3,S,S, masks uint8 N,S,S)`` of a split generated with ``seed`` (the
    grader's or the check's), never the training seed; nothing is cached."""
    from minseg.data import decoded_split, make_synthetic_voc

    gen_seed = 10_000 + seed          # disjoint from the small training seeds
    if gen_seed == ch.train_seed:
        raise ValueError("a held-out split needs a seed other than the training seed")
    with tempfile.TemporaryDirectory(prefix="minseg-challenge-") as tmp:
        n = ch.sizes()[1]
        root = make_synthetic_voc(tmp, num_train=1, num_val=n, image_size=ch.image_size,
                                  seed=gen_seed, scene=_scene(ch, test=True), workers=1)
        data = decoded_split(root, "val", size=ch.image_size, classes=ch.classes, limit=n,
                             use_cache=False)
        return data.images.clone(), data.masks.clone()


def _recipe(fn: Callable, num_classes: int, data: Any) -> dict:
    out = fn(num_classes, data)
    if isinstance(out, torch.nn.Module):
        out = {"model": out}
    if not isinstance(out, dict) or not isinstance(out.get("model"), torch.nn.Module):
        raise TypeError("recipe(num_classes, data) must return a dict with an nn.Module under 'model' "
                        f"(got {type(out).__name__})")
    unknown = set(out) - set(RECIPE_KEYS)
    if unknown:
        raise ValueError(f"unknown recipe keys {sorted(unknown)}; allowed: {', '.join(RECIPE_KEYS)} "
                         "(steps and batch size are the challenge's)")
    return out


def train_recipe(ch: Challenge, fn: Callable, seed: int = 0) -> torch.nn.Module:
    """Build ``fn(num_classes, data)``'s recipe and train it for the challenge's budget."""
    from minseg.cost import flops
    from minseg.data import BatchAugment, TensorLoader, TensorSegmentationData
    from minseg.train import fit

    data = training_data(ch)
    torch.manual_seed(seed)
    recipe = _recipe(fn, data.num_classes, data)
    model = recipe["model"]
    if ch.max_gflops is not None:
        g = flops(model, ch.image_size) / 1e9
        if g > ch.max_gflops:
            raise ValueError(f"the model needs {g:.3f} GFLOPs per {ch.image_size}px image, over the "
                             f"challenge's cap of {ch.max_gflops:g}")
    weights = recipe.get("sampler_weights")
    if weights is not None:
        w = torch.as_tensor(weights, dtype=torch.double)
        if w.shape != (len(data),) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"sampler_weights must be {len(data)} finite weights >= 0, not all 0")
        idx = torch.multinomial(w, len(data), replacement=True,
                                generator=torch.Generator().manual_seed(seed))
        data = TensorSegmentationData(data.images[idx], data.masks[idx], data.source, data.fit)
    augment = BatchAugment() if recipe.get("augment", True) else None
    loader = TensorLoader(data, ch.batch_size, shuffle=True, augment=augment, seed=seed)
    kw = {k: recipe[k] for k in ("loss", "lr", "weight_decay", "optimizer", "warmup_steps",
                                 "grad_clip") if k in recipe}
    kw.setdefault("lr", 3e-3)
    fit(model, loader, num_classes=data.num_classes, max_steps=ch.budget(), seed=seed,
        device="cpu", progress=False, **kw)
    return model.eval()


@torch.no_grad()
def predict_labels(model: torch.nn.Module, images: torch.Tensor, num_classes: int) -> torch.Tensor:
    """uint8 label maps of uint8 images; an error for a wrong output shape or NaN logits."""
    from minseg.data.tensors import normalize_uint8

    out = []
    for i in range(0, len(images), 16):
        x = normalize_uint8(images[i:i + 16])
        logits = model(x)
        if isinstance(logits, dict):
            logits = logits["out"]
        want = (x.shape[0], num_classes, *x.shape[-2:])
        if tuple(logits.shape) != want:
            raise ValueError(f"the model returned logits of shape {tuple(logits.shape)}, expected {want}")
        if not torch.isfinite(logits).all():
            raise ValueError("the model's logits contain NaN or inf on the held-out images "
                             "(did the training diverge? try a smaller lr)")
        out.append(logits.argmax(1).to(torch.uint8))
    return torch.cat(out)


def call_challenge(fn: Callable, inputs: dict) -> torch.Tensor:
    """A challenge task's ``call``, run in the student's kernel: train ``fn``'s recipe on the
    public split, return its label maps of the held-out ``inputs["images"]``."""
    ch = Challenge.from_dict(inputs["challenge"])
    model = train_recipe(ch, fn, seed=int(inputs.get("train_seed", 0)))
    return predict_labels(model, inputs["images"], len(ch.classes) + 1)


def measure(ch: Challenge, masks: torch.Tensor, preds: torch.Tensor) -> float:
    """The challenge's metric of label maps ``preds`` against ``masks`` (255 = void)."""
    from minseg.metrics import boundary_f1, confusion_matrix, scores_from_confusion, trimap_iou

    c = len(ch.classes) + 1
    p, t = preds.long(), masks.long()
    if ch.metric == "boundary_f1":
        return float(boundary_f1(p, t, tolerance_px=2, num_classes=c))
    if ch.metric == "trimap_iou":
        return float(trimap_iou(p, t, c, band_px=2))
    iou = scores_from_confusion(confusion_matrix(p, t, c))["iou"]
    if ch.metric == "miou":
        return float(iou.nanmean())
    names = ("background",) + tuple(ch.classes)
    focus = torch.stack([iou[names.index(n)] for n in ch.focus])
    # NaN: a class absent from the split and never predicted, which says nothing either way
    return float(focus.nanmean()) if not focus.isnan().all() else 0.0


def score(ch: Challenge, masks: torch.Tensor, got: Any) -> tuple[float, str]:
    """``(share of the points, feedback)`` for the label maps ``got``."""
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(masks.shape):
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return 0.0, f"expected label maps of shape {tuple(masks.shape)}, got {shape}"
    value = measure(ch, masks, got)
    reached = [(t, share) for t, share in ch.bands if value >= t]
    share = max((s for _, s in reached), default=0.0)
    nxt = min((t for t, _ in ch.bands if value < t), default=None)
    more = f"; next band at {nxt:g}" if nxt is not None else ""
    return share, f"{ch.metric} {value:.3f} on {len(masks)} held-out images: {share:.0%} of the points{more}"


def challenge_cases(ch: Challenge, salt: int) -> Callable[[int], list]:
    """The ``cases`` of a challenge task: one held-out split per grading seed."""
    from minseg.grading.tasks import Case

    def cases(seed: int) -> list:
        images, masks = held_out(ch, seed * 7919 + salt)
        return [Case({"challenge": ch.to_dict(), "images": images}, f"{len(images)} held-out images",
                     secret=masks)]
    return cases


def challenge_score(ch: Challenge) -> Callable[[Any, Any], tuple[float, str]]:
    """A task's ``score`` for ``ch``: ``(masks, label maps) -> (share, feedback)``."""
    return lambda masks, got: score(ch, masks, got)


__all__ = ["Challenge", "call_challenge", "challenge_cases", "challenge_score", "held_out",
           "measure", "predict_labels", "score", "train_recipe", "training_data"]

