"""Imaging: WSClean wrapper, masks, image statistics, per-dataset plots."""
