"""Adding a prior, a reward and a method is one module each plus a registry entry: a throwaway of each,
written into the test's temp folder, is offered by the CLI, the app's choices and fetch-weights, and runs."""

import json
import textwrap

import pytest

from psd_gs.app import page, world
from psd_gs import registry
from psd_gs.cli.main import build_parser, main
from psd_gs.registry import MethodEntry, PriorEntry, RewardEntry

REWARD_MODULE = '''
"""A throwaway reward: prefers bright images."""
import torch
from psd_gs.rewards.base import RewardModel


class Bright(RewardModel):
    name = "throwaway-bright"

    def score(self, images, prompts=()):
        return images.float().mean(dim=(1, 2, 3))


def load(device=None):
    return Bright()


def weight_files():
    return [("someone/throwaway-reward", "bright.safetensors")]
'''

METHOD_MODULE = '''
"""A throwaway method: SDS at half strength."""
from psd_gs.guidance.sds import SDSGuidance


class HalfSDS(SDSGuidance):
    def step(self, render, cams, step, total):
        out = super().step(render, cams, step, total)
        out.losses["sds"] = 0.5 * out.losses["sds"]
        return out
'''

PRIOR_MODULE = '''
"""A throwaway prior: latents are N(0, I), so the optimal noise prediction is sqrt(1 - a_t) z_t."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from psd_gs.config import knob, prior_options
from psd_gs.priors.analytic import sd_alphas_cumprod
from psd_gs.priors.base import DiffusionPrior


@dataclass
class Options:
    pool: int = knob(4, "encoder pooling factor", minimum=1)


class Flat(DiffusionPrior):
    def __init__(self, pool, device):
        self.pool, self.device = pool, torch.device(device)
        self.num_train_timesteps = 1000
        self.alphas_cumprod = sd_alphas_cumprod().to(self.device)

    def encode_prompt(self, text):
        return torch.zeros(1, 1, device=self.device)

    def encode_images(self, rgb):
        return 2 * F.avg_pool2d(rgb.float(), self.pool) - 1

    def decode_latents(self, z):
        return ((F.interpolate(z, scale_factor=self.pool) + 1) / 2).clamp(0, 1)

    def predict_noise(self, z_t, t, emb, cameras):
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (1 - a).sqrt() * z_t + 0 * emb.sum()


def load(prior, device="cpu"):
    return Flat(prior_options(prior).pool, device)


def weight_files(prior):
    return [("someone/throwaway-prior", "flat.safetensors")]
'''


@pytest.fixture
def throwaways(tmp_path, monkeypatch):
    for name, text in (("throwaway_reward", REWARD_MODULE), ("throwaway_method", METHOD_MODULE),
                       ("throwaway_prior", PRIOR_MODULE)):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.REWARDS, "bright", RewardEntry(
        "throwaway_reward:load", ("shapes",), "Bright", "prefers bright images", files="throwaway_reward:weight_files"))
    monkeypatch.setitem(registry.METHODS, "half_sds", MethodEntry(
        "throwaway_method:HalfSDS", False, "Half SDS", "SDS at half strength"))
    monkeypatch.setitem(registry.PRIORS, "flat", PriorEntry(
        "throwaway_prior:load", "throwaway_prior:Options", "shapes", "Flat", "latents N(0, I)",
        files="throwaway_prior:weight_files"))
    return tmp_path


def test_the_cli_offers_and_runs_them(throwaways, capsys):
    sub = build_parser()._subparsers._group_actions[0].choices["generate"]
    choices = {a.dest: a.choices for a in sub._actions if a.choices}
    assert "bright" in choices["reward"] and "half_sds" in choices["method"] and "flat" in choices["prior"]
    out = throwaways / "runs"
    code = main(["generate", "a red cube", "--prior", "flat", "--method", "half_sds", "--reward", "bright",
                 "--set", "prior.options.pool=2", "--steps", "3", "--resolution", "16", "--turntable-views", "2",
                 "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    (run_dir,) = out.iterdir()
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["prior"] == {"name": "flat", "source": "", "options": {"pool": 2}}
    assert cfg["guidance"]["method"] == "half_sds" and "half_sds" in run_dir.name
    assert json.loads((run_dir / "metrics.json").read_text())["steps_done"] == 3
    assert "evaluation" not in json.loads((run_dir / "metrics.json").read_text())  # the flat world has no report


def test_fetch_weights_lists_their_files(throwaways, capsys):
    assert main(["fetch-weights", "--prior", "flat", "--rewards", "bright", "--check"]) == 2
    out = capsys.readouterr().out
    assert "missing  someone/throwaway-prior/flat.safetensors" in out
    assert "missing  someone/throwaway-reward/bright.safetensors" in out


def test_the_app_offers_them(throwaways):
    demo = page.build_demo("shapes", "test", runs_root=str(throwaways / "app-runs"))
    by_label = {getattr(b, "label", None): b for b in demo.blocks.values()}
    assert "half_sds" in [v for _, v in by_label["Method"].choices]
    assert "bright" in [v for _, v in by_label["Reward model"].choices]
    priors = dict((v, label) for label, v in by_label["Prior"].choices)
    assert priors["flat"] == "Flat (weights not cached)" and "shapes" in priors
    cfg = world.make_config("shapes", "runs", {"prompt": "a cube", "prior.name": "flat", "guidance.method": "half_sds",
                                              "reward": "bright"})
    assert (cfg.prior.name, cfg.prior.options, cfg.guidance.method) == ("flat", {"pool": 4}, "half_sds")
