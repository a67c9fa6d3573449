"""fastMRI files: read, write and prepare multi-coil and single-coil k-space volumes.

* :mod:`~invdiff.data.fastmri.io`: the file layout (training, validation and prospective test
  files), the :class:`FastMRIVolume` and :class:`FastMRISlice` containers, reading (whole volumes,
  one slice, k-space columns or rows of every slice), atomic writing, folder scans, and ESPIRiT coil
  maps cached next to the data;
* :mod:`~invdiff.data.fastmri.header`: the ISMRMRD header (write a minimal one, read what fastMRI
  reads, the reconstruction size);
* :mod:`~invdiff.data.fastmri.transforms`: centre crops, RSS targets in fastMRI's order of
  operations, readout oversampling and normalisation.

Everything public is importable from here, e.g. ``from invdiff.data.fastmri import read_slice``.
"""

from invdiff.data.fastmri.header import (
    ISMRMRD_NAMESPACE,
    make_ismrmrd_header,
    parse_ismrmrd_header,
    recon_shape,
)
from invdiff.data.fastmri.io import (
    MAPS_CACHE_SUFFIX,
    FastMRISlice,
    FastMRIVolume,
    check_kspace,
    coil_maps,
    iter_volumes,
    load_folder,
    maps_cache_path,
    open_h5,
    read_header,
    read_kspace_columns,
    read_kspace_rows,
    read_mask,
    read_slice,
    read_volume,
    write_reconstructions,
    write_volume,
)
from invdiff.data.fastmri.transforms import (
    center_crop,
    complex_center_crop,
    fft1c,
    ifft1c,
    normalise,
    reconstruct_rss,
    remove_readout_oversampling,
)

__all__ = [
    "FastMRISlice",
    "FastMRIVolume",
    "ISMRMRD_NAMESPACE",
    "MAPS_CACHE_SUFFIX",
    "center_crop",
    "check_kspace",
    "coil_maps",
    "complex_center_crop",
    "fft1c",
    "ifft1c",
    "iter_volumes",
    "load_folder",
    "make_ismrmrd_header",
    "maps_cache_path",
    "normalise",
    "open_h5",
    "parse_ismrmrd_header",
    "read_header",
    "read_kspace_columns",
    "read_kspace_rows",
    "read_mask",
    "read_slice",
    "read_volume",
    "recon_shape",
    "reconstruct_rss",
    "remove_readout_oversampling",
    "write_reconstructions",
    "write_volume",
]
