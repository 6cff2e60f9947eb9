"""What the app holds while it runs, made by the lifespan and reached through dependencies."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from service.pipeline import ImagePipeline
from service.registry import ModelRegistry
from service.settings import Settings


@dataclass
class AppState:
    settings: Settings
    registry: ModelRegistry
    executor: ThreadPoolExecutor
    pipeline: ImagePipeline
