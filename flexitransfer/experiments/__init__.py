"""The reproductions' shared parts: one copy of each model, data loader and trainer.

``digits``: the digits FlexiViT, its data and trainer (``tools/reproduce_digits.py``,
``tools/reproduce_transfer.py``, ``tools/reproduce_adaptive.py``); ``adaptive``: the
adaptive-compute studies (``tools/reproduce_adaptive.py``).
"""
