"""The wire format of /v2 inference: a JSON header, then binary tensor data.

A request body is the JSON inference request alone or, with the binary tensor
data extension, a JSON header of `Inference-Header-Content-Length` bytes
followed by each binary input's bytes, in input order. A header length of 0 is
a raw binary request: the whole body is the data of one input, which the model
must deduce. Responses mirror this. Numeric tensors are read with
np.frombuffer and written with tobytes; JSON data goes through NumPy in one
call; no numeric tensor is walked element by element in Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from service.errors import InvalidBody
from service.v2.datatypes import KNOWN, NUMERIC

HEADER_LENGTH = "Inference-Header-Content-Length"

# Which NumPy kinds a JSON array may hold for each target kind (b: bool, i/u: int, f: float).
_JSON_KINDS = {"b": "b", "i": "biu", "u": "biu", "f": "biuf"}
_KIND_TEXT = {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers"}


@dataclass(frozen=True)
class RequestTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any = None  # the JSON "data" when sent as JSON
    raw: memoryview | None = None  # the binary data when sent with binary_data_size

    @property
    def count(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int = 0  # top-k as "value:index:label" strings; 0: the tensor itself


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: tuple[RequestTensor, ...]
    outputs: tuple[RequestedOutput, ...] | None  # None: the model's default outputs
    binary_output: bool  # binary_data_output: how outputs that do not say are returned
    raw_body: memoryview | None = None  # a raw binary request (header length 0)


@dataclass(frozen=True)
class ResponseTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: NDArray[Any] | list[bytes]  # a numeric array, or the elements of a BYTES tensor
    binary: bool


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---- requests ---------------------------------------------------------------


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """Split the body into the JSON inference request and the binary inputs it declares."""
    view = memoryview(body)
    size = json_header_size(header_length, len(body))
    if size == 0:
        return InferRequest(id=None, inputs=(), outputs=None, binary_output=True, raw_body=view)
    try:
        document = orjson.loads(view[:size])
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidBody("the inference request must be a JSON object")
    return _request_from(document, view[size:])


def json_header_size(header_length: str | None, body_size: int) -> int:
    if header_length is None:
        return body_size
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):
        raise InvalidBody(f"{HEADER_LENGTH} must be a non-negative integer, got {header_length!r}")
    size = int(text)
    if size > body_size:
        raise InvalidBody(
            f"the body is truncated: {HEADER_LENGTH} is {size} but the body has {body_size} bytes"
        )
    return size


def _request_from(document: dict[str, Any], binary: memoryview) -> InferRequest:
    items = document.get("inputs")
    if not isinstance(items, list) or not items:
        raise InvalidBody('"inputs" must be a non-empty list of tensors')
    inputs = []
    offset = 0
    for index, item in enumerate(items):
        tensor, offset = _input_from(item, index, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidBody(
            f"{len(binary)} bytes of binary data follow the JSON header, "
            f"but the inputs' binary_data_size add up to {offset}"
        )
    parameters = _parameters(document.get("parameters"), "the request")
    binary_output = _flag(parameters, "binary_data_output", "the request", default=False)
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidBody('"id" must be a string')
    return InferRequest(
        id=request_id,
        inputs=tuple(inputs),
        outputs=_outputs(document.get("outputs"), binary_output),
        binary_output=binary_output,
    )


def _input_from(
    item: object, index: int, binary: memoryview, offset: int
) -> tuple[RequestTensor, int]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InvalidBody(f"inputs[{index}] must be an object with a string name")
    name: str = item["name"]
    where = f"input {name!r}"
    datatype = item.get("datatype")
    if datatype not in KNOWN:
        known = ", ".join(sorted(KNOWN))
        raise InvalidBody(f"{where}: datatype {datatype!r} is not one of {known}")
    shape = _shape(item.get("shape"), where)
    size = _parameters(item.get("parameters"), where).get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise InvalidBody(f"{where} has neither data nor parameters.binary_data_size")
        return RequestTensor(name, datatype, shape, data=item["data"]), offset
    if not _is_int(size) or size < 0:
        raise InvalidBody(f"{where}: binary_data_size must be a non-negative integer")
    end = offset + size
    if end > len(binary):
        raise InvalidBody(
            f"the body is truncated: {where} declares binary_data_size {size} "
            f"but only {len(binary) - offset} bytes remain"
        )
    return RequestTensor(name, datatype, shape, raw=binary[offset:end]), end


def _shape(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(_is_int(d) and d >= 0 for d in value):
        raise InvalidBody(f"{where}: shape must be a list of non-negative integers")
    return tuple(value)


def _parameters(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidBody(f"{where}: parameters must be an object")
    return value


def _flag(parameters: dict[str, Any], key: str, where: str, *, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidBody(f"{where}: parameter {key} must be true or false")
    return value


def _outputs(items: object, binary_output: bool) -> tuple[RequestedOutput, ...] | None:
    if items is None or items == []:
        return None
    if not isinstance(items, list):
        raise InvalidBody('"outputs" must be a list')
    outputs = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidBody(f"outputs[{index}] must be an object with a string name")
        where = f"output {item['name']!r}"
        parameters = _parameters(item.get("parameters"), where)
        count = parameters.get("classification", 0)
        if not _is_int(count) or count < 0:
            raise InvalidBody(f"{where}: classification must be a positive integer")
        binary = _flag(parameters, "binary_data", where, default=binary_output)
        outputs.append(RequestedOutput(item["name"], binary, count))
    names = [output.name for output in outputs]
    if len(set(names)) != len(names):
        raise InvalidBody(f"an output is requested twice: {names}")
    return tuple(outputs)


# ---- tensors ----------------------------------------------------------------


def decode_numeric(tensor: RequestTensor) -> NDArray[Any]:
    """The tensor as a native-endian array of its declared shape, owned by the caller."""
    dtype = NUMERIC[tensor.datatype]
    native = dtype.newbyteorder("=")
    if tensor.raw is None:
        return _from_json(tensor, dtype).astype(native).reshape(tensor.shape)
    expected = tensor.count * dtype.itemsize
    if len(tensor.raw) != expected:
        raise InvalidBody(
            f"input {tensor.name!r}: binary_data_size is {len(tensor.raw)} bytes, but shape "
            f"{list(tensor.shape)} of {tensor.datatype} takes {expected}"
        )
    # frombuffer views the request body (read-only); astype makes the one copy we keep.
    return np.frombuffer(tensor.raw, dtype=dtype).astype(native).reshape(tensor.shape)


def _from_json(tensor: RequestTensor, dtype: np.dtype[Any]) -> NDArray[Any]:
    where = f"input {tensor.name!r}"
    if not isinstance(tensor.data, list):
        raise InvalidBody(f"{where}: data must be a JSON array")
    try:
        array = np.asarray(tensor.data)  # nested or flat: one pass in C
    except (ValueError, TypeError, OverflowError):
        raise InvalidBody(f"{where}: data is not a rectangular array of numbers") from None
    if array.size != tensor.count:
        raise InvalidBody(
            f"{where}: data has {array.size} elements, but shape {list(tensor.shape)} "
            f"needs {tensor.count}"
        )
    if array.size and array.dtype.kind not in _JSON_KINDS[dtype.kind]:
        raise InvalidBody(f"{where}: {tensor.datatype} data must be {_KIND_TEXT[dtype.kind]}")
    if array.size and dtype.kind in "iuf":
        info = np.iinfo(dtype) if dtype.kind in "iu" else np.finfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise InvalidBody(f"{where}: a value is out of the range of {tensor.datatype}")
    return array


def decode_bytes(tensor: RequestTensor) -> list[bytes]:
    """The elements of a BYTES tensor: binary (4-byte little-endian lengths) or JSON strings."""
    where = f"input {tensor.name!r}"
    if tensor.raw is not None:
        items = _split_bytes(tensor.raw, tensor.count, where)
    elif isinstance(tensor.data, list) and all(isinstance(s, str) for s in tensor.data):
        items = [s.encode("utf-8") for s in tensor.data]
    else:
        raise InvalidBody(f"{where}: BYTES data must be a flat JSON array of strings")
    if len(items) != tensor.count:
        raise InvalidBody(
            f"{where}: data has {len(items)} elements, but shape {list(tensor.shape)} "
            f"needs {tensor.count}"
        )
    return items


def _split_bytes(raw: memoryview, count: int, where: str) -> list[bytes]:
    items: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end and len(items) <= count:  # stop early on a flood of tiny elements
        if offset + 4 > end:
            raise InvalidBody(f"{where}: BYTES data is truncated inside an element's length")
        size = int.from_bytes(raw[offset : offset + 4], "little")
        offset += 4
        if offset + size > end:
            raise InvalidBody(f"{where}: BYTES data is truncated: an element needs {size} bytes")
        items.append(bytes(raw[offset : offset + size]))
        offset += size
    return items


# ---- responses --------------------------------------------------------------


def encode_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[ResponseTensor],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output in outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.shape),
        }
        if output.binary:
            blob = _tensor_bytes(output)
            entry["parameters"] = {"binary_data_size": len(blob)}
            chunks.append(blob)
        else:
            entry["data"] = _json_data(output)
        entries.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        document["id"] = request_id
    document["outputs"] = entries
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


# The fewest bytes one element takes in JSON: a digit and a separator.
_MIN_JSON_BYTES_PER_ELEMENT = 2


def response_size_floor(outputs: Sequence[ResponseTensor]) -> int:
    """A lower bound on the encoded body, computed before anything is encoded."""
    total = 0
    for output in outputs:
        if isinstance(output.data, list):
            total += sum(len(s) for s in output.data) + 4 * len(output.data)
        elif output.binary:
            total += output.data.size * NUMERIC[output.datatype].itemsize
        else:
            total += output.data.size * _MIN_JSON_BYTES_PER_ELEMENT
    return total


def _tensor_bytes(output: ResponseTensor) -> bytes:
    if isinstance(output.data, list):
        return b"".join(part for s in output.data for part in (len(s).to_bytes(4, "little"), s))
    return np.ascontiguousarray(output.data, dtype=NUMERIC[output.datatype]).tobytes()


def _json_data(output: ResponseTensor) -> NDArray[Any] | list[str]:
    if isinstance(output.data, list):
        return [s.decode("utf-8", "replace") for s in output.data]
    return np.ascontiguousarray(output.data).reshape(-1)  # orjson writes it in C
