"""Reproducible tables: every published comparison is an experiment spec in ``experiments/*.yaml`` and one command.

``python experiment.py experiments/meso_ffpp_c23.yaml [--profile embedded|fixture] [--evaluate-only] [--out DIR]`` reads
the spec (:mod:`faceforge.experiments.spec`: YAML data validated against a small schema, never code), trains every
model with ``train.py`` and evaluates every checkpoint and imported weight file on every test set with
``evaluate.py`` (:mod:`faceforge.experiments.runner`: subprocesses, resumable, failures kept), and writes the tables
as markdown, CSV and JSON beside ``provenance.json`` (:mod:`faceforge.experiments.tables`).
"""
