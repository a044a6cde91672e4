"""Diffusion priors: the DiffusionPrior contract and its implementations."""

from .base import DiffusionPrior, MissingWeightsError

__all__ = ["DiffusionPrior", "MissingWeightsError"]
