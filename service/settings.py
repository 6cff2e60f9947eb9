"""Service settings: environment variables prefixed CNN_, or cnn-serve flags.

Every field is documented; the README's settings table is written from these
descriptions. Invalid values fail at start-up with a message naming the setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.weights import DEFAULT_MODEL_NAME, default_model_path
from service.cpus import available_cpus, default_request_pass, default_torch_threads

Precision = Literal["auto", "fp32", "fp16", "bf16"]
DeviceDecode = Literal["auto", "on", "off"]


class ModelSpec(BaseModel):
    """One served model: the name it is served under and its checkpoint path."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    path: Path

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        name, sep, path = text.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"expected NAME=PATH, got {text!r}")
        return cls(name=name.strip(), path=Path(path.strip()))


def _read_key(path: Path) -> str:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if not key:
        raise ValueError(f"{path} is empty")
    return key


def _default_torch_threads() -> int:
    return default_torch_threads(available_cpus())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CNN_", extra="ignore", validate_default=True)

    host: str = Field("0.0.0.0", description="address to listen on")
    port: int = Field(8000, ge=1, le=65535, description="port to listen on")
    models: Annotated[list[ModelSpec], NoDecode] = Field(
        default_factory=list,
        description="models to serve, NAME=PATH[,NAME=PATH...]; empty: the shipped mnist-cnn",
    )
    default_model: str | None = Field(
        None, description="model answering /v1/classify (default: the first configured)"
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda|cuda:\d+)$",
        description="auto, cpu, cuda or cuda:N (auto: CUDA when available)",
    )
    precision: Precision = Field(
        "auto",
        description="auto, fp32, fp16 or bf16 (auto: fp16 on CUDA; bf16 on CPUs with native bf16 for large models; else fp32)",
    )
    max_batch_size: int = Field(
        32,
        ge=1,
        le=4096,
        description="images per forward pass gathered from several requests, at most",
    )
    max_request_pass: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="one request's images per forward pass, at most (more are split); unset: twice "
        "the max batch size on a CPU engine for a model under 100 M multiply-adds an image, else "
        "the max batch size",
    )
    max_batch_delay_ms: float = Field(
        5.0, ge=0, le=10_000, description="longest wait for more requests while others are arriving"
    )
    max_queue_size: int = Field(
        1024, ge=1, description="images waiting for a batch, at most; beyond it: 503 overloaded"
    )
    request_timeout_s: float = Field(30.0, gt=0, description="deadline from arrival to answer: 504")
    cuda_graphs: bool = Field(
        True,
        description="on CUDA, replay the forward pass of each warm-up batch size from a CUDA "
        "graph (batches padded up to the next size)",
    )
    device_decode: DeviceDecode = Field(
        "auto",
        description="where baseline JPEGs are decoded: auto (on the engine's device when it "
        "is CUDA), on (on the engine's device, CPU included), off (by the HTTP side, as "
        "every other image)",
    )
    instances: int | None = Field(
        None,
        ge=1,
        le=64,
        description="model instances (worker threads) per model; unset: 2 on a CPU engine "
        "with two CPUs or more for models of 100 M multiply-adds per image or more, else 1, "
        "plus a helper instance that runs full batches only while the first is busy, where "
        "the forward passes use at most half the CPUs; set: exactly that many, no helper",
    )
    workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="HTTP worker processes feeding one engine process; 1: a single process "
        "with the model in it; unset: one per CPU the process may use (cgroup quota included), "
        "1 on a single CPU",
    )
    torch_threads: int = Field(
        default_factory=_default_torch_threads,
        ge=1,
        description="torch intra-op threads; unset: the CPUs this process may use, less one "
        "(at least 1)",
    )
    preprocess_workers: int = Field(
        default_factory=available_cpus,
        ge=1,
        description="threads decoding and preprocessing images",
    )
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="request body size limit")
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="request target and headers size limit (431)"
    )
    max_images_per_request: int = Field(256, ge=1, description="images in one request, at most")
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="pixels in one image, at most (checked before decoding)"
    )
    api_key: SecretStr | None = Field(None, description="require 'Authorization: Bearer <key>'")
    api_key_file: Path | None = Field(None, description="read the API key from this file")
    model_repository: Path | None = Field(
        None,
        description="serve the models of this repository folder, DIR/<name>/<version>/ "
        "(instead of CNN_MODELS)",
    )
    model_control: Literal["none", "explicit", "poll"] = Field(
        "none",
        description="with a repository: none (what it holds at start-up), explicit (load and "
        "unload through the admin API) or poll (read again every CNN_REPOSITORY_POLL_S)",
    )
    repository_poll_s: float = Field(
        5.0, gt=0, le=3600, description="with CNN_MODEL_CONTROL=poll, seconds between scans"
    )
    admin_api_key: SecretStr | None = Field(
        None,
        description="the key of the model management API (/v2/repository); unset: that API is off",
    )
    admin_api_key_file: Path | None = Field(None, description="read the admin key from this file")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["json", "text"] = Field("json", description="json lines or plain text")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="serve /metrics on this port instead of the main one"
    )
    shutdown_grace_s: float = Field(
        25.0, ge=0, description="on SIGTERM, time to finish queued and in-flight requests"
    )
    shutdown_drain_s: float = Field(
        2.0,
        ge=0,
        description="on SIGTERM, time /readyz answers 503 while new connections are still "
        "accepted, before the listener closes",
    )
    ui: bool = Field(True, description="serve the feature-map debugging page at /")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="origins allowed by CORS (comma-separated); empty: off"
    )
    temp_dir: Path | None = Field(None, description="the only place the service may write")
    explain_queue_size: int = Field(
        4, ge=1, le=1024, description="explanations waiting per model, at most; beyond: 503"
    )
    activation_sample_rate: float = Field(
        0.02, ge=0, le=1, description="fraction of batches whose activations are monitored; 0: off"
    )
    activation_window_images: int = Field(
        1000, ge=1, description="images per activation-monitoring window"
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="longest time a request head may take to arrive, from its first byte "
        "(from connecting, for a connection's first request): then 408 and the connection closes",
    )
    body_timeout_s: float = Field(
        10.0, gt=0, description="longest wait for the next piece of a request body: 408"
    )
    keep_alive_timeout_s: int = Field(
        5, ge=1, description="an idle keep-alive connection is closed after this many seconds"
    )
    max_connections: int = Field(
        256,
        ge=1,
        description="open connections (idle keep-alive included) per process, at most; "
        "a request arriving over it gets 503",
    )
    max_request_pixels: int = Field(
        64_000_000,
        ge=1,
        description="pixels in all the images of one request together, at most "
        "(checked from the headers before decoding)",
    )
    max_response_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="response body size limit (413)"
    )
    max_spool_bytes: int = Field(
        128 * 1024 * 1024,
        ge=0,
        description="multipart file bytes held by all uploads in progress together, at most "
        "(memory and CNN_TEMP_DIR); past it 503",
    )

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [ModelSpec.parse(part) for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            return [ModelSpec.parse(v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    # Field validators, not one model validator: an error then carries its field's name,
    # which the start-up line turns into the variable at fault.
    @field_validator("models")
    @classmethod
    def _unique_names(cls, value: list[ModelSpec]) -> list[ModelSpec]:
        names = [spec.name for spec in value]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate model names in {names}")
        return value

    @field_validator("default_model")
    @classmethod
    def _default_is_served(cls, value: str | None, info: ValidationInfo) -> str | None:
        names = [spec.name for spec in info.data.get("models") or []]
        # With no models configured the shipped one is served: service.preflight checks that.
        if value is not None and names and value not in names:
            raise ValueError(f"{value!r} is not among the served models {names}")
        return value

    @field_validator("api_key", "admin_api_key")
    @classmethod
    def _key_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            # An empty key would make every request 401 and hide CNN_API_KEY_FILE.
            raise ValueError("is empty: unset it for no authentication, or give a key")
        return value

    @field_validator("api_key_file", "admin_api_key_file")
    @classmethod
    def _key_file_readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            _read_key(value)
        return value

    @field_validator("model_repository")
    @classmethod
    def _repository_is_a_folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not an existing directory")
        return value

    @field_validator("temp_dir")
    @classmethod
    def _temp_dir_writable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not an existing directory")
        if value is not None and not os.access(value, os.W_OK | os.X_OK):
            raise ValueError(f"{value} is not writable by this process")
        return value

    @field_validator("metrics_port")
    @classmethod
    def _own_metrics_port(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value == info.data.get("port"):
            raise ValueError("is the same as CNN_PORT; leave it unset to serve /metrics there")
        return value

    @model_validator(mode="after")
    def _key_from_file(self) -> Settings:
        if self.api_key_file is not None and self.api_key is None:
            self.api_key = SecretStr(_read_key(self.api_key_file))
        if self.admin_api_key_file is not None and self.admin_api_key is None:
            self.admin_api_key = SecretStr(_read_key(self.admin_api_key_file))
        if (
            self.admin_api_key is not None
            and self.api_key is not None
            and self.admin_api_key.get_secret_value() == self.api_key.get_secret_value()
        ):
            # One key for both would let every client load and unload models.
            raise ValueError("CNN_ADMIN_API_KEY must differ from CNN_API_KEY")
        return self

    @model_validator(mode="after")
    def _one_source_of_models(self) -> Settings:
        if self.model_repository is not None and self.models:
            raise ValueError("set CNN_MODEL_REPOSITORY or CNN_MODELS, not both")
        if self.model_repository is None and self.model_control != "none":
            raise ValueError("CNN_MODEL_CONTROL needs a CNN_MODEL_REPOSITORY")
        return self

    @property
    def largest_pass(self) -> int:
        """The most images one forward pass may hold, whatever the model and device."""
        longest_default = default_request_pass("cpu", 0, self.max_batch_size)  # a small model's
        return max(self.max_batch_size, self.max_request_pass or longest_default)

    @property
    def max_batch_delay_s(self) -> float:
        return self.max_batch_delay_ms / 1000.0


def configured_models(settings: Settings) -> list[ModelSpec]:
    if settings.models:
        return list(settings.models)
    return [ModelSpec(name=DEFAULT_MODEL_NAME, path=default_model_path())]
