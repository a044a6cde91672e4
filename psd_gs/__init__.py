"""psd-gs: text-to-3D Gaussian splats by score distillation, aligned by Preference Score Distillation."""

__version__ = "0.1.0"
