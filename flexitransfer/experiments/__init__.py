"""The reproductions' shared parts: one copy of each model, data loader and trainer.

``digits``: the digits FlexiViT (``tools/reproduce_digits.py``, ``tools/reproduce_transfer.py``,
``tools/reproduce_adaptive.py``).
"""
