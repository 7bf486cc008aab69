from .captions import CaptionDataset
from .checks import BadInputError
from .classification import CIFARDataset, ImageFolderDataset, InceptionCrop, PackClsInputs, PackImageInputs
from .detection import LVISFederatedDataset, SampleTextQueries  # noqa: F401
from .toy import (
                  SHAPE_COLORS,
                  SHAPES,
                  TOY_DATASETS,
                  TOY_SEG_CLASSES,
                  TOY_SEG_PALETTE,
                  make_ade20k_like,
                  make_cifar_like,
                  make_coco_captions_like,
                  make_imagefolder_like,
                  register_toy,
                  render_pair,
                  render_scene,
                  render_shape_image,
)

__all__ = ['BadInputError', 'CaptionDataset', 'CIFARDataset', 'ImageFolderDataset', 'InceptionCrop', 'PackClsInputs',
           'PackImageInputs', 'SHAPE_COLORS', 'SHAPES', 'TOY_DATASETS', 'TOY_SEG_CLASSES', 'TOY_SEG_PALETTE',
           'make_ade20k_like', 'make_cifar_like', 'make_coco_captions_like', 'make_imagefolder_like', 'register_toy',
           'render_pair', 'render_scene', 'render_shape_image']
