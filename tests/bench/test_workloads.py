"""The Open Inference Protocol bodies the benchmark sends: cnn-serve's and Triton's alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

from bench.workloads import V2Request, v2_binary_body
from service.v2.codec import decode_bytes, parse_request

IMAGES = [b"\x89PNG first", b"\x89PNG the second, longer"]


def _header(body: bytes, length: int) -> dict[str, object]:
    document: dict[str, object] = json.loads(body[:length])
    return document


def test_cnn_serve_reads_the_body_as_the_images_in_order() -> None:
    body, length = v2_binary_body(IMAGES)
    request = parse_request(body, str(length))
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("image", "BYTES", (2,))
    assert decode_bytes(tensor) == IMAGES
    assert request.outputs is not None
    assert [(o.name, o.classification) for o in request.outputs] == [("probabilities", 5)]


def test_the_triton_body_is_the_one_tritonclient_builds() -> None:
    body, length = v2_binary_body(IMAGES, rows=True)
    image = httpclient.InferInput("image", [2, 1], "BYTES")
    image.set_data_from_numpy(np.array([[i] for i in IMAGES], dtype=object), binary_data=True)
    top5 = httpclient.InferRequestedOutput("probabilities", binary_data=False, class_count=5)
    theirs, their_length = httpclient.InferenceServerClient.generate_request_body(
        [image], outputs=[top5]
    )
    assert body[length:] == theirs[their_length:]  # the length-prefixed images
    ours, expected = _header(body, length), _header(theirs, their_length)
    assert ours["inputs"] == expected["inputs"]
    # tritonclient also spells out binary_data: false, the protocol's default.
    assert ours["outputs"] == [{"name": "probabilities", "parameters": {"classification": 5}}]


def test_cnn_serve_reads_the_triton_body_as_the_same_images() -> None:
    body, length = v2_binary_body(IMAGES, rows=True)
    (tensor,) = parse_request(body, str(length)).inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("image", "BYTES", (2, 1))
    assert decode_bytes(tensor) == IMAGES


def test_the_two_bodies_differ_in_the_input_shape_alone() -> None:
    flat, flat_length = v2_binary_body(IMAGES)
    rows, rows_length = v2_binary_body(IMAGES, rows=True)
    assert flat[flat_length:] == rows[rows_length:]
    flat_header, rows_header = _header(flat, flat_length), _header(rows, rows_length)
    assert flat_header["inputs"][0].pop("shape") == [2]  # type: ignore[index]
    assert rows_header["inputs"][0].pop("shape") == [2, 1]  # type: ignore[index]
    assert flat_header == rows_header


def test_a_v2_request_names_its_header_length() -> None:
    request = V2Request(Path("w1.v2"), 187)
    assert request.headers == ("Inference-Header-Content-Length: 187",)
