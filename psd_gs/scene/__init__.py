"""The scene's data types: the Gaussians (``gaussians``), the cameras that see them (``cameras``) and the
standard 3DGS ``.ply`` they are read from and written to (``ply``). Everything else builds on these."""

from .cameras import Cameras, make_cameras, orbit_grid, sample_orbit, turntable
from .gaussians import PARAM_NAMES, GaussianScene
from .ply import load_ply, save_ply

__all__ = ["Cameras", "make_cameras", "orbit_grid", "sample_orbit", "turntable", "PARAM_NAMES", "GaussianScene",
           "load_ply", "save_ply"]
