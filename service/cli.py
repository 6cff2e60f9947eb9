"""cnn-serve: start the HTTP service.

Flags override the CNN_* environment variables, which override the defaults.
A bad setting or a model that cannot be loaded ends the process with one line
naming the cause and a non-zero exit code; the server never starts half-ready.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from models.validation import summarize_errors
from service.cpus import available_cpus, default_workers
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
    parser.add_argument(
        "--model-repository",
        metavar="DIR",
        help="serve the models of this repository, DIR/<name>/<version>/ (CNN_MODEL_REPOSITORY)",
    )
    parser.add_argument(
        "--model-control",
        choices=("none", "explicit", "poll"),
        help="who changes the served versions (CNN_MODEL_CONTROL; default none)",
    )
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N (CNN_DEVICE)")
    parser.add_argument("--precision", help="auto | fp32 | fp16 | bf16 (CNN_PRECISION)")
    parser.add_argument(
        "--workers",
        type=int,
        help="HTTP worker processes; 1: one process (CNN_WORKERS; default: one per CPU)",
    )
    return parser


def overrides_from_args(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    return {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "models": args.model,
            "model_repository": args.model_repository,
            "model_control": args.model_control,
            "device": args.device,
            "precision": args.precision,
            "workers": args.workers,
        }.items()
        if value is not None
    }


def settings_from_args(argv: Sequence[str] | None = None) -> Settings:
    return Settings(**overrides_from_args(argv))


def child_environment(overrides: dict[str, Any]) -> dict[str, str]:
    """The environment under which the processes of a multi-process server read the flags."""
    env = dict(os.environ)
    for key, value in overrides.items():
        env[f"CNN_{key.upper()}"] = ",".join(value) if isinstance(value, list) else str(value)
    return env


def _variable(loc: Sequence[int | str]) -> str:
    """The environment variable a setting's error is about (its first location part)."""
    field = str(loc[0]) if loc else "settings"
    return f"CNN_{field.upper()}"


def _settings_error(exc: ValidationError) -> str:
    return "invalid settings: " + summarize_errors(exc.errors(), label=_variable)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        overrides = overrides_from_args(argv)
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"cnn-serve: {_settings_error(exc)}", file=sys.stderr)
        return 2
    from service.preflight import SettingError, preflight

    try:
        preflight(settings)
    except SettingError as exc:
        print(f"cnn-serve: {exc}", file=sys.stderr)
        return 2
    workers = settings.workers or default_workers(available_cpus())
    if workers > 1:
        from service.supervisor import supervise

        return supervise(settings, workers, child_environment(overrides))
    from service.server import serve

    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
