"""Convert released weights to a FlexiViT checkpoint (``backbone.*`` keys, mmengine layout).

    python tools/convert_weights.py SRC DST --from big_vision|timm|open_clip [--base-patch 32] [--num-heads N]
    python tools/convert_weights.py SRC owlvit.pth --from owlvit [--hf-config config.json]

SRC: a weight file (.safetensors, .pth / .pt / .bin, big_vision .npz; the format is judged from
the content), a hub directory (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``,
sharded ``*.index.json``, open_clip's ``open_clip_model.safetensors``), or a shard index.
A hub directory's config supplies what the tensors do not record (timm: heads, activation;
open_clip: heads, QuickGELU or GELU; owlvit: heads, activation, eps).

``--base-patch``: PI-resize the kernel into this stored size (e.g. a timm ViT-B/16 into
FlexiViT's 32x32 store). Without it the kernel keeps its own size. A store that does not give the
kernel back at its own patch (16 -> 32 -> 16 is not the identity) warns with the output error it
causes there.

Prints one line: the file written, the source and its format, what was resized, the FlexiViT
arguments to build it with.
"""
import _bootstrap  # noqa: F401

import argparse
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src', help='weight file, hub directory or *.index.json')
    p.add_argument('dst')
    p.add_argument('--from', dest='fmt', required=True, choices=['big_vision', 'timm', 'open_clip', 'owlvit'])
    p.add_argument('--base-patch', type=int, default=None)
    p.add_argument('--num-heads', type=int, help='timm/open_clip: attention heads (default: the hub config, '
                                                  'else embed_dims // 64)')
    p.add_argument('--gelu', action='store_true', help='open_clip: tower uses GELU (LAION), not QuickGELU (OpenAI); '
                                                       'default: open_clip_config.json, else QuickGELU')
    p.add_argument('--hf-config', help='owlvit: the transformers config.json (heads, activation) for a bare '
                                       'weight file; a save_pretrained directory brings its own')
    a = p.parse_args()
    from flexitransfer.converters import CheckpointError, convert_file
    try:
        if a.fmt == 'owlvit':  # a whole detector (transformers OwlViTForObjectDetection), not just a backbone
            from flexitransfer.converters.loading import convert_owlvit_file
            return print(convert_owlvit_file(a.src, a.dst, a.hf_config))
        line = convert_file(a.src, a.dst, a.fmt, a.base_patch, a.num_heads, quick_gelu=False if a.gelu else None)
    except (CheckpointError, FileNotFoundError, KeyError, ValueError) as e:  # one line, no traceback
        sys.exit(f'convert_weights.py: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}')
    print(line)


if __name__ == '__main__':
    main()
