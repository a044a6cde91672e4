"""One learned-prior run with dotted overrides; prints its evaluation and the warm rule's verdict.

    .venv/bin/python bench/probes/learned_run.py THREADS NAME PROMPT SEED REWARD [path=value ...] [steps=N]
"""
import sys, json, tempfile, time, torch
from psd_gs.config import preset, apply_overrides
from psd_gs.run.loop import run
from psd_gs.rewards import load_reward
from psd_gs.run.evaluate import eval_cameras, shapes_report
torch.set_num_threads(int(sys.argv[1]))
name, prompt, seed, reward = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
over = dict(a.split("=", 1) for a in sys.argv[6:])
steps = int(over.pop("steps", 400))
cfg = preset("learned", prompt=prompt, seed=seed, steps=steps, reward=reward, out_dir=tempfile.mkdtemp(prefix=f"psd-{name}-"),
             preview_every=0, turntable=False, mesh=False)
apply_overrides(cfg, over)
t0 = time.time()
res = run(cfg)
ev = res.metrics["evaluation"]
rule = shapes_report(res.scene, prompt, load_reward("shapes-warm"), eval_cameras(8, 64))
print(json.dumps({"name": name, "seed": seed, "nearest": ev["nearest"], "psnr": round(ev["psnr"], 2),
                  "reward": round(ev["reward"], 3), "rule": round(rule["reward"], 3), "rule_hit": rule["hit"],
                  "pair": res.metrics.get("pair"), "sec": round(time.time() - t0)}), flush=True)
