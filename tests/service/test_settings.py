from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.cli import main as cli_main
from service.cli import settings_from_args
from service.settings import ModelSpec, Settings


def test_models_from_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNN_MODELS", "a=/m/a.json, b=/m/b")
    monkeypatch.setenv("CNN_MAX_BATCH_SIZE", "8")
    settings = Settings()
    assert settings.models == [
        ModelSpec(name="a", path=Path("/m/a.json")),
        ModelSpec(name="b", path=Path("/m/b")),
    ]
    assert settings.max_batch_size == 8
    from_flags = settings_from_args(["--model", "x=/p/x", "--model", "y=/p/y", "--port", "9000"])
    assert [m.name for m in from_flags.models] == ["x", "y"]
    assert from_flags.port == 9000
    assert from_flags.max_batch_size == 8  # the environment still applies where no flag is given


def test_api_key_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    assert Settings(api_key_file=key).api_key is not None
    assert Settings(api_key_file=key).api_key.get_secret_value() == "s3cret"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"CNN_MAX_BATCH_SIZE": "0"}, "max_batch_size"),
        ({"CNN_DEVICE": "tpu"}, "device"),
        ({"CNN_PRECISION": "fp8"}, "precision"),
        ({"CNN_MODELS": "no-equals-sign"}, "models"),
        ({"CNN_MODELS": "a=/x,a=/y"}, "duplicate"),
    ],
)
def test_invalid_settings_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], setting: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=setting):
        Settings()


def test_cli_reports_a_bad_setting_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CNN_MAX_QUEUE_SIZE", "-5")
    assert cli_main([]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "CNN_MAX_QUEUE_SIZE" in err
