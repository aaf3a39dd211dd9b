"""What every ``transferkit`` command shares: the Typer app, user mistakes as one message and
exit code 2, and command-line options turned into nested config overrides."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Fine-tune pretrained vision models on Ray Train, export to ONNX, serve with ONNX Runtime.",
)
data_app = typer.Typer(no_args_is_help=True, help="Bundled datasets.")
app.add_typer(data_app, name="data")

# Exceptions that mean "the user asked for something wrong": message + exit code 2, no traceback.
# transferkit's own errors (TransferkitError: ConfigError, UsageError, DatasetError, ...) and a
# path that is missing or already taken. Any other exception, a plain ValueError included, is a
# bug: it keeps its traceback (exit 1).
USER_ERRORS: tuple[type[BaseException], ...] = (FileExistsError, FileNotFoundError)

#: ``--config FILE``: the YAML a command starts from; its flags override it.
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML file; flags override it.")]
#: ``--dataset``: a bundled dataset's name or an ImageFolder.
Dataset = Annotated[
    str | None,
    typer.Option(
        help="Bundled name (digits, elpv, elpv-severity, elpv-type) or an ImageFolder path."
    ),
]
UseGpu = Annotated[bool | None, typer.Option("--use-gpu/--no-gpu")]
Seed = Annotated[int | None, typer.Option()]

M = TypeVar("M", bound=BaseModel)


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print ``error: msg`` in red on stderr and exit with ``code`` (2: the user's mistake)."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def run(fn, *args, **kwargs) -> Any:
    """Call a library function; user errors (:data:`USER_ERRORS` and every
    :class:`~transferkit.errors.TransferkitError`) become a one-paragraph message and exit code 2.
    Anything else is a bug and keeps its traceback."""
    from transferkit.errors import TransferkitError

    try:
        return fn(*args, **kwargs)
    except (*USER_ERRORS, TransferkitError) as exc:
        fail(str(exc))


def run_search(fn, *args, **kwargs) -> None:
    """:func:`run` for a Ray Tune search (or the pipeline that runs one): an interrupted search is
    not a mistake, so it prints how to continue and exits 130, as after Ctrl+C."""
    from transferkit.errors import TransferkitError
    from transferkit.tuning.search import SearchInterrupted

    try:
        fn(*args, **kwargs)
    except SearchInterrupted as exc:
        typer.secho(str(exc), fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130) from None
    except (*USER_ERRORS, TransferkitError) as exc:
        fail(str(exc))


def check_arch(name: str | None, option: str) -> None:
    """Exit 2 naming ``option`` and the known architectures when ``name`` is not one of them."""
    if name is None:
        return
    from transferkit.models.registry import UnknownArchError, get_arch

    try:
        get_arch(name)
    except UnknownArchError as exc:
        fail(f"{option}: {exc}")


def exclusive_resume(resume: bool, overwrite: bool) -> None:
    """Exit 2 when both ``--resume`` and ``--overwrite`` are given."""
    if resume and overwrite:
        fail("--resume and --overwrite exclude each other")


def fields(sections: Mapping[str, str], **renamed: str) -> dict[str, str]:
    """The config path of each option: ``{"data": "dataset image_size"}`` maps ``dataset`` to
    ``data.dataset``; section ``""`` is the top level; ``renamed`` gives an option another path
    (``model="model.arch"``)."""
    table = {
        name: f"{section}.{name}" if section else name
        for section, names in sections.items()
        for name in names.split()
    }
    return table | renamed


def config_defaults(cls: type[BaseModel], paths: Mapping[str, str]) -> type:
    """A Typer command class whose ``--help`` shows, for each option in ``paths``, the default of
    the config field it sets (read from ``cls``, so the CLI never restates a default)."""
    from typer.core import TyperCommand

    class Command(TyperCommand):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            for param in self.params:
                if param.name in paths and (shown := field_default(cls, paths[param.name])):
                    param.show_default = shown

    return Command


def field_default(cls: type[BaseModel], path: str) -> str | None:
    """The default of the dotted field ``path`` of ``cls`` as ``--help`` shows it
    (``"adamw"``, ``"0.001"``, ``"on"``); ``None`` when it has none (required, ``None``, or not
    a field of ``cls``)."""
    from pydantic_core import PydanticUndefined

    model: Any = cls
    for name in path.split("."):
        fields = type(model).model_fields if isinstance(model, BaseModel) else model.model_fields
        if name not in fields:
            return None
        if isinstance(model, BaseModel):
            model = getattr(model, name)
        else:
            value = fields[name].get_default(call_default_factory=True)
            model = fields[name].annotation if value is PydanticUndefined else value
    if model is None or isinstance(model, type):
        return None
    if isinstance(model, bool):
        return "on" if model else "off"
    return str(getattr(model, "value", model))


def overrides(params: Mapping[str, Any], paths: Mapping[str, str]) -> dict[str, Any]:
    """Nest the options named in ``paths`` into a config override:
    ``{"epochs": 3}`` with ``{"epochs": "optim.epochs"}`` -> ``{"optim": {"epochs": 3}}``.
    ``None`` (option not given) is kept: :func:`~transferkit.config.load_config` skips it."""
    out: dict[str, Any] = {}
    for name, path in paths.items():
        *parents, leaf = path.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = params[name]
    return out


def load(cls: type[M], config: Path | None, override: dict[str, Any]) -> M:
    """:func:`~transferkit.config.load_config`, or exit 2 with the field and allowed values."""
    from transferkit.config import ConfigError, load_config

    try:
        return load_config(cls, config, override)
    except ConfigError as exc:
        fail(str(exc))


def read_yaml(config: Path | None) -> dict[str, Any]:
    """The ``--config`` file as a dict (``{}`` without one), or exit 2 when it cannot be read."""
    from transferkit.config import ConfigError, load_yaml

    try:
        return load_yaml(config) if config else {}
    except ConfigError as exc:
        fail(str(exc))
