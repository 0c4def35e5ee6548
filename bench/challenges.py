"""Calibration of the training challenges: what the reference recipe, a plain baseline and an
untouched handout score against each challenge's bands.

Run by hand on an idle machine (not by pytest)::

    .venv/bin/python bench/challenges.py                  # every challenge, 2 grading seeds
    .venv/bin/python bench/challenges.py ex04 ex10 --seeds 1 2 3

For each exercise with a ``<exercise>.challenge`` task it trains, exactly as the grader does
(:func:`minseg.grading.challenge.train_recipe` for the challenge's steps, then the held-out split
of each grading seed): the exercise's reference recipe, and a *baseline*, the plainest recipe a
student might start from (the same model family's simplest member trained with CE; see
``BASELINES``). An untouched handout raises ``NotImplementedError`` and scores 0. A good set of
bands puts the reference in the top band on every seed and the baseline below it. Prints the
score, the band reached, the training time per run and the load average (a timing taken at load
> 2 is not a figure).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from minseg.grading.challenge import Challenge, measure, predict_labels, train_recipe
from minseg.grading.checks import all_exercises


def _plain(name: str, **kw):
    def recipe(num_classes: int, data) -> dict:
        from minseg.models import build_model

        return {"model": build_model(name, num_classes, **kw), "lr": 3e-3}
    return recipe


# what a student might try first: the lesson's weaker variant
BASELINES = {
    "ex04": ("UNet without skips", _plain("unet", width=8, skips=False)),
    "ex07": ("Fast-SCNN, CE", _plain("fastscnn", width=16)),
    "ex09": ("UNet, CE", _plain("unet", width=8)),
    "ex10": ("DeepLabv3, CE, uniform sampling", _plain("deeplabv3", width=16)),
    "ex11": ("DeepLabv3 without ASPP", _plain("deeplabv3", width=16, use_aspp=False)),
    "ex20": ("Fast-SCNN width 8", _plain("fastscnn", width=8)),
}


def band(ch: Challenge, value: float) -> str:
    share = max((s for t, s in ch.bands if value >= t), default=0.0)
    return f"{share:.0%}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("exercises", nargs="*", help="e.g. ex04 ex10 (default: all with a challenge)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="grading seeds")
    args = ap.parse_args(argv)
    if os.environ.get("MINSEG_PROFILE") == "smoke":
        print("unset MINSEG_PROFILE=smoke: the smoke budget is not the challenge's", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rows = []
    for ex in all_exercises():
        task = next((t for t in ex.tasks if t.id == f"{ex.id}.challenge"), None)
        if task is None or (args.exercises and ex.id not in args.exercises):
            continue
        cases = {seed: task.cases(seed)[0] for seed in args.seeds}   # one held-out split per seed
        ch = Challenge.from_dict(cases[args.seeds[0]].inputs["challenge"])
        print(f"{ex.id}: {ch.describe()}", flush=True)
        contenders = [("reference", task.reference)]
        if ex.id in BASELINES:
            contenders.append(BASELINES[ex.id])
        for name, recipe in contenders:
            for seed in args.seeds:
                case = cases[seed]
                t0 = time.perf_counter()
                model = train_recipe(ch, recipe, seed=0)
                secs = time.perf_counter() - t0
                preds = predict_labels(model, case.inputs["images"], len(ch.classes) + 1)
                value = measure(ch, case.secret, preds)
                load = os.getloadavg()[0]
                rows.append((ex.id, name, seed, value, band(ch, value), secs, load))
                print(f"  {name:34s} seed {seed}: {ch.metric} {value:.3f} -> {band(ch, value):>4s} "
                      f"of the points; training {secs:.0f} s (load {load:.2f})", flush=True)
    print("\n| exercise | recipe | grading seed | score | band | training s | load |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.3f} | {r[4]} | {r[5]:.0f} | {r[6]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
