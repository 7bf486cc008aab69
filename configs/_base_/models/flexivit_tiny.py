# The tiny FlexiViT of the CPU configs (4 blocks, 96 wide, 3 heads; the paper's 32x32 kernel store and
# 7x7 position grid), trained from scratch on the toy data: every tiny config inherits and refines it.
model = dict(backbone=dict(type='FlexiViT', arch=dict(embed_dims=96, num_layers=4, num_heads=3), patch_size=12,
                           base_patch_size=32, base_pos_grid=7))
