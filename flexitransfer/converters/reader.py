"""One reader for every checkpoint layout users download: ``read_checkpoint(path)``.

- a file, its format judged from its first bytes (the extension only breaks ties):
  PyTorch zip or legacy pickle (``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt``; ``weights_only=True``;
  an mmengine ``{'state_dict', 'meta'}`` or ``{'model': ...}`` wrapper is taken apart),
  ``.safetensors`` (8-byte header length + JSON header), big_vision ``.npz`` (a zip of ``.npy``);
- a hub directory (``save_pretrained`` / ``huggingface-cli download``): ``config.json`` plus one of
  :data:`HUB_WEIGHT_FILES`, a sharded ``*.index.json`` followed through its ``weight_map``;
- a sharded ``*.index.json`` given directly.

Anything else stops with a :class:`CheckpointError` of one or two lines naming the file, what
it was recognised as, and the fix (a truncated download, a Git LFS pointer, an HTML page,
a missing shard, a directory without weights, ...).

The converters (``timm.py``, ``open_clip.py``, ``big_vision.py``, ``owlvit.py``) take the
``state_dict`` (and ``config``) of the :class:`Checkpoint` this returns.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import struct
import zipfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

#: Weight file names of a hub directory, in the order they are looked for. open_clip's come
#: first: an open_clip hub repo also carries a transformers-layout ``model.safetensors`` /
#: ``pytorch_model.bin`` (the HF ``CLIPModel``), which no converter here reads.
HUB_WEIGHT_FILES = ('open_clip_model.safetensors', 'open_clip_pytorch_model.bin',
                    'model.safetensors', 'model.safetensors.index.json',
                    'pytorch_model.bin', 'pytorch_model.bin.index.json')
WEIGHT_EXTS = ('.safetensors', '.pth', '.pt', '.bin', '.ckpt', '.npz')
_FIX_DOWNLOAD = 'download it again (compare its size with the one listed on the hub / release page)'
_WHAT_TO_GIVE = ('give a weight file (.safetensors, .pth / .pt / .bin, big_vision .npz) or a hub '
                 'directory holding config.json and model.safetensors')


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: the message names the file, what it is and the fix."""


@dataclass
class Checkpoint:
    """What :func:`read_checkpoint` found.

    ``state_dict``: every tensor, by name (the mmengine ``state_dict`` wrapper removed);
    ``kind``: 'torch' | 'safetensors' | 'npz' (the weight files' format);
    ``files``: the weight files read (several for a sharded checkpoint);
    ``config``: ``config.json`` next to the weights (hub directory), else None;
    ``open_clip_config``: ``open_clip_config.json`` likewise;
    ``meta``: the ``meta`` of an mmengine / flexitransfer checkpoint, else None.
    """
    path: str
    state_dict: Dict[str, torch.Tensor]
    kind: str
    files: List[str] = field(default_factory=list)
    config: Optional[dict] = None
    open_clip_config: Optional[dict] = None
    meta: Optional[dict] = None


def read_checkpoint(path) -> Checkpoint:
    """Read a checkpoint file, a sharded index or a hub directory (see the module docstring).

    Args:
        path (str | os.PathLike): a weight file, a sharded ``*.index.json`` or a hub directory.

    Returns:
        Checkpoint: the tensors, the files read, their format, and the configs / meta beside them.

    Raises:
        CheckpointError: anything that is not a readable checkpoint (the message names the fix).
    """
    path = os.fspath(path)
    if osp.isdir(path):
        return _read_dir(path)
    if not osp.exists(path):
        raise FileNotFoundError(f'checkpoint not found: {path!r}; check the path ({_WHAT_TO_GIVE})')
    if path.endswith('.index.json'):
        sd, files, kind = _read_sharded(path)
        return Checkpoint(path, sd, kind, files, _json_next_to(path, 'config.json'),
                          _json_next_to(path, 'open_clip_config.json'))
    sd, kind, meta = _read_file(path)
    if osp.basename(path) in HUB_WEIGHT_FILES:  # the weight file of a hub directory: its config too
        return Checkpoint(path, sd, kind, [path], _json_next_to(path, 'config.json'),
                          _json_next_to(path, 'open_clip_config.json'), meta)
    return Checkpoint(path, sd, kind, [path], meta=meta)


def read_state_dict(path) -> Dict[str, torch.Tensor]:
    """Just the tensors of :func:`read_checkpoint`."""
    return read_checkpoint(path).state_dict


# --------------------------------------------------------------------------- files
def sniff(path: str) -> str:
    """'torch' | 'safetensors' | 'npz' from the file's content, or a CheckpointError saying what it is."""
    size = osp.getsize(path)
    if size == 0:
        raise CheckpointError(f'checkpoint {path!r}: the file is empty; {_FIX_DOWNLOAD}')
    with open(path, 'rb') as f:
        head = f.read(4096)
    if head[:2] == b'PK':  # zip: a PyTorch checkpoint (…/data.pkl) or an .npz (*.npy members)
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            if _as_text(head) is not None:  # a text file that happens to start with 'PK'
                raise CheckpointError(_text_message(path, _as_text(head), size)) from None
            what = 'an .npz archive' if path.endswith('.npz') else 'a PyTorch zip checkpoint'
            raise CheckpointError(f'checkpoint {path!r} ({size} bytes) starts like {what} but has no zip '
                                  f'directory at its end: the file is truncated; {_FIX_DOWNLOAD}') from None
        return 'npz' if names and all(n.endswith('.npy') for n in names) else 'torch'
    if len(head) > 8 and head[8:9] == b'{' and struct.unpack('<Q', head[:8])[0] < 1 << 32:
        return 'safetensors'  # little-endian header length, then the JSON header
    if head[:1] == b'\x80':  # a pickle: torch's legacy (pre-1.6) format
        return 'torch'
    if head[:6] == b'\x93NUMPY':
        raise CheckpointError(f'checkpoint {path!r} is a single numpy array (.npy), not a checkpoint; '
                              f'{_WHAT_TO_GIVE}')
    text = _as_text(head)
    if text is not None:
        raise CheckpointError(_text_message(path, text, size))
    raise CheckpointError(f'checkpoint {path!r} is not a format this reader knows (first bytes {head[:8]!r}): '
                          f'neither safetensors, a PyTorch checkpoint nor an .npz; {_WHAT_TO_GIVE}')


def _as_text(head: bytes) -> Optional[str]:
    if b'\x00' in head:
        return None
    try:
        return head.decode('utf-8')
    except UnicodeDecodeError as e:
        return head[:e.start].decode('utf-8') if e.start >= len(head) - 3 else None  # cut in a character


def _text_message(path: str, text: str, size: int) -> str:
    start = text.lstrip()
    low = start[:200].lower()
    if start.startswith('version https://git-lfs'):
        return (f'checkpoint {path!r} is a Git LFS pointer ({size}-byte text file), not the weights: the '
                f'repository was cloned without LFS; run `git lfs pull` in it, or download the file with '
                f'`huggingface-cli download` / the browser')
    if low.startswith(('<!doctype html', '<html')) or '<html' in low:
        return (f'checkpoint {path!r} is an HTML page, not the weights (the download saved a login, error or '
                f'redirect page); download the file itself (on the hub: the "resolve/main/..." link, not '
                f'"blob/main/...")')
    if start.startswith('{') or path.endswith('.json'):
        return (f'checkpoint {path!r} is a JSON file (a config?), not the weights; give the directory that '
                f'holds it together with the weights, or the weight file itself')
    first = start.splitlines()[0][:60] if start else ''
    return f'checkpoint {path!r} is a text file (starts {first!r}), not a checkpoint; {_WHAT_TO_GIVE}'


def _read_file(path: str) -> Tuple[Dict[str, torch.Tensor], str, Optional[dict]]:
    kind = sniff(path)
    meta = None
    if kind == 'safetensors':
        sd = _read_safetensors(path)
    elif kind == 'npz':
        sd = _read_npz(path)
    else:
        sd, meta = _read_torch(path)
    if not sd:
        raise CheckpointError(f'{kind} file {path!r} holds no tensors; {_WHAT_TO_GIVE}')
    return sd, kind, meta


def _read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    size = osp.getsize(path)
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        if 8 + n > size:
            raise CheckpointError(f'safetensors file {path!r} is truncated: its header alone should be {n} bytes '
                                  f'but the file has {size}; {_FIX_DOWNLOAD}')
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise CheckpointError(f'safetensors file {path!r} has a damaged header ({e}); {_FIX_DOWNLOAD}') from None
    ends = [v['data_offsets'][1] for k, v in header.items() if k != '__metadata__' and isinstance(v, dict)]
    need = 8 + n + max(ends, default=0)
    if need > size:
        raise CheckpointError(f'safetensors file {path!r} is truncated: its header lists {len(ends)} tensors '
                              f'in {need} bytes but the file has {size} ({100 * size / need:.0f}%); {_FIX_DOWNLOAD}')
    from safetensors.torch import load_file
    try:
        return load_file(path, device='cpu')
    except Exception as e:
        raise CheckpointError(f'safetensors file {path!r} cannot be read ({type(e).__name__}: {str(e)[:200]}); '
                              f'{_FIX_DOWNLOAD}') from None


def _read_npz(path: str) -> Dict[str, torch.Tensor]:
    import numpy as np
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: torch.from_numpy(np.ascontiguousarray(f[k])) for k in f.files}
    except Exception as e:
        raise CheckpointError(f'.npz checkpoint {path!r} cannot be read ({type(e).__name__}: {str(e)[:200]}); '
                              f'the file is damaged or holds no plain arrays: {_FIX_DOWNLOAD}') from None


def _read_torch(path: str) -> Tuple[Dict[str, torch.Tensor], Optional[dict]]:
    import pickle
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        if 'weights_only' in str(e) or 'Weights only' in str(e):
            raise CheckpointError(f'PyTorch checkpoint {path!r} holds Python objects that safe loading '
                                  f'(weights_only) refuses ({str(e).splitlines()[0][:160]}); save '
                                  f'`model.state_dict()` instead of the model or training state') from None
        raise CheckpointError(f'PyTorch checkpoint {path!r} cannot be read ({str(e)[:200]}): the file is '
                              f'truncated or damaged; {_FIX_DOWNLOAD}') from None
    except Exception as e:
        raise CheckpointError(f'PyTorch checkpoint {path!r} cannot be read ({type(e).__name__}: {str(e)[:200]}): '
                              f'the file is truncated or damaged; {_FIX_DOWNLOAD}') from None
    return _unwrap(obj, path)


def _unwrap(obj, path: str) -> Tuple[Dict[str, torch.Tensor], Optional[dict]]:
    """The tensors of a loaded torch object: a module, a state dict, or an mmengine / training wrapper."""
    meta = None
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        meta = obj.get('meta') if isinstance(obj.get('meta'), dict) else None
        for key in ('state_dict', 'model'):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
    if not sd:
        what = f'a dict with keys {list(obj)[:8]}' if isinstance(obj, dict) else f'a {type(obj).__name__}'
        raise CheckpointError(f'PyTorch checkpoint {path!r} holds no tensors ({what}); {_WHAT_TO_GIVE}')
    return sd, meta


# ---------------------------------------------------------------- shards, directories
def read_json(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise CheckpointError(f'{what} {path!r} cannot be opened ({e.strerror}); check the path') from None
    except ValueError as e:
        raise CheckpointError(f'{what} {path!r} is not valid JSON ({e}); {_FIX_DOWNLOAD}') from None


def _json_next_to(path: str, name: str) -> Optional[dict]:
    p = osp.join(osp.dirname(osp.abspath(path)), name)
    return read_json(p, name) if osp.isfile(p) else None


def _listing(d: str, limit: int = 12) -> str:
    names = sorted(os.listdir(d))
    return (', '.join(names[:limit]) + (f', ... ({len(names)} entries)' if len(names) > limit else '')) or 'nothing'


def _read_sharded(index: str) -> Tuple[Dict[str, torch.Tensor], List[str], str]:
    d = osp.dirname(osp.abspath(index))
    wm = read_json(index, 'shard index').get('weight_map')
    if not isinstance(wm, dict) or not wm:
        raise CheckpointError(f'shard index {index!r} has no "weight_map" (tensor name -> shard file); '
                              f'{_FIX_DOWNLOAD}')
    shards = sorted(set(wm.values()))
    missing = [s for s in shards if not osp.isfile(osp.join(d, s))]
    if missing:
        raise CheckpointError(
            f'shard index {index!r} names shard files missing from {d!r} ({len(missing)} of {len(shards)}): '
            f'{", ".join(missing[:4])}{", ..." if len(missing) > 4 else ""} (it holds: {_listing(d)}); download '
            f'every file the index lists, e.g. `huggingface-cli download REPO --local-dir {d}`')
    sd: Dict[str, torch.Tensor] = {}
    kinds = set()
    for s in shards:
        part, kind, _ = _read_file(osp.join(d, s))
        kinds.add(kind)
        lacking = [k for k, f in wm.items() if f == s and k not in part]
        if lacking:
            raise CheckpointError(f'shard {osp.join(d, s)!r} lacks {len(lacking)} tensors that {osp.basename(index)} '
                                  f'places in it (e.g. {lacking[0]!r}): shard and index come from different '
                                  f'versions; download both again')
        sd.update(part)
    return sd, [osp.join(d, s) for s in shards], '+'.join(sorted(kinds))


def hub_weight_file(d: str) -> str:
    """The weight file (or shard index) a hub directory's checkpoint is read from."""
    names = set(os.listdir(d))
    for n in HUB_WEIGHT_FILES:
        if n in names:
            return osp.join(d, n)
    found = sorted(n for n in names if n.endswith(WEIGHT_EXTS) and osp.isfile(osp.join(d, n)))
    if len(found) == 1:  # a single weight file of another name (e.g. a downloaded release)
        return osp.join(d, found[0])
    if found:
        raise CheckpointError(f'directory {d!r} holds several weight files ({", ".join(found[:6])}) and none of '
                              f'the standard names ({", ".join(HUB_WEIGHT_FILES)}); give the file to use')
    raise CheckpointError(f'directory {d!r} holds no weights (it has: {_listing(d)}); expected one of '
                          f'{", ".join(HUB_WEIGHT_FILES)}: download the weights into it (`huggingface-cli '
                          f'download REPO --local-dir DIR`), or give the weight file itself')


def _read_dir(d: str) -> Checkpoint:
    w = hub_weight_file(d)
    config, oc = _json_next_to(w, 'config.json'), _json_next_to(w, 'open_clip_config.json')
    if w.endswith('.index.json'):
        sd, files, kind = _read_sharded(w)
        return Checkpoint(d, sd, kind, files, config, oc)
    sd, kind, meta = _read_file(w)
    return Checkpoint(d, sd, kind, [w], config, oc, meta)
