"""cnn-pack: turn your own trained weights into a servable checkpoint (weights + card).

    cnn-pack --arch resnet50 --weights my_state_dict.pth --labels labels.txt \\
             --input 3x224x224 --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 --out DIR

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
from models.card import InputSpec
from models.checkpoint import load, save_checkpoint
from models.cli_args import add_input_spec_arguments, input_spec_from_args, read_labels
from models.errors import ModelLoadError
from models.preprocess import Preprocessor
from models.profiling import MAX_PROFILE_IMAGES, folder_image_paths, open_images, profile_model


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
    parser.add_argument("--version", default="1")
    parser.add_argument("--seed", type=int, default=0, help="seed for --random-init")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--profile-data",
        type=Path,
        metavar="DIR",
        help="images (an ImageFolder or a flat folder) to profile activations over, "
        f"at most {MAX_PROFILE_IMAGES} of them",
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
    args = build_parser().parse_args(argv)
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
    card_path = save_checkpoint(
        module.eval(),
        out_dir=args.out,
        name=args.name or args.arch,
        labels=labels,
        input_spec=spec,
        architecture=args.arch,
        version=args.version,
        activation_profile=_profile(args.profile_data, module, spec),
    )
    load(card_path)  # prove it serves before saying so
    print(f"wrote {card_path} and {card_path.with_suffix('.pt').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
