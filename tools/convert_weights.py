"""Convert released weights to a FlexiViT checkpoint (``backbone.*`` keys, mmengine layout).

    python tools/convert_weights.py SRC DST --from big_vision|timm|open_clip [--base-patch 32]
    python tools/convert_weights.py pytorch_model.bin owlvit.pth --from owlvit [--hf-config config.json]

``--base-patch``: PI-resize the kernel into this stored size (e.g. a timm ViT-B/16 into
FlexiViT's 32x32 store). Without it the kernel keeps its own size.
"""
import argparse

import _bootstrap  # noqa: F401
from flexitransfer.converters import (convert_big_vision, convert_open_clip, convert_timm,
                                      load_checkpoint_file, save_converted)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src')
    p.add_argument('dst')
    p.add_argument('--from', dest='fmt', required=True, choices=['big_vision', 'timm', 'open_clip', 'owlvit'])
    p.add_argument('--base-patch', type=int, default=None)
    p.add_argument('--num-heads', type=int, help='timm/open_clip: attention heads (default embed_dims // 64)')
    p.add_argument('--gelu', action='store_true', help='open_clip: tower uses GELU (LAION), not QuickGELU (OpenAI)')
    p.add_argument('--hf-config', help='owlvit: the transformers config.json (heads, activation); optional')
    a = p.parse_args()
    if a.fmt == 'owlvit':  # a whole detector (transformers OwlViTForObjectDetection), not just a backbone
        from flexitransfer.converters.owlvit import convert_owlvit_file
        return print(convert_owlvit_file(a.src, a.dst, a.hf_config))
    if a.fmt == 'big_vision':
        out = convert_big_vision(a.src, a.base_patch)
    else:
        raw = load_checkpoint_file(a.src)
        raw = raw.get('state_dict', raw.get('model', raw))
        out = convert_timm(raw, a.base_patch, a.num_heads) if a.fmt == 'timm' else \
            convert_open_clip(raw, a.base_patch, quick_gelu=not a.gelu, num_heads=a.num_heads)
    save_converted(out, a.dst, a.fmt)
    kw = out[1]
    print(f'wrote {a.dst}: FlexiViT({kw}) with {len(out[0])} tensors; extras: {sorted(out[2])}')


if __name__ == '__main__':
    main()
