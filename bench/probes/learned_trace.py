"""One learned-prior PSD run that prints, every EVERY-th pair step, t, the nearest cube of the render and of each
candidate's guess (view 0; the winner upper-case), and the rewards: where the choice goes during the window.

    .venv/bin/python bench/probes/learned_trace.py THREADS EVERY PROMPT SEED REWARD [path=value ...] [steps=N]
"""
import sys, tempfile, torch
from psd_gs.config import preset, apply_overrides
from psd_gs.guidance.psd import PSDGuidance
from psd_gs.priors.analytic import AnalyticPrior
from psd_gs.run.loop import run
torch.set_num_threads(int(sys.argv[1]))
every, prompt, seed, reward = int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
over = dict(a.split("=", 1) for a in sys.argv[6:])
steps = int(over.pop("steps", 400))
cfg = preset("learned", prompt=prompt, seed=seed, steps=steps, reward=reward, out_dir=tempfile.mkdtemp(prefix="psd-trace-"),
             preview_every=0, turntable=False, mesh=False)
apply_overrides(cfg, over)
world = AnalyticPrior()
allowed = world.world.select(prompt)
names = [world.world.objects[i].name for i in allowed]
original, count = PSDGuidance.build_pair, [0]

def nearest(self, z, cams):  # z [M, C, h, w] of view-0 camera -> names
    mu = world.render_objects(cams[:1])[0, allowed].flatten(1).float()  # [A, HW3]
    img = self.prior.decode_latents(z).permute(0, 2, 3, 1).flatten(1)
    return [names[i].split()[0] for i in torch.cdist(img, mu).argmin(1)]

def build_pair(self, z0, t, cams):
    pair = original(self, z0, t, cams)
    count[0] += 1
    if count[0] % every == 1 or every == 1:
        cand = nearest(self, pair.x0[:, 0], cams)
        w = int(pair.win[0])
        cand = [c.upper() if i == w else c for i, c in enumerate(cand)]
        print(f"pair {count[0]:4d} t={t} render={nearest(self, z0[:1], cams)[0]:7s} "
              f"guesses {' '.join(cand)} R {' '.join(f'{r:+.2f}' for r in pair.reward.mean(1).tolist())} "
              f"inf={bool(pair.informative[0])} u={float(pair.norm_gap[0]):.2f}", flush=True)
    return pair

PSDGuidance.build_pair = build_pair
res = run(cfg)
ev = res.metrics["evaluation"]
print({"nearest": ev["nearest"], "psnr": round(ev["psnr"], 2)}, flush=True)
