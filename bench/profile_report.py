"""The profile section of RESULTS.md, from a profile made by bench/profile_run.py."""

from __future__ import annotations

from typing import Any

from bench.report_markdown import Column, Share, code, fill, name, num, share, table


def _cpu_ms(per_request: float | None) -> Column[Share]:
    """A category's share of the samples as CPU milliseconds per request."""
    if per_request is None:
        return "CPU ms per request", lambda row: "n/a"
    return "CPU ms per request", lambda row: f"{row[1] * per_request:.3f}"


def _cap(cpu_ms_per_req: float | None, cores: int) -> str:
    """The req/s that many cores reach at this CPU cost, with no other process running."""
    return f"{cores * 1000 / cpu_ms_per_req:,.0f}" if cpu_ms_per_req else "n/a"


def profile_section(profile: dict[str, Any] | None) -> str:
    """The section for a profile made by run.py (see profile_run.profile_ours)."""
    if not profile or not profile.get("samples"):
        reason = (profile or {}).get("error", "not run (--no-profile)")
        return fill("profile-missing", reason=reason)
    per_req = profile.get("cpu_ms_per_req")
    doing = ("what the server was doing", name)
    return fill(
        "profile",
        load=profile["load"],
        py_spy=profile["py_spy"],
        rate_hz=profile["rate_hz"],
        seconds=f"{profile['seconds']:.0f}",
        req_s=f"{profile['req_s']:,.0f}",
        server_cpu_s=f"{profile['server_cpu_s']:.2f}",
        requests=f"{profile['requests']:,}",
        cpu_ms_per_req=num(per_req, 2),
        cores=profile["cores"],
        cap=_cap(per_req, profile["cores"]),
        categories=table(
            [doing, ("share of samples", share), _cpu_ms(per_req)], profile["categories"]
        ),
        threads=table([("thread", name), ("share of samples", share)], profile["threads"]),
        top_self=table([("frame", code), ("share", share)], profile["top_self"]),
        top_ours=table([("function", code), ("share", share)], profile["top_ours_inclusive"]),
        gil=_gil_section(profile.get("gil")),
    )


def _gil_section(gil: dict[str, Any] | None) -> str:
    """The same load sampled with --gil: only the thread holding the GIL, at each sample."""
    if not gil or not gil.get("samples"):
        return ""
    doing = ("what the GIL holder was doing", name)
    return fill(
        "gil",
        req_s=f"{gil['req_s']:,.0f}",
        categories=table([doing, ("share of samples", share)], gil["categories"]),
        threads=table([("thread", name), ("share", share)], gil["threads"]),
        top_self=table([("leaf frame", code), ("share", share)], gil["top_self"][:12]),
    )
