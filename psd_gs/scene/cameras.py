"""Orbit cameras around the origin, in the conventions gsplat expects.

World frame: right-handed, **+y is up** (as in glTF and three.js, so exported splats stand upright
in web viewers). The object sits at the origin.

Camera placement, for elevation ``el`` and azimuth ``az`` in degrees and radius ``r``::

    position = r * (cos(el) sin(az),  sin(el),  cos(el) cos(az))

- ``az = 0, el = 0`` puts the camera on the +z axis looking toward -z (the "front" view);
  image right is world +x and image down is world -y.
- **Azimuth grows counter-clockwise seen from above** (from +y): ``az = 90`` puts the camera on +x.
  So as azimuth grows, a point on the object's +x side moves from the image's right toward its
  centre, and the object appears to turn clockwise seen from above.
- **Elevation 90 looks straight down** (camera on +y, optical axis -y); image right stays
  ``(cos az, 0, -sin az)``, so the view is well defined at the pole. Negative elevation looks up.

View matrices are **OpenCV world-to-camera** 4x4 matrices (camera x right, y down, z forward;
``x_cam = R x_world + t``), as gsplat's ``rasterization(viewmats=...)`` takes them. Intrinsics are
pinhole ``K = [[f, 0, W/2], [0, f, H/2], [0, 0, 1]]`` in pixels with ``f = H / (2 tan(fovy / 2))``,
square pixels, and pixel (i, j) covering [j, j+1] x [i, i+1], so the origin projects to (W/2, H/2),
the image centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from ..device import to_device


@dataclass
class Cameras:
    """A batch of B pinhole cameras of one image size.

    viewmats: [B, 4, 4] OpenCV world-to-camera. Ks: [B, 3, 3] intrinsics in pixels.
    elevation, azimuth: [B] degrees; radius: [B] world units; fovy: [B] degrees (kept for
    view-dependent prompts and logs).
    """

    viewmats: torch.Tensor
    Ks: torch.Tensor
    width: int
    height: int
    elevation: torch.Tensor
    azimuth: torch.Tensor
    radius: torch.Tensor
    fovy: torch.Tensor

    def __len__(self) -> int:
        return self.viewmats.shape[0]

    def to(self, device: torch.device | str, dtype: Optional[torch.dtype] = None) -> "Cameras":
        """A copy on ``device`` (host-to-GPU without a host sync, see ``psd_gs.device.to_device``)."""
        device = torch.device(device)

        def mv(t: torch.Tensor) -> torch.Tensor:
            return to_device(t.to(dtype=dtype or t.dtype), device)

        return Cameras(mv(self.viewmats), mv(self.Ks), self.width, self.height,
                       mv(self.elevation), mv(self.azimuth), mv(self.radius), mv(self.fovy))

    def __getitem__(self, idx) -> "Cameras":
        idx = slice(idx, idx + 1) if isinstance(idx, int) else idx
        return Cameras(self.viewmats[idx], self.Ks[idx], self.width, self.height,
                       self.elevation[idx], self.azimuth[idx], self.radius[idx], self.fovy[idx])

    @property
    def centers(self) -> torch.Tensor:
        """Camera centres in world coordinates, [B, 3]."""
        R = self.viewmats[:, :3, :3]
        t = self.viewmats[:, :3, 3:]
        return -(R.transpose(1, 2) @ t)[..., 0]


def orbit_viewmat(elevation: torch.Tensor, azimuth: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """World-to-camera matrices [B, 4, 4] for cameras on a sphere looking at the origin (degrees)."""
    el = torch.deg2rad(elevation.to(torch.float64))
    az = torch.deg2rad(azimuth.to(torch.float64))
    r = radius.to(torch.float64)
    pos = torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], -1)
    forward = -pos  # unit vector from the camera to the origin
    right = torch.stack([torch.cos(az), torch.zeros_like(az), -torch.sin(az)], -1)
    down = torch.cross(forward, right, dim=-1)
    R = torch.stack([right, down, forward], dim=1)  # rows: camera axes in world coordinates
    view = torch.eye(4, dtype=torch.float64).repeat(len(el), 1, 1)
    view[:, :3, :3] = R
    view[:, :3, 3] = -(R @ (pos * r[:, None])[..., None])[..., 0]
    return view


def intrinsics(fovy_deg: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pinhole K [B, 3, 3] in pixels for vertical field of view ``fovy_deg`` (degrees)."""
    f = 0.5 * height / torch.tan(0.5 * torch.deg2rad(fovy_deg.to(torch.float64)))
    K = torch.zeros(len(f), 3, 3, dtype=torch.float64)
    K[:, 0, 0] = f
    K[:, 1, 1] = f
    K[:, 0, 2] = width / 2.0
    K[:, 1, 2] = height / 2.0
    K[:, 2, 2] = 1.0
    return K


def make_cameras(elevation, azimuth, radius, fovy, width: int, height: int,
                 dtype: torch.dtype = torch.float32) -> Cameras:
    """Cameras from per-view angles (degrees), radii and fov-y; scalars broadcast to the batch."""
    el, az, r, fv = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float64).reshape(-1)
                                               for v in (elevation, azimuth, radius, fovy)))
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if (r <= 0).any():
        raise ValueError(f"camera radius must be > 0, got {r.tolist()}")
    if ((fv <= 0) | (fv >= 180)).any():
        raise ValueError(f"fovy must be in (0, 180) degrees, got {fv.tolist()}")
    return Cameras(orbit_viewmat(el, az, r).to(dtype), intrinsics(fv, width, height).to(dtype),
                   width, height, el.to(dtype), az.to(dtype), r.to(dtype), fv.to(dtype))


def _uniform(lo_hi: Tuple[float, float], n: int, g: Optional[torch.Generator]) -> torch.Tensor:
    lo, hi = lo_hi
    if hi < lo:
        raise ValueError(f"range must be (low, high) with low <= high, got {lo_hi}")
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def orbit_grid(elevation: Tuple[float, float], n_elevation: int, n_azimuth: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """A fixed set of poses: n_elevation evenly spaced elevations spanning ``elevation`` (degrees) times
    n_azimuth azimuths evenly spaced over a full turn from 0. Returns (elevation [P], azimuth [P])."""
    if n_elevation < 1 or n_azimuth < 1:
        raise ValueError(f"grid sizes must be >= 1, got {n_elevation} x {n_azimuth}")
    lo, hi = elevation
    el = torch.linspace(lo, hi, n_elevation, dtype=torch.float64) if n_elevation > 1 else torch.tensor([0.5 * (lo + hi)])
    az = 360.0 * torch.arange(n_azimuth, dtype=torch.float64) / n_azimuth
    az = torch.where(az > 180.0, az - 360.0, az)
    return el.double().repeat_interleave(n_azimuth), az.repeat(n_elevation)


def sample_orbit(
    n: int,
    width: int,
    height: int,
    elevation: Tuple[float, float] = (-10.0, 45.0),
    azimuth: Tuple[float, float] = (-180.0, 180.0),
    radius: Tuple[float, float] = (2.5, 2.5),
    fovy: Tuple[float, float] = (49.1, 49.1),
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
    grid: Optional[Tuple[int, int]] = None,
) -> Cameras:
    """n random orbit cameras, each value uniform in its (low, high) range; seed via ``generator``.

    Elevation is sampled uniformly in degrees (as threestudio and DreamGaussian do), not uniformly
    on the sphere. Defaults: DreamGaussian's radius 2.5 and fov-y 49.1 degrees. With
    ``grid = (n_elevation, n_azimuth)`` the pose is drawn uniformly from ``orbit_grid`` instead
    (``azimuth`` is then ignored), for worlds whose data exists only at those poses.
    """
    if n <= 0:
        raise ValueError(f"n must be >= 1, got {n}")
    if radius[0] <= 0:
        raise ValueError(f"radius range must be > 0, got {radius}")
    if fovy[0] <= 0 or fovy[1] >= 180:
        raise ValueError(f"fovy range must lie in (0, 180) degrees, got {fovy}")
    if grid is not None:
        grid_el, grid_az = orbit_grid(elevation, *grid)
        pick = torch.randint(0, len(grid_el), (n,), generator=generator)
        el, az = grid_el[pick], grid_az[pick]
    else:
        el = _uniform(elevation, n, generator)
        az = _uniform(azimuth, n, generator)
    r = _uniform(radius, n, generator)
    fv = _uniform(fovy, n, generator)
    return make_cameras(el, az, r, fv, width, height, dtype)


def turntable(n: int, width: int, height: int, elevation: float = 15.0, radius: float = 2.5,
              fovy: float = 49.1, start_azimuth: float = 0.0, dtype: torch.dtype = torch.float32) -> Cameras:
    """n views at one elevation, azimuth evenly spaced over a full turn starting at ``start_azimuth``."""
    if n <= 0:
        raise ValueError(f"n must be >= 1, got {n}")
    az = start_azimuth + 360.0 * torch.arange(n, dtype=torch.float64) / n
    return make_cameras(elevation, az, radius, fovy, width, height, dtype)
