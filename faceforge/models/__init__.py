"""Plain ``nn.Module`` models, one file per family (they know nothing of Lightning).

MesoNet (Afchar et al. 2018): :class:`Meso4`, :class:`MesoInception4`, and :func:`from_keras_h5` to load the
authors' released Keras weights.
"""
from __future__ import annotations

from faceforge.models.meso import KerasWeightsError, Meso4, MesoInception4, from_keras_h5, mesonet_preprocess

__all__ = ["KerasWeightsError", "Meso4", "MesoInception4", "from_keras_h5", "mesonet_preprocess"]
