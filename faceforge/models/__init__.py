"""Plain ``nn.Module`` models, one file per family (they know nothing of Lightning).

* MesoNet (Afchar et al. 2018): :class:`Meso4`, :class:`MesoInception4`, and :func:`from_keras_h5` to load the
  authors' released Keras weights (``meso.py``).
* ResNeXt-50 + LSTM video detector: :class:`ResNeXtLSTM` (``resnext_lstm.py``).
* VRN (Jackson et al. 2017): :class:`VRN`, :class:`VRNGuided`, :class:`VRNMultitask` (``vrn.py``) built from the
  hourglasses of ``hourglass.py``.
* 3DFaceGAN-style baseline (Moschoglou et al. 2020, BEGAN discriminator): :class:`FaceGAN` (``facegan.py``).
"""
from __future__ import annotations

import importlib
from typing import Any

#: public name -> module that defines it; imported on first use, so that ``import faceforge.models.meso`` does not
#: pay for torchvision (resnext_lstm) or the VRN code.
_EXPORTS = {
    "KerasWeightsError": "meso", "Meso4": "meso", "MesoInception4": "meso", "from_keras_h5": "meso",
    "mesonet_preprocess": "meso", "ModelInputError": "meso", "PretrainedWeightsError": "resnext_lstm",
    "ResNeXtLSTM": "resnext_lstm",
    "FaceGAN": "facegan",
    "VRN": "vrn", "VRNGuided": "vrn", "VRNMultitask": "vrn", "gaussian_heatmaps": "vrn",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'faceforge.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"faceforge.models.{_EXPORTS[name]}"), name)
