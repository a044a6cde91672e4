"""The held-out evaluation suite: every finished run of a batch judged by rewards it was not trained with.

Scoring an object with the reward it was optimised for is circular (PSD and the reward-gradient
baseline raise it by construction). ``evaluate_suite(batch_dir, judges)`` renders N orbit views of
each done run (``evaluate.eval_cameras``: elevation 20, off the training grid), and

- scores them with every judge except the run's own training reward (that cell stays empty), the
  mean over views being the run's score;
- measures R-precision: how often a view's own prompt matches it best among all the batch's prompts
  (the prior's ``retrieve`` hook: CLIP ViT-L/14 cosine in the image world, ``clip_retrieval``; in the
  shapes world the CLIP judge trained there, ``learned_clip_retrieval``; ties count as a match), averaged
  over views. (``evaluate.shapes_retrieval``, the nearest allowed object's PSNR, is the exact answer the
  judge is measured against.)

It writes ``suite.json`` (per run and per method) and ``suite.md`` (the table: per method, mean ± sample
standard deviation across runs, and the number of runs) into the batch folder. Judges default to
every reward of the runs' world: in the shapes world the colour and shape preferences and the two
learned rewards, each judging the runs trained with the others.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from .runner import BatchIndex, batch_jobs
from .report import fmt_mean_sd, markdown
from ..config import RunConfig
from ..run.export import write_json
from ..registry import PRIORS, REWARDS, resolve, rewards_for

SUITE_JSON, SUITE_MD = "suite.json", "suite.md"


def clip_retrieval(views: torch.Tensor, cams, prompts: Sequence[str], load_reward, judge: str = "clip"
                   ) -> torch.Tensor:
    """[V, P] cosine of a CLIP judge (default the "clip" reward, CLIP ViT-L/14) between each view [V, H, W, 3]
    in [0, 1] and each prompt."""
    clip = load_reward(judge)
    with torch.no_grad():
        image = clip.image_features(views.permute(0, 3, 1, 2))  # [V, D] unit vectors
        text = clip.text_features(list(prompts))  # [P, D]
    return (image @ text.T).float().cpu()


def learned_clip_retrieval(views: torch.Tensor, cams, prompts: Sequence[str], load_reward) -> torch.Tensor:
    """``clip_retrieval`` by the shapes world's CLIP judge trained here ("learned-clip", issue 25)."""
    return clip_retrieval(views, cams, prompts, load_reward, judge="learned-clip")


def r_precision(scores: torch.Tensor, own: int) -> float:
    """Fraction of views (rows of ``scores`` [V, P]) whose best prompt is ``own`` (a tie counts)."""
    return (scores[:, own] >= scores.max(dim=1).values).float().mean().item()


def suite_judges(world: str, names: Optional[Sequence[str]]) -> List[str]:
    """The judges to use: ``names`` checked against the registry and the runs' world, or every reward of
    that world. ValueError names an unknown judge or one that cannot score the world's images."""
    if not names:
        return list(rewards_for(world))
    for name in names:
        if name not in REWARDS:
            raise ValueError(f"unknown judge {name!r} (--judges); known rewards: {', '.join(sorted(REWARDS))}")
        if world not in REWARDS[name].worlds:
            raise ValueError(f"judge {name!r} does not score the {world} world's images; choose from "
                             f"{', '.join(rewards_for(world))}")
    return list(dict.fromkeys(names))


def _runs(batch_dir: Path) -> List[Dict[str, Any]]:
    """Done runs of the batch with their config: [{"id", "method", "folder", "cfg"}]."""
    index = BatchIndex(batch_dir)
    if not index.path.is_file():
        raise ValueError(f"{batch_dir} has no {index.path.name}; pass a folder written by `python -m psd_gs batch`")
    runs = []
    for entry in batch_jobs(index, "done"):
        folder = batch_dir / entry["folder"]
        if (folder / "scene.ply").is_file() and (folder / "config.json").is_file():
            cfg = RunConfig.from_dict(json.loads((folder / "config.json").read_text()))
            runs.append({"id": entry["id"], "method": entry["job"]["method"], "folder": folder, "cfg": cfg})
    if not runs:
        raise ValueError(f"{batch_dir} has no finished runs yet; run the batch first")
    return runs


def evaluate_suite(batch_dir: str | Path, judges: Optional[Sequence[str]] = None, views: int = 8,
                   resolution: Optional[int] = None, device: str = "auto",
                   load_reward: Optional[Callable[[str], Any]] = None) -> Dict[str, Any]:
    """Judge every done run of ``batch_dir`` (module docstring); returns what suite.json holds:
    {"judges", "prompts", "views", "retrieval", "runs": [{"id", "method", "prompt", "trained_with",
    "scores": {judge: mean over views}, "r_precision"}], "methods": [table rows]}. ``load_reward(name)``
    gives the judges and the retriever's model (default: each reward's own weights on ``device``, loaded once)."""
    # 1. Check inputs: the runs, one world, the judges
    from ..device import resolve_device
    from ..run.evaluate import eval_cameras, render_views
    from ..run.models import ModelCache
    from ..scene.ply import load_ply

    batch_dir = Path(batch_dir)
    if views < 1:
        raise ValueError(f"views {views}: must be >= 1")
    runs = _runs(batch_dir)
    worlds = {PRIORS[r["cfg"].prior.name].world for r in runs}
    if len(worlds) > 1:
        raise ValueError(f"{batch_dir} mixes runs of the {' and '.join(sorted(worlds))} worlds; judge each world's "
                         f"runs in a batch folder of its own")
    world = worlds.pop()
    judges = suite_judges(world, judges)
    prompts = list(dict.fromkeys(r["cfg"].prompt for r in runs))
    device = resolve_device(device)
    if load_reward is None:
        models = ModelCache(max_rewards=len(judges) + 1)

        def load_reward(name: str):
            return models.reward(name, device)
    retrieve_ref = PRIORS[runs[0]["cfg"].prior.name].retrieve

    # 2. Render each run's views, score with its held-out judges, retrieve its prompt
    results = []
    for run in runs:
        cfg = run["cfg"]
        res = resolution or cfg.camera.resolution[-1][1]
        cams = eval_cameras(views, res, cfg.camera.radius[0], cfg.camera.fovy[0])
        rgb = render_views(load_ply(run["folder"] / "scene.ply", device=device), cams)
        scores = {}
        for judge in judges:
            if judge != cfg.reward:
                with torch.no_grad():
                    per_view = load_reward(judge).score(rgb.permute(0, 3, 1, 2), [cfg.prompt] * views)
                scores[judge] = per_view.float().mean().item()
        r_prec = None
        if retrieve_ref and len(prompts) > 1:
            matrix = resolve(retrieve_ref)(rgb, cams, prompts, load_reward)
            r_prec = r_precision(matrix, prompts.index(cfg.prompt))
        results.append({"id": run["id"], "method": run["method"], "prompt": cfg.prompt, "trained_with": cfg.reward,
                        "scores": scores, "r_precision": r_prec})

    # 3. The table per method, suite.json and suite.md
    rows = []
    for method in dict.fromkeys(r["method"] for r in results):
        mine = [r for r in results if r["method"] == method]
        row = {"method": method, "runs": str(len(mine))}
        for judge in judges:
            row[judge] = fmt_mean_sd([r["scores"][judge] for r in mine if judge in r["scores"]])
        if retrieve_ref and len(prompts) > 1:
            row["R-precision"] = fmt_mean_sd([r["r_precision"] for r in mine], 2)
        rows.append(row)
    report = {"judges": judges, "prompts": prompts, "views": views, "retrieval": retrieve_ref or None,
              "runs": results, "methods": rows}
    write_json(batch_dir / SUITE_JSON, report)
    note = (f"{len(results)} runs, {views} views each, judges {', '.join(judges)} (a run is not judged by the reward "
            f"it was trained with); R-precision among {len(prompts)} prompts by {retrieve_ref or 'nothing'}. "
            f"Cells: mean ± sd across runs (runs).\n\n")
    (batch_dir / SUITE_MD).write_text(note + markdown(rows))
    return report
