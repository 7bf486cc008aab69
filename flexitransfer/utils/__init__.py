from .timing import interleaved_median_ms, interleaved_ms

__all__ = ['interleaved_median_ms', 'interleaved_ms']
