"""What PSD's pairs see and do through the learned prior, on fixed 4-view renders: per state and t,
(a) do the candidates' guesses name different cubes, (b) does the reward's winner agree with the warm rule,
(c) which way (by the rule, on the decoded latent) a small descent step along each term moves the colour."""
import sys, tempfile, torch
from psd_gs.config import preset, apply_overrides
from psd_gs.priors.learned import load_learned_prior
from psd_gs.priors.analytic import AnalyticPrior
from psd_gs.scene.cameras import sample_orbit
from psd_gs.guidance.psd import PSDGuidance
from psd_gs.rewards import load_reward
torch.set_num_threads(int(sys.argv[1]))
over = dict(a.split("=", 1) for a in sys.argv[2:])
reps = int(over.pop("reps", 8)); ts = [int(x) for x in over.pop("ts", "650,800,900").split(",")]
states = over.pop("states", "ball,mix,yellow,green").split(",")
cfg = preset("learned", prompt="a cube"); rew = over.pop("reward", "learned-hps")
apply_overrides(cfg, over)
prior = load_learned_prior(cfg.prior, "cpu")
reward, rule = load_reward(rew), load_reward("shapes-warm")
world = AnalyticPrior(); names = [o.name for o in world.world.objects]
cubes = [names.index(n) for n in ("red cube", "yellow cube", "green cube", "blue cube")]
cams = sample_orbit(4, 64, 64, generator=torch.Generator().manual_seed(1))
objs = world.render_objects(cams).clamp(0, 1)  # [B, K, H, W, 3]
enc = lambda rgb: prior.encode_images(rgb.permute(0, 3, 1, 2)).detach()
dec = lambda z: prior.decode_latents(z)  # [M, 3, H, W]
score = lambda z: rule.score(dec(z), ["a cube"] * len(z)).view(-1)
def name(z):  # nearest cube per view, z [B, ...]
    img = dec(z).permute(0, 2, 3, 1)
    dist = ((img[:, None] - objs[:, cubes]) ** 2).flatten(2).mean(2)
    return [n.split()[0][0] for n in (names[cubes[i]] for i in dist.argmin(1))]
# an initial ball as the run makes it (seed 0's random colour): render the run's initial scene
from psd_gs.scene.gaussians import GaussianScene
from psd_gs.render import rasterize
g = PSDGuidance(cfg.guidance, prior, "a cube", reward, seed=0)
S = {"green": objs[:, cubes[2]], "yellow": objs[:, cubes[1]], "mix": 0.5 * objs[:, cubes[0]] + 0.5 * objs[:, cubes[2]]}
if "ball" in states:
    from psd_gs.run.loop import run
    c0 = preset("learned", prompt="a cube", steps=1, out_dir=tempfile.mkdtemp(prefix="psd-ball-"), preview_every=0, turntable=False, mesh=False)
    c0.guidance.method = "sds"; res = run(c0, prior=prior)
    from psd_gs.render import rasterize as rz
    S["ball"] = rz(res.scene, cams, torch.ones(3)).rgb.clamp(0, 1)
for state in states:
    z0 = enc(S[state]); base = float(score(z0).mean())
    for t in ts:
        a = g.alpha(t); agree = differ = 0; dr_sds = dr_pair = rg = 0.0; named = []
        for rep in range(reps):
            pair = g.build_pair(z0, t, cams)
            w, l = pair.pick(pair.x0, True), pair.pick(pair.x0, False)
            rw, rl = float(score(w).mean()), float(score(l).mean())
            agree += rw > rl; rg += rw - rl
            nm = [name(pair.x0[i]) for i in range(pair.x0.shape[0])]
            wi = int(pair.win[0])
            named.append("".join(x[0].upper() if i == wi else x[0] for i, x in enumerate(nm)))
            differ += len(set(x[0] for x in nm)) > 1
            res = pair.eps_s - pair.eps
            sds = (1 - a) * pair.pick(res, True)
            term = (a * (1 - a)).sqrt() * (l - w)
            step = lambda v: z0 - 0.5 * v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            dr_sds += float(score(step(sds)).mean()) - base; dr_pair += float(score(step(term)).mean()) - base
        n = reps
        print(f"{state:6s} t={t} rule(render) {base:+.3f} | winner agrees with rule {agree}/{n}, rule gap {rg/n:+.3f} | "
              f"guesses differ {differ}/{n} {' '.join(named)} | d rule: sds {dr_sds/n:+.4f} pair {dr_pair/n:+.4f}", flush=True)
