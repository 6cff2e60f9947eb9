"""Feature maps for the HTTP layer: which layers, their statistics, JSON and npz bodies.

It knows NumPy and the layer list, nothing about torch or HTTP. Bodies that
can be large are produced as a list of chunks (JSON) or a generator (npz) so
that the router can stream them, and their exact size is known before the
first byte goes out: a body over the limit is refused with a 413 that says
how large it would have been.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import numpy as np
import orjson
from numpy.typing import NDArray

from models.feature_layer import FeatureLayer
from service.errors import InvalidParameter, ResponseTooLarge, ServiceError, UnknownLayer

# The shortest a float can be in JSON ("0.0" and a separator): a lower bound on the size.
_MIN_JSON_BYTES_PER_VALUE = 4
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
# Printable ASCII stays as it is in a header; '%', non-ASCII and anything else is %XX-encoded
# as UTF-8 (RFC 3986), so urllib.parse.unquote gives the label back exactly.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class NotConvolution(ServiceError):
    status, code, title = (
        422,
        "not_convolution",
        "The layer is not a convolution: it has no kernels",
    )


class LayerIndex:
    """A model's feature-map layers by name, with errors that list the valid names."""

    def __init__(self, layers: Sequence[FeatureLayer]) -> None:
        self.layers = tuple(layers)
        self._by_name = {layer.name: layer for layer in self.layers}
        self._order = {layer.name: i for i, layer in enumerate(self.layers)}

    def _unknown(self, names: Sequence[str]) -> UnknownLayer:
        valid = ", ".join(self._by_name) or "none (this model offers no feature maps)"
        shown = ", ".join(repr(n) for n in names)
        return UnknownLayer(f"unknown layer {shown}; valid layers: {valid}")

    def get(self, name: str) -> FeatureLayer:
        layer = self._by_name.get(name)
        if layer is None:
            raise self._unknown([name])
        return layer

    def select(self, text: str | None) -> list[FeatureLayer]:
        """'conv1,relu2' -> those layers in forward order; None or empty: every layer."""
        names = [part.strip() for part in (text or "").split(",") if part.strip()]
        if not names:
            if not self.layers:
                raise self._unknown(["(any)"])
            return list(self.layers)
        unknown = [name for name in names if name not in self._by_name]
        if unknown:
            raise self._unknown(unknown)
        return [self._by_name[name] for name in sorted(set(names), key=self._order.__getitem__)]

    def kernels_of(self, name: str) -> FeatureLayer:
        layer = self.get(name)
        if not layer.has_kernels:
            with_kernels = ", ".join(entry.name for entry in self.layers if entry.has_kernels)
            raise NotConvolution(
                f"layer {name!r} is a {layer.type}, not a convolution; "
                f"layers with kernels: {with_kernels or 'none'}"
            )
        return layer


def channel_stats(maps: NDArray[np.float32]) -> dict[str, list[float]]:
    """Per-channel mean, std, min, max and fraction of exact zeros (dead units after a ReLU)."""
    flat = maps.reshape(maps.shape[0], -1)
    count = max(flat.shape[1], 1)
    return {
        "mean": flat.mean(axis=1, dtype=np.float64).tolist(),
        "std": flat.std(axis=1, dtype=np.float64).tolist(),
        "min": flat.min(axis=1).astype(np.float64).tolist(),
        "max": flat.max(axis=1).astype(np.float64).tolist(),
        "zeros": (np.count_nonzero(flat == 0, axis=1) / count).tolist(),
    }


def _too_large(size: int, what: str, limit: int, *, at_least: bool = False) -> ResponseTooLarge:
    amount = f"at least {size}" if at_least else str(size)
    return ResponseTooLarge(
        f"the {what} would be {amount} bytes; the limit is {limit} (CNN_MAX_RESPONSE_BYTES): "
        "ask for fewer layers, or for the values as format=npz"
    )


def json_layer_chunks(
    layers: Sequence[FeatureLayer],
    maps: Mapping[str, NDArray[np.float32]],
    *,
    values: bool,
    limit: int,
) -> list[bytes]:
    """The layers' JSON entries, one chunk each (separators included): stats, maybe values.

    Each chunk is encoded once and kept; once their total passes `limit` the rest
    are still measured, not kept, and the request is refused with the exact size.
    """
    if values:
        count = sum(maps[layer.name].size for layer in layers)
        if count * _MIN_JSON_BYTES_PER_VALUE > limit:  # refused without encoding anything
            raise _too_large(
                count * _MIN_JSON_BYTES_PER_VALUE, "JSON response", limit, at_least=True
            )
    chunks: list[bytes] = []
    total = 0
    for index, layer in enumerate(layers):
        array = maps[layer.name]
        entry = {"name": layer.name, "shape": list(array.shape), "stats": channel_stats(array)}
        chunk = (b"," if index else b"") + orjson.dumps(entry)
        if values:
            encoded = orjson.dumps(array, option=_JSON_OPTIONS)
            chunk = chunk[:-1] + b',"values":' + encoded + b"}"
        total += len(chunk)
        if total <= limit:
            chunks.append(chunk)
    if total > limit:
        raise _too_large(total, "JSON response", limit)
    return chunks


def kernels_json(body: Mapping[str, Any], limit: int) -> bytes:
    """A kernels document (weights as NumPy arrays), refused when over `limit`."""
    count = sum(v.size for v in body.values() if isinstance(v, np.ndarray))
    if count * _MIN_JSON_BYTES_PER_VALUE > limit:
        raise _too_large(count * _MIN_JSON_BYTES_PER_VALUE, "JSON response", limit, at_least=True)
    encoded = orjson.dumps(dict(body), option=_JSON_OPTIONS)
    if len(encoded) > limit:
        raise _too_large(len(encoded), "JSON response", limit)
    return encoded


def json_body_chunks(head: Mapping[str, Any], layer_chunks: list[bytes]) -> list[bytes]:
    """{**head, "layers": [<layer chunks>]} as chunks whose concatenation is the document."""
    opening = orjson.dumps(dict(head), option=_JSON_OPTIONS)[:-1] + b',"layers":['
    return [opening, *layer_chunks, b"]}"]


class _Sink(io.RawIOBase):
    """A write-only, unseekable stream that hands over what was written since the last take."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        chunk = b"".join(self._parts)
        self._parts.clear()
        return chunk


class NpzStream:
    """A NumPy .npz (uncompressed zip, one float32 .npy per layer), sized before it is written.

    zipfile writes to an unseekable stream with a data descriptor after each member,
    so the size is fixed by the members alone: see `size`. np.load reads it as usual.
    """

    # Local header, data descriptor, central directory entry (all without extras); end record.
    _PER_MEMBER: ClassVar[int] = 30 + 16 + 46
    _END: ClassVar[int] = 22

    def __init__(self, maps: Mapping[str, NDArray[np.float32]]) -> None:
        self._maps = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in maps.items()}

    @staticmethod
    def _member(name: str) -> str:
        return f"{name}.npy"  # np.load drops the suffix: the key is the layer name

    @staticmethod
    def _header(array: NDArray[np.float32]) -> bytes:
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buffer, np.lib.format.header_data_from_array_1_0(array)
        )
        return buffer.getvalue()

    @property
    def size(self) -> int:
        total = self._END
        for name, array in self._maps.items():
            member = len(self._member(name).encode())
            total += self._PER_MEMBER + 2 * member + len(self._header(array)) + array.nbytes
        return total

    def check(self, limit: int) -> None:
        if self.size > limit:
            raise _too_large(self.size, "npz file", limit)

    def chunks(self) -> Iterator[bytes]:
        """The file, one layer at a time: only one layer's bytes are held at once."""
        sink = _Sink()
        with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:
            for name, array in self._maps.items():
                info = zipfile.ZipInfo(self._member(name), date_time=(1980, 1, 1, 0, 0, 0))
                with archive.open(info, mode="w", force_zip64=False) as member:
                    member.write(self._header(array))
                    member.write(array.data.cast("B"))
                yield sink.take()
        yield sink.take()


def prediction_headers(prediction: Mapping[str, Any], dtype: str) -> dict[str, str]:
    """The answer and the precision, for bodies that are not JSON (npz, PNG)."""
    return {
        "X-Prediction-Label": quote(str(prediction["label"]), safe=_HEADER_SAFE),
        "X-Prediction-Index": str(prediction["index"]),
        "X-Prediction-Probability": f"{prediction['probability']:.6f}",
        "X-Feature-Dtype": dtype,
    }


def check_png_options(
    layers: Sequence[FeatureLayer], fmt: str, channels: str | None, scale: int | None
) -> None:
    """format=png draws one layer; channels and scale shape the drawing, and mean nothing else."""
    if fmt == "png" and len(layers) != 1:
        names = ", ".join(layer.name for layer in layers[:5])
        more = ", ..." if len(layers) > 5 else ""
        raise InvalidParameter(
            f"format=png draws one layer; {len(layers)} requested ({names}{more}): "
            "pass layers=<one name>"
        )
    if fmt != "png" and (channels is not None or scale is not None):
        raise InvalidParameter("channels and scale apply to format=png only")


def default_cam_layer(layers: Sequence[FeatureLayer]) -> FeatureLayer:
    """The output of the last convolution block, before global pooling.

    That is the last layer at or after the last convolution whose map still has
    more than one pixel: `relu5` of the default CNN, `layer4` of a ResNet (the
    rectified output of the last convolutional stage, as Grad-CAM prescribes).
    Without any convolution, the last map with more than one pixel.
    """
    if not layers:
        raise InvalidParameter("this model offers no feature-map layers to explain with")
    convs = [i for i, layer in enumerate(layers) if layer.has_kernels]
    start = convs[-1] if convs else 0
    spatial = [
        layer for layer in layers[start:] if layer.output_shape[1] * layer.output_shape[2] > 1
    ]
    return spatial[-1] if spatial else layers[start]
