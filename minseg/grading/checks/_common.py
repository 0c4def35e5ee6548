"""Helpers shared by the checks modules: seeded generators and typical segmentation inputs."""
from __future__ import annotations

import zlib

import torch

IGNORE = 255


def rng(seed: int, salt: str) -> torch.Generator:
    """A generator that depends on the seed and on the task (``salt``), so tasks differ."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(salt.encode()))


def randint(g: torch.Generator, lo: int, hi: int) -> int:
    """An int in ``lo..hi`` inclusive."""
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def labels(g: torch.Generator, shape: tuple[int, ...], num_classes: int,
           classes: list[int] | None = None, ignore_frac: float = 0.0) -> torch.Tensor:
    """Random class ids drawn from ``classes`` (default all), a fraction set to 255."""
    pool = torch.tensor(classes if classes is not None else list(range(num_classes)))
    out = pool[torch.randint(len(pool), shape, generator=g)]
    if ignore_frac > 0:
        out[torch.rand(shape, generator=g) < ignore_frac] = IGNORE
    return out.long()


def noisy_prediction(g: torch.Generator, target: torch.Tensor, num_classes: int,
                     flip: float = 0.35, classes: list[int] | None = None) -> torch.Tensor:
    """A prediction that agrees with ``target`` on most pixels (255 becomes a random class)."""
    rand = labels(g, tuple(target.shape), num_classes, classes)
    keep = (torch.rand(target.shape, generator=g) > flip) & (target != IGNORE)
    return torch.where(keep, target, rand)


def blobs(g: torch.Generator, h: int, w: int, num_classes: int, count: int = 4,
          ignore_border: bool = False) -> torch.Tensor:
    """A label map made of a few rectangles on background 0 (more image-like than noise)."""
    m = torch.zeros(h, w, dtype=torch.long)
    for _ in range(count):
        c = randint(g, 1, num_classes - 1)
        y0, x0 = randint(g, 0, h - 2), randint(g, 0, w - 2)
        y1, x1 = randint(g, y0 + 1, h), randint(g, x0 + 1, w)
        m[y0:y1, x0:x1] = c
    if ignore_border:
        from minseg.metrics import boundary_mask

        m[boundary_mask(m) & (torch.rand(h, w, generator=g) < 0.5)] = IGNORE
    return m


def logits(g: torch.Generator, n: int, c: int, h: int, w: int, scale: float = 2.0) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=g) * scale


def shape_note(x: torch.Tensor) -> str:
    return "x".join(str(s) for s in x.shape)


def call_loss_and_grad(fn, inputs: dict) -> dict:
    """Apply a loss to ``inputs`` (``logits`` among them) and return the loss and its gradient
    with respect to the logits, so that a loss that cannot be trained (argmax, ``.item()``,
    a detached tensor) fails its check."""
    inputs = dict(inputs)
    logits = inputs["logits"].detach().clone().requires_grad_(True)
    inputs["logits"] = logits
    loss = fn(**inputs)
    if not isinstance(loss, torch.Tensor):
        return {"loss": loss, "grad": "no gradient: return a tensor, not a Python number"}
    if loss.requires_grad:
        loss.backward()
        grad = logits.grad if logits.grad is not None else torch.zeros_like(logits)
    elif bool((loss == 0).all()):
        grad = torch.zeros_like(logits)  # a constant 0 (nothing to learn from) is allowed
    else:
        return {"loss": loss.detach(), "grad": "no gradient: the loss is not differentiable "
                                               "with respect to the logits"}
    return {"loss": loss.detach(), "grad": grad}


def challenge_task(exercise: str, ch, reference, prompt: str, points: int = 3, hint: str = ""):
    """The training-challenge task ``<exercise>.challenge`` of a lesson: the student's
    ``recipe(num_classes, data)`` is trained for ``ch``'s budget and scored on held-out images
    by ``ch``'s bands (:mod:`minseg.grading.challenge`)."""
    import zlib

    from minseg.grading.challenge import call_challenge, challenge_cases, challenge_score
    from minseg.grading.tasks import Task

    return Task(f"{exercise}.challenge", "recipe", points, prompt,
                challenge_cases(ch, zlib.crc32(exercise.encode()) % 997), reference,
                call=call_challenge, score=challenge_score(ch), timeout_s=300, hint=hint)
