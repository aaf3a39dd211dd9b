"""The self-description that travels inside an exported ONNX file (``metadata_props``).

Written by ``transferkit.export``, read by ``transferkit.serving``; torch-free. Every value is a
string (ONNX ``StringStringEntryProto``); structured values are JSON.

Keys:
    ``transferkit.format_version``: "1".
    ``transferkit.class_names``: JSON list of class names, index = logit position.
    ``transferkit.preprocessing``: JSON of :class:`transferkit.config.Preprocessing`.
    ``transferkit.arch``: registry architecture name (e.g. ``mobilenet_v2``).
    ``transferkit.source_run``: the run folder or ``model.pt`` the file was exported from.
    ``transferkit.input_name`` / ``transferkit.output_name``: graph input (float32
        ``[batch, C, H, W]``) and output (float32 logits ``[batch, num_classes]``).
    ``transferkit.extra``: JSON object with anything else (width multiplier, parameter count,
        opset, export validation figures).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from transferkit.config import Preprocessing
from transferkit.errors import TransferkitError

__all__ = ["ModelMetadata", "MetadataError", "FORMAT_VERSION"]

FORMAT_VERSION = "1"
_P = "transferkit."


class MetadataError(TransferkitError, ValueError):
    """The ONNX file lacks transferkit metadata or holds an unreadable value."""


@dataclass
class ModelMetadata:
    """What a served model needs to know about itself.

    Attributes:
        class_names: one name per output logit.
        preprocessing: how images become the float32 ``[N, C, H, W]`` input.
        arch: architecture name.
        source_run: where it was exported from.
        input_name / output_name: ONNX graph input/output names.
        extra: free-form JSON-serialisable details.
    """

    class_names: list[str]
    preprocessing: Preprocessing
    arch: str = "unknown"
    source_run: str = ""
    input_name: str = "input"
    output_name: str = "logits"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_props(self) -> dict[str, str]:
        """Serialise to ONNX ``metadata_props`` (string -> string)."""
        return {
            _P + "format_version": FORMAT_VERSION,
            _P + "class_names": json.dumps(list(self.class_names)),
            _P + "preprocessing": self.preprocessing.model_dump_json(),
            _P + "arch": self.arch,
            _P + "source_run": self.source_run,
            _P + "input_name": self.input_name,
            _P + "output_name": self.output_name,
            _P + "extra": json.dumps(self.extra, default=str),
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> ModelMetadata:
        """Parse ``metadata_props`` (e.g. ORT's ``get_modelmeta().custom_metadata_map``).

        Raises:
            MetadataError: required keys missing or malformed (the file was not exported by
                ``transferkit export``).
        """
        missing = [k for k in ("class_names", "preprocessing") if _P + k not in props]
        if missing:
            raise MetadataError(
                "ONNX file has no transferkit metadata (missing "
                + ", ".join(_P + k for k in missing)
                + "); export it with `transferkit export`"
            )
        try:
            names = json.loads(props[_P + "class_names"])
            prep = Preprocessing.model_validate_json(props[_P + "preprocessing"])
            extra = json.loads(props.get(_P + "extra", "{}") or "{}")
        except (ValueError, TypeError) as exc:
            raise MetadataError(f"malformed transferkit metadata: {exc}") from exc
        if not isinstance(names, list) or not names:
            raise MetadataError("transferkit.class_names must be a non-empty JSON list")
        return cls(
            class_names=[str(n) for n in names],
            preprocessing=prep,
            arch=props.get(_P + "arch", "unknown"),
            source_run=props.get(_P + "source_run", ""),
            input_name=props.get(_P + "input_name", "input"),
            output_name=props.get(_P + "output_name", "logits"),
            extra=extra if isinstance(extra, dict) else {},
        )
