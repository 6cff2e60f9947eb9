from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import models
from models.pack import main as pack
from models.repository import (
    RepositoryError,
    VersionPolicy,
    next_version,
    publish_version,
    scan,
    scan_model,
)


def _version(root: Path, name: str, number: str, cards: tuple[str, ...] = ("m",)) -> Path:
    folder = root / name / number
    folder.mkdir(parents=True)
    for card in cards:
        (folder / f"{card}.json").write_text("{}")
        (folder / f"{card}.pt").write_bytes(b"")
    return folder


def _config(root: Path, name: str, body: object) -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    (root / name / "config.json").write_text(text)


def _pack_args(root: Path, *extra: str) -> list[str]:
    return [
        "--arch", "mnist_cnn", "--random-init", "--num-classes", "3", "--input", "1x28x28",
        "--mean", "0.5", "--std", "0.5", "--repository", str(root), *extra,
    ]  # fmt: skip


def test_scan_orders_versions_as_numbers(tmp_path: Path) -> None:
    for number in ("1", "2", "10"):
        _version(tmp_path, "digits", number)
    _version(tmp_path, "pets", "1")
    found = scan(tmp_path)
    assert list(found) == ["digits", "pets"]
    digits = found["digits"]
    assert list(digits.versions) == [1, 2, 10]
    assert digits.versions[10].card == tmp_path / "digits" / "10" / "m.json"
    assert digits.policy == VersionPolicy("latest") and digits.config_error is None
    assert digits.wanted() == (10,)
    assert found["pets"].wanted() == (1,)


def test_scan_ignores_what_is_not_a_version_or_a_model(tmp_path: Path) -> None:
    _version(tmp_path, "digits", "3")
    for other in (".tmp-x", "01", "v2", "0"):
        _version(tmp_path, "digits", other)
    (tmp_path / "digits" / "4").write_text("a file, not a version")
    _version(tmp_path, ".hidden", "1")
    _version(tmp_path, "bad name", "1")
    (tmp_path / "README").write_text("")
    found = scan(tmp_path)
    assert list(found) == ["digits"]
    assert list(found["digits"].versions) == [3]
    assert next_version(tmp_path, "digits") == 4


@pytest.mark.parametrize(
    ("policy", "wanted", "described"),
    [
        ({"latest": {"num_versions": 2}}, (2, 10), "latest 2"),
        ({"all": {}}, (1, 2, 10), "all"),
        ({"specific": {"versions": [3, 1]}}, (1,), "specific 1, 3"),
    ],
)
def test_config_policies(
    tmp_path: Path, policy: dict[str, object], wanted: tuple[int, ...], described: str
) -> None:
    for number in ("1", "2", "10"):
        _version(tmp_path, "digits", number)
    _config(tmp_path, "digits", {"version_policy": policy})
    model = scan_model(tmp_path, "digits")
    assert model.config_error is None
    assert model.wanted() == wanted
    assert model.policy.describe() == described


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        [],
        {"version_policy": {"newest": {}}},
        {"version_policy": {"latest": {"num_versions": 0}}},
        {"version_policy": {"latest": {"num_versions": True}}},
        {"version_policy": {"specific": {"versions": [1, -2]}}},
        {"version_policy": {"specific": {"versions": ["1"]}}},
        {"version_policy": {"specific": {"versions": []}}},
        {"version_policy": {"all": {"num_versions": 2}}},
        {"version_policy": {"all": {}, "latest": {}}},
        {"version_policy": {"all": {}}, "max_batch_size": 8},
    ],
)
def test_invalid_config_serves_nothing_new(tmp_path: Path, body: object) -> None:
    _version(tmp_path, "digits", "1")
    _config(tmp_path, "digits", body)
    model = scan_model(tmp_path, "digits")
    assert model.config_error is not None
    assert str(tmp_path / "digits" / "config.json") in model.config_error
    assert model.wanted() == ()


def test_config_without_a_policy_serves_the_latest(tmp_path: Path) -> None:
    _version(tmp_path, "digits", "1")
    _version(tmp_path, "digits", "2")
    _config(tmp_path, "digits", {})
    assert scan_model(tmp_path, "digits").wanted() == (2,)


def test_versions_without_a_single_card_are_listed_but_not_wanted(tmp_path: Path) -> None:
    _version(tmp_path, "digits", "1")
    _version(tmp_path, "digits", "2", cards=())
    _version(tmp_path, "digits", "3", cards=("a", "b"))
    model = scan_model(tmp_path, "digits")
    assert list(model.versions) == [1, 2, 3]
    empty, several = model.versions[2], model.versions[3]
    assert empty.card is None and several.card is None
    assert empty.error == f"no model card (*.json) in {tmp_path / 'digits' / '2'}"
    assert several.error is not None and several.error.startswith("several model cards in")
    assert model.wanted() == (1,)
    _config(tmp_path, "digits", {"version_policy": {"all": {}}})
    assert scan_model(tmp_path, "digits").wanted() == (1,)


def test_missing_repository_or_model(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError):
        scan(tmp_path / "absent")
    (tmp_path / "file").write_text("")
    with pytest.raises(RepositoryError):
        scan(tmp_path / "file")
    with pytest.raises(RepositoryError):
        scan_model(tmp_path, "absent")
    with pytest.raises(RepositoryError):
        scan_model(tmp_path, "../elsewhere")
    assert scan(tmp_path) == {}


def test_next_version(tmp_path: Path) -> None:
    assert next_version(tmp_path, "digits") == 1
    _version(tmp_path, "digits", "2")
    _version(tmp_path, "digits", "9")
    assert next_version(tmp_path, "digits") == 10


def test_publish_version(tmp_path: Path) -> None:
    seen: list[int] = []

    def write(folder: Path, version: int) -> None:
        seen.append(version)
        (folder / "m.json").write_text(json.dumps({"version": version}))

    first = publish_version(tmp_path, "digits", write)
    second = publish_version(tmp_path, "digits", write)
    assert (first, second) == (tmp_path / "digits" / "1", tmp_path / "digits" / "2")
    assert seen == [1, 2]
    assert json.loads((second / "m.json").read_text()) == {"version": 2}
    assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == ["1", "2"]


def test_publish_version_rewrites_when_the_number_is_taken(tmp_path: Path) -> None:
    seen: list[int] = []

    def write(folder: Path, version: int) -> None:
        seen.append(version)
        if len(seen) == 1:  # another publisher takes the number meanwhile
            _version(tmp_path, "digits", str(version), cards=("other",))
        (folder / "m.json").write_text(json.dumps({"version": version}))

    published = publish_version(tmp_path, "digits", write)
    assert seen == [1, 2] and published == tmp_path / "digits" / "2"
    assert sorted(p.name for p in published.iterdir()) == ["m.json"]
    assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == ["1", "2"]


def test_publish_version_cleans_up_on_failure(tmp_path: Path) -> None:
    def write(folder: Path, version: int) -> None:
        (folder / "m.pt").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        publish_version(tmp_path, "digits", write)
    with pytest.raises(RepositoryError, match="nothing was written"):
        publish_version(tmp_path, "digits", lambda folder, version: None)
    assert list((tmp_path / "digits").iterdir()) == []
    with pytest.raises(RepositoryError):
        publish_version(tmp_path, ".hidden", write)


def test_pack_publishes_numbered_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "repo"
    assert pack(_pack_args(root, "--name", "digits")) == 0
    assert pack(_pack_args(root, "--name", "digits", "--seed", "1")) == 0
    assert f"wrote {root / 'digits' / '2' / 'digits.json'} (version 2)" in capsys.readouterr().out
    model = scan(root)["digits"]
    assert list(model.versions) == [1, 2] and model.wanted() == (2,)
    for number, found in model.versions.items():
        assert found.card is not None
        assert models.load(found.card).card.version == str(number)
    assert [p.name for p in (root / "digits").iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("extra", [[], ["--name", "digits", "--version", "3"], ["--name", "a b"]])
def test_pack_repository_refuses(tmp_path: Path, extra: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        pack(_pack_args(tmp_path / "repo", *extra))
    assert exited.value.code == 2
    assert not (tmp_path / "repo").exists()


def test_pack_refuses_out_with_repository(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        pack([*_pack_args(tmp_path / "repo", "--name", "digits"), "--out", str(tmp_path)])


def test_import_does_not_pull_torch() -> None:
    code = "import sys, models.repository; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
