from .cls_metrics import ClsAccuracy, topk_accuracy

__all__ = ['ClsAccuracy', 'topk_accuracy']
