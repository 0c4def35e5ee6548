from minseg.data.voc import IGNORE_INDEX, NUM_VOC_CLASSES, VOC_CLASSES, VOC_PALETTE, voc_colormap
