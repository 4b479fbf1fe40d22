"""Hyperparameter sweeps: Optuna studies over ``train.py`` runs (``python sweep.py hparams_search=...``)."""
