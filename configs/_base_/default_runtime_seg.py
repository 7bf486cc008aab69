# Runtime shared by the segmentation configs (mmseg scope, flexitransfer registered).
default_scope = 'mmseg'
custom_imports = dict(imports=['flexitransfer'], allow_failed_imports=False)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict())  # backend from the device (nccl on CUDA, gloo on CPU): engine/dist.py
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
tta_model = dict(type='SegTTAModel')
