"""The strict base of every config section, the error type, and YAML load/merge/save.

A wrong value raises :class:`ConfigError`, whose message names the field (dotted path, as in the
YAML file), the bad value, and what is allowed.
"""

from __future__ import annotations

import difflib
import json
import sys
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo

from transferkit.errors import TransferkitError

__all__ = [
    "ConfigError",
    "Strict",
    "Metric",
    "with_defaults",
    "as_config",
    "validate",
    "deep_merge",
    "load_yaml",
    "load_config",
    "save_config",
]

M = TypeVar("M", bound=BaseModel)

Metric = Literal["val_acc", "val_balanced_acc", "val_macro_f1", "val_loss"]
"""What "best" means for epoch selection and searches (``val_loss`` is minimised, the rest
maximised); balanced accuracy (mean per-class recall) and macro F1 suit imbalanced classes."""


class ConfigError(TransferkitError, ValueError):
    """A configuration value is invalid; the message names the field and what is allowed.

    Picklable (plain ``ValueError`` with one string), so it crosses Ray process boundaries.
    """


class Strict(BaseModel):
    """Base: unknown keys are errors (a typo in YAML must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def with_defaults(base: type[M], name: str, doc: str, **defaults: Any) -> type[M]:
    """A section type that is ``base`` with other defaults for some fields, constraints kept.

    A partial section in YAML fills in from these defaults (``model: {arch: resnet18}`` in a
    distillation keeps the student's other defaults); an absent one is the new type's default; a
    ``base`` object given as it is keeps its own values.

    Args:
        base: the section model.
        name: the new type's name; assign it to a module-level variable of that name (pickle
            finds the class by it).
        doc: its docstring.
        **defaults: ``field=new default``; each must be a field of ``base``.

    Raises:
        KeyError: a name that is not a field of ``base``.
    """
    fields: dict[str, Any] = {}
    for key, value in defaults.items():
        info = base.model_fields[key]
        fields[key] = (info.annotation, FieldInfo.merge_field_infos(info, default=value))
    module = sys._getframe(1).f_globals["__name__"]
    new = create_model(name, __base__=base, __module__=module, __doc__=doc, **fields)
    # a field of the new type also takes a plain ``base`` object (its values, not its defaults)
    new.model_config["from_attributes"] = True
    new.model_rebuild(force=True)
    return new


def as_config(cfg: BaseModel, target: type[M], **update: Any) -> M:
    """``cfg``'s fields that ``target`` also has (the section objects shared, not copied), with
    ``update`` applied, validated as ``target``: a search config's trial base, a distillation's
    label-only baseline, a pipeline section as a stage's config."""
    own = type(cfg).model_fields
    fields = {k: getattr(cfg, k) for k in target.model_fields if k in own}
    return target(**{**fields, **update})


def _fields_at(model_cls: type[BaseModel], path: tuple) -> list[str]:
    """The field names of the (nested) model at ``path`` (names, through optional sections)."""
    cls: Any = model_cls
    for part in path:
        field = getattr(cls, "model_fields", {}).get(part) if isinstance(part, str) else None
        if field is None:
            return []
        cls = next(
            (
                a
                for a in (field.annotation, *typing.get_args(field.annotation))
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
        if cls is None:
            return []
    return list(getattr(cls, "model_fields", {}))


def _unknown_field_line(loc: str, path: tuple, model_cls: type[BaseModel] | None) -> str:
    known = _fields_at(model_cls, path[:-1]) if model_cls is not None else []
    close = difflib.get_close_matches(str(path[-1]), known, n=1) if path else []
    hint = f"; did you mean {'.'.join(map(str, path[:-1] + (close[0],)))}?" if close else ""
    where = (
        f" (known here: {', '.join(known)})"
        if known
        else " (check the spelling; see the documented fields)"
    )
    return f"  {loc}: unknown field{hint}{where}"


def _format_validation_error(
    exc: ValidationError, source: str, model_cls: type[BaseModel] | None = None
) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        path = tuple(err.get("loc", ()))
        loc = ".".join(str(p) for p in path) or "<root>"
        msg = err.get("msg", "")
        allowed = (err.get("ctx") or {}).get("expected")
        value = err.get("input")
        if err.get("type") == "extra_forbidden":
            lines.append(_unknown_field_line(loc, path, model_cls))
            continue
        line = f"  {loc}: {msg}"
        if allowed and str(allowed) not in msg:
            line += f" (allowed: {allowed})"
        if err.get("type") != "missing":
            line += f"; got {json.dumps(value, default=str) if not isinstance(value, dict) else '{...}'}"
        lines.append(line)
    return "\n".join(lines)


def validate(model_cls: type[M], data: dict[str, Any], source: str = "config") -> M:
    """Build ``model_cls`` from ``data``; raise :class:`ConfigError` naming each bad field.

    Raises:
        ConfigError: with one line per invalid field: dotted path, message, allowed values, value.
    """
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source, model_cls)) from None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively by ``override``; ``None`` values in override are skipped
    (an option not given on the command line does not erase the file's value)."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            continue
        if isinstance(value, dict):
            base_value = out.get(key)
            if isinstance(base_value, dict):
                out[key] = deep_merge(base_value, value)
            else:
                merged = deep_merge({}, value)
                if merged or key not in out:  # an all-None override keeps a bad value visible
                    out[key] = merged
        else:
            out[key] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (data only: ``yaml.safe_load``).

    Raises:
        ConfigError: the file is missing, not YAML, or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return data


def load_config(
    model_cls: type[M], path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> M:
    """Load ``path`` (optional YAML), apply ``overrides`` (nested dict, ``None`` = not given),
    validate into ``model_cls``.

    Raises:
        ConfigError: unreadable file or invalid field (named, with allowed values).
    """
    data: dict[str, Any] = load_yaml(path) if path else {}
    data = deep_merge(data, overrides or {})
    return validate(model_cls, data, source=str(path) if path else "command line")


def save_config(cfg: BaseModel, path: str | Path) -> None:
    """Write ``cfg`` as YAML that :func:`load_config` reads back unchanged."""
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
