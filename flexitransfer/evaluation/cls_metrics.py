from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percent of rows whose label is among the k highest scores.

    Ties are broken pessimistically: a label only counts when fewer than k
    classes score strictly higher *and* the ties above it still fit in k.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    true = scores[np.arange(len(labels)), labels][:, None]
    higher = (scores > true).sum(1)
    ties = (scores == true).sum(1) - 1
    return float(np.mean(higher + ties < k) * 100.0)


@METRICS.register_module()
class ClsAccuracy(BaseMetric):
    """Top-k accuracy (%) from ``{'pred_score', 'gt_label'}`` predictions."""
    default_prefix = 'accuracy'

    def __init__(self, topk: Sequence[int] = (1, 5), collect_device: str = 'cpu', prefix=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.topk = tuple(topk)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            self.results.append((torch.as_tensor(s['pred_score']).float().cpu().numpy(), int(s['gt_label'])))

    def compute_metrics(self, results) -> dict:
        scores = np.stack([r[0] for r in results])
        labels = np.array([r[1] for r in results])
        return {f'top{k}': topk_accuracy(scores, labels, k) for k in self.topk if k <= scores.shape[1]}
