"""Hostile task arguments: zero coils, NaN or infinite noise levels, infinite physical constants.

Each bad argument must end in a ``ValueError`` that names it, not in an arithmetic error deep
inside a library or in a measurement full of NaN.
"""

from __future__ import annotations

import pytest
import torch

from invdiff.problems.base import Problem, measure
from invdiff.problems.simulated import ct, ct_prelog, inpaint, mri, mri_operator, phase, sr
from operators import Identity

pytestmark = pytest.mark.hostile

NAN, INF = float("nan"), float("inf")


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("coils", [0, -2, 2.5, True])
def test_mri_task_rejects_bad_coil_counts(coils):
    """``task=mri task.coils=0`` used to end in a ZeroDivisionError inside sigpy's birdcage maps."""
    with pytest.raises(ValueError, match=rf"coils: expected a positive integer, got {coils!r}"):
        mri_operator(16, coils, 4, None, "equispaced", 0)
    with pytest.raises(ValueError, match="coils: expected a positive integer"):
        mri(size=16, coils=coils)


TASKS = {"mri": mri, "ct": ct, "inpaint": inpaint, "sr": sr, "phase": phase}


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("noise_std", [NAN, INF, -1.0])
def test_tasks_reject_bad_noise_levels(task, noise_std):
    with pytest.raises(ValueError, match=r"noise_std: expected a finite number >= 0"):
        TASKS[task](size=16, noise_std=noise_std)


def test_measure_and_problem_name_noise_std():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="noise_std: expected a finite number >= 0, got inf"):
        measure(Identity(), x, INF, 0)
    with pytest.raises(ValueError, match="noise_std: expected a finite number >= 0, got inf"):
        Problem("p", Identity(), x, INF, (1, 1, 4, 4))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"photons": INF}, "photons: expected a finite, positive"),
        ({"mu": INF}, "mu: expected a finite, positive"),
        ({"mu": NAN}, "mu: expected a finite, positive"),
    ],
)
def test_prelog_ct_rejects_infinite_constants(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ct_prelog(size=16, image="phantom", **kwargs)


def test_phase_rejects_infinite_oversampling():
    with pytest.raises(ValueError, match="oversampling: expected a finite ratio >= 1, got inf"):
        phase(size=16, oversampling=INF)
