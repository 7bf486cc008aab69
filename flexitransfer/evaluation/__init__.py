from .cls_metrics import ClsAccuracy, topk_accuracy
from .lvis import FastLVISMetric, lvis_box_ap  # noqa: F401
from .retrieval import RetrievalRecall, retrieval_metrics

__all__ = ['ClsAccuracy', 'topk_accuracy', 'RetrievalRecall', 'retrieval_metrics']
