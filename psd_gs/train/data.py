"""Training data from the shapes world: renders of its reference objects from the training cameras' pose
distribution, and captions drawn from the world's prompt grammar.

Poses follow the shapes preset's cameras (``preset("shapes").camera``: elevation uniform in -10..45
degrees, azimuth in a full turn, radius 2, fov-y 49.1, white background). Every pose renders all K
objects (``AnalyticPrior.render_objects``, the same renders the closed-form prior's data are made of).

Captions: a render of object k gets a prompt that allows k, so partial prompts mean what they mean in
the closed-form world ("a cube" = any of the four cubes, "red shapes" = the red cube or the red torus).
``caption`` draws the form (colour and shape, shape only, colour only, any object) and its wording.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List

import torch

from ..config import preset
from ..priors.analytic import AnalyticPrior
from ..priors.shapes_world import ShapesWorld
from ..scene.cameras import sample_orbit

# The share of each caption form (they sum to 1), and their wordings ({c}: colour, {s}: shape)
FORMS = {"full": 0.55, "shape": 0.2, "color": 0.15, "any": 0.1}
WORDINGS = {
    "full": ["a {c} {s}", "the {c} {s}", "{c} {s}", "a 3d model of a {c} {s}", "one {c} {s}", "a render of a {c} {s}"],
    "shape": ["a {s}", "the {s}", "{s}s", "a 3d model of a {s}", "one {s}"],
    "color": ["a {c} shape", "{c} shapes", "a {c} object", "a {c} thing", "{c} objects"],
    "any": ["a shape", "an object", "shapes", "a thing", "a 3d model", "objects"],
}


@dataclass
class Renders:
    """images: uint8 [N, 3, H, W]; objects: long [N] (index into ShapesWorld.objects); poses: float [N, 2]
    (elevation, azimuth in degrees)."""

    images: torch.Tensor
    objects: torch.Tensor
    poses: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def float_images(self, idx) -> torch.Tensor:
        """images[idx] as float32 in [0, 1]."""
        return self.images[idx].float() / 255.0


def render_poses(n_poses: int, seed: int, resolution: int = 64, progress=None) -> Renders:
    """All K objects from n_poses random poses of the shapes preset's camera distribution (seeded):
    N = n_poses x K renders, pose-major. ``progress(done, total)`` after each chunk of poses."""
    cam = preset("shapes").camera
    prior = AnalyticPrior()
    cams = sample_orbit(n_poses, resolution, resolution, cam.elevation, cam.azimuth, cam.radius, cam.fovy,
                        generator=torch.Generator().manual_seed(seed))
    K, chunks = len(prior.world), []
    for start in range(0, n_poses, 8):
        rgb = prior.render_objects(cams[start:start + 8])  # [b, K, H, W, 3]
        chunks.append((rgb.clamp(0, 1) * 255).round().to(torch.uint8).flatten(0, 1).permute(0, 3, 1, 2))
        if progress:
            progress(min(start + 8, n_poses), n_poses)
    poses = torch.stack([cams.elevation, cams.azimuth], 1).float().repeat_interleave(K, 0)
    return Renders(torch.cat(chunks), torch.arange(K).repeat(n_poses), poses)


def caption(world: ShapesWorld, k: int, rng: random.Random) -> str:
    """A prompt that allows object k, drawn by FORMS and WORDINGS (``world.select`` accepts every one)."""
    form = rng.choices(list(FORMS), weights=list(FORMS.values()))[0]
    obj = world.objects[k]
    wording = rng.choice(WORDINGS[form])
    if obj.shape.endswith("s") and wording.endswith("{s}s"):  # no plural the world knows ("torus")
        wording = wording[:-1]
    return wording.format(c=obj.color, s=obj.shape)


def vocabulary(world: ShapesWorld) -> List[str]:
    """Every word a caption or a prompt of the world can use (colours, shapes and their plurals, fillers)."""
    nouns = sorted({o.shape for o in world.objects} | world.any_shape_words)
    words = sorted(world.colors) + nouns + [n + "s" for n in nouns if not n.endswith("s")]
    words += sorted(world.filler_words)
    return list(dict.fromkeys(words))
