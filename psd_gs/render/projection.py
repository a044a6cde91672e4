"""Per-camera projection of 3D Gaussians and SH colour, in gsplat's conventions (pure PyTorch).

This is the CPU backend's first half. It follows gsplat 1.5.3's pinhole EWA projection exactly:
camera-space covariance ``R S S^T R^T`` under the view rotation, the perspective Jacobian with the
screen position clamped to 1.3x the field of view, a 0.3 px^2 low-pass (``eps2d``) added to the 2D
covariance ("classic" mode, no opacity compensation), near/far culling, and the integer radii of
gsplat's CUDA kernel: the bounding box of the alpha >= 1/255 ellipse, ``ceil(e sqrt(cov_xx))``,
``ceil(e sqrt(cov_yy))`` with ``e = min(3.33, sqrt(2 ln(255 o)))``, 0 where culled (opacity below
1/255, behind the near plane, or off-screen). gsplat's pure-torch ``_fully_fused_projection`` uses a
plain 3.33-sigma box instead; the CUDA rule is what ``DefaultStrategy`` sees on a GPU, so we follow
it. Tests hold the rest against ``gsplat.cuda._torch_impl._fully_fused_projection`` and
``_spherical_harmonics``.

We write it rather than call gsplat's ``_torch_impl``: those are private functions whose signatures
change between releases, they materialise [C, N, 3, 3] einsums we do not need, and the CPU path
must not depend on gsplat internals to render.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..scene.cameras import Cameras
from ..scene.gaussians import GaussianScene

EPS2D = 0.3  # px^2 added to the 2D covariance, as gsplat's default
NEAR_PLANE = 0.01
FAR_PLANE = 1e10

# Real SH basis constants, degrees 0..3, in the 3DGS / gsplat sign convention.
_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
       -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Real SH basis at unit directions ``dirs`` [..., 3] -> [..., (degree + 1)^2]."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, _C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [_C2[0] * x * y, _C2[1] * y * z, _C2[2] * (2 * zz - xx - yy), _C2[3] * x * z, _C2[4] * (xx - yy)]
    if degree >= 3:
        out += [_C3[0] * y * (3 * xx - yy), _C3[1] * x * y * z, _C3[2] * y * (4 * zz - xx - yy),
                _C3[3] * z * (2 * zz - 3 * xx - 3 * yy), _C3[4] * x * (4 * zz - xx - yy),
                _C3[5] * z * (xx - yy), _C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, dim=-1)


def sh_to_rgb(sh: torch.Tensor, dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """View-dependent colour: clamp_min(sum_k Y_k(dir) sh_k + 0.5, 0).

    sh: [N, (degree + 1)^2, 3]; dirs: [C, N, 3] from camera centre to Gaussian (any length).
    Returns [C, N, 3], >= 0.
    """
    basis = sh_basis(F.normalize(dirs, dim=-1), degree)  # [C, N, K]
    return torch.clamp_min(torch.einsum("cnk,nkd->cnd", basis, sh) + 0.5, 0.0)


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """wxyz quaternions [N, 4] (any norm) -> rotation matrices [N, 3, 3]."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)


@dataclass
class Projected:
    """Screen-space Gaussians for C cameras.

    means2d: [C, N, 2] pixels (x right, y down; pixel (i, j) spans [j, j+1] x [i, i+1]).
    conics:  [C, N, 3] (a, b, c) of the inverse 2D covariance: q(d) = a dx^2 + 2 b dx dy + c dy^2.
    covars2d: [C, N, 3] (xx, xy, yy) of the 2D covariance after the low-pass, px^2.
    depths:  [C, N] camera-space z, world units.
    radii:   [C, N, 2] int32 half-sizes in pixels of the alpha >= 1/255 box, 0 where culled (gsplat CUDA).
    colors:  [C, N, 3] >= 0, SH evaluated toward each camera.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    covars2d: torch.Tensor
    depths: torch.Tensor
    radii: torch.Tensor
    colors: torch.Tensor


def project(scene: GaussianScene, cameras: Cameras, eps2d: float = EPS2D) -> Projected:
    """Project every Gaussian into every camera (differentiable in all scene parameters)."""
    W, H = cameras.width, cameras.height
    R_cam = cameras.viewmats[:, :3, :3]  # [C, 3, 3]
    t_cam = cameras.viewmats[:, :3, 3]  # [C, 3]
    means_c = torch.einsum("cij,nj->cni", R_cam, scene.means) + t_cam[:, None, :]  # [C, N, 3]

    M = quat_to_rotmat(scene.quats) * scene.scales[:, None, :]  # R diag(s), [N, 3, 3]
    covar = M @ M.transpose(1, 2)  # world covariance [N, 3, 3]
    covar_c = torch.einsum("cij,njk,clk->cnil", R_cam, covar, R_cam)  # [C, N, 3, 3]

    fx, fy = cameras.Ks[:, 0, 0, None], cameras.Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = cameras.Ks[:, 0, 2, None], cameras.Ks[:, 1, 2, None]
    tx, ty, tz = means_c.unbind(-1)  # [C, N]
    # The Jacobian is evaluated with the screen position clamped to 1.3x the field of view (gsplat).
    tan_fovx, tan_fovy = 0.5 * W / fx, 0.5 * H / fy
    lim_x_pos, lim_x_neg = (W - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (H - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    u = torch.maximum(torch.minimum(tx / tz, lim_x_pos), -lim_x_neg)
    v = torch.maximum(torch.minimum(ty / tz, lim_y_pos), -lim_y_neg)
    zero = torch.zeros_like(tz)
    J = torch.stack([fx / tz, zero, -fx * u / tz, zero, fy / tz, -fy * v / tz], -1).reshape(*tz.shape, 2, 3)
    cov2d = J @ covar_c @ J.transpose(-1, -2)  # [C, N, 2, 2]
    sxx = cov2d[..., 0, 0] + eps2d
    syy = cov2d[..., 1, 1] + eps2d
    sxy = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    det = (sxx * syy - sxy * sxy).clamp_min(1e-10)
    conics = torch.stack([syy / det, -sxy / det, sxx / det], -1)
    means2d = torch.stack([fx * tx / tz + cx, fy * ty / tz + cy], -1)

    with torch.no_grad():
        # gsplat's CUDA projection (ProjectionEWA3DGSFused.cu): an opacity-aware box, the bounding
        # box of the alpha >= 1/255 ellipse, at most 3.33 sigma; opacity < 1/255 is culled.
        opac = scene.opacities.detach().expand_as(tz)
        extend = torch.sqrt(2.0 * torch.log((opac * 255.0).clamp_min(1.0))).clamp_max(3.33)
        radius = torch.stack([torch.ceil(extend * sxx.sqrt()), torch.ceil(extend * syy.sqrt())], -1)
        valid = (det > 0) & (tz > NEAR_PLANE) & (tz < FAR_PLANE) & (opac >= 1.0 / 255.0)
        inside = ((means2d[..., 0] + radius[..., 0] > 0) & (means2d[..., 0] - radius[..., 0] < W)
                  & (means2d[..., 1] + radius[..., 1] > 0) & (means2d[..., 1] - radius[..., 1] < H))
        radii = torch.where((valid & inside)[..., None], radius, torch.zeros_like(radius)).int()

    dirs = scene.means[None, :, :] - cameras.centers[:, None, :]  # [C, N, 3]
    colors = sh_to_rgb(scene.sh, dirs, scene.sh_degree)
    return Projected(means2d, conics, torch.stack([sxx, sxy, syy], -1), tz, radii, colors)
