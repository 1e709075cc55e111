"""Loading mmengine checkpoints under torch>=2.6, where ``torch.load`` defaults to
``weights_only=True``.

mmengine (0.10.7) calls ``torch.load`` without ``weights_only``, so its checkpoints are refused:
their ``message_hub`` holds ``HistoryBuffer`` objects (numpy arrays, and references to the
class's statistics functions pickled through ``getattr``) and numpy scalars. Rather than turning
the safe unpickler off (``weights_only=False`` runs whatever a checkpoint file says):

- ``HistoryBuffer`` is pickled by its constructor arguments (two arrays and an int), so the
  ``getattr`` global, which would let a file reach any attribute, never appears;
- that constructor and the numpy array/scalar globals are allow-listed, nothing else.

Checkpoints written by other mmengine programs (with ``getattr`` inside) still fail to load,
with torch's message; re-save them with this module imported.
"""

from __future__ import annotations

import copyreg

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def _reduce_history_buffer(buffer: HistoryBuffer) -> tuple:
    log_history, count_history = buffer.data
    return HistoryBuffer, (log_history, count_history, buffer.max_length)


def allow_mmengine_checkpoints() -> None:
    """Make mmengine's checkpoints loadable with ``weights_only=True`` (idempotent)."""
    copyreg.pickle(HistoryBuffer, _reduce_history_buffer)
    torch.serialization.add_safe_globals([
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        np.dtypes.Float64DType,
        np.dtypes.Float32DType,
        np.dtypes.Int64DType,
        np._core.multiarray._reconstruct,
        np._core.multiarray.scalar,
    ])
