# OWL-ViT style detector: FlexiViT-B image tower (all tokens, class token merged), open_clip ViT-B/32
# text tower (512 wide, 12 layers, QuickGELU as OpenAI's), per-token box and class heads.
# Weights: the converted FlexiViT-B (tools/convert_weights.py ... --from big_vision) and a CLIP
# state dict saved locally (see configs/_base_/models/lit_flexi_b.py), or a LiT checkpoint of both
# towers via load_from, or a released OWL-ViT via tools/convert_weights.py --from owlvit.
_base_ = ['./flexivit_b.py']
model = dict(
    type='OWLViTDetector',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True,
                           pad_size_divisor=240),  # 240 = lcm of the paper's patch sizes 8..48
    backbone=dict(drop_path_rate=0.1),
    text_tower=dict(type='OpenCLIPTextTower', width=512, heads=8, layers=12, context_length=77, output_dim=512,
                    quick_gelu=True, checkpoint='checkpoints/open_clip_vit_b32_openai.pth'),
    box_act='gelu',
    loss=dict(type='OWLSetLoss', loss_cls_weight=1.0, loss_bbox_weight=5.0, loss_iou_weight=2.0),
    test_cfg=dict(max_per_img=300, score_thr=0.0))
