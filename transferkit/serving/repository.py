"""Which models a server serves: ``.onnx`` files by name, or a Triton-style model repository.

A repository folder is laid out as Triton's (https://github.com/triton-inference-server/server,
``docs/user_guide/model_repository.md``)::

    REPO/
      teacher/1/model.onnx
      student/1/model.onnx
      student/2/model.onnx

Every numeric version folder holding ``model.onnx`` is served; a request without a version gets
the highest. A loose file ``student.onnx`` is served as model ``student``, version ``"1"``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transferkit.errors import UsageError

__all__ = ["ModelSource", "discover_models", "NAME_PATTERN"]

#: Model names and versions appear in URLs: letters, digits, ``_``, ``.``, ``-``.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class ModelSource:
    """One model version to serve.

    Attributes:
        name: URL name (``/v2/models/{name}``).
        version: version string (digits in a repository; ``"1"`` for a loose file).
        path: the ``.onnx`` file.
    """

    name: str
    version: str
    path: Path


def _check_name(name: str, what: str) -> None:
    if not NAME_PATTERN.match(name):
        raise UsageError(
            f"{what} {name!r}: use letters, digits, '_', '.' or '-' (it appears in URLs)"
        )


def _repository_models(repo: Path) -> list[ModelSource]:
    """Every ``<name>/<version>/model.onnx`` of a Triton-style folder, by name then version."""
    if not repo.is_dir():
        raise FileNotFoundError(f"model repository not found (or not a folder): {repo}")
    found: list[ModelSource] = []
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        _check_name(model_dir.name, f"model folder {model_dir}:")
        versions = sorted(
            (
                v
                for v in model_dir.iterdir()
                if v.is_dir() and v.name.isdigit() and (v / "model.onnx").is_file()
            ),
            key=lambda v: int(v.name),
        )
        if not versions:
            raise UsageError(
                f"model folder {model_dir} has no version: expected {model_dir}/<version>/model.onnx "
                "with a numeric version (Triton's layout), e.g. 1/model.onnx"
            )
        found += [ModelSource(model_dir.name, v.name, v / "model.onnx") for v in versions]
    return found


def discover_models(
    files: Sequence[str | Path] = (), repository: str | Path | None = None, name: str | None = None
) -> list[ModelSource]:
    """The models to serve, in order: the loose files first, then the repository's, by name.

    Args:
        files: ``.onnx`` files; each is served under its stem (or ``name`` when exactly one).
        repository: a folder ``REPO/<name>/<version>/model.onnx``.
        name: name of the single file in ``files``.

    Returns:
        One :class:`ModelSource` per (name, version), at least one.

    Raises:
        FileNotFoundError: a file or the repository does not exist.
        ValueError: nothing to serve, a duplicate (name, version), a name unfit for a URL, a
            repository entry without a numeric version folder holding ``model.onnx``, or ``name``
            with other than one file.
    """
    if name is not None and len(files) != 1:
        raise UsageError(f"name={name!r} needs exactly one model file; got {len(files)}")
    found: list[ModelSource] = []
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        model_name = name or path.stem
        _check_name(model_name, "model name")
        found.append(ModelSource(model_name, "1", path))
    if repository is not None:
        found += _repository_models(Path(repository))
    if not found:
        raise UsageError(
            "no models to serve: give .onnx files or a repository with REPO/<name>/<version>/model.onnx"
        )
    seen: dict[tuple[str, str], Path] = {}
    for src in found:
        key = (src.name, src.version)
        if key in seen:
            raise UsageError(
                f"model {src.name!r} version {src.version} is given twice ({seen[key]} and {src.path}); "
                "rename one file"
            )
        seen[key] = src.path
    return found
