"""Image-text retrieval metrics with several positives per image."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS


def _ranks(sim: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """0-based rank of the best positive in each row, ties counted against it
    (a positive tied with negatives ranks after them)."""
    best = np.where(positive, sim, -np.inf).max(1, keepdims=True)
    return ((sim > best) | ((sim == best) & ~positive)).sum(1)


def retrieval_metrics(img_emb, txt_emb, txt_to_img, ks: Sequence[int] = (1, 5, 10)) -> Dict[str, float]:
    """i2t / t2i Recall@k (%) and mean rank (1-based); an image's hit is any of its captions."""
    img, txt = np.asarray(img_emb, np.float64), np.asarray(txt_emb, np.float64)
    owner = np.asarray(txt_to_img)
    sim = img @ txt.T  # (N images, M texts)
    pos = owner[None, :] == np.arange(len(img))[:, None]
    if not pos.any(1).all():
        raise ValueError('every image needs at least one caption')
    r_i2t, r_t2i = _ranks(sim, pos), _ranks(sim.T, pos.T)
    out = {}
    for k in ks:
        out[f'i2t_R@{k}'] = float((r_i2t < k).mean() * 100)
        out[f't2i_R@{k}'] = float((r_t2i < k).mean() * 100)
    out['i2t_mean_rank'] = float(r_i2t.mean() + 1)
    out['t2i_mean_rank'] = float(r_t2i.mean() + 1)
    out['mean_R@1'] = (out['i2t_R@1'] + out['t2i_R@1']) / 2 if 1 in ks else float('nan')
    return out


@METRICS.register_module()
class RetrievalRecall(BaseMetric):
    """Recall@k both ways from LiT predictions (``img_emb``, ``txt_embs``)."""
    default_prefix = 'retrieval'

    def __init__(self, ks: Sequence[int] = (1, 5, 10), collect_device: str = 'cpu', prefix=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.ks = tuple(ks)

    def process(self, data_batch, data_samples) -> None:
        for s in data_samples:
            self.results.append((torch.as_tensor(s['img_emb']).float().cpu().numpy(),
                                 torch.as_tensor(s['txt_embs']).float().cpu().numpy()))

    def compute_metrics(self, results) -> dict:
        img = np.stack([r[0] for r in results])
        txt = np.concatenate([r[1] for r in results])
        owner = np.concatenate([np.full(len(r[1]), i) for i, r in enumerate(results)])
        return retrieval_metrics(img, txt, owner, self.ks)
