# Segmenter with the linear decoder (mmseg's FCNHead without convs), as in the paper's ablation.
_base_ = ['./ade20k_flexi_b.py']
model = dict(decode_head=dict(_delete_=True, type='FCNHead', in_channels=768, channels=768, num_convs=0,
                              dropout_ratio=0.0, concat_input=False, num_classes=150, kernel_size=1,
                              loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
