"""ssl3d — self-supervised pre-training for 3D point clouds, taught step by step.

Modules (one idea each):
    utils     seeds, checkpoints, input validation, progress bars
    geometry  voxelization, kNN, farthest-point sampling, mesh sampling, rigid transforms
    plot      headless pyvista renders and matplotlib figures written to figures/
    reproduce the notebook runner behind ./reproduce.sh
"""

__version__ = "0.1.0"

from ssl3d.utils import seed_everything  # noqa: E402,F401
