"""Does a pull in the latent move the pixels? Pixels of the seed-0 initial ball (4 views) optimised by Adam for 60
steps toward (a) the red cube's own latent, (b) the winner's 4-step guess, each in the latent (through the encoder) or
in pixels (toward the decoded target); prints the pixels' nearest cube per view, the warm rule, and the decoded latent's
nearest cube.   .venv/bin/python bench/probes/latent_vs_pixel_pull.py
"""
import sys, tempfile, torch
from psd_gs.config import preset, apply_overrides
from psd_gs.priors.learned import load_learned_prior
from psd_gs.priors.analytic import AnalyticPrior
from psd_gs.scene.cameras import sample_orbit
from psd_gs.guidance.psd import PSDGuidance
from psd_gs.rewards import load_reward
from psd_gs.run.loop import run
from psd_gs.render import rasterize
torch.set_num_threads(1)
cfg = preset("learned", prompt="a cube")
apply_overrides(cfg, ["guidance.n_candidates=4","guidance.guess_steps=4","guidance.rank_by=view"])
prior = load_learned_prior(cfg.prior, "cpu")
rule = load_reward("shapes-warm"); reward = load_reward("learned-hps")
world = AnalyticPrior(); names = [o.name for o in world.world.objects]
cubes = [names.index(n) for n in ("red cube", "yellow cube", "green cube", "blue cube")]
cams = sample_orbit(4, 64, 64, generator=torch.Generator().manual_seed(1))
objs = world.render_objects(cams).clamp(0, 1)
c0 = preset("learned", prompt="a cube", steps=1, out_dir=tempfile.mkdtemp(prefix="psd-ball-"), preview_every=0, turntable=False, mesh=False)
c0.guidance.method = "sds"; res = run(c0, prior=prior)
ball = rasterize(res.scene, cams, torch.ones(3)).rgb.clamp(0, 1).detach()  # [B,H,W,3]
enc = lambda x: prior.encode_images(x.permute(0, 3, 1, 2))
def name(img):
    d = ((img[:, None] - objs[:, cubes]) ** 2).flatten(2).mean(2)
    return "".join("rygb"[i] for i in d.argmin(1))
g = PSDGuidance(cfg.guidance, prior, "a cube", reward, seed=0)
with torch.no_grad():
    pair = g.build_pair(enc(ball), 900, cams)
    guess = pair.pick(pair.x0, True)
    print("winner guesses", name(prior.decode_latents(guess).permute(0,2,3,1)))
targets = {"red_latent": enc(objs[:, cubes[0]]).detach(), "guess": guess}
a = g.alpha(900); c = (a*(1-a)).sqrt()
for tname, zt in targets.items():
  for mode in ("latent", "pixel"):
    logit = torch.logit(ball.clamp(0.02, 0.98)).clone().requires_grad_(True)
    opt = torch.optim.Adam([logit], lr=0.05)
    for it in range(61):
        x = torch.sigmoid(logit)
        if mode == "latent":
            z = enc(x); gz = c * (z - zt)
            loss = 0.5 * (z - (z - gz).detach()).square().sum()
        else:
            loss = 0.5 * (x - prior.decode_latents(zt).permute(0,2,3,1).detach()).square().sum()
        opt.zero_grad(); loss.backward(); opt.step()
        if it % 20 == 0:
            with torch.no_grad():
                print(tname, mode, it, name(x), f"rule {float(rule.score(x.permute(0,3,1,2)).mean()):+.3f}", "decoded", name(prior.decode_latents(enc(x)).permute(0,2,3,1)), flush=True)
