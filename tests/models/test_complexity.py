from __future__ import annotations

from torch import nn

from models import build_model
from models.complexity import multiply_adds


def test_counts_convolutions_and_linears_by_hand() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    assert multiply_adds(net, (1, 8, 8)) == 4 * 8 * 8 * 9 + 256 * 10


def test_default_cnn_and_resnet18_orders_of_magnitude() -> None:
    mnist = multiply_adds(
        build_model("mnist_cnn", num_classes=10, in_channels=1).eval(), (1, 28, 28)
    )
    resnet = multiply_adds(
        build_model("resnet18", num_classes=1000, in_channels=3).eval(), (3, 224, 224)
    )
    assert 5_000_000 < mnist < 6_000_000
    assert 1_700_000_000 < resnet < 1_900_000_000  # torchvision's published 1.81 GFLOPs (MACs)
