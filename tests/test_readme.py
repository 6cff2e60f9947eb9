"""The README documents every setting the service reads, and its examples run as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.settings import Settings
from tests.helpers import ROOT, running_server


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`CNN_{name.upper()}`" not in readme]
    assert missing == []


def test_readme_opens_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text()[:800]
    assert "make serve" in head
    assert "make test" in head


FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SHOWN_OUTPUT = ("json", "text")


@dataclass(frozen=True)
class Example:
    kind: str  # "sh" (its curl lines are run) or "python"
    code: str
    shown: str | None  # the json/text block right after it, if any


def examples(markdown: str) -> list[Example]:
    blocks = [(m.group(1), m.group(2), m.start(), m.end()) for m in FENCE.finditer(markdown)]
    found = []
    for n, (kind, code, _, end) in enumerate(blocks):
        if kind not in ("sh", "python"):
            continue
        after = blocks[n + 1] if n + 1 < len(blocks) else None
        adjacent = (
            after is not None and after[0] in SHOWN_OUTPUT and not markdown[end : after[2]].strip()
        )
        found.append(Example(kind, code, after[1] if adjacent and after else None))
    return found


def shell_commands(code: str, program: str) -> list[str]:
    joined = code.replace("\\\n", " ")
    return [
        line.split("  #")[0].strip() for line in joined.splitlines() if line.startswith(program)
    ]


def matches_shown(printed: str, shown: str, kind: str) -> bool:
    """`...` in the README stands for anything; JSON is compared without its line breaks."""
    if kind == "json":
        printed, shown = printed.strip(), re.sub(r"\s+", "", shown)
    else:
        printed, shown = printed.strip(), shown.strip()
    pattern = ".*?".join(re.escape(part) for part in shown.split("..."))
    return re.fullmatch(pattern, printed, flags=re.S) is not None


def test_the_readme_pack_command_parses_as_written() -> None:
    from models.cli_args import input_spec_from_args
    from models.pack import build_parser

    readme = (ROOT / "README.md").read_text()
    (command,) = [c for e in examples(readme) for c in shell_commands(e.code, "cnn-pack")]
    spec = input_spec_from_args(build_parser().parse_args(shlex.split(command)[1:]))
    assert (spec.mean, spec.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (spec.shape, spec.resize_size) == ((3, 224, 224), 256)


@pytest.mark.slow
def test_every_curl_and_python_example_prints_what_the_readme_shows(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    found = examples(readme)
    # From a folder that stands for the repository root, so that -o files land in tmp_path.
    work = tmp_path / "root"
    work.mkdir()
    for name in ("docs", "models"):
        (work / name).symlink_to(ROOT / name)
    checked = 0
    with running_server(tmp_path) as server:
        here = server.base_url.removeprefix("http://")

        def run(argv: list[str]) -> str:
            env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
            done = subprocess.run(
                argv, cwd=work, env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, f"{argv}: {done.stderr}"
            return done.stdout

        for example in found:
            code = example.code.replace("localhost:8000", here)
            if example.kind == "python":
                printed = run([sys.executable, "-c", code])
                outputs = [printed]
            else:
                outputs = [run(["bash", "-c", line]) for line in shell_commands(code, "curl")]
                if not outputs:
                    continue
            checked += len(outputs)
            if example.shown is not None:
                assert len(outputs) == 1, example.code
                kind = "json" if example.shown.lstrip().startswith("{") else "text"
                assert matches_shown(outputs[0], example.shown, kind), (
                    f"{example.code}\nprinted:\n{outputs[0][:2000]}\nREADME shows:\n{example.shown}"
                )
    assert checked >= 8
    # The three pictures in the README are what those commands wrote, give or take a level.
    for written, committed in (("conv1.png", "feature-maps-conv1.png"),
                               ("relu4.png", "feature-maps-relu4.png"),
                               ("kernels.png", "kernels-conv1.png")):  # fmt: skip
        new = np.asarray(Image.open(work / written).convert("RGB"), dtype=np.int16)
        old = np.asarray(Image.open(ROOT / "docs" / committed).convert("RGB"), dtype=np.int16)
        assert new.shape == old.shape and int(np.abs(new - old).max()) <= 2, written


def test_the_matcher_tells_shown_from_printed() -> None:
    assert matches_shown('{"a":0.99577123,"b":[1,2]}', '{"a":0.99577...,\n "b":[...]}', "json")
    assert not matches_shown('{"a":0.98,"b":[1]}', '{"a":0.99577...,"b":[...]}', "json")
    assert matches_shown("7 0.9957708\n", "7 0.99577...", "text")
    assert not matches_shown("1 0.9957708\n", "7 0.99577...", "text")
