"""Anytime serving: one FlexiViT checkpoint at a ladder of patch sizes, a latency model and a
controller that picks the patch of each batch so that the queued requests meet their deadlines.

``ladder`` (the baked models, predictions in a compact form), ``latency`` (service time per patch
and batch size, measured and kept current), ``controller`` (the per-batch choice, pure: the caller
passes ``now``), ``simulate`` (a simulated clock and Poisson traces), ``ray_app`` (the Ray Serve
deployment; imports ray, so it is not imported here), ``loadtest`` (open-loop load over HTTP).
"""
from .controller import Decision, FixedPatch, PatchController, Request
from .ladder import PatchLadder, compact_prediction
from .latency import LatencyModel
from .simulate import SimResult, poisson_arrivals, simulate

__all__ = ['Decision', 'FixedPatch', 'PatchController', 'Request', 'PatchLadder', 'compact_prediction',
           'LatencyModel', 'SimResult', 'poisson_arrivals', 'simulate']
