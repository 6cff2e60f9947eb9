"""A small Dockerfile reader and a builder that runs a build stage's commands on this machine.

No container engine runs here, so the install steps are exercised directly: the build stage's
RUN lines run verbatim under /bin/sh, as `docker build` runs them, in a directory that stands
for the image's root (absolute paths in ENV, WORKDIR and COPY are placed under it). COPY takes
its files from the build context through .dockerignore. Base-image set-up (apt) and the
runtime stage's user creation are not run: they would change this machine, not an image.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_VAR = re.compile(r"\$(?:\{(\w+)(?:(:[-+])([^}]*))?\}|(\w+))")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list)
        return [str(v) for v in value]


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def base_of(self, stage: Stage, build_args: dict[str, str]) -> str:
        return expand(stage.base, {**self.global_args, **build_args})


def _logical_lines(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue  # comments may sit inside a continued instruction, as in Docker
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        lines.append((start, buffer + stripped))
        buffer = ""
    return lines


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(base=parts[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"line {number}: only ARG may come before FROM"
            key, _, default = args.partition("=")
            global_args[key.strip()] = default.strip()
        else:
            stages[-1].instructions.append(Instruction(keyword, args.strip(), number))
    return Dockerfile(global_args, stages)


def expand(text: str, env: dict[str, str]) -> str:
    """Docker's variable forms: $X, ${X}, ${X:-default}, ${X:+alternative}."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        value = env.get(name, "")
        if match.group(2) == ":-":
            return value or match.group(3)
        if match.group(2) == ":+":
            return match.group(3) if value else ""
        return value

    return _VAR.sub(one, text)


def env_pairs(args: str) -> list[tuple[str, str]]:
    """`ENV A=1 B="x y"` as pairs (the key=value form; values unquoted as by a shell)."""
    import shlex

    return [(k, v) for k, _, v in (word.partition("=") for word in shlex.split(args))]


def dockerignore_filter(context: Path) -> Callable[[str], bool]:
    """True for a context-relative path that .dockerignore keeps (last matching rule wins)."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    ignore_file = context / ".dockerignore"
    for raw in ignore_file.read_text(encoding="utf-8").splitlines() if ignore_file.exists() else []:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        rules.append((keep, re.compile(f"^{regex}$")))

    def kept(relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        verdict = True
        for keep, regex in rules:
            if any(regex.match(p) for p in prefixes):
                verdict = keep
        return verdict

    return kept


@dataclass
class Image:
    """What a built stage leaves: its environment and the metadata `docker run` would use."""

    env: dict[str, str]
    workdir: Path
    user: str | None = None
    exposed: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    healthcheck: list[str] | None = None
    logs: list[tuple[str, str]] = field(default_factory=list)  # (RUN command, its output)


BeforeRun = Callable[[str, dict[str, str]], None]


@dataclass
class Builder:
    dockerfile: Dockerfile
    context: Path
    root: Path
    build_args: dict[str, str]
    base_env: dict[str, str]
    before_run: BeforeRun | None = None
    # Stages whose RUN lines are executed; the others contribute everything but RUN.
    run_stages: frozenset[str] = frozenset({"build"})
    # RUN lines left out: a check that judges what this machine lent, not what it built.
    skip_run: Callable[[str], bool] = lambda command: False
    built: dict[str, Image] = field(default_factory=dict)

    def on_root(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def build(self, target: str) -> Image:
        if target not in self.built:
            self.built[target] = self._build(target)
        return self.built[target]

    def _build(self, target: str) -> Image:
        stage = self.dockerfile.stage(target)
        base = self.dockerfile.base_of(stage, self.build_args)
        names = {s.name for s in self.dockerfile.stages}
        image = (
            self.build(base)
            if base in names
            else Image(env=dict(self.base_env), workdir=self.on_root("/"))
        )
        image = Image(env=dict(image.env), workdir=image.workdir, logs=list(image.logs))
        args = {**self.dockerfile.global_args, **self.build_args}
        declared: dict[str, str] = {}  # a stage's ARGs: RUN sees them, the image keeps none
        for instruction in stage.instructions:
            self._apply(stage, instruction, image, args, declared)
        return image

    def _apply(
        self,
        stage: Stage,
        ins: Instruction,
        image: Image,
        args: dict[str, str],
        declared: dict[str, str],
    ) -> None:
        scope = {**args, **image.env}
        if ins.keyword == "ARG":
            key, _, default = ins.args.partition("=")
            args.setdefault(key.strip(), default.strip())
            declared[key.strip()] = args[key.strip()]
        elif ins.keyword == "ENV":
            for key, raw in env_pairs(ins.args):
                image.env[key] = expand(self._reroot(raw), {**args, **image.env})
        elif ins.keyword == "WORKDIR":
            target = expand(ins.args, scope)
            image.workdir = (
                self.on_root(target) if target.startswith("/") else image.workdir / target
            )
            image.workdir.mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY":
            self._copy(expand(ins.args, scope), image)
        elif ins.keyword == "RUN" and stage.name in self.run_stages:
            if not self.skip_run(ins.args):
                self._run(ins.args, image, declared)
        elif ins.keyword == "USER":
            image.user = ins.args
        elif ins.keyword == "EXPOSE":
            image.exposed.extend(ins.args.split())
        elif ins.keyword == "ENTRYPOINT":
            image.entrypoint = ins.exec_form()
        elif ins.keyword == "HEALTHCHECK":
            image.healthcheck = Instruction(
                "CMD", ins.args.split(" CMD ", 1)[1], ins.line
            ).exec_form()

    def _reroot(self, raw: str) -> str:
        # Literal absolute paths (not URLs, not variables) live under the stand-in root.
        return ":".join(
            str(self.on_root(part)) if part.startswith("/") and not part.startswith("//") else part
            for part in raw.split(":")
        )

    def _copy(self, args: str, image: Image) -> None:
        words = args.split()
        source_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
        paths = [w for w in words if not w.startswith("--")]
        *sources, dest = paths
        target = self.on_root(dest) if dest.startswith("/") else image.workdir / dest
        if source_stage is not None:
            # Every stage shares the stand-in root: build the stage, then the path is there.
            image.logs.extend(self.build(source_stage).logs)
            for source in sources:
                assert self.on_root(source).exists(), f"COPY --from={source_stage}: {source}"
                if self.on_root(source) != target:
                    shutil.copytree(self.on_root(source), target, dirs_exist_ok=True)
            return
        kept = dockerignore_filter(self.context)
        for source in sources:
            self._copy_from_context(source, target, dest.endswith("/"), kept)

    def _copy_from_context(
        self, source: str, target: Path, into: bool, kept: Callable[[str], bool]
    ) -> None:
        origin = self.context / source
        assert kept(source), f"COPY {source}: excluded by .dockerignore"
        if origin.is_file():
            destination = target / origin.name if into else target
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, destination)
            return
        for path in sorted(origin.rglob("*")):
            relative = path.relative_to(self.context).as_posix()
            if path.is_file() and kept(relative):
                destination = target / path.relative_to(origin)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination)

    def _run(self, command: str, image: Image, declared: dict[str, str]) -> None:
        if self.before_run is not None:
            self.before_run(command, image.env)
        out = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=image.workdir,
            env={**declared, **image.env},  # as in Docker: an ENV of the same name wins
            capture_output=True,
            text=True,
            timeout=600,
        )
        log = out.stdout + out.stderr
        image.logs.append((command, log))
        if out.returncode != 0:
            raise RuntimeError(f"RUN {command}\nexited {out.returncode}:\n{log[-6000:]}")


def host_env() -> dict[str, str]:
    """The environment a base image's Python stands for: this machine's, minus any venv."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("CNN_")}
