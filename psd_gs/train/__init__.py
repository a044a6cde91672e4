"""Training the small models psd-gs ships, in the real architectures and file formats (docs/design.md
section 10): ``data`` (the shapes world's renders and captions), ``tokenizer`` (a CLIP BPE tokenizer over
the world's words), ``prior`` (a latent diffusion model in Stable Diffusion's classes), ``reward`` with
``reward_data`` and ``reward_eval`` (the learned rewards: a CLIP judge and a preference reward in HPS v2.1's
architecture)."""

from pathlib import Path

#: the learned prior's diffusers folder, shipped with the package (``python -m psd_gs train-prior`` writes it)
SHIPPED_PRIOR = Path(__file__).resolve().parent.parent / "assets" / "learned_prior"
#: the learned rewards, hps/ and clip/, shipped with the package (``python -m psd_gs train-reward`` writes them)
SHIPPED_REWARDS = Path(__file__).resolve().parent.parent / "assets" / "learned_rewards"
