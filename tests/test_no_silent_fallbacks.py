"""Cases that used to give a wrong result without a word (issue 18); each test failed on 34a7a0f.

Strict checkpoint loading by every tool is in test_apis.py."""
import os.path as osp

import pytest
import torch
from conftest import ROOT, randomize, run_tool
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from flexitransfer.models.backbones import FlexiViT

TINY_ARCH = dict(embed_dims=32, num_layers=1, num_heads=2)


def test_cls_output_without_a_class_token_is_rejected():
    """It used to return the first patch token as the 'cls' output."""
    with pytest.raises(ValueError, match='output_cls_token=True needs with_cls_token=True'):
        FlexiViT(arch=TINY_ARCH, with_cls_token=False, output_cls_token=True)


def test_lit_unknown_pool_is_rejected():
    """LiT turned any unknown pool into 'avg'."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs/retrieval/tiny_lit_flexi.py'))
    init_default_scope('mmengine')
    with pytest.raises(ValueError, match="pool must be 'tok'.*'max'"):
        MODELS.build(dict(cfg.model, pool='max'))


def test_distiller_head_of_another_shape_is_an_error():
    """FlexiDistiller skipped the head copy in silence when the shapes differed."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs/cls/tiny_cls_distill.py'))
    init_default_scope('mmengine')
    model_cfg = cfg.model.copy()
    model_cfg['teacher_checkpoint'] = None
    model_cfg['student'] = dict(model_cfg['student'], num_classes=model_cfg['student']['num_classes'] + 1)
    model = MODELS.build(model_cfg)
    with pytest.raises(ValueError, match='teacher head .* cannot initialise the student head'):
        model.init_weights()


def test_predictors_are_found_through_the_class_hierarchy():
    """A subclass (the UPerNet segmentor FlexiEncoderDecoder) fell back to a backbone-only graph."""
    from mmseg.models.segmentors import EncoderDecoder

    from flexitransfer.deploy import has_predictor
    from flexitransfer.deploy.predictors import predictor_for
    from flexitransfer.models.classifiers import FlexiImageClassifier
    from flexitransfer.models.segmentors import FlexiEncoderDecoder

    class MyClassifier(FlexiImageClassifier):
        pass
    seg = FlexiEncoderDecoder.__new__(FlexiEncoderDecoder)
    assert has_predictor(seg) and predictor_for(seg) is predictor_for(EncoderDecoder.__new__(EncoderDecoder))
    assert has_predictor(MyClassifier.__new__(MyClassifier))
    assert not has_predictor(torch.nn.Linear(1, 1))


def test_onnx_backbone_honours_an_explicit_patch_size(tmp_path):
    """The ONNX backbone override accepted forward(x, patch_size=p) and ignored p."""
    from flexitransfer.deploy import bake_model, export_onnx, install_onnx
    from flexitransfer.engine import set_patch_size
    cfg = Config.fromfile(osp.join(ROOT, 'configs/cls/tiny_cls_flexi.py'))
    init_default_scope('mmengine')
    model = randomize(MODELS.build(cfg.model)).eval()
    set_patch_size(model, 12)
    baked = bake_model(model, 12, (60, 60)).eval()
    path = str(tmp_path / 'bb.onnx')
    export_onnx(baked, (60, 60), path, target='backbone', exporter='torchscript', meta=dict(patch_size=[12, 12]))
    x = torch.randn(1, 3, 60, 60)
    with torch.no_grad():
        want = baked.backbone(x)[0]
        install_onnx(baked, path)
        torch.testing.assert_close(baked.backbone(x, patch_size=12)[0], want, atol=1e-4, rtol=0)
        with pytest.raises(ValueError, match='baked at patch .*patch_size=6'):
            baked.backbone(x, patch_size=6)


def test_resize_deploy_follows_the_channel_count(tmp_path):
    """resize_deploy built 3-channel check inputs whatever the model's in_channels (1-channel models broke)."""
    from flexitransfer.apis import init_model
    cfg = Config.fromfile(osp.join(ROOT, 'configs/cls/tiny_cls_flexi.py'))
    cfg.model.backbone.in_channels = 1
    cfg.model.data_preprocessor = dict(type='ImgDataPreprocessor', mean=[127.5], std=[127.5])
    config = str(tmp_path / 'gray.py')
    cfg.dump(config)
    ckpt = str(tmp_path / 'gray.pth')
    torch.save({'state_dict': randomize(init_model(config)).state_dict()}, ckpt)
    log = run_tool('tools/resize_deploy.py', config, ckpt, '--patch', '12', '--img-size', '60', '60', '--out',
                   str(tmp_path), '--runs', '1')
    assert 'max abs diff deployed vs flexible at patch 12' in log


def test_onnx_export_follows_the_channel_count(tmp_path):
    """export_onnx traced a 3-channel example unless told otherwise: the serving ladder's ONNX Runtime path
    (which does not say) could not export a grayscale model."""
    from flexitransfer.deploy import bake_model, export_onnx, install_onnx
    cfg = Config.fromfile(osp.join(ROOT, 'configs/cls/tiny_cls_flexi.py'))
    init_default_scope('mmengine')
    cfg.model.backbone.in_channels = 1
    baked = bake_model(randomize(MODELS.build(cfg.model)).eval(), 12, (60, 60)).eval()
    path = str(tmp_path / 'gray.onnx')
    assert export_onnx(baked, (60, 60), path, exporter='torchscript')['in_channels'] == 1
    x = torch.randn(2, 1, 60, 60)
    with torch.no_grad():
        want = baked(x, mode='tensor')
        install_onnx(baked, path)
        torch.testing.assert_close(baked(x, mode='tensor'), want, atol=1e-4, rtol=0)


def test_resize_caches_are_bounded(monkeypatch):
    """The resize-matrix caches grew without bound (lru_cache(maxsize=None), a dict keyed by str(device))."""
    import flexitransfer.ops.resize as rz
    for fn in (rz._bilinear_matrix64, rz._area_matrix64, rz._pi_matrix64):
        assert fn.cache_info().maxsize == rz.MAX_CACHED_MATRICES
    monkeypatch.setattr(rz, 'MAX_CACHED_MATRICES', 5)
    rz.clear_caches()
    pos = torch.randn(1, 9, 4)
    for n in range(2, 14):  # twelve grids: an image-size sweep
        rz.resize_pos_embed(pos, (3, 3), (n, n + 1))
    assert len(rz._DEVICE_CACHE) == 5
    rz.clear_caches()
