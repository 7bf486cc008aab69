# Runtime shared by the segmentation configs (mmseg scope, flexitransfer registered).
_base_ = ['./default_runtime.py']
default_scope = 'mmseg'
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
tta_model = dict(type='SegTTAModel')
