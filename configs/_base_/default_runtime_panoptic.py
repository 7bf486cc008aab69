# Runtime shared by the panoptic configs (mmdet scope; flexitransfer and its mmdet models registered).
default_scope = 'mmdet'
custom_imports = dict(imports=['flexitransfer', 'flexitransfer.models.panoptic'], allow_failed_imports=False)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict())  # backend from the device (nccl on CUDA, gloo on CPU): engine/dist.py
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
