"""Recognise a file of the wrong kind before ONNX Runtime or ``torch.load`` reads it, and name
the fix (torch-free: serving and export both use it).

ONNX Runtime answers any wrong file with "Protobuf parsing failed"; a user who passed a PyTorch
checkpoint, a PDF or an image learns nothing from that. An ONNX file is a protobuf
``ModelProto``; the files users mistake for one start with their own signatures: a PyTorch
checkpoint is a zip (``PK\\x03\\x04``, with a ``data.pkl`` member) or, in the legacy format, a
pickle (``\\x80``); a PDF starts with ``%PDF``.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

__all__ = ["not_onnx_reason", "not_checkpoint_reason", "EXPORT_HINT"]

#: How to get a file this server serves.
EXPORT_HINT = "serve the .onnx file that `transferkit export RUN -o model.onnx` writes"

_ZIP = b"PK\x03\x04"
_SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (_ZIP, "a zip archive"),
)


def _is_pytorch(path: Path, head: bytes) -> bool:
    if head.startswith(b"\x80"):  # a pickle: torch.save's legacy format
        return True
    if not head.startswith(_ZIP):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile:
        return False
    return any(n.rsplit("/", 1)[-1] in ("data.pkl", "constants.pkl") for n in names)


def _is_safetensors(head: bytes, size: int) -> bool:
    """8 bytes of little-endian header length, then the JSON header."""
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 8 + length <= size


def not_onnx_reason(path: Path) -> str | None:
    """Why a file is certainly not an ONNX model, with the fix; None when it may be one.

    Only the first bytes are read (and a zip's member names). A file that passes may still fail
    to parse; ONNX Runtime reports that.

    Args:
        path: an existing file.

    Returns:
        E.g. "model.pt is a PyTorch checkpoint, not ONNX: run `transferkit export model.pt -o
        model.onnx` first"; None when nothing marks the file as another kind.

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return f"{path.name} is empty, not an ONNX model: {EXPORT_HINT}"
    if _is_pytorch(path, head):
        onnx = path.with_suffix(".onnx")
        return (
            f"{path.name} is a PyTorch checkpoint, not ONNX: run "
            f"`transferkit export {path} -o {onnx}` first"
        )
    if _is_safetensors(head, path.stat().st_size):
        return f"{path.name} is a safetensors weights file, not ONNX: {EXPORT_HINT}"
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return f"{path.name} is {kind}, not an ONNX model: {EXPORT_HINT}"
    return None


def not_checkpoint_reason(path: Path) -> str | None:
    """Why a file is certainly not a PyTorch checkpoint (``model.pt``), with the fix; None when
    it may be one (a zip holding ``data.pkl``, or a legacy pickle).

    Args:
        path: an existing file.

    Returns:
        E.g. "teacher.onnx is an ONNX model (already exported), not a PyTorch checkpoint: ...";
        None when the file looks like a checkpoint.

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        head = f.read(16)
    want = (
        "a transferkit model.pt (written by `transferkit finetune` or `distill`) or its run folder"
    )
    if not head:
        return f"{path.name} is empty, not a PyTorch checkpoint: give {want}"
    if _is_pytorch(path, head):
        return None
    if head.startswith(b"\x08"):  # an ONNX ModelProto opens with field 1, ir_version (a varint)
        return (
            f"{path.name} is an ONNX model (already exported), not a PyTorch checkpoint: serve or "
            f"evaluate it as it is (`transferkit serve {path}`), or give {want}"
        )
    if _is_safetensors(head, path.stat().st_size):
        return (
            f"{path.name} is a safetensors weights file, not a transferkit checkpoint: give {want}"
        )
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return f"{path.name} is {kind}, not a PyTorch checkpoint: give {want}"
    return f"{path.name} is not a PyTorch checkpoint (no zip or pickle signature): give {want}"
