"""The test metric of a deployed model, in PyTorch or with its exported graph in ONNX Runtime,
through the same test loop, data and metric code as ``tools/test.py`` (``flexitransfer.apis``)."""
from __future__ import annotations

from typing import Optional, Sequence

from .predictors import install_onnx


def evaluate_onnx(cfg, checkpoint: str, onnx_path: Optional[str] = None, patch_sizes: Optional[Sequence] = None,
                  data_root: Optional[str] = None, threads: Optional[int] = None,
                  log_level: str = 'WARNING') -> dict:
    """Test-set metrics of a model with its exported graph run in ONNX Runtime inside it (the
    PyTorch model itself without ``onnx_path``), through :func:`flexitransfer.apis.evaluate`.

    Args:
        cfg (mmengine.Config): the model's config (e.g. the deployed config of :func:`bake_checkpoint`).
        checkpoint (str): its checkpoint, loaded strictly.
        onnx_path (str, optional): an ONNX graph of the model (:func:`export_onnx`), installed in place of
            the part it exports (:func:`install_onnx`). Default: none, the PyTorch model is tested.
        patch_sizes (Sequence, optional): patch sizes to test at. Default: the config's test loop's.
        data_root (str, optional): the test set's folder, if not the config's.
        threads (int, optional): ONNX Runtime's intra-op threads. Default: ONNX Runtime's choice.
        log_level (str): the runner's log level. Default: 'WARNING'.

    Returns:
        dict: metric name -> value in percent, as ``runner.test()`` returns them: ``p<size>/<name>``
        per patch size, and the first patch size's also under their plain names.
    """
    from ..apis import evaluate
    before = (lambda runner: install_onnx(runner.model, onnx_path, threads)) if onnx_path else None
    return evaluate(cfg, checkpoint, patch_sizes=patch_sizes, data_root=data_root, log_level=log_level,
                    before_test=before)
