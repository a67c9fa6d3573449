"""Crash-safe file writes (a reader sees the old file or the whole new one, never a partial one)
and strict JSON.

Every writer in the project goes through :func:`atomic_path` (directly for writers that need a
path to open, such as ``h5py.File``, or through :func:`atomic_write`, :func:`atomic_write_text`
and :func:`atomic_save_npy`): the data go to a temporary sibling ``.<name>.tmp<pid>`` of the
destination, which is renamed over the destination with ``os.replace`` once the write has
finished and removed if it fails.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, *, mkdir: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write, renamed over ``path`` on success, removed on failure.

    The temporary name, ``.<name>.tmp<pid>`` in ``path``'s folder, carries the process id, so
    concurrent writers (ranks, launcher jobs) never share a temporary file; being in the same
    folder, the final ``os.replace`` is an atomic rename on the same file system.

    Example::

        with atomic_path(out / "volume.h5", mkdir=True) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("kspace", data=kspace)

    Args:
        path: the destination file.
        mkdir: create ``path``'s folder (and its parents) first; otherwise it must exist.

    Yields:
        the temporary path to write; the body must have closed it before the block ends.

    Raises:
        FileNotFoundError: ``path``'s folder does not exist and ``mkdir`` is false (raised by the
            body's first write to the temporary path).
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, mkdir: bool = False) -> None:
    """Call ``write`` on a temporary name beside ``path``, then rename it over ``path``
    (:func:`atomic_path`); the temporary file is removed on failure.

    Args:
        path: the destination file.
        write: writes the whole file to the path it is given.
        mkdir: create ``path``'s folder first.
    """
    with atomic_path(path, mkdir=mkdir) as tmp:
        write(tmp)


def atomic_write_text(path: str | os.PathLike, text: str, *, mkdir: bool = False) -> None:
    """``path.write_text(text)``, atomically (:func:`atomic_path`)."""
    atomic_write(path, lambda tmp: tmp.write_text(text), mkdir=mkdir)


def atomic_save_npy(path: str | os.PathLike, array, *, mkdir: bool = False) -> None:
    """``np.save(path, array)``, atomically (:func:`atomic_path`); through a file object, as
    ``np.save`` would append ``.npy`` to the temporary name."""
    import numpy as np

    with atomic_path(path, mkdir=mkdir) as tmp, tmp.open("wb") as f:
        np.save(f, array)


def json_safe(value):
    """``value`` with non-finite floats as ``None`` and dict keys as strings, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
