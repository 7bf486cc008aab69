"""Measurements: training throughput and memory per patch size (``train``)."""
