"""GaussianScene: the only owner of Gaussian state.

The raw (pre-activation) tensors live in a ``torch.nn.ParameterDict`` called ``params`` whose keys
are the names gsplat's ``DefaultStrategy`` and its ops require, so that densification can replace
them in place. The names docs/design.md uses are properties over that dict:

    design name       params key    shape      meaning                       activation
    means             "means"       [N, 3]     world position                 -
    quats             "quats"       [N, 4]     rotation, wxyz, unnormalised   F.normalize -> rotations
    log_scales        "scales"      [N, 3]     log of the std-devs (world)    exp -> scales
    opacity_logits    "opacities"   [N]        logit of opacity               sigmoid -> opacities in (0, 1)
    sh0               "sh0"         [N, 1, 3]  SH band 0 (DC) per RGB channel -
    shN               "shN"         [N, K, 3]  SH bands 1..sh_degree, K = (sh_degree + 1)^2 - 1

Colours follow the 3DGS convention: rgb = clamp_min(SH(dir) + 0.5, 0), so ``sh0 = 0`` is mid grey.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F

SH_C0 = 0.28209479177387814  # Y_0^0, used to convert between rgb and sh0
COLOR_FLOOR = 1e-3  # GaussianScene.floor_colors_: the lowest base colour a step leaves (0.26 of one 8-bit level)

PARAM_NAMES = ("means", "quats", "scales", "opacities", "sh0", "shN")


def num_sh_bases(sh_degree: int) -> int:
    """Number of SH coefficients per channel for degree 0..3: (degree + 1)^2."""
    return (sh_degree + 1) ** 2


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """rgb in [0, 1] -> DC coefficient such that the rendered colour equals rgb."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_sh0`` (view-independent part of the colour, before clamping)."""
    return sh0 * SH_C0 + 0.5


class GaussianScene:
    """A set of N 3D Gaussians with SH colour of degree ``sh_degree`` (0..3)."""

    def __init__(
        self,
        means: torch.Tensor,
        quats: torch.Tensor,
        log_scales: torch.Tensor,
        opacity_logits: torch.Tensor,
        sh0: torch.Tensor,
        shN: Optional[torch.Tensor] = None,
        sh_degree: int = 0,
    ):
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree must be 0..3, got {sh_degree}")
        n = means.shape[0]
        k = num_sh_bases(sh_degree) - 1
        if shN is None:
            shN = means.new_zeros(n, k, 3)
        expected = {
            "means": (means, (n, 3)),
            "quats": (quats, (n, 4)),
            "log_scales": (log_scales, (n, 3)),
            "opacity_logits": (opacity_logits, (n,)),
            "sh0": (sh0, (n, 1, 3)),
            "shN": (shN, (n, k, 3)),
        }
        for name, (t, shape) in expected.items():
            if tuple(t.shape) != shape:
                raise ValueError(
                    f"{name} must have shape {list(shape)} for N={n}, sh_degree={sh_degree}; "
                    f"got {list(t.shape)}"
                )
        self.sh_degree = sh_degree
        raw = (means, quats, log_scales, opacity_logits, sh0, shN)
        self.params = torch.nn.ParameterDict(
            {key: torch.nn.Parameter(t.detach().clone()) for key, t in zip(PARAM_NAMES, raw)}
        )

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def random(
        cls,
        n: int,
        radius: float = 0.5,
        sh_degree: int = 0,
        init_opacity: float = 0.1,
        init_scale: Optional[float] = None,
        generator: Optional[torch.Generator] = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        color_jitter: Optional[float] = None,
    ) -> "GaussianScene":
        """N Gaussians uniform in a ball of ``radius`` (world units), isotropic, opacity ``init_opacity``.

        ``init_scale`` (std-dev, world units) defaults to the mean point spacing
        ``radius * (4/3 pi / N)^(1/3) / 2``, small enough that the init is a cloud, not a blob.
        Colours are uniform random in [0, 1] per Gaussian, or, with ``color_jitter``, one random colour
        for the whole cloud plus uniform noise of that half-width per Gaussian (so the cloud's overall
        colour differs between seeds). Higher SH bands start at zero. Deterministic given
        ``generator`` (a CPU generator; tensors are moved to ``device`` afterwards).
        """
        if n <= 0:
            raise ValueError(f"n must be a positive number of Gaussians, got {n}")
        if radius <= 0:
            raise ValueError(f"radius must be > 0, got {radius}")
        if not 0.0 < init_opacity < 1.0:
            raise ValueError(f"init_opacity must be in (0, 1), got {init_opacity}")
        if init_scale is None:
            init_scale = 0.5 * radius * (4.0 / 3.0 * math.pi / n) ** (1.0 / 3.0)
        g = generator
        # uniform in the ball: direction from a normal sample, radius ~ U^(1/3)
        d = F.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
        r = radius * torch.rand(n, 1, generator=g, dtype=torch.float64) ** (1.0 / 3.0)
        means = d * r
        quats = torch.zeros(n, 4, dtype=torch.float64)
        quats[:, 0] = 1.0
        log_scales = torch.full((n, 3), math.log(init_scale), dtype=torch.float64)
        opacity_logits = torch.full((n,), math.log(init_opacity / (1.0 - init_opacity)), dtype=torch.float64)
        rgb = torch.rand(n, 1, 3, generator=g, dtype=torch.float64)
        if color_jitter is not None:
            base = torch.rand(3, generator=g, dtype=torch.float64)
            rgb = (base + color_jitter * (2 * rgb - 1)).clamp(0.0, 1.0)
        sh0 = rgb_to_sh0(rgb)
        scene = cls(means, quats, log_scales, opacity_logits, sh0, None, sh_degree)
        return scene.to(device, dtype)

    # ---- raw parameters (design names) --------------------------------------------------------

    @property
    def means(self) -> torch.Tensor:
        return self.params["means"]

    @property
    def quats(self) -> torch.Tensor:
        return self.params["quats"]

    @property
    def log_scales(self) -> torch.Tensor:
        return self.params["scales"]

    @property
    def opacity_logits(self) -> torch.Tensor:
        return self.params["opacities"]

    @property
    def sh0(self) -> torch.Tensor:
        return self.params["sh0"]

    @property
    def shN(self) -> torch.Tensor:
        return self.params["shN"]

    # ---- activations --------------------------------------------------------------------------

    @property
    def rotations(self) -> torch.Tensor:
        """Unit quaternions, wxyz, [N, 4]."""
        return F.normalize(self.quats, dim=-1)

    @property
    def scales(self) -> torch.Tensor:
        """Std-devs along the local axes, world units, [N, 3], > 0."""
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> torch.Tensor:
        """Opacity in (0, 1), [N]."""
        return torch.sigmoid(self.opacity_logits)

    @property
    def sh(self) -> torch.Tensor:
        """All SH coefficients, [N, (sh_degree + 1)^2, 3]."""
        return torch.cat([self.sh0, self.shN], dim=1)

    def floor_colors_(self) -> None:
        """Project the base colour in place onto C0 sh0 + 0.5 >= COLOR_FLOOR per channel (no autograd).

        Both rasterisers colour a Gaussian by clamp_min(SH(dir) + 0.5, 0), as gsplat does, so a channel
        that an optimiser step pushes below 0 renders 0 and receives a zero gradient from then on: it can
        never come back, however far its object's colour is from 0 (measured: in the shapes world, red
        and yellow objects, channels 0.1-0.15, ended with 16-100% of their opacity in such Gaussians).
        Projecting after the step keeps every channel trainable. Exact for sh_degree 0; with higher
        bands it floors the colour averaged over directions, and a view can still clamp. The floor is
        1e-3 rather than 0, since sh0 = -0.5 / C0 rounds to a colour just below 0 in float32.
        """
        with torch.no_grad():
            self.params["sh0"].clamp_(min=(COLOR_FLOOR - 0.5) / SH_C0)

    # ---- bookkeeping --------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, device: torch.device | str, dtype: Optional[torch.dtype] = None) -> "GaussianScene":
        """A new scene with copies of the parameters on ``device`` (and ``dtype`` if given)."""
        raw = [self.params[k].detach().to(device=device, dtype=dtype or self.params[k].dtype) for k in PARAM_NAMES]
        return GaussianScene(*raw, sh_degree=self.sh_degree)

    def detached(self) -> Dict[str, torch.Tensor]:
        """Raw tensors keyed by ``PARAM_NAMES``, detached and on the CPU (for saving)."""
        return {k: self.params[k].detach().cpu() for k in PARAM_NAMES}

    def param_groups(self, lrs: Dict[str, float]) -> list:
        """Adam-ready groups, one per raw tensor, named as in ``params``.

        ``lrs`` maps every key of ``PARAM_NAMES`` to a learning rate; a missing key is an error
        (rather than a silently frozen tensor). gsplat's ``DefaultStrategy`` expects one optimizer
        per key, so callers usually build ``{k: Adam([g]) for k, g in zip(PARAM_NAMES, groups)}``.
        """
        missing = [k for k in PARAM_NAMES if k not in lrs]
        if missing:
            raise ValueError(f"learning rates missing for {missing}; give one for each of {list(PARAM_NAMES)}")
        return [{"params": [self.params[k]], "lr": float(lrs[k]), "name": k} for k in PARAM_NAMES]
