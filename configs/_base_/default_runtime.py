# The runtime every config shares; default_runtime_<task>.py add the task's scope, hooks and visualizer.
default_scope = 'mmengine'
custom_imports = dict(imports=['flexitransfer'], allow_failed_imports=False)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict())  # backend from the device (nccl on CUDA, gloo on CPU): engine/dist.py
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)  # with the patch draw a function of (seed, iteration): same command, same numbers
