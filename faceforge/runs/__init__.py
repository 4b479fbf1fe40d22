"""What ``train.py`` and ``evaluate.py`` run: compose objects from a Hydra config, run them, return metrics."""
