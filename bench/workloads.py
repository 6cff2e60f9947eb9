"""The benchmark's inputs: the models, the images, and the request bodies.

W1: the shipped mnist-cnn, one real 28x28 MNIST digit as PNG per request (and
64 digits per request as multipart, and as Open Inference Protocol binary
requests, to cnn-serve's /v2 and to Triton). W2: resnet18 with random weights,
resize 256 + centre-crop 224, one 427x640 photo (scikit-learn's china.jpg,
JPEG quality 90) per request.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from models import default_model_path

MULTIPART_BOUNDARY = "cnnservebenchboundary7d1f"
V2_HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class V2Request:
    """An Open Inference Protocol binary request on disk, and the header that says where its
    JSON part ends."""

    body: Path
    header_length: int

    @property
    def headers(self) -> tuple[str, ...]:
        return (f"{V2_HEADER_LENGTH}: {self.header_length}",)


@dataclass(frozen=True)
class Workload:
    key: str  # "W1", "W1v2", "W1x64", "W1x64v2", "W2"
    title: str
    card: Path  # the model's card
    body: Path  # one request's body for our server, TorchServe and the naive server
    content_type: str
    images_per_request: int
    lit_body: Path  # LitServe's body: JSON {"image": base64}
    samples: tuple[bytes, ...]  # encoded images for the in-process ceilings
    path: str | None = None  # cnn-serve's URL path when not /v1/classify
    headers: tuple[str, ...] = ()
    triton: V2Request | None = None  # Triton's body: the images as a [N,1] BYTES input


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def multipart_body(images: list[bytes], *, field: str = "images") -> bytes:
    parts = []
    for index, data in enumerate(images):
        head = (
            f"--{MULTIPART_BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{index}.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{MULTIPART_BOUNDARY}--\r\n".encode()


def v2_binary_body(images: list[bytes], *, rows: bool = False) -> tuple[bytes, int]:
    """An Open Inference Protocol request: a JSON header, then BYTES elements, length-prefixed.

    The "image" input has shape [N], as cnn-serve's /v2 takes it; `rows`: [N,1], one image
    per batch row, as a batching Triton model takes it (its inputs cannot be [N] alone).
    """
    data = b"".join(len(image).to_bytes(4, "little") + image for image in images)
    header = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [len(images), 1] if rows else [len(images)],
                "parameters": {"binary_data_size": len(data)},
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 5}}],
    }
    head = json.dumps(header).encode()
    return head + data, len(head)


def lit_body(image: bytes) -> bytes:
    return json.dumps({"image": base64.b64encode(image).decode("ascii")}).encode()


def mnist_pngs(count: int) -> list[bytes]:
    """Real held-out MNIST digits (the shipped model's test split) as PNG files."""
    from models.data import mnist_split

    split = mnist_split()
    return [encode(image, "PNG") for image in split.test_images[:count]]


def china_jpeg() -> bytes:
    from sklearn.datasets import load_sample_image  # type: ignore[import-untyped]

    return encode(Image.fromarray(load_sample_image("china.jpg")), "JPEG", quality=90)


def resnet18_card(folder: Path) -> Path:
    """resnet18 with random weights, packed by cnn-pack (once; reused afterwards)."""
    card = folder / "resnet18.json"
    if card.is_file():
        return card
    command = [
        str(Path(sys.executable).with_name("cnn-pack")),
        *("--arch", "resnet18", "--random-init", "--num-classes", "1000"),
        *("--input", "3x224x224", "--resize-size", "256", "--out", str(folder)),
    ]
    subprocess.run(command, check=True, capture_output=True)
    return card


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _v2_request(path: Path, images: list[bytes], *, rows: bool = False) -> V2Request:
    body, header_length = v2_binary_body(images, rows=rows)
    return V2Request(_write(path, body), header_length)


def _v2_workload(
    key: str, title: str, body: Path, images: list[bytes], lit: Path, *, rows: bool = False
) -> Workload:
    """cnn-serve's /v2 under the W1 model: `images` in one binary request."""
    request = _v2_request(body, images, rows=rows)
    return Workload(
        key,
        title,
        default_model_path(),
        request.body,
        "application/octet-stream",
        len(images),
        lit,
        tuple(images),
        path=f"/v2/models/{default_model_path().stem}/infer",
        headers=request.headers,
    )


def prepare(out: Path) -> dict[str, Workload]:
    """Write every body and model under `out`; return the workloads by key."""
    out = out.resolve()
    digits = mnist_pngs(1000)
    photo = china_jpeg()
    w1_lit = _write(out / "w1-lit.json", lit_body(digits[0]))
    w1_triton = _v2_request(out / "w1-triton.v2", digits[:1], rows=True)
    w1 = Workload(
        "W1",
        "mnist-cnn, one 28x28 PNG per request",
        default_model_path(),
        _write(out / "w1.png", digits[0]),
        "image/png",
        1,
        w1_lit,
        tuple(digits),
        triton=w1_triton,
    )
    # Byte for byte Triton's request: cnn-serve's /v2 takes BYTES [N,1] as well as [N].
    w1v2 = _v2_workload(
        "W1v2",
        "mnist-cnn, one PNG per request (V2 binary, Triton's very request)",
        out / "w1.v2",
        digits[:1],
        w1_lit,
        rows=True,
    )
    w1x64 = Workload(
        "W1x64",
        "mnist-cnn, 64 PNGs per request (multipart)",
        default_model_path(),
        _write(out / "w1x64.multipart", multipart_body(digits[:64])),
        f"multipart/form-data; boundary={MULTIPART_BOUNDARY}",
        64,
        w1_lit,
        tuple(digits),
    )
    w1x64v2 = _v2_workload(
        "W1x64v2",
        "mnist-cnn, 64 PNGs per request (V2 binary)",
        out / "w1x64.v2",
        digits[:64],
        w1_lit,
    )
    w2 = Workload(
        "W2",
        "resnet18 (random init), one 427x640 JPEG per request",
        resnet18_card(out / "resnet18"),
        _write(out / "w2.jpg", photo),
        "image/jpeg",
        1,
        _write(out / "w2-lit.json", lit_body(photo)),
        (photo,),
    )
    return {w.key: w for w in (w1, w1v2, w1x64, w1x64v2, w2)}
