"""Diffusion priors: the DiffusionPrior contract, its implementations, and ``load_prior`` by name."""

from __future__ import annotations

from ..config import PriorConfig
from ..registry import PRIORS, resolve
from .base import DiffusionPrior, MissingWeightsError


def load_prior(prior: PriorConfig, device=None) -> DiffusionPrior:
    """The prior ``prior.name`` names in ``psd_gs.registry.PRIORS``, built by its factory on ``device``."""
    if prior.name not in PRIORS:
        raise ValueError(f"prior {prior.name!r} is unknown; choose one of {', '.join(PRIORS)}")
    from ..device import resolve_device

    return resolve(PRIORS[prior.name].factory)(prior, resolve_device(device))


__all__ = ["DiffusionPrior", "MissingWeightsError", "load_prior"]
