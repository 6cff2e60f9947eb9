"""What the app holds while it runs (made by the lifespan), and what one request works with."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from service.model_repository import RepositoryControl
from service.pipeline import ImagePipeline
from service.registry import ModelRegistry, ServedModel
from service.settings import Settings
from service.spool import SpoolBudget
from service.trace import RequestTrace


@dataclass
class AppState:
    settings: Settings
    registry: ModelRegistry
    executor: ThreadPoolExecutor
    pipeline: ImagePipeline
    spool: SpoolBudget  # multipart file bytes held across requests
    repository: RepositoryControl | None = None  # set once the models are open


@dataclass(frozen=True, slots=True)
class ModelCall:
    """Everything a request that names a model needs: one contract between routes and logic."""

    state: AppState
    served: ServedModel
    deadline: float  # monotonic time by which the request must be answered
    trace: RequestTrace

    @property
    def settings(self) -> Settings:
        return self.state.settings
