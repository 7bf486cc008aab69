"""Look inside a FlexiViT across patch sizes (numbers only; ``tools/analyze.py`` draws them).

* ``cka``: minibatch linear CKA with the unbiased HSIC (Nguyen et al. 2021);
* ``record``: block outputs (after attention and after MLP) and attention probabilities;
* ``attention``: class-token / mean attention maps, attention rollout;
* ``correspondence``: cosine similarity of tokens across patch sizes, correspondence rate;
* ``grid``: token maps, the common grid of two patch sizes, token -> pixels.
"""
from .attention import query_attention, rollout
from .cka import MinibatchCKA, hsic_unbiased, linear_cka
from .correspondence import correspondence, cosine_similarity
from .grid import common_grid, pooled_rows, region_of_tokens, to_pixels, token_centres, token_map
from .record import Record, attention_probs, layer_names, record

__all__ = ['query_attention', 'rollout', 'MinibatchCKA', 'hsic_unbiased', 'linear_cka', 'correspondence',
           'cosine_similarity', 'common_grid', 'pooled_rows', 'region_of_tokens', 'to_pixels', 'token_centres',
           'token_map', 'Record', 'attention_probs', 'layer_names', 'record']
