"""The activation profile a model card carries: the reference for drift monitoring.

Plain data (pydantic, no torch), so that reading a card never imports torch;
models.activation_stats computes it and compares served traffic with it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Inner edges of the top-1 confidence buckets: <0.5, [0.5, 0.6), ..., [0.95, 0.99), >=0.99.
CONFIDENCE_EDGES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LayerProfile(_Strict):
    """One layer over the reference images: summary figures and the PSI reference bins."""

    mean: float
    std: float
    zero_fraction: float = Field(ge=0, le=1)
    never_fired_fraction: float = Field(ge=0, le=1)
    bin_edges: tuple[float, ...] = Field(description="inner edges; bins are (e[i-1], e[i]]")
    bin_fractions: tuple[float, ...] = Field(description="reference fraction in each bin")


class ActivationProfile(_Strict):
    """The reference a served model's activations are compared with (stored in its card)."""

    statistic: Literal["psi"] = "psi"
    images: int = Field(gt=0, description="how many images the profile was computed over")
    data: str | None = Field(default=None, description="which images")
    layers: dict[str, LayerProfile]
    confidence_edges: tuple[float, ...] = CONFIDENCE_EDGES
    confidence_fractions: tuple[float, ...]
    class_fractions: tuple[float, ...]
