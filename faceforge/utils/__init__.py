"""Small utilities shared across faceforge (atomic file writes, run metadata)."""
