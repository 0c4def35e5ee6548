"""minseg: semantic segmentation from first principles (package re-exports only)."""
from minseg import config
from minseg.config import device, profile, seed_everything
from minseg.data.voc import IGNORE_INDEX, VOC_CLASSES, VOC_PALETTE

__version__ = "0.1.0"
