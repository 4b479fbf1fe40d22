"""3D-reconstruction data: 300W-LP / AFLW2000-3D readers, VRN volume generation, the volume store, volume
augmentation, training statistics and the DataModule, and the synthetic 3D set."""
