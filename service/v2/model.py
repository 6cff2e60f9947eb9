"""A served model as the Open Inference Protocol sees it: its tensors, inputs and outputs.

Inputs (exactly one per request):
- "input": FP32 [N,C,H,W], normalized as the card says; or UINT8 [N,C,H,W] pixels,
  normalized on the device like a decoded image;
- "image": BYTES [N] (or [N,1], the shape Triton's batching models take), encoded image
  files, decoded and preprocessed like /v1.
Outputs: "probabilities" and "logits", FP32 [N,classes], either as top-k
"value:index:label" strings with the classification extension; and every
feature-map layer, FP32 [N,C,H,W].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models import InputSpec
from models.feature_layer import FeatureLayer
from service.errors import InvalidBody
from service.inputs import check_image_count, decode_base64
from service.predictions import ranked
from service.results import ItemResult
from service.v2.codec import (
    InferRequest,
    RequestedOutput,
    RequestTensor,
    ResponseTensor,
    decode_bytes,
    decode_numeric,
)
from service.v2.datatypes import BYTES

INPUT = "input"
IMAGE = "image"
PROBABILITIES = "probabilities"
LOGITS = "logits"
SCORES = (PROBABILITIES, LOGITS)
_INPUTS_TEXT = (
    f"{INPUT!r} (FP32 or UINT8 [N,C,H,W]) or {IMAGE!r} (BYTES [N] or [N,1], encoded images)"
)

# Feature-map layer name -> the shape of one image's map, [C,H,W].
Layers = Mapping[str, Sequence[int]]


def layer_shapes(layers: Sequence[FeatureLayer]) -> Layers:
    """The served model's feature-map layers (found at load time) as /v2 outputs."""
    return {layer.name: layer.output_shape for layer in layers}


def metadata(
    name: str, version: str, spec: InputSpec, labels: Sequence[str], layers: Layers
) -> dict[str, Any]:
    """The model metadata response; -1 marks the batch dimension."""

    def tensor(tensor_name: str, datatype: str, shape: Sequence[int]) -> dict[str, Any]:
        return {"name": tensor_name, "datatype": datatype, "shape": [-1, *shape]}

    return {
        "name": name,
        "versions": [version],
        "platform": "pytorch",
        "inputs": [tensor(INPUT, "FP32", spec.shape), tensor(IMAGE, BYTES, [])],
        "outputs": [
            *(tensor(score, "FP32", [len(labels)]) for score in SCORES),
            *(tensor(layer, "FP32", shape) for layer, shape in layers.items()),
        ],
    }


@dataclass(frozen=True)
class ModelInput:
    """What a request feeds the model: a ready tensor, or encoded images still to prepare."""

    pixels: NDArray[Any] | None = None  # [N,C,H,W]: float32 normalized, or uint8 pixels
    images: list[bytes] | None = None


def model_input(request: InferRequest, spec: InputSpec, max_images: int) -> ModelInput:
    """Check the request's one input against the model and decode it."""
    if request.raw_body is not None:
        return ModelInput(pixels=_pixels(_raw_input(request.raw_body, spec), spec, max_images))
    if len(request.inputs) != 1:
        names = [tensor.name for tensor in request.inputs]
        raise InvalidBody(f"give exactly one input, {_INPUTS_TEXT}; got {names}")
    tensor = request.inputs[0]
    if tensor.name == INPUT:
        return ModelInput(pixels=_pixels(tensor, spec, max_images))
    if tensor.name == IMAGE:
        return ModelInput(images=_images(tensor, max_images))
    raise InvalidBody(f"unknown input {tensor.name!r}; the inputs are {_INPUTS_TEXT}")


def _raw_input(body: memoryview, spec: InputSpec) -> RequestTensor:
    """A raw binary request carries FP32 "input" data; its size gives the batch."""
    per_image = int(np.prod(spec.shape)) * 4
    if not body or len(body) % per_image:
        raise InvalidBody(
            f"a raw binary request (Inference-Header-Content-Length: 0) carries FP32 "
            f"{[-1, *spec.shape]} data: a multiple of {per_image} bytes, got {len(body)}"
        )
    return RequestTensor(INPUT, "FP32", (len(body) // per_image, *spec.shape), raw=body)


def _pixels(tensor: RequestTensor, spec: InputSpec, max_images: int) -> NDArray[Any]:
    if tensor.datatype not in ("FP32", "UINT8"):
        raise InvalidBody(
            f"input {INPUT!r} must be FP32 (normalized) or UINT8 (pixels), got {tensor.datatype}"
        )
    shape = tensor.shape
    if len(shape) != 4 or shape[1:] != spec.shape or shape[0] < 1:
        expected = ",".join(str(d) for d in spec.shape)
        raise InvalidBody(
            f"input {INPUT!r} must have shape [N,{expected}] with N >= 1, got {list(shape)}"
        )
    check_image_count(shape[0], max_images)
    return decode_numeric(tensor)


def _images(tensor: RequestTensor, max_images: int) -> list[bytes]:
    if tensor.datatype != BYTES:
        raise InvalidBody(f"input {IMAGE!r} must be BYTES (encoded images), got {tensor.datatype}")
    if tensor.shape[:1] < (1,) or tuple(tensor.shape[1:]) not in ((), (1,)):
        raise InvalidBody(
            f"input {IMAGE!r} must have shape [N] or [N,1] with N >= 1, got {list(tensor.shape)}"
        )
    check_image_count(tensor.shape[0], max_images)
    items = decode_bytes(tensor)
    if tensor.raw is not None:
        return items
    # JSON carries images as base64 text.
    return [
        decode_base64(item, f"input {IMAGE!r} element {index}") for index, item in enumerate(items)
    ]


def model_outputs(
    request: InferRequest, classes: int, layers: Layers
) -> tuple[RequestedOutput, ...]:
    """The outputs to return, checked against the model; the scores by default."""
    if request.outputs is None:
        return tuple(RequestedOutput(name, request.binary_output) for name in SCORES)
    for output in request.outputs:
        where = f"output {output.name!r}"
        if output.name in SCORES:
            if output.classification > classes:
                raise InvalidBody(f"{where}: classification must be between 1 and {classes}")
        elif output.name in layers:
            if output.classification:
                raise InvalidBody(f"{where}: classification applies to {' and '.join(SCORES)}")
        else:
            names = ", ".join([*SCORES, *layers])
            raise InvalidBody(f"unknown output {output.name!r}; the outputs are: {names}")
    return request.outputs


def captured_layers(outputs: Sequence[RequestedOutput]) -> frozenset[str]:
    return frozenset(output.name for output in outputs if output.name not in SCORES)


def response_tensors(
    result: ItemResult, outputs: Sequence[RequestedOutput], labels: Sequence[str]
) -> list[ResponseTensor]:
    tensors = []
    for output in outputs:
        if output.name == PROBABILITIES:
            values = result.probabilities
        elif output.name == LOGITS:
            values = result.logits
        else:
            values = result.features[output.name]
        if output.classification:
            tensors.append(_classification(output, values, labels))
        else:
            tensors.append(ResponseTensor(output.name, "FP32", values.shape, values, output.binary))
    return tensors


def _classification(
    output: RequestedOutput, values: np.ndarray[Any, Any], labels: Sequence[str]
) -> ResponseTensor:
    """Top-k per image as "value:index:label", ranked like /v1 classify."""
    indices, scores = ranked(values, output.classification)
    # Each score as the shortest text that reads back as the same float32 (what str() of a
    # NumPy float32 gives), all of them in one call: one str() per score cost 180 us of
    # the event loop's time for 64 images at k=5, this 100.
    texts = scores.astype(np.float32).ravel().astype(str).tolist()
    items = [
        f"{text}:{index}:{labels[index]}".encode()
        for text, index in zip(texts, indices.ravel().tolist(), strict=True)
    ]
    return ResponseTensor(output.name, BYTES, indices.shape, items, output.binary)
