"""Anytime cascades over patch sizes, per image, from one set of FlexiViT weights.

``FlexiCascade`` runs a classifier at the coarsest patch first and stops an image when its
confidence (max softmax, or the margin between the two largest probabilities) reaches the stage's
threshold; the others go on to the next, finer patch, up to the finest (which always stops).
Batched: the images that stop leave the batch.

Calibration (``calibrate``) works on per-stage logits of a validation split: every stage is run on
every image once, then the cascade is simulated exactly for every combination of candidate
thresholds (``simulate``), and the cheapest combination reaching a target accuracy (or the most
accurate within a mean-compute budget) is kept. Thresholds travel as a small JSON.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..engine.patch_size import set_patch_size
from ..models.retrieval.lit import LiT

__all__ = ['FlexiCascade', 'CascadeResult', 'confidence', 'simulate', 'calibrate', 'save_thresholds',
           'load_thresholds', 'classifier_logits_fn', 'zero_shot_logits_fn', 'logits_fn_for', 'NEVER',
           'stop_stages', 'stops_result']

SCORES = ('maxprob', 'margin')
#: A threshold no confidence reaches (confidences lie in [0, 1]): the stage never stops an image.
NEVER = 2.0


def confidence(logits: torch.Tensor, score: str = 'maxprob') -> torch.Tensor:
    """Per-image confidence in [0, 1]: max softmax probability, or top-1 minus top-2 probability."""
    prob = logits.detach().float().softmax(-1)
    if score == 'maxprob':
        return prob.max(-1).values
    if score == 'margin':
        top = prob.topk(2, dim=-1).values
        return top[..., 0] - top[..., 1]
    raise ValueError(f'score must be one of {SCORES}, got {score!r}')


def classifier_logits_fn(model: torch.nn.Module) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """``(x, p) -> logits`` for an mmengine classifier (``FlexiImageClassifier`` or anything whose
    ``forward(x, mode='tensor')`` returns logits): sets the patch size of its FlexiViT(s)."""
    def fn(x, p):
        set_patch_size(model, p)
        return model(x, mode='tensor')
    return fn


def zero_shot_logits_fn(lit: torch.nn.Module) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """``(x, p) -> logits`` of a LiT zero-shot classifier (its ``zero_shot`` class names and prompt
    templates): ``logit_scale.exp() * image_embedding @ class_embeddings.T``, as its ``predict`` scores."""
    if not getattr(lit, 'zero_shot', None):
        raise ValueError('the LiT model has no zero_shot classes: set model.zero_shot=dict(classnames=[...], '
                         "templates=['a photo of a {}.']) in the config (configs/retrieval/lit_zeroshot_cifar100.py)")

    def fn(x, p):
        set_patch_size(lit, p)
        return lit.logit_scale.exp() * lit.encode_image(x) @ lit.zero_shot_weights().T
    return fn


def logits_fn_for(model: torch.nn.Module) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """The cascade's ``(x, p) -> logits`` for a task model.

    Args:
        model (nn.Module): a ``LiT`` (or subclass): its zero-shot classifier; any other model: a classifier.

    Returns:
        Callable: ``(x, p) -> logits``.
    """
    if isinstance(model, LiT):
        return zero_shot_logits_fn(model)
    return classifier_logits_fn(model)


class FlexiCascade(torch.nn.Module):
    """Args:
        model: the classifier (one set of weights for every stage).
        patch_sizes: stage patch sizes, coarse to fine (e.g. ``[24, 12, 6]``).
        thresholds: one per stage but the last (which always stops); an image stops at stage i when
            its confidence >= ``thresholds[i]`` (0: everything stops; > 1: nothing does).
        score: 'maxprob' | 'margin'.
        logits_fn: ``(x, p) -> logits``; default ``classifier_logits_fn(model)``.
    """

    def __init__(self, model: torch.nn.Module, patch_sizes: Sequence[int], thresholds: Sequence[float],
                 score: str = 'maxprob', logits_fn: Optional[Callable] = None):
        super().__init__()
        if len(thresholds) != len(patch_sizes) - 1:
            raise ValueError(f'{len(patch_sizes)} stages need {len(patch_sizes) - 1} thresholds, got {len(thresholds)}')
        if score not in SCORES:
            raise ValueError(f'score must be one of {SCORES}, got {score!r}')
        self.model = model
        self.patch_sizes = list(patch_sizes)
        self.thresholds = [float(t) for t in thresholds]
        self.score = score
        self.logits_fn = logits_fn or logits_fn_for(model)

    @torch.no_grad()
    def forward(self, x: torch.Tensor):
        """Logits ``(B, C)`` (from each image's stopping stage) and the stopping stage ``(B,)``."""
        b = x.shape[0]
        out, stage = None, torch.full((b,), -1, dtype=torch.long, device=x.device)
        active = torch.arange(b, device=x.device)
        for i, p in enumerate(self.patch_sizes):
            logits = self.logits_fn(x[active], p)
            if out is None:
                out = logits.new_zeros(b, logits.shape[-1])
            last = i == len(self.patch_sizes) - 1
            stop = torch.ones_like(active, dtype=torch.bool) if last else \
                confidence(logits, self.score) >= self.thresholds[i]
            out[active[stop]] = logits[stop]
            stage[active[stop]] = i
            active = active[~stop]
            if active.numel() == 0:
                break
        return out, stage


@dataclass
class CascadeResult:
    thresholds: List[float]
    accuracy: float                     # %
    mean_cost: float                    # mean per image of the cumulative stage costs
    stop_fraction: List[float]          # per stage
    met: bool = True                    # the target / budget was reachable
    extra: Dict = field(default_factory=dict)


def _stop_stage(conf: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """conf (K, N), thr (M, K-1) -> first stopping stage (M, N)."""
    k, n = conf.shape
    passes = conf[None, :k - 1, :] >= thr[:, :, None]                      # (M, K-1, N)
    passes = np.concatenate([passes, np.ones((thr.shape[0], 1, n), bool)], 1)
    return passes.argmax(1)


def stop_stages(conf: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Where the cascade stops each image.

    Args:
        conf (np.ndarray): per-stage confidences ``(K, N)``.
        thresholds (Sequence[float]): one per stage but the last.

    Returns:
        np.ndarray: ``(N,)`` the first stage whose confidence reaches its threshold (the last stage else).
    """
    return _stop_stage(np.asarray(conf, np.float64), np.asarray(thresholds, np.float64)[None])[0]


def stops_result(stop: np.ndarray, correct: np.ndarray, costs: Sequence[float],
                 thresholds: Sequence[float]) -> CascadeResult:
    """The cascade's outcome from where each image stopped.

    Args:
        stop (np.ndarray): ``(N,)`` each image's stopping stage (``stop_stages``).
        correct (np.ndarray): per-stage correctness ``(K, N)``.
        costs (Sequence[float]): ``costs[i]`` is stage i's own cost (an image stopping at stage i pays
            ``sum(costs[:i+1])``).
        thresholds (Sequence[float]): the thresholds behind ``stop`` (reported as they are).

    Returns:
        CascadeResult: accuracy (%), mean cost and the fraction stopping at each stage.
    """
    correct = np.asarray(correct, bool)
    cum = np.cumsum(costs)
    return CascadeResult(list(map(float, thresholds)), float(correct[stop, np.arange(len(stop))].mean() * 100),
                         float(cum[stop].mean()), [float((stop == i).mean()) for i in range(correct.shape[0])])


def simulate(conf: np.ndarray, correct: np.ndarray, costs: Sequence[float], thresholds: Sequence[float]):
    """The cascade on precomputed per-stage confidences / correctness ``(K, N)``; ``costs[i]`` is stage
    i's own cost (an image stopping at stage i pays ``sum(costs[:i+1])``)."""
    return stops_result(stop_stages(conf, thresholds), correct, costs, thresholds)


def _candidates(conf_i: np.ndarray, n: Optional[int]) -> np.ndarray:
    vals = np.unique(conf_i) if n is None else np.unique(np.quantile(conf_i, np.linspace(0, 1, n)))
    return np.concatenate([[0.0], vals, [NEVER]])


def calibrate(conf: np.ndarray, correct: np.ndarray, costs: Sequence[float], target_acc: Optional[float] = None,
              budget: Optional[float] = None, num_candidates: Optional[int] = 64, chunk: int = 4096) -> CascadeResult:
    """Thresholds for ``K`` stages from per-stage confidences and correctness ``(K, N)`` on a validation split.

    ``target_acc`` (%): the least mean cost whose accuracy >= target (ties: higher accuracy); if no
    combination reaches it, the most accurate one (``met=False``). ``budget``: the highest accuracy with
    mean cost <= budget (ties: cheaper); if none fits, the cheapest (``met=False``). Candidates per stage:
    0, ``num_candidates`` quantiles of that stage's confidences (all distinct values if None) and ``NEVER``;
    every combination is simulated exactly.
    """
    if (target_acc is None) == (budget is None):
        raise ValueError('give exactly one of target_acc and budget')
    conf, correct = np.asarray(conf, np.float64), np.asarray(correct, bool)
    k, n = conf.shape
    cum = np.cumsum(np.asarray(costs, np.float64))
    if k == 1:
        return simulate(conf, correct, costs, [])
    cands = [_candidates(conf[i], num_candidates) for i in range(k - 1)]
    combos = itertools.product(*cands)
    cols = np.arange(n)
    thr, accs, means = [], [], []
    while True:
        block = np.array(list(itertools.islice(combos, chunk)), np.float64).reshape(-1, k - 1)
        if block.shape[0] == 0:
            break
        stop = _stop_stage(conf, block)                                    # (M, N)
        thr.append(block)
        accs.append(correct[stop, cols[None]].mean(1) * 100)
        means.append(cum[stop].mean(1))
    thr, acc, cost = np.concatenate(thr), np.concatenate(accs), np.concatenate(means)
    met = acc >= target_acc - 1e-9 if target_acc is not None else cost <= budget * (1 + 1e-12)
    idx = np.flatnonzero(met) if met.any() else np.arange(len(acc))
    if target_acc is not None and met.any():
        order = np.lexsort((-acc[idx], cost[idx]))   # cheapest, then most accurate
    elif target_acc is not None or met.any():
        order = np.lexsort((cost[idx], -acc[idx]))   # most accurate, then cheapest
    else:
        order = np.lexsort((-acc[idx], cost[idx]))   # nothing within the budget: the cheapest
    best, best_met = thr[idx[order[0]]], bool(met.any())
    res = simulate(conf, correct, costs, best)
    res.met = best_met
    return res


def save_thresholds(path: str, patch_sizes: Sequence[int], thresholds: Sequence[float], score: str = 'maxprob',
                    **info) -> None:
    """The cascade as a small JSON (beside the checkpoint): stages, thresholds, score, and any notes."""
    with open(path, 'w') as f:
        json.dump(dict(patch_sizes=list(map(int, patch_sizes)), thresholds=[float(t) for t in thresholds],
                       score=score, **info), f, indent=2, default=float)


def load_thresholds(path: str) -> dict:
    with open(path) as f:
        d = json.load(f)
    if len(d.get('thresholds', [])) != len(d.get('patch_sizes', [])) - 1:
        raise ValueError(f'{path}: a cascade JSON needs patch_sizes and one threshold fewer')
    return d


def cascade_result_dict(res: CascadeResult) -> dict:
    return asdict(res)
