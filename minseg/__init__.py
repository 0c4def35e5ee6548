"""minseg: semantic segmentation from first principles (package re-exports only).

>>> import minseg
>>> cfg = minseg.profile()                                   # smoke / cpu / gpu sizes
>>> train_loader, val_loader = minseg.data.build_loaders(cfg)   # doctest: +SKIP
>>> model = minseg.build_model("unet", 21, width=cfg.width)
>>> history = minseg.fit(model, train_loader, val_loader, num_classes=21, max_steps=cfg.steps)  # doctest: +SKIP
"""
from minseg import config, data, losses, metrics, viz
from minseg.config import device, profile, seed_everything
from minseg.data.voc import IGNORE_INDEX, VOC_CLASSES, VOC_PALETTE
from minseg.models import MODELS, build_model, count_parameters
from minseg.train import evaluate, fit

__version__ = "0.1.0"

__all__ = ["IGNORE_INDEX", "MODELS", "VOC_CLASSES", "VOC_PALETTE", "build_model", "config",
           "count_parameters", "data", "device", "evaluate", "fit", "losses", "metrics",
           "profile", "seed_everything", "viz"]
