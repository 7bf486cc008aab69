"""The one way in: build a model from a config and a checkpoint (strict), set its patch size,
run inference on images, prepare and run the multi-patch test loop.

    from flexitransfer.apis import init_model, inference_model
    model = init_model('configs/seg/tiny_seg_flexi.py', 'work_dirs/tiny_seg_flexi/iter_300.pth', patch_size=8)
    sample = inference_model(model, 'demo.jpg')            # SegDataSample with pred_sem_seg
"""
from ..engine.checkpoint import load_weights
from ..engine.patch_size import get_patch_size, set_patch_size
from .inference import inference_model, test_pipeline
from .model import init_model, load_config, without_pretrained
from .test import build_test_runner, default_work_dir, evaluate, prepare_test_cfg

__all__ = ['init_model', 'inference_model', 'load_config', 'load_weights', 'set_patch_size', 'get_patch_size',
           'test_pipeline', 'without_pretrained', 'prepare_test_cfg', 'build_test_runner', 'evaluate',
           'default_work_dir']
