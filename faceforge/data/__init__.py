"""Data: official-layout readers, face extraction, the face index, datasets and DataModules."""
