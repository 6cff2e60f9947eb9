"""The profile section of RESULTS.md, from a profile made by bench/profile_run.py."""

from __future__ import annotations

from typing import Any


def _ms(share: float, cpu_ms_per_req: float | None) -> str:
    return "n/a" if cpu_ms_per_req is None else f"{share * cpu_ms_per_req:.3f}"


def profile_lines(profile: dict[str, Any] | None) -> list[str]:
    """The RESULTS.md section for a profile made by run.py (see profile_run.profile_ours)."""
    if not profile or not profile.get("samples"):
        reason = (profile or {}).get("error", "not run (--no-profile)")
        return ["## Where the time goes", "", f"No profile in this run: {reason}.", ""]
    per_req = profile.get("cpu_ms_per_req")
    lines = [
        f"## Where the time goes: py-spy on cnn-serve under {profile['load']}",
        "",
        f"py-spy {profile['py_spy']} sampled the server at {profile['rate_hz']} Hz (nonblocking,",
        f"active threads only) for {profile['seconds']:.0f} s while it answered "
        f"{profile['req_s']:,.0f} req/s. The server's",
        f"process used {profile['server_cpu_s']:.2f} CPU-seconds for {profile['requests']:,} "
        f"requests: **{_fmt(per_req)} ms of CPU per request**",
        f"(at {profile['cores']} cores this caps throughput near "
        f"{_cap(per_req, profile['cores'])} req/s with no other process on the machine).",
        "Each sample is charged to the first frame from the leaf up that a rule in",
        "bench/profile_run.py recognises.",
        "",
        "| what the server was doing | share of samples | CPU ms per request |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {s:.1%} | {_ms(s, per_req)} |" for k, s in profile["categories"]]
    lines += ["", "| thread | share of samples |", "|---|---|"]
    lines += [f"| {k} | {s:.1%} |" for k, s in profile["threads"]]
    lines += ["", "Top frames by own time (leaf frames):", "", "| frame | share |", "|---|---|"]
    lines += [f"| `{k}` | {s:.1%} |" for k, s in profile["top_self"]]
    lines += ["", "Our functions, inclusive time:", "", "| function | share |", "|---|---|"]
    lines += [f"| `{k}` | {s:.1%} |" for k, s in profile["top_ours_inclusive"]]
    return [*lines, "", *_gil_lines(profile.get("gil"))]


def _gil_lines(gil: dict[str, Any] | None) -> list[str]:
    """The same load sampled with --gil: only the thread holding the GIL, at each sample."""
    if not gil or not gil.get("samples"):
        return []
    lines = [
        "### Who holds the GIL (py-spy --gil, same load, the next window)",
        "",
        "A thread that py-spy sees as active may be waiting to take the GIL back after a call",
        "that released it (a socket write, os.urandom, epoll): the table above counts that",
        "wait where it happened. Sampling only the GIL holder shows the Python work that",
        f"serializes the process ({gil['req_s']:,.0f} req/s during this window).",
        "",
        "| what the GIL holder was doing | share of samples |",
        "|---|---|",
    ]
    lines += [f"| {k} | {s:.1%} |" for k, s in gil["categories"]]
    lines += ["", "| thread | share |", "|---|---|"]
    lines += [f"| {k} | {s:.1%} |" for k, s in gil["threads"]]
    lines += ["", "| leaf frame | share |", "|---|---|"]
    lines += [f"| `{k}` | {s:.1%} |" for k, s in gil["top_self"][:12]]
    return [*lines, ""]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _cap(cpu_ms_per_req: float | None, cores: int) -> str:
    if not cpu_ms_per_req:
        return "n/a"
    return f"{cores * 1000 / cpu_ms_per_req:,.0f}"
