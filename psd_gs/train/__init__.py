"""Training the small models psd-gs ships, in the real architectures and file formats (docs/design.md
section 10): ``data`` (the shapes world's renders and captions), ``tokenizer`` (a CLIP BPE tokenizer over
the world's words), ``prior`` (a latent diffusion model in Stable Diffusion's classes)."""

from pathlib import Path

#: the learned prior's diffusers folder, shipped with the package (``python -m psd_gs train-prior`` writes it)
SHIPPED_PRIOR = Path(__file__).resolve().parent.parent / "assets" / "learned_prior"
