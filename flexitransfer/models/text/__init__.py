from .open_clip_text import OpenCLIPTextTower, load_open_clip_text_state

__all__ = ['OpenCLIPTextTower', 'load_open_clip_text_state']
