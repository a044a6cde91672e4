"""Refinement of a splat made elsewhere (issue 26): the frame, what --keep keeps, the reward's direction, bad files."""

import math

import numpy as np
import pytest
import torch

from psd_gs.cli.main import main
from psd_gs.config import preset
from psd_gs.priors.shapes_world import ShapesWorld
from psd_gs.render import rasterize
from psd_gs.run.evaluate import eval_cameras
from psd_gs.run.loop import run
from psd_gs.run.refine import load_input, refine_config
from psd_gs.scene.frame import Frame
from psd_gs.scene.gaussians import PARAM_NAMES, GaussianScene
from psd_gs.scene.ply import load_ply, save_ply

CENTRE, SCALE = torch.tensor([3.0, -1.5, 10.25]), 7.0
GREEN_CUBE = 2  # ShapesWorld().objects[2]


def moved(scene: GaussianScene, centre=CENTRE, scale=SCALE) -> GaussianScene:
    """``scene`` off-centre and scaled: another tool's units."""
    p = scene.detached()
    return GaussianScene(p["means"] * scale + centre, p["quats"], p["scales"] + math.log(scale), p["opacities"],
                         p["sh0"], p["shN"], scene.sh_degree)


def refine(tmp_path, ply, keep="none", steps=40, method="psd", frame="fit", prompt="a cube"):
    cfg = preset("shapes", prompt=prompt, out_dir=str(tmp_path / "runs"), turntable=False, mesh=False)
    cfg.guidance.method = method
    cfg.scene.frame = frame
    refine_config(cfg, ply, keep)
    cfg.steps = steps
    return run(cfg)


def test_frame_sees_an_input_in_its_own_units_as_the_world_object(tmp_path):
    world = ShapesWorld()
    cube = world.build(GREEN_CUBE)
    frame = Frame.fit(moved(cube), 0.5)
    assert np.allclose(frame.centre, CENTRE.tolist(), atol=1e-4)
    natural = Frame.fit(cube, 0.5)
    assert frame.scale == pytest.approx(SCALE * natural.scale, rel=1e-5)
    # the cameras moved onto the input see what the training cameras see of the normalised copy
    cams = eval_cameras(4, 64, 2.0)
    a = rasterize(moved(cube), frame.cameras(cams), 1.0)
    b = rasterize(frame.normalised(moved(cube)), cams, 1.0)
    assert (a.rgb - b.rgb).abs().max() < 1e-4
    assert (a.alpha - b.alpha).abs().max() < 1e-4
    assert torch.allclose(a.depth, frame.scale * b.depth, atol=1e-3 * frame.scale)  # depth in the input's units


def test_refine_writes_the_input_frame_back_exactly_and_keeps_geometry_bit_for_bit(tmp_path):
    world = ShapesWorld()
    ply = save_ply(moved(world.build(GREEN_CUBE)), tmp_path / "cube.ply")
    original = load_ply(ply)
    result = refine(tmp_path, ply, keep="geometry", steps=6)
    out = load_ply(result.ply_path)
    for name in ("means", "quats", "scales"):  # in the input's frame, bit for bit
        assert torch.equal(out.params[name], original.params[name]), name
    assert not torch.equal(out.params["sh0"], original.params["sh0"])  # colours did move
    r = result.metrics["refine"]
    assert r["kept_unchanged"] and r["keep"] == "geometry" and r["n_gaussians_input"] == len(original)
    assert np.allclose(r["frame"]["centre"], CENTRE.tolist(), atol=1e-4)
    assert (result.out_dir / "input.ply").read_bytes() == ply.read_bytes()  # the input's copy, in the run's folder


def test_refine_moves_a_reference_objects_reward_the_preferred_way(tmp_path):
    world = ShapesWorld()
    ply = save_ply(world.build(GREEN_CUBE), tmp_path / "green.ply")  # warm prefers the red cube
    r = refine(tmp_path, ply, frame="own", steps=60).metrics["refine"]
    assert r["reward_after"] > r["reward_before"] + 0.05
    assert r["silhouette_iou"] > 0.9
    sds = refine(tmp_path, ply, frame="own", steps=30, method="sds").metrics["refine"]
    assert abs(sds["reward_after"] - sds["reward_before"]) < 0.02  # SDS alone keeps the input as it is
    assert sds["psnr_to_input"] > 35


def test_keep_appearance_leaves_the_colours(tmp_path):
    world = ShapesWorld()
    ply = save_ply(moved(world.build(GREEN_CUBE)), tmp_path / "cube.ply")
    result = refine(tmp_path, ply, keep="appearance", steps=4)
    out, original = load_ply(result.ply_path), load_ply(ply)
    assert torch.equal(out.params["sh0"], original.params["sh0"]) and result.metrics["refine"]["kept_unchanged"]
    assert not torch.equal(out.params["means"], original.params["means"])


def test_a_gsplat_export_with_sh_degree_3_refines_and_keeps_its_degree(tmp_path):
    from gsplat.exporter import export_splats

    world = ShapesWorld()
    g = torch.Generator().manual_seed(0)
    cube = moved(world.build(GREEN_CUBE))
    p = cube.detached()
    shN = 0.05 * torch.randn(len(cube), 15, 3, generator=g)
    export_splats(p["means"], p["scales"], p["quats"], p["opacities"], p["sh0"], shN, format="ply",
                  save_to=str(tmp_path / "gsplat.ply"))
    read = load_ply(tmp_path / "gsplat.ply")
    assert read.sh_degree == 3 and torch.allclose(read.params["shN"], shN)  # gsplat's layout is ours
    result = refine(tmp_path, tmp_path / "gsplat.ply", steps=2)
    assert load_ply(result.ply_path).sh_degree == 3


def test_bad_inputs_give_one_clear_line(tmp_path, capsys):
    world = ShapesWorld()
    (tmp_path / "text.ply").write_text("not a ply at all")
    cube = world.build(GREEN_CUBE)
    save_ply(cube, tmp_path / "cube.ply")
    dot = GaussianScene(*[cube.params[k].detach() for k in PARAM_NAMES])
    dot.params["means"].data.zero_()
    save_ply(dot, tmp_path / "dot.ply")
    cases = {"text.ply": "is not a readable PLY file", "missing.ply": "is not a file",
             "dot.ply": "too small for the cameras"}
    for name, words in cases.items():
        code = main(["refine", str(tmp_path / name), "--prompt", "a cube", "--out", str(tmp_path / "runs")])
        err = capsys.readouterr().err.strip()
        assert code != 0 and words in err and len(err.splitlines()) == 1, (name, err)
    code = main(["refine", str(tmp_path / "cube.ply"), "--prompt", "a cube", "--set", "scene.max_gaussians=100",
                 "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "has 400 Gaussians; this setup refines at most 100" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing was made
    cfg = preset("shapes", prompt="a cube")
    cfg.scene.keep = "geometry"
    with pytest.raises(ValueError, match="keeps part of an input splat"):
        cfg.check()  # keep without an input


def test_load_input_refuses_more_than_the_budget(tmp_path):
    ply = save_ply(ShapesWorld().build(0), tmp_path / "red.ply")
    assert len(load_input(ply, 400)) == 400
    with pytest.raises(ValueError, match="prune the splat first"):
        load_input(ply, 399)


def test_refine_runs_through_the_learned_prior(tmp_path):
    """The SD code path (the small SD trained here, four views a step): a refinement starts from the input and
    writes its record."""
    ply = save_ply(moved(ShapesWorld().build(GREEN_CUBE)), tmp_path / "cube.ply")
    cfg = preset("learned", prompt="a cube", out_dir=str(tmp_path / "runs"), turntable=False, mesh=False)
    refine_config(cfg, ply, "geometry")
    cfg.steps, cfg.camera.batch = 2, 2
    r = run(cfg).metrics["refine"]
    assert r["kept_unchanged"] and r["n_gaussians_input"] == 400 and r["silhouette_iou"] > 0.95


def test_a_cut_refinement_resumes_from_its_own_copy_of_the_input(tmp_path, one_thread):
    """The run reads its input from its folder (input.ply): resumed after the original file is gone, it ends
    bit for bit where the straight refinement does, in the input's frame."""
    from tests.run.cut import cut_at

    ply = save_ply(moved(ShapesWorld().build(GREEN_CUBE)), tmp_path / "cube.ply")

    def cfg():
        c = preset("shapes", prompt="a cube", out_dir=str(tmp_path / "runs"), turntable=False, mesh=False,
                   checkpoint_every=8)
        refine_config(c, ply, "none")
        c.steps = 16
        return c

    straight = load_ply(run(cfg()).ply_path)
    first = cut_at(cfg(), 8)
    ply.unlink()
    resumed = run(None, resume=first.out_dir)
    assert resumed.metrics["steps_done"] == 16 and resumed.metrics["refine"]["n_gaussians_input"] == 400
    out = load_ply(resumed.ply_path)
    assert all(torch.equal(out.params[k], straight.params[k]) for k in PARAM_NAMES)


def test_evaluate_sees_a_refined_run_as_the_run_saw_it(tmp_path, capsys):
    """``evaluate RUN`` on a refinement of an off-centre, scaled input scores the object the cameras saw (the
    same reward as the run's own record), not an empty view of the input's frame."""
    import json

    ply = save_ply(moved(ShapesWorld().build(GREEN_CUBE)), tmp_path / "cube.ply")
    result = refine(tmp_path, ply, keep="geometry", steps=4)
    assert main(["evaluate", str(result.out_dir)]) == 0
    evaluation = json.loads((result.out_dir / "evaluation.json").read_text())
    own = result.metrics["refine"]["reward_after"]
    assert evaluation["rewards"]["shapes-warm"]["mean"] == pytest.approx(own, abs=1e-3)
