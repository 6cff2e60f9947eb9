"""The bucketed replay's bookkeeping, on a CPU: padding never changes an answer."""

from __future__ import annotations

import torch
from torchvision.models import resnet18

import models
from service.batch_sizes import warm_up_sizes
from service.graphs import BucketedForward, EagerReplay, bucket_for


def test_each_size_goes_to_the_smallest_bucket_that_holds_it() -> None:
    buckets = warm_up_sizes(32)  # 1, 2, 4, 8, 16, 32
    assert [bucket_for(n, buckets) for n in (1, 2, 3, 5, 16, 17, 32)] == [1, 2, 4, 8, 16, 32, 32]
    assert bucket_for(33, buckets) is None


def _replayed_equals_the_module(module: torch.nn.Module, shape: tuple[int, ...]) -> None:
    module.eval()

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(batch)

    buckets = warm_up_sizes(8)
    replayed = BucketedForward(forward, torch.zeros((1, *shape)), buckets, EagerReplay)
    torch.manual_seed(0)
    for size in (1, 3, 5, 8, 11):  # within buckets, padded, and past the largest
        batch = torch.randn((size, *shape))
        expected = forward(batch)
        first = replayed(batch)
        torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)
        # The answer is the caller's: a later batch of the same bucket does not change it.
        replayed(torch.randn((size, *shape)))
        torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)


def test_padded_batches_give_each_image_its_own_answer_shipped_model() -> None:
    loaded = models.load(models.default_model_path())
    _replayed_equals_the_module(loaded.module, loaded.card.input.shape)


def test_padded_batches_give_each_image_its_own_answer_resnet() -> None:
    _replayed_equals_the_module(resnet18(num_classes=10), (3, 64, 64))


def test_a_channels_last_example_gets_channels_last_buffers() -> None:
    example = torch.zeros((1, 3, 8, 8)).contiguous(memory_format=torch.channels_last)
    seen: list[bool] = []

    def forward(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.is_contiguous(memory_format=torch.channels_last))
        return batch.flatten(1).sum(1, keepdim=True)

    BucketedForward(forward, example, [1, 2], EagerReplay)
    assert seen == [True, True]
