# Runtime shared by the panoptic configs (mmdet scope; flexitransfer and its mmdet models registered).
_base_ = ['./default_runtime.py']
default_scope = 'mmdet'
custom_imports = dict(imports=['flexitransfer', 'flexitransfer.models.panoptic'], allow_failed_imports=False)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
