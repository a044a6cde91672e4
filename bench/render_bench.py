"""Rasteriser speed on the CPU: our PyTorch backend against the float64 brute-force reference.

    .venv/bin/python bench/render_bench.py            # full table, about 3 minutes on 2 cores
    .venv/bin/python bench/render_bench.py --quick    # fewer repeats, no scaling table

Times forward plus backward (loss = sum of rgb and depth) for one camera. Prints two tables and a
line ``speedup N.N`` (object scene at 64x64 with 2,000 Gaussians: brute median / fast median).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from psd_gs.scene.cameras import turntable
from psd_gs.scene.gaussians import GaussianScene
from psd_gs.render.reference import rasterize_reference
from psd_gs.render.torch_backend import rasterize_torch


def make_scene(kind: str, n: int, seed: int = 0) -> GaussianScene:
    """``init``: GaussianScene.random (opacity 0.1); ``object``: an opaque sphere surface of radius
    0.5 (isotropic 0.03 std-dev, opacity 0.95); ``stretched``: opaque needles 0.3 x 0.01 x 0.01 with
    random orientations in the radius-0.5 ball."""
    g = torch.Generator().manual_seed(seed)
    scene = GaussianScene.random(n, radius=0.5, generator=g)
    if kind == "init":
        return scene
    with torch.no_grad():
        scene.params["opacities"].fill_(math.log(0.95 / 0.05))
        if kind == "object":
            scene.params["means"].copy_(0.5 * F.normalize(torch.randn(n, 3, generator=g), dim=-1))
            scene.params["scales"].fill_(math.log(0.03))
        elif kind == "stretched":
            scene.params["scales"].copy_(torch.log(torch.tensor([0.3, 0.01, 0.01])).expand(n, 3))
            scene.params["quats"].copy_(torch.randn(n, 4, generator=g))
        else:
            raise ValueError(f"unknown scene kind {kind!r}; choose init, object or stretched")
    return scene


def time_fwd_bwd(fn, scene: GaussianScene, size: int, repeats: int) -> tuple[float, int]:
    """Median seconds of forward + backward over ``repeats`` runs (after one warm-up), and pair count."""
    cams = turntable(1, size, size, elevation=20.0)
    times, pairs = [], 0
    for i in range(repeats + 1):
        for p in scene.params.values():
            p.grad = None
        t0 = time.perf_counter()
        r = fn(scene, cams, 0.5)
        (r.rgb.sum() + r.depth.sum()).backward()
        if i > 0:
            times.append(time.perf_counter() - t0)
        pairs = r.info.get("n_pairs", 0)
    return statistics.median(times), pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats, 2 for brute force, no scaling table")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fast_reps, brute_reps = (5, 2) if args.quick else (20, 5)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 64x64, N=2000, one camera, "
          f"forward+backward, median of {fast_reps} (fast) / {brute_reps} (brute)")
    print(f"{'scene':<10} {'pairs':>8} {'fast s':>8} {'brute s':>8} {'speedup':>8}")
    speedups = {}
    for kind in ("init", "object", "stretched"):
        scene = make_scene(kind, 2000)
        fast, pairs = time_fwd_bwd(rasterize_torch, scene, 64, fast_reps)
        brute, _ = time_fwd_bwd(rasterize_reference, scene, 64, brute_reps)
        speedups[kind] = brute / fast
        print(f"{kind:<10} {pairs:>8} {fast:>8.4f} {brute:>8.3f} {brute / fast:>8.1f}")

    if not args.quick:
        print("\nscaling, object scene, fast backend, seconds (median of 5)")
        sizes = (64, 128, 256)
        print(f"{'N':>6} " + " ".join(f"{s:>8}" for s in sizes))
        for n in (1000, 4000, 16000):
            scene = make_scene("object", n)
            row = [time_fwd_bwd(rasterize_torch, scene, s, 5)[0] for s in sizes]
            print(f"{n:>6} " + " ".join(f"{t:>8.4f}" for t in row))
    print(f"speedup {speedups['object']:.1f}")


if __name__ == "__main__":
    main()
