"""Figures made from run folders (``<run>/record.json`` and ``<run>/checkpoints/last.ckpt``)."""
