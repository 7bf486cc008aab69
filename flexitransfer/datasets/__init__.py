from .classification import CIFARDataset, ImageFolderDataset, InceptionCrop, PackClsInputs
from .toy import (SHAPE_COLORS, SHAPES, TOY_SEG_CLASSES, TOY_SEG_PALETTE, make_ade20k_like, make_cifar_like,
                  make_imagefolder_like, render_scene, render_shape_image)

__all__ = ['CIFARDataset', 'ImageFolderDataset', 'InceptionCrop', 'PackClsInputs', 'SHAPE_COLORS', 'SHAPES',
           'TOY_SEG_CLASSES', 'TOY_SEG_PALETTE', 'make_ade20k_like', 'make_cifar_like', 'make_imagefolder_like',
           'render_scene', 'render_shape_image']
