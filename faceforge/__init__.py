"""faceforge: a PyTorch Lightning + Hydra framework for deepfake detection and single-image 3D face reconstruction."""

__version__ = "0.1.0"
