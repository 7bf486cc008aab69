"""The reproductions' shared parts: one copy of each model, data loader and trainer.

``digits``: the digits FlexiViT, its data and trainer, and the headline figure
(``tools/reproduce_digits.py``; the parts also serve ``transfer`` and the adaptive studies); ``transfer``:
the resource-efficient transfer study (``tools/reproduce_transfer.py``); ``adaptive_digits`` and
``adaptive_seg``: the adaptive-compute studies, with ``adaptive_common`` (tables, figures) between them
(``tools/reproduce_adaptive.py``); ``openvocab``: the open-vocabulary study
(``tools/reproduce_openvocab.py``); ``digits_dip``: why the earlier digits FlexiViT dipped at p = 12 / 16
(``tools/study_dip.py``); ``glyphs``: the transfer study's formula-driven pre-training images; ``seeds``:
runs over worker processes and means with intervals.
"""
