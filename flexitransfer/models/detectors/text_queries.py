"""Text queries -> embeddings for open-vocabulary heads, with prompt templates.

Training: each query is wrapped in one template drawn at random (torch's RNG, seeded by the
runner). Evaluation: the embedding of a query is the mean of its L2-normalised embeddings over
all templates (CLIP / OWL-ViT prompt ensembling), cached per query string until the model goes
back to training (the text tower does not change in eval).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

#: a short prompt ensemble in the style of CLIP / OWL-ViT's (used when a config gives none).
DEFAULT_TEMPLATES = ('a photo of a {}.', 'a photo of the {}.', 'a photo of a small {}.', 'a photo of a big {}.',
                     'a cropped photo of a {}.', 'itap of a {}.', 'a good photo of a {}.')


class TextQueryEncoder:
    """Wraps a text tower (callable on a list of strings -> (N, E)); not a module (holds no weights)."""

    def __init__(self, templates: Sequence[str] = DEFAULT_TEMPLATES):
        templates = tuple(templates)
        if not templates or any('{}' not in t for t in templates):
            raise ValueError(f"templates must be a non-empty list of strings with a '{{}}' slot, got {templates!r}")
        self.templates = templates
        self._cache: Dict[str, torch.Tensor] = {}

    def clear(self) -> None:
        self._cache.clear()

    def __call__(self, tower, names: Sequence[str], training: bool) -> torch.Tensor:
        """(len(names), E) query embeddings."""
        if training:
            pick = torch.randint(len(self.templates), (len(names),)).tolist()
            return tower([self.templates[j].format(n) for n, j in zip(names, pick)])
        todo = [n for n in dict.fromkeys(names) if n not in self._cache]
        if todo:
            texts = [t.format(n) for n in todo for t in self.templates]
            with torch.no_grad():  # in chunks: LVIS has 1203 classes x the templates
                emb = F.normalize(torch.cat([tower(texts[i:i + 1024]) for i in range(0, len(texts), 1024)]), dim=-1)
                emb = emb.reshape(len(todo), len(self.templates), -1).mean(1)
            self._cache.update(zip(todo, emb))
        return torch.stack([self._cache[n] for n in names])


def batch_queries(per_image: List[Tuple[str, ...]], embed) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pad per-image query lists into (B, Q, E) embeddings and a (B, Q) mask (real queries first).

    ``embed(list_of_unique_names) -> (U, E)``: each distinct string is encoded once per batch.
    """
    if not per_image or any(len(q) == 0 for q in per_image):
        raise ValueError('every image needs at least one text query (data sample `text`, or the model\'s '
                         'default_queries)')
    unique = list(dict.fromkeys(n for q in per_image for n in q))
    emb = embed(unique)
    index = {n: i for i, n in enumerate(unique)}
    qmax = max(len(q) for q in per_image)
    out = emb.new_zeros(len(per_image), qmax, emb.shape[-1])
    mask = torch.zeros(len(per_image), qmax, dtype=torch.bool, device=emb.device)
    for b, q in enumerate(per_image):
        out[b, :len(q)] = emb[[index[n] for n in q]]
        mask[b, :len(q)] = True
    return out, mask


def split_prompt(text) -> Tuple[str, ...]:
    """Queries from a sample's ``text``: a sequence of names, or one string in mmdet's grounding
    convention ('red . green . blue .', as ``inference_detector(..., text_prompt=...)`` passes it)."""
    if not isinstance(text, str):
        return tuple(text)
    parts = [t.strip() for t in (' ' + text.strip() + ' ').split(' . ')]
    parts = [t[:-1].strip() if t.endswith(' .') or t == '.' else t for t in parts]
    return tuple(t for t in parts if t)


def sample_queries(data_samples: Optional[list], default: Optional[Sequence[str]], batch: int):
    """Each image's query strings: the sample's ``text`` (mmdet grounding convention) or the default."""
    if data_samples and all('text' in s for s in data_samples):
        return [split_prompt(s.text) for s in data_samples]
    if default:
        return [tuple(default)] * batch
    raise ValueError('no text queries: data samples carry no `text` (use return_classes=True or '
                     'SampleTextQueries in the pipeline and PackDetInputs meta_keys with "text") and the model '
                     'has no default_queries')
