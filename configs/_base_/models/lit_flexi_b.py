# LiT: locked FlexiViT-B image tower (+ trainable linear head), open_clip ViT-B text tower (512 wide,
# 12 layers), 512-d joint space, softmax contrastive loss. Text weights: a CLIP state dict saved
# locally, e.g. torch.save(open_clip.create_model('ViT-B-32', pretrained='openai').state_dict(), path).
_base_ = ['./flexivit_b.py']
model = dict(
    _delete_=True,  # LiT names its image tower image_backbone
    type='LiT', embed_dim=512, pool='tok', image_proj='linear', lock_image=True, loss='clip',
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True),
    image_backbone={{_base_.model.backbone}},
    text_tower=dict(type='OpenCLIPTextTower', width=512, heads=8, layers=12, context_length=77, output_dim=512,
                    quick_gelu=True, checkpoint='checkpoints/open_clip_vit_b32_openai.pth'))
