"""The GPU path of the face detector (frames of one size batched through MTCNN) finds what the per-frame path
finds; checked on the CPU by calling the batched path directly, on a fixture DFDC video's frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from faceforge.data.detection.extraction.detector import FaceDetector
from faceforge.data.detection.extraction.video import read_frames


def test_batched_detection_equals_per_frame_detection(fixtures_dir: Path) -> None:
    frames = [f for _, f in read_frames(fixtures_dir / "videos" / "dfdc" / "abofeumbvv.mp4", range(0, 40, 5))]
    detector = FaceDetector()
    one_by_one = detector.detect(frames)
    batched = detector._detect_batched(frames)
    assert [len(d) for d in batched] == [len(d) for d in one_by_one]
    assert sum(len(d) for d in batched) >= 6  # faces are found in most of these frames
    for a, b in zip(one_by_one, batched):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x.box, y.box, atol=1e-2)
            assert abs(x.prob - y.prob) < 1e-4
