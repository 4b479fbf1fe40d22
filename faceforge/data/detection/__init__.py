"""Deepfake-detection data: official-layout readers (FaceForensics++, DFDC, Celeb-DF), face extraction, the face
index, the crop cache, frame and clip datasets and their DataModule, and the synthetic detection set."""
