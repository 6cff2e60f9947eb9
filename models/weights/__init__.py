"""The shipped, trained default model lives in this folder."""

from pathlib import Path

DEFAULT_MODEL_NAME = "mnist-cnn"


def default_model_path() -> Path:
    """The card of the shipped default model."""
    return Path(__file__).with_name(f"{DEFAULT_MODEL_NAME}.json")
