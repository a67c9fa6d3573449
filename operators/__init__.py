"""Forward models for imaging inverse problems, each with an exact adjoint.

``from operators import MultiCoilMRI`` works without the rest of invdiff; this package never
imports :mod:`invdiff`.
"""

from operators.base import (
    Adjoint,
    CenterCrop,
    Composition,
    Identity,
    Matrix,
    LinearComposition,
    LinearOperator,
    Multiply,
    Operator,
    RealToComplex,
    Scaled,
    Sum,
    adjointness_error,
    as_linear_operator,
)
from operators.cg import batch_dot, conjugate_gradient
from operators.linalg import FiniteDifference, power_iteration
from operators.inpainting import Inpainting, box_mask, freeform_mask, random_pixel_mask
from operators.interop import from_deepinv, to_deepinv
from operators.noise import GaussianNoise, PoissonNoise, estimate_kspace_noise_std
from operators.nonlinear import PhaseRetrieval, TransmissionCT
from operators.superres import SuperResolution
from operators.ct import (
    FanBeamCT,
    ParallelBeamCT,
    ellipse_image,
    ellipse_sinogram,
    fbp,
    limited_angle,
    shepp_logan_ellipses,
    sparse_view_angles,
    uniform_angles,
)
from operators.masks import (
    acceleration_of,
    acs_lines,
    center_lines,
    fastmri_mask,
    line_budget,
    poisson_disc_mask,
    volume_seed,
)
from operators.units import UNIT_KINDS, MeasurementUnits, measurement_units
from operators.mri import (
    MultiCoilMRI,
    SingleCoilMRI,
    coil_combine,
    espirit_maps,
    fft2c,
    ifft2c,
    lowres_coil_maps,
    rss,
)
