"""The protocol's tensor datatypes and their NumPy equivalents (little-endian, as on the wire)."""

from __future__ import annotations

import numpy as np

BYTES = "BYTES"

# Binary tensor data is little-endian, row major, no padding: these dtypes read it as sent.
NUMERIC: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}

KNOWN = frozenset({*NUMERIC, BYTES})
