"""Parsing hey's summary: throughput from 2xx answers only, percentiles, errors."""

from __future__ import annotations

import pytest

from bench.hey import HeyError, HeyResult, Load, hey_command, parse_hey

SUMMARY = """
Summary:
  Total:	2.0093 secs
  Slowest:	0.0322 secs
  Fastest:	0.0106 secs
  Average:	0.0158 secs
  Requests/sec:	505.6577

Latency distribution:
  10% in 0.0143 secs
  50% in 0.0157 secs
  99% in 0.0191 secs

Status code distribution:
  [200]	1000 responses
  [503]	16 responses

Error distribution:
  [3]	Post "http://127.0.0.1:8000/v1/classify": EOF
  [1]	Post "http://127.0.0.1:8000/v1/classify": context deadline exceeded
"""


def test_parse_counts_only_2xx_towards_throughput() -> None:
    result = parse_hey(SUMMARY)
    assert result.ok == 1000
    assert result.req_s == pytest.approx(1000 / 2.0093)
    assert result.failed == 16 + 3 + 1


def test_parse_reads_percentiles_in_milliseconds() -> None:
    result = parse_hey(SUMMARY)
    assert result.latency_ms(50) == pytest.approx(15.7)
    assert result.latency_ms(99) == pytest.approx(19.1)
    assert result.latency_ms(95) is None


def test_parse_keeps_each_transport_error_message() -> None:
    errors = parse_hey(SUMMARY).errors
    assert sorted(errors.values()) == [1, 3]
    assert any(message.endswith("EOF") for message in errors)


def test_no_answer_at_all_is_all_errors() -> None:
    text = (
        "Summary:\n  Total:\t0.0100 secs\n\nStatus code distribution:\n\n"
        'Error distribution:\n  [4]\tGet "http://127.0.0.1:1/": connection refused\n'
    )
    result = parse_hey(text)
    assert (result.ok, result.failed, result.req_s) == (0, 4, 0.0)


def test_not_a_summary_is_an_error() -> None:
    with pytest.raises(HeyError, match="not a hey summary"):
        parse_hey("open /nope: no such file or directory")


def test_round_trip_through_json_form() -> None:
    result = parse_hey(SUMMARY)
    assert HeyResult.from_dict(result.to_dict()) == result


def test_command_posts_the_body_for_a_duration(tmp_path: object) -> None:
    load = Load("http://127.0.0.1:9/x", body=__import__("pathlib").Path("/b.png"),
                content_type="image/png", concurrency=64, seconds=15)  # fmt: skip
    command = hey_command("hey", load)
    assert command[command.index("-z") + 1] == "15s"
    assert command[command.index("-c") + 1] == "64"
    assert command[command.index("-D") + 1] == "/b.png"
    assert command[-1] == "http://127.0.0.1:9/x"


def test_p99_falls_back_to_the_slowest_when_hey_has_too_few_samples() -> None:
    text = (
        "Summary:\n  Total:\t3.0000 secs\n  Slowest:\t0.9000 secs\n\n"
        "Latency distribution:\n  50% in 0.5000 secs\n\n"
        "Status code distribution:\n  [200]\t40 responses\n"
    )
    result = parse_hey(text)
    assert result.latency_ms(99) == pytest.approx(900.0)
    assert result.latency_ms(50) == pytest.approx(500.0)
    assert parse_hey(SUMMARY).latency_ms(99) == pytest.approx(19.1)  # enough samples: hey's own


def test_headers_become_h_flags() -> None:
    load = Load("http://127.0.0.1:9/v2", body=__import__("pathlib").Path("/b"),
                content_type="application/octet-stream", concurrency=8, seconds=3,
                headers=("Inference-Header-Content-Length: 120",))  # fmt: skip
    command = hey_command("hey", load)
    assert command[command.index("-H") + 1] == "Inference-Header-Content-Length: 120"
