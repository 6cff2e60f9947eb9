"""One /v2 inference: parse and decode, join the batcher, encode the answer.

Parsing and encoding run off the event loop, except where they are cheap: then
they take less than the hop to a pool thread and back costs (the same trade as
service.pipeline's tiny images). Parsing costs by the JSON text (its numbers
become Python objects); binary data is only sliced and copied. Encoding costs by
what is written: a JSON number about 20 ns, a top-k string about 20 times that.
64 digits as binary BYTES parse in about 30 us and their top-5 strings encode in
about 150; sent to the pool, each step was a hop that cost the request's
throughput some 5-10% (2-core machine).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from numpy.typing import NDArray
from starlette.requests import Request

from service.errors import InvalidBody, ResponseTooLarge
from service.inference import submit_pixels
from service.jpeg import EncodedJpegs
from service.registry import ServedModel
from service.results import ItemResult
from service.state import ModelCall
from service.v2.codec import (
    HEADER_LENGTH,
    InferRequest,
    RequestedOutput,
    encode_response,
    json_header_size,
    parse_request,
    response_size_floor,
)
from service.v2.model import (
    Layers,
    ModelInput,
    captured_layers,
    layer_shapes,
    model_input,
    model_outputs,
    response_tensors,
)

# A request is parsed in place up to this much JSON text (a 16 KB JSON tensor: about
# 200 us) and this much binary data; its answer is encoded in place, when it holds no
# feature maps, up to this much work counted in JSON numbers (about 160 us), a top-k
# string counting as STRING_NUMBERS of them (64 digits' top-5: 6,400).
INLINE_JSON_BYTES = 16 * 1024
INLINE_BINARY_BYTES = 1024 * 1024
INLINE_ENCODE_NUMBERS = 8192
STRING_NUMBERS = 20


@dataclass(frozen=True)
class _Decoded:
    request: InferRequest
    model_input: ModelInput
    outputs: tuple[RequestedOutput, ...]
    seconds: float


@dataclass(frozen=True)
class Answer:
    body: bytes
    header_length: int | None  # set when binary outputs follow the JSON header


def _decode(
    body: bytes, header_length: str | None, served: ServedModel, layers: Layers, max_images: int
) -> _Decoded:
    started = time.perf_counter()
    card = served.card
    request = parse_request(body, header_length)
    outputs = model_outputs(request, card.num_classes, layers)  # before decoding any tensor
    decoded = model_input(request, card.input, max_images)
    return _Decoded(request, decoded, outputs, time.perf_counter() - started)


def _parses_in_place(body: bytes, header_length: str | None) -> bool:
    """Whether the JSON text and binary data are small enough to parse on the event loop
    (a malformed header length is refused by parse_request, at once)."""
    try:
        json_bytes = json_header_size(header_length, len(body))
    except InvalidBody:
        json_bytes = len(body)
    return json_bytes <= INLINE_JSON_BYTES and len(body) - json_bytes <= INLINE_BINARY_BYTES


def _encodes_in_place(outputs: Sequence[RequestedOutput], images: int, classes: int) -> bool:
    """Whether the answer's scores are cheap enough to encode on the event loop (no
    feature maps: the caller checks)."""
    work = sum(
        images * output.classification * STRING_NUMBERS
        if output.classification
        else images * classes
        for output in outputs
    )
    return work <= INLINE_ENCODE_NUMBERS


def _too_large(size: str, limit: int) -> ResponseTooLarge:
    return ResponseTooLarge(
        f"the response would be {size} bytes; the limit is {limit} (CNN_MAX_RESPONSE_BYTES): "
        "ask for fewer outputs or fewer images per request"
    )


def _encode(
    result: ItemResult, decoded: _Decoded, served: ServedModel, labels: Sequence[str], limit: int
) -> Answer:
    outputs = response_tensors(result, decoded.outputs, labels)
    floor = response_size_floor(outputs)
    if floor > limit:  # refused before encoding anything
        raise _too_large(f"at least {floor}", limit)
    body, header_length = encode_response(
        model_name=served.name,
        model_version=served.version,
        request_id=decoded.request.id,
        outputs=outputs,
    )
    if len(body) > limit:
        raise _too_large(str(len(body)), limit)
    return Answer(body, header_length)


async def infer(request: Request, call: ModelCall) -> Answer:
    loop = asyncio.get_running_loop()
    served, executor = call.served, call.state.executor
    layers = layer_shapes(served.layers)
    limit = call.settings.max_images_per_request
    with served.backend.incoming(getattr(request.state, "arrival", None)) as arrival:
        body = await request.body()
        header_length = request.headers.get(HEADER_LENGTH)
        if _parses_in_place(body, header_length):
            decoded = _decode(body, header_length, served, layers, limit)
        else:
            decoded = await loop.run_in_executor(
                executor, _decode, body, header_length, served, layers, limit
            )
        pixels: NDArray[Any] | EncodedJpegs | None = decoded.model_input.pixels
        seconds = decoded.seconds
        if decoded.model_input.images is not None:
            prepared = await call.state.pipeline.prepare(
                served.pixels,
                decoded.model_input.images,
                call.deadline,
                keep_jpegs=served.facts.decodes_jpeg,
            )
            pixels, seconds = prepared.pixels, seconds + prepared.seconds
        assert pixels is not None  # a ModelInput holds pixels or images
        call.trace.prepared(len(pixels), seconds)
        capture = captured_layers(decoded.outputs)
        result = await submit_pixels(call, pixels, capture=capture, arrival=arrival)
    labels = served.card.labels
    limit = call.settings.max_response_bytes
    images, classes = result.probabilities.shape
    if not capture and _encodes_in_place(decoded.outputs, images, classes):
        return _encode(result, decoded, served, labels, limit)
    return await loop.run_in_executor(executor, _encode, result, decoded, served, labels, limit)
