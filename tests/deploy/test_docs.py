"""The kubectl commands in the READMEs name what the overlays really create.

`kubectl kustomize DIR` and `kubectl apply -k DIR` must render; `-f FILE` must exist; every
namespace and object a command names (`deployment/cnn-serve`, `hpa cnn-serve`, a custom
metric's path) must be among the rendered objects. Commands that need a cluster stop there.
"""

from __future__ import annotations

import re
import shlex

import pytest

from tests.deploy.manifests import Obj, render
from tests.helpers import ROOT

KIND_NAMES = {
    "deployment": "Deployment",
    "service": "Service",
    "hpa": "HorizontalPodAutoscaler",
    "secret": "Secret",
}


def kubectl_lines(markdown: str, section: str | None = None) -> list[str]:
    if section is not None:
        markdown = markdown.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", markdown, flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.split("#")[0].strip() for line in text.splitlines() if line.startswith("kubectl")]


def check(line: str, objects: list[Obj]) -> None:
    words = shlex.split(line)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    namespaces = {o["metadata"].get("namespace") for o in objects} - {None}
    if "-n" in words:
        assert words[words.index("-n") + 1] in namespaces, line
    for flag in ("-k", "kustomize"):
        if flag in words:
            assert render(ROOT / words[words.index(flag) + 1]), line
    if "-f" in words:
        assert (ROOT / words[words.index("-f") + 1]).is_file(), line
    for word in words:
        kind, _, name = word.partition("/")
        if kind in KIND_NAMES and name and kind != "secret":
            assert (KIND_NAMES[kind], name) in names, line
    if "get" in words and words[words.index("get") + 1] == "hpa":
        assert ("HorizontalPodAutoscaler", words[words.index("get") + 2]) in names, line
    raw = re.search(r"/namespaces/([^/]+)/pods/\*/(\w+)", line)
    if raw is not None:
        hpa = next(o for o in objects if o["kind"] == "HorizontalPodAutoscaler")
        metrics = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if "pods" in m}
        assert raw.group(1) in namespaces and raw.group(2) in metrics, line


@pytest.mark.parametrize(
    ("readme", "section"), [("README.md", "Deploy"), ("deploy/README.md", None)]
)
def test_kubectl_commands_name_rendered_objects(
    rendered: dict[str, list[Obj]], readme: str, section: str | None
) -> None:
    lines = kubectl_lines((ROOT / readme).read_text(encoding="utf-8"), section)
    assert len(lines) >= 4
    objects = rendered["cpu"]
    for line in lines:
        check(line, objects)


def test_readme_deploy_section_fits_one_screen() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]
    assert len(section.strip().splitlines()) <= 30


def test_documented_secrets_are_the_ones_the_pods_read(rendered: dict[str, list[Obj]]) -> None:
    """The API key (every overlay) and the admin key (the repository overlay)."""
    lines = kubectl_lines((ROOT / "deploy" / "README.md").read_text(encoding="utf-8"))
    creates = [shlex.split(line) for line in lines if "secret" in line.split()]
    documented = {c[c.index("generic") + 1]: c[-1] for c in creates}
    deployment = next(o for o in rendered["repository"] if o["kind"] == "Deployment")
    variables = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    read = {
        entry["name"]: entry["valueFrom"]["secretKeyRef"]
        for entry in variables
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    assert set(read) == {"CNN_API_KEY", "CNN_ADMIN_API_KEY"}
    assert {ref["name"] for ref in read.values()} == set(documented)
    for ref in read.values():
        assert documented[ref["name"]].startswith(f"--from-literal={ref['key']}=")
