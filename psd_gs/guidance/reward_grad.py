"""The reward-gradient baseline PSD argues against (DreamReward-style feedback).

losses: "sds" and "reward" = lambda_r * mean(-R(render)): the reward model's pixel gradient flows into
the scene.
It exists to be compared with: it raises the reward and, by hacking it, loses fidelity.
"""

from __future__ import annotations

from ..scene.cameras import Cameras
from ..config import GuidanceConfig
from ..priors.base import DiffusionPrior
from ..render import Render
from ..rewards.base import RewardModel
from .base import GuidanceOut
from .sds import SDSGuidance


class RewardGradGuidance(SDSGuidance):
    """SDS plus the reward's gradient on the render."""

    TERMS = {"sds": "", "reward": "lambda_r"}

    def __init__(self, cfg: GuidanceConfig, prior: DiffusionPrior, prompt: str, reward: RewardModel,
                 seed: int = 0):
        super().__init__(cfg, prior, prompt, seed)
        self.reward = reward

    def step(self, render: Render, cams: Cameras, step: int, total: int) -> GuidanceOut:
        out = super().step(render, cams, step, total)
        images = render.rgb.permute(0, 3, 1, 2)  # [B, 3, H, W]
        r = self.reward.score(images, [self.prompt] * images.shape[0])
        out.losses["reward"] = self.cfg.lambda_r * -r.mean()
        out.logs["reward"] = r.detach().mean()
        return out
