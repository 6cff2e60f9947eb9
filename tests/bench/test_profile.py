"""Grouping py-spy's collapsed stacks: categories, threads, top frames."""

from __future__ import annotations

import pytest

from bench.profile_report import profile_section
from bench.profile_run import category, parse_collapsed, summarize

RAW = (
    "thread (11): MainThread;run (asyncio/base_events.py:600);"
    "data_received (uvicorn/protocols/http/httptools_impl.py:140) 30\n"
    "thread (11): MainThread;run (asyncio/base_events.py:600);"
    "classify (service/api/classify.py:20);json_response (service/responses.py:10) 10\n"
    "thread (12): preprocess_0;_prepare (service/pipeline.py:40);"
    "decode_image (service/imaging.py:30);load (PIL/ImageFile.py:200) 20\n"
    "thread (13): preprocess_1;_prepare (service/pipeline.py:40) 5\n"
    "thread (14): batcher-mnist-cnn-0;_work (service/batching.py:250);"
    "run (service/engine.py:70);_call_impl (torch/nn/modules/module.py:1700) 35\n"
)


def test_parse_reads_thread_frames_and_counts() -> None:
    stacks = parse_collapsed(RAW)
    assert [s.count for s in stacks] == [30, 10, 20, 5, 35]
    assert stacks[2].thread == "preprocess_0"
    assert stacks[2].frames[-1].function == "load"
    assert stacks[2].frames[-1].file == "PIL/ImageFile.py"


def test_leaf_first_rules_pick_the_category() -> None:
    stacks = parse_collapsed(RAW)
    assert [category(s.frames) for s in stacks] == [
        "HTTP protocol (uvicorn, httptools)",
        "response encoding (JSON)",
        "decode + preprocess (PIL, libpng, numpy)",
        "decode + preprocess (PIL, libpng, numpy)",
        "model forward (torch, engine)",
    ]


def test_summary_shares_add_up_and_pool_threads_are_grouped() -> None:
    summary = summarize(parse_collapsed(RAW))
    assert summary["samples"] == 100
    categories = dict(summary["categories"])
    assert categories["model forward (torch, engine)"] == pytest.approx(0.35)
    assert sum(categories.values()) == pytest.approx(1.0)
    assert dict(summary["threads"])["preprocess"] == pytest.approx(0.25)
    ours = dict(summary["top_ours_inclusive"])
    assert ours["_prepare (service/pipeline.py)"] == pytest.approx(0.25)


def test_section_turns_shares_into_cpu_ms_per_request() -> None:
    summary = summarize(parse_collapsed(RAW))
    profile = {**summary, "load": "W1 at c=64", "py_spy": "0.4.3", "rate_hz": 100}
    profile |= {"seconds": 15.0, "req_s": 500.0, "server_cpu_s": 15.0, "requests": 7500}
    profile |= {"cpu_ms_per_req": 2.0, "cores": 2}
    text = profile_section(profile)
    assert "**2.00 ms of CPU per request**" in text
    assert "| model forward (torch, engine) | 35.0% | 0.700 |" in text
    assert "near 1,000 req/s" in text


def test_section_without_samples_says_why() -> None:
    text = profile_section({"error": "py-spy failed: permission denied"})
    assert "No profile in this run: py-spy failed: permission denied." in text


def test_gil_section_follows_when_a_gil_profile_was_made() -> None:
    summary = summarize(parse_collapsed(RAW))
    profile = {**summary, "load": "W1 at c=64", "py_spy": "0.4.3", "rate_hz": 100}
    profile |= {"seconds": 15.0, "req_s": 500.0, "server_cpu_s": 15.0, "requests": 7500}
    profile |= {"cpu_ms_per_req": 2.0, "cores": 2, "gil": {**summary, "req_s": 480.0}}
    text = profile_section(profile)
    assert "### Who holds the GIL" in text
    assert "(480 req/s during this window)" in text
    assert text.count("| model forward (torch, engine) | 35.0%") == 2
