"""Plain ``nn.Module`` models, one file per family (they know nothing of Lightning).

* MesoNet (Afchar et al. 2018): :class:`Meso4`, :class:`MesoInception4`, and :func:`from_keras_h5` to load the
  authors' released Keras weights (``meso.py``).
* ResNeXt-50 + LSTM video detector: :class:`ResNeXtLSTM` (``resnext_lstm.py``).
* VRN (Jackson et al. 2017): :class:`VRN`, :class:`VRNGuided`, :class:`VRNMultitask` (``vrn.py``) built from the
  hourglasses of ``hourglass.py``.
"""
from __future__ import annotations

from faceforge.models.meso import KerasWeightsError, Meso4, MesoInception4, from_keras_h5, mesonet_preprocess
from faceforge.models.resnext_lstm import PretrainedWeightsError, ResNeXtLSTM
from faceforge.models.vrn import VRN, VRNGuided, VRNMultitask, gaussian_heatmaps

__all__ = ["VRN", "KerasWeightsError", "Meso4", "MesoInception4", "PretrainedWeightsError", "ResNeXtLSTM",
           "VRNGuided", "VRNMultitask", "from_keras_h5", "gaussian_heatmaps", "mesonet_preprocess"]
