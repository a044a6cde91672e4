"""psd-gs Gradio front end.

For now a placeholder page: it renders turntable views of a random Gaussian scene so that the
scene, camera and rasteriser path can be seen working end to end. Text-to-3D generation
(``psd_gs.generate``) is not wired up yet.

    python app.py [--host 127.0.0.1] [--port 7860]
"""

from __future__ import annotations

import argparse
from typing import List, Tuple

import gradio as gr
import numpy as np
import torch

from psd_gs.cameras import turntable
from psd_gs.gaussians import GaussianScene
from psd_gs.render import rasterize

TITLE = "psd-gs"

# Size of the demo scene and its views; small enough to render in seconds on a CPU.
N_GAUSSIANS = 2000
N_VIEWS = 4
IMAGE_SIZE = 256


def render_turntable(seed: float | int | None, n_views: int = N_VIEWS, size: int = IMAGE_SIZE,
                     n_gaussians: int = N_GAUSSIANS) -> List[Tuple[np.ndarray, str]]:
    """Turntable views of ``GaussianScene.random`` seeded with ``seed``.

    Returns ``n_views`` (image, caption) pairs, image uint8 [size, size, 3] on a white background.
    Renders on CUDA (gsplat) when available, else on the CPU (PyTorch rasteriser).
    """
    if seed is None or not float(seed).is_integer() or seed < 0:
        raise gr.Error(f"seed must be a whole number >= 0, got {seed!r}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    generator = torch.Generator().manual_seed(int(seed))
    scene = GaussianScene.random(n_gaussians, radius=0.6, init_opacity=0.8, generator=generator, device=device)
    cameras = turntable(n_views, size, size).to(device)
    with torch.no_grad():
        render = rasterize(scene, cameras, background=1.0)
    images = (render.rgb.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()
    return [(img, f"azimuth {az:.0f}°") for img, az in zip(images, cameras.azimuth.tolist())]


def build_demo() -> gr.Blocks:
    """The Gradio page. Builds the UI only; nothing is rendered until the button is pressed."""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {TITLE}\n"
            "Text-to-3D Gaussian splats by score distillation from a 2D diffusion prior, aligned with "
            "human preference by Preference Score Distillation (PSD).\n\n"
            "Generation from a prompt is **not wired up yet**; for now this page renders turntable "
            "views of a random Gaussian scene."
        )
        with gr.Row():
            seed = gr.Number(value=0, label="Seed", precision=0, minimum=0)
            button = gr.Button("Render", variant="primary")
        gallery = gr.Gallery(label="Turntable views", columns=N_VIEWS, format="png")
        button.click(render_turntable, inputs=seed, outputs=gallery, api_name="render")
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the psd-gs Gradio app.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default: %(default)s)")
    args = parser.parse_args(argv)
    build_demo().queue().launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
