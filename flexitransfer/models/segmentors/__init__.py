"""mmseg segmentors for FlexiViT (imported by configs through ``custom_imports``, as they need mmseg)."""
from .encoder_decoder import FlexiEncoderDecoder  # noqa: F401
