"""cnn-pack: turn your own trained weights into a servable checkpoint (weights + card).

    cnn-pack --arch resnet50 --weights my_state_dict.pth --labels labels.txt \\
             --input 3x224x224 --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 --out DIR

--repository DIR --name NAME instead of --out publishes the checkpoint as the
next version of NAME in a model repository (DIR/NAME/1, then DIR/NAME/2, ...);
the card's version is the folder's number:

    cnn-pack --arch mnist_cnn --weights digits.pth --num-classes 10 --input 1x28x28 \\
             --mean 0.1307 --std 0.3081 --repository DIR --name digits

--random-init instead of --weights writes a randomly initialised model, for
benchmarks and tests. The weights are checked against the architecture
before anything is written. --profile-data DIR (an ImageFolder or a folder of
images) stores the model's activation profile over those images in the card,
the reference that drift is measured against.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from models.activation_profile import ActivationProfile
from models.architectures import ARCHITECTURES, build_model
from models.card import CARD_SUFFIX, InputSpec
from models.checkpoint import load, save_checkpoint
from models.cli_args import add_input_spec_arguments, input_spec_from_args, read_labels
from models.errors import ModelLoadError
from models.preprocess import Preprocessor
from models.profiling import MAX_PROFILE_IMAGES, folder_image_paths, open_images, profile_model
from models.repository import MODEL_NAME_PATTERN, publish_version


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnn-pack",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--arch", required=True, choices=sorted(ARCHITECTURES))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", type=Path, help="a state_dict saved with torch.save")
    source.add_argument("--random-init", action="store_true", help="random weights (benchmarks)")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", type=Path, help="text file, one label per line, in class order")
    labels.add_argument("--num-classes", type=int, help="name the classes 0..N-1")
    parser.add_argument("--name", help="model name (default: the architecture)")
    parser.add_argument("--version", help="the card's version (default: 1; not with --repository)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --random-init")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", type=Path, help="output folder")
    out.add_argument(
        "--repository",
        type=Path,
        metavar="DIR",
        help="a model repository: publish as the next version of --name in it",
    )
    parser.add_argument(
        "--profile-data",
        type=Path,
        metavar="DIR",
        help="images (an ImageFolder or a flat folder) to profile activations over, "
        f"at most {MAX_PROFILE_IMAGES} of them",
    )
    parser.add_argument(
        "--gpu-precision",
        choices=("fp16", "bf16"),
        help="the reduced precision to run in on a GPU under CNN_PRECISION=auto (default fp16; "
        "bf16 for a model whose activations overflow fp16)",
    )
    add_input_spec_arguments(parser)
    return parser


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a training checkpoint wrapping the weights
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path} holds a {type(state).__name__}, not a state_dict")
    return state


def _profile(
    folder: Path | None, module: torch.nn.Module, spec: InputSpec
) -> ActivationProfile | None:
    if folder is None:
        return None
    try:
        paths = folder_image_paths(folder)
    except ValueError as exc:
        raise SystemExit(f"cnn-pack: --profile-data: {exc}") from None
    return profile_model(module, Preprocessor(spec), open_images(paths), data=str(folder))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repository is not None:
        # The version is the folder's number, known only once published.
        if args.version is not None:
            parser.error("--version cannot be given with --repository")
        if args.name is None:
            parser.error("--repository needs --name")
        if not MODEL_NAME_PATTERN.fullmatch(args.name):
            parser.error(f"--name {args.name!r} must match {MODEL_NAME_PATTERN.pattern}")
    labels = (
        read_labels(args.labels) if args.labels else tuple(str(i) for i in range(args.num_classes))
    )
    spec = input_spec_from_args(args)
    torch.manual_seed(args.seed)
    module = build_model(args.arch, num_classes=len(labels), in_channels=spec.channels)
    if args.weights:
        try:
            module.load_state_dict(_state_dict(args.weights), strict=True)
        except (RuntimeError, ModelLoadError) as exc:
            first = str(exc).strip().splitlines()[0]
            print(f"cnn-pack: {args.weights} does not fit {args.arch}: {first}", file=sys.stderr)
            return 1
    name = args.name or args.arch
    module.eval()
    profile = _profile(args.profile_data, module, spec)

    def write(out_dir: Path, version: str) -> Path:
        return save_checkpoint(
            module,
            out_dir=out_dir,
            name=name,
            labels=labels,
            input_spec=spec,
            architecture=args.arch,
            version=version,
            activation_profile=profile,
            gpu_precision=args.gpu_precision,
        )

    if args.repository is None:
        card_path = write(args.out, args.version or "1")
        load(card_path)  # prove it serves before saying so
        print(f"wrote {card_path} and {card_path.with_suffix('.pt').name}")
        return 0

    def write_version(tmp: Path, version: int) -> None:
        load(write(tmp, str(version)))  # proven to serve before a poller can see it

    folder = publish_version(args.repository, name, write_version)
    card_path = folder / f"{name}{CARD_SUFFIX}"
    print(f"wrote {card_path} (version {folder.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
