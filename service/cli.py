"""cnn-serve: start the HTTP service.

Flags override the CNN_* environment variables, which override the defaults.
A bad setting or a model that cannot be loaded ends the process with one line
naming the cause and a non-zero exit code; the server never starts half-ready.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from models.validation import summarize_errors
from service.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnn-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", help="address to listen on (CNN_HOST; default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (CNN_PORT; default 8000)")
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME=PATH",
        help="serve this checkpoint under NAME; repeatable (CNN_MODELS; default: mnist-cnn)",
    )
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N (CNN_DEVICE)")
    parser.add_argument("--precision", help="auto | fp32 | fp16 | bf16 (CNN_PRECISION)")
    return parser


def settings_from_args(argv: Sequence[str] | None = None) -> Settings:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "models": args.model,
            "device": args.device,
            "precision": args.precision,
        }.items()
        if value is not None
    }
    return Settings(**overrides)


def _variable(loc: Sequence[int | str]) -> str:
    """The environment variable a setting's error is about (its first location part)."""
    field = str(loc[0]) if loc else "settings"
    return f"CNN_{field.upper()}"


def _settings_error(exc: ValidationError) -> str:
    return "invalid settings: " + summarize_errors(exc.errors(), label=_variable)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = settings_from_args(argv)
    except ValidationError as exc:
        print(f"cnn-serve: {_settings_error(exc)}", file=sys.stderr)
        return 2
    # After settings: importing torch takes a moment.
    from service.preflight import SettingError, preflight
    from service.server import serve

    try:
        preflight(settings)
    except SettingError as exc:
        print(f"cnn-serve: {exc}", file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
