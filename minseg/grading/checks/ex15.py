"""Exercise 15 (panoptic): semantic + instances -> panoptic ids, and panoptic quality."""
from __future__ import annotations

import torch

from minseg.grading.checks._common import IGNORE, randint, rng
from minseg.grading.tasks import Case, Task, exact
from minseg.instances import to_panoptic as ref_to_panoptic
from minseg.metrics import panoptic_quality as ref_pq

SLUG = "15_panoptic"
TITLE = "From semantic to panoptic"
DIV = 1000


def _scene(g: torch.Generator, h: int, w: int, objects: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Semantic map (0 = sky stuff, 1 = ground stuff, 2..4 things) and instance ids."""
    sem = torch.zeros(h, w, dtype=torch.long)
    sem[h // 2:] = 1
    inst = torch.zeros(h, w, dtype=torch.long)
    for i in range(1, objects + 1):
        y0, x0 = randint(g, 0, h - 3), randint(g, 0, w - 3)
        y1, x1 = randint(g, y0 + 2, h), randint(g, x0 + 2, w)
        sem[y0:y1, x0:x1] = randint(g, 2, 4)
        inst[y0:y1, x0:x1] = i
    return sem, inst


def _pan_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex15.pan")
    out = []
    for h, w, n, void, note in [(6, 8, 2, False, "2 objects"), (8, 8, 4, True, "4 objects, void pixels"),
                                (7, 9, 3, False, "3 objects, a thing pixel without instance")]:
        sem, inst = _scene(g, h, w, n)
        inst[sem < 2] = torch.randint(0, 3, (int((sem < 2).sum()),), generator=g)  # stuff: ignored
        if void:
            sem[torch.rand(h, w, generator=g) < 0.1] = IGNORE
        if "without" in note:
            things = (sem >= 2).nonzero()
            if len(things):
                inst[tuple(things[0])] = 0
        out.append(Case({"semantic": sem, "instance": inst, "thing_classes": [2, 3, 4]},
                        f"{h}x{w} scene, stuff 0-1, things 2-4, {note}"))
    return out


def _pq_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex15.pq")
    out = []
    for h, w, n, note in [(10, 12, 3, "3 objects, one shifted"), (12, 12, 5, "5 objects, one missed, one extra"),
                          (9, 10, 2, "2 objects, one with the wrong class")]:
        sem, inst = _scene(g, h, w, n)
        target = ref_to_panoptic(sem, inst, [2, 3, 4], DIV)
        pred = target.clone()
        ids = [i for i in pred.unique().tolist() if i % DIV]
        if "shifted" in note and ids:
            m = pred == ids[0]
            pred[m] = 0
            pred[torch.roll(m, 1, dims=1) & (pred < 2 * DIV)] = ids[0]
        if "missed" in note and len(ids) > 1:
            pred[pred == ids[1]] = DIV
            y, x = randint(g, 0, h - 2), randint(g, 0, w - 2)
            pred[y:y + 2, x:x + 2] = 4 * DIV + 50
        if "wrong class" in note and ids:
            c = ids[0] // DIV
            pred[pred == ids[0]] = (2 + (c - 1) % 3) * DIV + 7
        out.append(Case({"pred": pred, "target": target}, f"{h}x{w} panoptic maps, {note}"))
    return out


TASKS = [
    Task("ex15.to_panoptic", "to_panoptic", 2,
         "panoptic ids: class * 1000 + instance for things, class * 1000 for stuff, -1 for void "
         "(255) and for thing pixels whose instance id is 0", _pan_cases,
         lambda semantic, instance, thing_classes: ref_to_panoptic(semantic, instance, thing_classes),
         compare=exact()),
    Task("ex15.panoptic_quality", "panoptic_quality", 3,
         "PQ: match segments of the same class with IoU > 0.5; per class SQ = mean IoU of matches, "
         "RQ = TP / (TP + FP/2 + FN/2), PQ = SQ * RQ; mean over classes with TP + FP + FN > 0",
         _pq_cases, lambda pred, target: ref_pq(pred, target)["pq"],
         hint="a segment is all pixels with one id; its class is id // 1000"),
]
