"""The ``faceforge serve`` web demo (:mod:`faceforge.serve.app`)."""
