"""The mean batch size from /metrics text, over a window."""

from __future__ import annotations

from bench.scrape import histogram_totals, triton_batch_totals

BEFORE = """# HELP cnn_batch_size Images per forward pass.
# TYPE cnn_batch_size histogram
cnn_batch_size_bucket{model="mnist-cnn",le="1.0"} 3.0
cnn_batch_size_sum{model="mnist-cnn"} 10.0
cnn_batch_size_count{model="mnist-cnn"} 5.0
cnn_batch_size_sum{model="other"} 4.0
cnn_batch_size_count{model="other"} 1.0
cnn_batch_size_seconds_sum 99.0
"""
AFTER = BEFORE.replace('_sum{model="mnist-cnn"} 10.0', '_sum{model="mnist-cnn"} 130.0').replace(
    '_count{model="mnist-cnn"} 5.0', '_count{model="mnist-cnn"} 13.0'
)


def test_totals_sum_every_label_set() -> None:
    totals = histogram_totals(BEFORE)
    assert totals is not None
    assert (totals.sum, totals.count) == (14.0, 6.0)


def test_mean_over_a_window_is_the_difference() -> None:
    before, after = histogram_totals(BEFORE), histogram_totals(AFTER)
    assert before is not None and after is not None
    assert after.minus(before).mean == 120.0 / 8.0


def test_absent_metric_is_none_and_empty_window_has_no_mean() -> None:
    assert histogram_totals("process_cpu_seconds_total 1.0\n") is None
    totals = histogram_totals(BEFORE)
    assert totals is not None and totals.minus(totals).mean is None


TRITON = """# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="mnist-cnn",version="1"} 640
# HELP nv_inference_exec_count Number of model executions performed
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="mnist-cnn",version="1"} 25
nv_inference_request_success{model="mnist-cnn",version="1"} 640
"""


def test_triton_counters_give_images_per_execution() -> None:
    before = triton_batch_totals(TRITON)
    after = triton_batch_totals(TRITON.replace("} 640\n", "} 1280\n").replace("} 25\n", "} 45\n"))
    assert before is not None and after is not None
    assert (before.sum, before.count) == (640.0, 25.0)  # not the requests: their rows
    assert after.minus(before).mean == 640.0 / 20.0
    assert triton_batch_totals(BEFORE) is None
