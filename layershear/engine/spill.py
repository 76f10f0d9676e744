"""Hidden states spilled to disk: tensors backed by memory-mapped files, for states that fit in
neither device nor host memory (:func:`layershear.engine.streamed.plan_streaming`).

Each state gets its own file in the spill folder, allocated in full before it is written
(``posix_fallocate``: a full disk is an error now, not a crash later) and unlinked at once: the
mapping keeps the data while the tensor lives, and the space is freed when the tensor is (also when
the process dies). The pages are the kernel's page cache, written back to the file and dropped
under memory pressure, so they do not count against the process's anonymous memory.
"""

from __future__ import annotations

import os
import tempfile

import torch

from layershear.errors import LayershearError

#: environment variable naming the folder states spill to (default: the system's temporary folder)
SPILL_DIR_ENV = "LAYERSHEAR_SPILL_DIR"


def spill_dir() -> str:
    """The folder states spill to: ``$LAYERSHEAR_SPILL_DIR``, else the system's temporary folder."""
    return os.environ.get(SPILL_DIR_ENV) or tempfile.gettempdir()


def spilled(state: torch.Tensor, folder: str) -> torch.Tensor:
    """A copy of ``state`` (any device, dtype and shape) in a memory-mapped file in ``folder``, on the CPU.

    Raises:
        LayershearError: ``folder`` is missing, not writable, or has no room for the state.
    """
    nbytes = state.numel() * state.element_size()
    try:
        fd, path = tempfile.mkstemp(dir=folder, prefix="layershear-state-")
    except OSError as e:
        raise LayershearError(f"cannot write spilled hidden states to {folder} ({e.strerror}); "
                              f"set {SPILL_DIR_ENV} to a writable folder") from e
    try:
        if nbytes:
            os.posix_fallocate(fd, 0, nbytes)
        out = torch.from_file(path, shared=True, size=state.numel(), dtype=state.dtype)
    except OSError as e:
        raise LayershearError(f"no room for {nbytes / 2**20:.1f} MiB of spilled hidden states in {folder} "
                              f"({e.strerror}); set {SPILL_DIR_ENV} to a larger disk") from e
    finally:
        os.close(fd)
        os.unlink(path)
    return out.view(state.shape).copy_(state)
