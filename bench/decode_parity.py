"""Device-decode parity: what a model sees when JPEGs decode on its device instead of in PIL.

The service decodes baseline JPEGs either on the CPU (PIL, then models.pixels' resize) or on
the engine's device (torchvision's decode_jpeg, nvJPEG on a GPU, then the same geometry on
tensors: service.device_decode). The two decoders and resamplers round differently. This
report measures by how much, on a varied, seeded set of real photographs (scikit-learn's
samples at several scales, crops, qualities and chroma subsamplings, grey, EXIF-turned):
the pixel difference after preprocessing, the top-1 agreement of the model on the two inputs,
and, for scale, the top-1 agreement of reduced precision with fp32 on the same device.
Writes OUT/decode-parity.json.

The model has random weights (no trained ones are available offline), with BatchNorm
statistics taken from the photos (Runner.calibrate_batchnorm). Such a network is far more
sensitive to small input changes than a trained one, and its answers crowd into few classes
(the report says how many): read its top-1 agreement beside the reduced-precision rows,
which the engine already accepts on a GPU (fp16 autocast by default).

    python -m bench.decode_parity --out bench/out/gpu --device cuda
"""

from __future__ import annotations

import argparse
import io
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image

import models
from models.card import InputSpec
from models.pixels import PixelPipeline
from service.device_decode import TensorPixels, device_decodable

AGREEMENT_OK = 0.995  # parity: at most one answer in 200 changes with the decoder
SOURCES = ("china.jpg", "flower.jpg")  # 427x640 each, shipped with scikit-learn
# Each axis cycles with its own prime period (2, 3, 5, 7, 11, 13), so even a few images
# cover every value of every axis, and 200 cover many combinations of them.
SUBSAMPLING = (0, 1, 2)  # PIL's 4:4:4, 4:2:2, 4:2:0
QUALITIES = (50, 65, 75, 85, 95)
# (width, height) proportions of the crop taken from the photo; None keeps it whole.
Aspect = tuple[int, int] | None
ASPECTS: tuple[Aspect, ...] = (None, (1, 1), (3, 4), (2, 3), (9, 16), (16, 9), (2, 1))
# Scales of the crop: the small ones leave a side under 224 pixels, so the resize upscales.
SCALES = (0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0, 1.15, 1.3, 1.5)
# Colour and orientation variants, by position in a cycle of 13: mostly plain colour.
VARIANTS: dict[int, str] = {4: "grey", 8: "exif6", 11: "exif3"}
_ORIENTATION = 0x0112  # the EXIF tag
_EXIF_TURNS = {"exif6": 6, "exif3": 3}  # 6: shown turned 90 degrees clockwise; 3: upside down


@dataclass(frozen=True)
class Photo:
    source: str
    aspect: str  # "whole", or the crop's width:height
    width: int  # as encoded, before any EXIF turn
    height: int
    quality: int
    subsampling: int
    variant: str  # "colour", "grey", "exif6", "exif3"
    data: bytes

    @property
    def name(self) -> str:
        """What was done to it: to find the worst image again."""
        return (
            f"{self.source} {self.aspect} {self.width}x{self.height} q{self.quality} "
            f"s{self.subsampling} {self.variant}"
        )


@dataclass(frozen=True)
class PixelParity:
    mean_abs_diff: float  # uint8 levels, over every pixel of every image
    max_image_mean_abs_diff: float  # the worst image's mean
    worst_image: str
    max_abs_diff: int  # the largest single-pixel difference anywhere
    p99_abs_diff: float  # 99th percentile over every pixel of every image


# ---- the photographs -------------------------------------------------------------------------


def _sources() -> dict[str, Image.Image]:
    # Imported here: scikit-learn is only needed to build the set, not to import this module.
    from sklearn.datasets import load_sample_image  # type: ignore[import-untyped]

    return {name: Image.fromarray(load_sample_image(name)) for name in SOURCES}


def _crop(photo: Image.Image, aspect: Aspect, rng: random.Random) -> Image.Image:
    """The largest crop of the given proportions, at a seeded place in the photo."""
    if aspect is None:
        return photo
    width = min(photo.width, photo.height * aspect[0] // aspect[1])
    height = min(photo.height, photo.width * aspect[1] // aspect[0])
    left = rng.randint(0, photo.width - width)
    top = rng.randint(0, photo.height - height)
    return photo.crop((left, top, left + width, top + height))


def _encode(image: Image.Image, variant: str, quality: int, subsampling: int) -> bytes:
    options: dict[str, Any] = {"quality": quality, "subsampling": subsampling}
    if variant == "grey":
        image = image.convert("L")
    if variant in _EXIF_TURNS:
        exif = Image.Exif()
        exif[_ORIENTATION] = _EXIF_TURNS[variant]
        options["exif"] = exif.tobytes()
    out = io.BytesIO()
    image.save(out, "JPEG", **options)  # baseline unless progressive=True is asked for
    return out.getvalue()


def photographs(count: int, seed: int = 0) -> list[Photo]:
    """`count` baseline JPEGs made from scikit-learn's sample photos, the same for a seed."""
    sources, rng = _sources(), random.Random(seed)
    photos = []
    for i in range(count):
        source, aspect = SOURCES[i % len(SOURCES)], ASPECTS[i % len(ASPECTS)]
        quality, subsampling = QUALITIES[i % len(QUALITIES)], SUBSAMPLING[i % len(SUBSAMPLING)]
        variant = VARIANTS.get(i % 13, "colour")
        cropped = _crop(sources[source], aspect, rng)
        scale = SCALES[i % len(SCALES)]
        width, height = max(1, round(cropped.width * scale)), max(1, round(cropped.height * scale))
        resized = cropped.resize((width, height), Image.Resampling.LANCZOS)
        shape = "whole" if aspect is None else f"{aspect[0]}:{aspect[1]}"
        data = _encode(resized, variant, quality, subsampling)
        photos.append(Photo(source, shape, width, height, quality, subsampling, variant, data))
    return photos


def _area(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def describe(photos: Sequence[Photo]) -> dict[str, object]:
    """What the set holds, for the report: a reader can see what was (not) covered."""
    sizes = [(p.width, p.height) for p in photos]
    variants = ("colour", *VARIANTS.values())
    return {
        "sources": sorted({p.source for p in photos}),
        "aspects": sorted({p.aspect for p in photos}),
        "qualities": sorted({p.quality for p in photos}),
        "subsampling": sorted({p.subsampling for p in photos}),
        "variants": {v: sum(p.variant == v for p in photos) for v in variants},
        "portrait": sum(h > w for w, h in sizes),
        "landscape": sum(w > h for w, h in sizes),
        "short_side_under_224": sum(min(s) < 224 for s in sizes),
        "smallest": "{}x{}".format(*min(sizes, key=_area)),
        "largest": "{}x{}".format(*max(sizes, key=_area)),
    }


# ---- the two preprocessing paths -------------------------------------------------------------


def cpu_pixels(spec: InputSpec, photos: Sequence[Photo]) -> torch.Tensor:
    """The CPU path of the HTTP workers: PIL decode, models.pixels' resize. [N,C,H,W] uint8."""
    pipeline = PixelPipeline(spec)
    arrays = [pipeline.to_uint8(Image.open(io.BytesIO(p.data))) for p in photos]
    return torch.from_numpy(np.stack(arrays))


def device_pixels(
    spec: InputSpec, photos: Sequence[Photo], device: torch.device, batch: int
) -> torch.Tensor:
    """The device path, in the engine's batches: [N,C,H,W] uint8 on `device`."""
    tensors = TensorPixels(spec)
    parts = [
        tensors.decode([p.data for p in photos[start : start + batch]], device)
        for start in range(0, len(photos), batch)
    ]
    return torch.cat(parts)


def pixel_parity(photos: Sequence[Photo], cpu: torch.Tensor, device: torch.Tensor) -> PixelParity:
    difference = (device.cpu().to(torch.int16) - cpu.to(torch.int16)).abs()
    per_image = difference.flatten(1).to(torch.float64).mean(dim=1)
    worst = int(per_image.argmax())
    return PixelParity(
        mean_abs_diff=float(per_image.mean()),
        max_image_mean_abs_diff=float(per_image[worst]),
        worst_image=photos[worst].name,
        max_abs_diff=int(difference.max()),
        p99_abs_diff=float(np.percentile(difference.numpy(), 99)),
    )


# ---- the model -------------------------------------------------------------------------------


def pack_random(folder: Path, arch: str) -> Path:
    """A random-init `arch` card (1000 classes, 3x224x224, straight resize), packed once.

    The weights are random because no trained ones are available offline; the card is the
    one bench/gpu_bench.py serves, so both read the same model from the same folder.
    """
    card = folder / f"{arch}.json"
    if not card.is_file():
        command = [sys.executable, "-m", "models.pack", "--arch", arch, "--random-init"]
        command += ["--num-classes", "1000", "--input", "3x224x224", "--out", str(folder)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return card


class Runner:
    """The model on its device, fed [C,H,W] uint8 pixels in batches: logits out, on the CPU."""

    def __init__(self, loaded: models.LoadedModel, device: torch.device, batch: int) -> None:
        self.module = loaded.module.to(device).eval()
        self.device, self.batch = device, batch
        self.scale = loaded.preprocess.normalize_scale.to(device)
        self.offset = loaded.preprocess.normalize_offset.to(device)

    def inputs(self, pixels: torch.Tensor) -> Iterator[torch.Tensor]:
        for start in range(0, len(pixels), self.batch):
            chunk = pixels[start : start + self.batch].to(self.device)
            yield chunk.to(torch.float32) * self.scale + self.offset

    def logits(self, pixels: torch.Tensor, precision: torch.dtype | None = None) -> torch.Tensor:
        """fp32, or under autocast to `precision` as the engine runs reduced precision."""
        autocast: AbstractContextManager[Any] = (
            nullcontext() if precision is None else torch.autocast(self.device.type, precision)
        )
        with torch.inference_mode(), autocast:
            return torch.cat([self.module(x).float().cpu() for x in self.inputs(pixels)])

    def calibrate_batchnorm(self, pixels: torch.Tensor) -> None:
        """BatchNorm statistics from these images, in place of a random model's 0 and 1.

        Random init leaves every BatchNorm an identity: activations drift through the
        blocks until one class wins for every input, and agreement is then 1.0 for any
        inputs at all. Statistics from the photos themselves (what training would have
        left) make the random network's answers depend on its input. Weights stay random.
        """
        norms = [m for m in self.module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over all the batches
        self.module.train()
        with torch.no_grad():
            for x in self.inputs(pixels):
                self.module(x)
        self.module.eval()


def compare(logits: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Top-1 agreement, and how far the logits moved relative to their spread over images:
    a figure that still means something where few classes win."""
    spread = (reference - reference.mean(dim=0)).square().mean().sqrt()
    moved = (logits - reference).square().mean().sqrt()
    return {
        "top1_agreement": float((logits.argmax(1) == reference.argmax(1)).double().mean()),
        "logits_rms_diff_relative": float(moved / spread),
    }


def reduced_precisions(device: torch.device) -> list[tuple[str, torch.dtype]]:
    """fp16 and bf16 where a GPU runs them fast; bf16 alone on a CPU (oneDNN has no fp16)."""
    if device.type == "cuda":
        return [("fp16", torch.float16), ("bf16", torch.bfloat16)]
    return [("bf16", torch.bfloat16)]


def precision_agreement(
    runner: Runner, pixels: torch.Tensor, reference: torch.Tensor
) -> list[dict[str, object]]:
    """Each reduced-precision autocast against fp32, on the same (CPU-decoded) inputs."""
    rows: list[dict[str, object]] = []
    for label, dtype in reduced_precisions(runner.device):
        rows.append({
            "precision": f"{label} autocast",
            "reference": "fp32",
            "device": runner.device.type,
            "inputs": "cpu-decoded",
            **compare(runner.logits(pixels, dtype), reference),
        })  # fmt: skip
    return rows


# ---- the report ------------------------------------------------------------------------------


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise SystemExit("decode_parity: --device cuda, but torch sees no CUDA device")
    return torch.device(requested)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def strict_fp32() -> None:
    """fp32 means fp32: cuDNN would otherwise run convolutions in TF32 (10-bit mantissa),
    and the reference the reduced precisions are held against would itself be reduced."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def model_facts(loaded: models.LoadedModel, card: Path, calibrated: bool) -> dict[str, object]:
    spec = loaded.card.input
    return {
        "card": str(card),
        "name": loaded.card.name,
        "architecture": loaded.card.architecture.name,
        "input": "x".join(map(str, spec.shape)),
        "resize": spec.resize if spec.resize_size is None else f"{spec.resize} {spec.resize_size}",
        "classes": len(loaded.card.labels),
        "batchnorm_from_photos": calibrated,
    }


def measure(
    card: Path, photos: Sequence[Photo], device: torch.device, batch: int, calibrate: bool
) -> dict[str, object]:
    loaded = models.load(card)
    spec = loaded.card.input
    decodable = [p for p in photos if device_decodable(p.data)]
    if not decodable:
        raise SystemExit("decode_parity: no photo in the set is a baseline JPEG")
    cpu = cpu_pixels(spec, decodable)
    on_device = device_pixels(spec, decodable, device, batch)
    runner = Runner(loaded, device, batch)
    if calibrate:
        runner.calibrate_batchnorm(cpu)
    reference = runner.logits(cpu)
    decode = compare(runner.logits(on_device), reference)
    return {
        "model": model_facts(loaded, card, calibrate),
        "device_decodable": len(decodable),
        "pixels": asdict(pixel_parity(decodable, cpu, on_device)),
        **decode,
        "top1_agreement_of": f"fp32 on {device.type}: device-decoded vs cpu-decoded inputs",
        "top1_agreement_ok": decode["top1_agreement"] >= AGREEMENT_OK,
        "top1_agreement_threshold": AGREEMENT_OK,
        # Where few classes win (random weights), agreement says less: this says how few.
        "top1_distinct_classes": len(set(reference.argmax(1).tolist())),
        "precision_agreement": precision_agreement(runner, cpu, reference),
    }


def summary(report: dict[str, Any]) -> Iterator[str]:
    pixels, model = report["pixels"], report["model"]
    yield (
        f"decode parity on {report['device']} ({report['device_type']}): {report['images']} "
        f"photos, {report['device_decodable']} device-decodable; {model['architecture']} "
        f"{model['input']} ({'random init' if report['random_init'] else model['card']})"
    )
    yield (
        f"  pixels after preprocessing, |device - cpu| in uint8 levels: mean "
        f"{pixels['mean_abs_diff']:.3f}, worst image {pixels['max_image_mean_abs_diff']:.3f} "
        f"({pixels['worst_image']}), p99 {pixels['p99_abs_diff']:.0f}, max {pixels['max_abs_diff']}"
    )
    verdict = "ok" if report["top1_agreement_ok"] else f"below {AGREEMENT_OK}"
    yield (
        f"  top-1 agreement, {report['top1_agreement_of']}: {report['top1_agreement']:.4f} "
        f"({verdict}; {report['top1_distinct_classes']} distinct classes; logits moved "
        f"{report['logits_rms_diff_relative']:.4f} of their spread)"
    )
    for row in report["precision_agreement"]:
        yield (
            f"  top-1 agreement, {row['precision']} vs {row['reference']} on {row['device']} "
            f"({row['inputs']} inputs): {row['top1_agreement']:.4f} (logits moved "
            f"{row['logits_rms_diff_relative']:.4f})"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="writes decode-parity.json here")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--images", type=int, default=240, help="photos in the set")
    parser.add_argument("--seed", type=int, default=0, help="where the crops are taken")
    parser.add_argument("--batch", type=int, default=32, help="images per decode and forward")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--card", type=Path, help="a model card (default: a random-init --arch)")
    model.add_argument("--arch", choices=("resnet50", "resnet18"), default="resnet50")
    parser.add_argument(
        "--batchnorm-from-photos",
        action="store_true",
        help="with --card: recompute its BatchNorm statistics from the photos (random weights)",
    )
    # The packed weights are large and not results: beside bench/gpu_bench.py's, not in --out.
    parser.add_argument("--work", type=Path, default=Path("/tmp/cnn-serve-gpu"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.images < 1:
        raise SystemExit("decode_parity: --images must be at least 1")
    device = pick_device(args.device)
    if device.type == "cuda":
        strict_fp32()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    card = args.card or pack_random(args.work.resolve() / args.arch, args.arch)
    photos = photographs(args.images, args.seed)
    report: dict[str, Any] = {
        "device": device_name(device),
        "device_type": device.type,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "images": len(photos),
        "image_set": describe(photos),
        "random_init": args.card is None,
    }
    # A random-init model packed here gets BatchNorm statistics; a given card is left as is.
    calibrate = args.card is None or args.batchnorm_from_photos
    report.update(measure(card, photos, device, args.batch, calibrate))
    (out / "decode-parity.json").write_text(json.dumps(report, indent=1))
    print("\n".join(summary(report)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
