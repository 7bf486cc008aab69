"""Bad input fails early and says what to do: image files, label maps, annotation files.

Importing flexitransfer replaces two loaders in the OpenMMLab registries by strict
subclasses that only add checks (same arguments, same outputs on good files):

* ``LoadImageFromFile`` (mmcv, every scope): a missing, empty, truncated (JPEG without its
  end marker, PNG without IEND) or undecodable file raises ``BadInputError`` naming the file
  and the fix. OpenCV decodes a truncated JPEG *silently* (grey bottom rows), so the end
  marker is checked on the bytes already read.
* ``LoadAnnotations`` (mmseg): the same for label maps, and a label map whose size differs
  from its image's raises instead of training on misaligned pixels.
"""
from __future__ import annotations

import os.path as osp
from typing import Optional

import mmcv
from mmcv.transforms import LoadImageFromFile
from mmengine import fileio
from mmengine.registry import TRANSFORMS
from mmseg.datasets.transforms import LoadAnnotations as SegLoadAnnotations
from mmseg.registry import TRANSFORMS as SEG_TRANSFORMS


class BadInputError(ValueError):
    """An input file or annotation that cannot be used; the message names it and the fix."""


_JPEG, _PNG = b'\xff\xd8', b'\x89PNG'
REPLACE = 'replace the file with a good copy, or remove it from the dataset / annotation list'


def image_bytes_problem(head: bytes, tail: bytes) -> Optional[str]:
    """What is wrong with an encoded image, judged from its first and last bytes (None: looks whole)."""
    if not head:
        return 'the file is empty'
    tail = tail.rstrip(b'\x00\r\n ')
    if head.startswith(_JPEG) and not tail.endswith(b'\xff\xd9'):
        return 'truncated JPEG (no end-of-image marker)'
    if head.startswith(_PNG) and tail[-8:-4] != b'IEND':
        return 'truncated PNG (no IEND chunk)'
    return None


def read_image_bytes(path: str, what: str = 'image', backend_args=None) -> bytes:
    """The bytes of an encoded image, checked for emptiness and truncation."""
    try:
        data = fileio.get(path, backend_args=backend_args)
    except FileNotFoundError:
        raise BadInputError(f'{what} file not found: {path!r}; restore it, or fix data_root / data_prefix / the '
                            f'annotation file that lists it') from None
    problem = image_bytes_problem(data[:8], data[-16:])
    if problem:
        raise BadInputError(f'{what} file {path!r}: {problem}; {REPLACE}')
    return data


def decode_image(data: bytes, path: str, what: str = 'image', **kwargs):
    try:
        img = mmcv.imfrombytes(data, **kwargs)
    except Exception as e:
        img, err = None, f' ({type(e).__name__}: {e})'
    else:
        err = ''
    if img is None:
        raise BadInputError(f'{what} file {path!r} is not a decodable image{err}; {REPLACE}')
    return img


@TRANSFORMS.register_module(name='LoadImageFromFile', force=True)
class StrictLoadImageFromFile(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` with a clear error for missing, empty, truncated or non-image files."""

    def transform(self, results: dict) -> Optional[dict]:
        path = results['img_path']
        if self.file_client_args is not None:  # the legacy path: leave it to mmcv
            return super().transform(results)
        try:
            img = decode_image(read_image_bytes(path, backend_args=self.backend_args), path,
                               flag=self.color_type, backend=self.imdecode_backend)
        except BadInputError:
            if self.ignore_empty:
                return None
            raise
        if self.to_float32:
            img = img.astype('float32')
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results


@SEG_TRANSFORMS.register_module(name='LoadAnnotations', force=True)
class StrictSegLoadAnnotations(SegLoadAnnotations):
    """mmseg's ``LoadAnnotations``: a missing or truncated label PNG, or one whose size differs from its image,
    fails."""

    def _load_seg_map(self, results: dict) -> None:
        path = results['seg_map_path']
        if osp.isfile(path):  # local files: look at the first and last bytes only
            with open(path, 'rb') as f:
                head = f.read(8)
                f.seek(max(0, osp.getsize(path) - 16))
                problem = image_bytes_problem(head, f.read())
            if problem:
                raise BadInputError(f'label map {path!r}: {problem}; {REPLACE}')
        elif '://' not in path:
            raise BadInputError(f'label map not found: {path!r} (for image {results.get("img_path")!r}); '
                                f'restore it, or fix seg_map_path / seg_map_suffix in the dataset config')
        super()._load_seg_map(results)
        img_shape = results.get('ori_shape')
        seg_shape = results['gt_seg_map'].shape[:2]
        if img_shape is not None and tuple(seg_shape) != tuple(img_shape[:2]):
            raise BadInputError(
                f'label map {path!r} is {seg_shape[0]}x{seg_shape[1]} but its image {results.get("img_path")!r} '
                f'is {img_shape[0]}x{img_shape[1]}: every label map must have its image\'s size (re-export the '
                f'label at the image size, or pair it with the right image)')
