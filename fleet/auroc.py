"""AUROC of a detector's scores against binary labels."""

from __future__ import annotations

import numpy as np


def auroc(scores, labels) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative, ties
    counting half (the Mann-Whitney U statistic over average ranks)."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D of one length, got {s.shape} and {y.shape}")
    if np.isnan(s).any():
        raise ValueError("scores must not be NaN")
    positives, negatives = int(y.sum()), int((~y).sum())
    if not positives or not negatives:
        raise ValueError("auroc needs at least one positive and one negative label")
    _, group, counts = np.unique(s, return_inverse=True, return_counts=True)
    rank = (np.cumsum(counts) - (counts - 1) / 2)[group]  # 1-based, ties share their average rank
    return float((rank[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))
