"""Inference tools: P(fake) for images and videos (:mod:`faceforge.inference.detection`) and a 3D face from a
photo (:mod:`faceforge.inference.reconstruction`), used by ``faceforge predict`` / ``reconstruct`` / ``serve``."""
