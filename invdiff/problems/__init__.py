"""Problems: what a reconstruction method runs on, simulated from a held-out image or read from a file.

:class:`Problem` (:mod:`invdiff.problems.base`) holds the operator, the measurement, the noise
level, an optional reference and the display rules. Simulated tasks (2D:
:mod:`invdiff.problems.simulated`; volumes: :mod:`invdiff.problems.volumes`) build one from a
held-out ground truth or a user's image file (:mod:`invdiff.problems.images`); file problems
build one from a user's measurement (fastMRI k-space: :mod:`invdiff.problems.fastmri`; a CT
sinogram: :mod:`invdiff.problems.ct_files`).
"""

from invdiff.problems.base import Problem, measure, simulated
from invdiff.problems.ct_files import ct_sinogram, read_sinogram, write_sinogram
from invdiff.problems.fastmri import fastmri, fastmri_problem
from invdiff.problems.simulated import SIMULATED, ct, ct_prelog, ct_projections, inpaint, mri, mri_operator, phase, sr
from invdiff.problems.volumes import brain_volume, ct3d, mri3d, phantom_volume

PROBLEMS = {**SIMULATED, "ct3d": ct3d, "mri3d": mri3d, "fastmri": fastmri, "ct_sinogram": ct_sinogram}
"""Task functions by name: the simulated tasks and the file problems."""

__all__ = [
    "PROBLEMS",
    "Problem",
    "SIMULATED",
    "brain_volume",
    "ct",
    "ct3d",
    "ct_sinogram",
    "ct_prelog",
    "ct_projections",
    "fastmri",
    "fastmri_problem",
    "inpaint",
    "measure",
    "mri",
    "mri3d",
    "mri_operator",
    "phantom_volume",
    "phase",
    "read_sinogram",
    "simulated",
    "sr",
    "write_sinogram",
]
