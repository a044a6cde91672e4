"""Orbit camera conventions (see psd_gs/scene/cameras.py's docstring)."""

import math

import pytest
import torch

from psd_gs.scene.cameras import make_cameras, sample_orbit, turntable


def project(cams, points):
    """World points [M, 3] -> pixel coordinates [B, M, 2] and depths [B, M]."""
    homo = torch.cat([points, torch.ones(len(points), 1, dtype=points.dtype)], -1)
    cam = torch.einsum("bij,mj->bmi", cams.viewmats.double(), homo.double())[..., :3]
    uv = torch.einsum("bij,bmj->bmi", cams.Ks.double(), cam)
    return uv[..., :2] / uv[..., 2:], cam[..., 2]


def test_origin_projects_to_image_centre(generator):
    cams = sample_orbit(16, 96, 64, elevation=(-60, 89), radius=(1.5, 4.0), fovy=(30, 70), generator=generator)
    uv, z = project(cams, torch.zeros(1, 3))
    assert torch.allclose(uv[:, 0], torch.tensor([48.0, 32.0], dtype=torch.float64), atol=1e-4)
    assert torch.allclose(z[:, 0], cams.radius.double(), atol=1e-5)


def test_viewmats_are_rigid_and_centres_on_the_orbit(generator):
    cams = sample_orbit(8, 32, 32, radius=(2.0, 3.0), generator=generator)
    R = cams.viewmats[:, :3, :3].double()
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(8, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(R), torch.ones(8, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(cams.centers.norm(dim=-1), cams.radius, atol=1e-5)
    assert torch.all(cams.viewmats[:, 3] == torch.tensor([0.0, 0.0, 0.0, 1.0]))


def test_front_view_axes():
    cams = make_cameras(0.0, 0.0, 2.5, 50.0, 64, 64)
    assert torch.allclose(cams.centers[0], torch.tensor([0.0, 0.0, 2.5]), atol=1e-6)
    uv, _ = project(cams, torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]))
    assert uv[0, 0, 0] > 32 + 5  # world +x is image right
    assert uv[0, 1, 1] < 32 - 5  # world +y (up) is image up, i.e. smaller row


def test_azimuth_turns_counter_clockwise_seen_from_above():
    # az = 90 puts the camera on +x; there the +x point is dead centre and closer than the origin,
    # and world +z (which was toward the viewer at az = 0) is on the image's left.
    cams = make_cameras(0.0, torch.tensor([0.0, 45.0, 90.0]), 2.5, 50.0, 64, 64)
    assert torch.allclose(cams.centers[2], torch.tensor([2.5, 0.0, 0.0]), atol=1e-6)
    uv, z = project(cams, torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 0.5]]))
    x_px = uv[:, 0, 0]
    assert x_px[0] > x_px[1] > x_px[2] - 1e-6  # the +x point moves from the right toward the centre
    assert abs(x_px[2] - 32) < 1e-4 and z[2, 0] < 2.5
    assert uv[2, 1, 0] < 32 - 5  # +z point on the left at az = 90


def test_elevation_90_looks_straight_down():
    cams = make_cameras(90.0, 30.0, 2.0, 50.0, 64, 64)
    R = cams.viewmats[0, :3, :3]
    assert torch.allclose(R[2], torch.tensor([0.0, -1.0, 0.0]), atol=1e-6)  # optical axis is -y
    assert torch.allclose(cams.centers[0], torch.tensor([0.0, 2.0, 0.0]), atol=1e-6)
    assert torch.isfinite(cams.viewmats).all()
    # image right stays (cos az, 0, -sin az) at the pole
    az = math.radians(30.0)
    assert torch.allclose(R[0], torch.tensor([math.cos(az), 0.0, -math.sin(az)]), atol=1e-6)


def test_intrinsics_match_fovy():
    cams = make_cameras(10.0, 20.0, 3.0, 60.0, 80, 40)
    f = 20.0 / math.tan(math.radians(30.0))
    assert torch.allclose(cams.Ks[0], torch.tensor([[f, 0, 40.0], [0, f, 20.0], [0, 0, 1]]), atol=1e-4)


def test_sampling_is_seeded_and_in_range():
    a = sample_orbit(32, 16, 16, elevation=(-5, 30), azimuth=(-90, 90), radius=(2, 3), fovy=(40, 50),
                     generator=torch.Generator().manual_seed(3))
    b = sample_orbit(32, 16, 16, elevation=(-5, 30), azimuth=(-90, 90), radius=(2, 3), fovy=(40, 50),
                     generator=torch.Generator().manual_seed(3))
    c = sample_orbit(32, 16, 16, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.viewmats, b.viewmats) and not torch.equal(a.viewmats, c.viewmats)
    for values, (lo, hi) in [(a.elevation, (-5, 30)), (a.azimuth, (-90, 90)), (a.radius, (2, 3)), (a.fovy, (40, 50))]:
        assert values.min() >= lo and values.max() <= hi and values.max() - values.min() > 0.3 * (hi - lo)


def test_turntable_spans_a_full_turn():
    cams = turntable(8, 32, 32, elevation=20.0, start_azimuth=10.0)
    assert len(cams) == 8
    assert torch.allclose(cams.azimuth, 10.0 + 45.0 * torch.arange(8.0))
    assert torch.allclose(cams.elevation, torch.full((8,), 20.0))
    assert cams[3].viewmats.shape == (1, 4, 4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(radius=(-1.0, 2.0)), "radius"),
    (dict(fovy=(0.0, 10.0)), "fovy"),
    (dict(elevation=(30.0, 10.0)), "low <= high"),
])
def test_bad_ranges_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_orbit(4, 16, 16, **kwargs)
