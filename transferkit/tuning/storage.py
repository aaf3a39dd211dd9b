"""The experiment folder: a local path or a cloud URI (``s3://``, ``gs://``), as Ray accepts it.

Ray Tune and Ray Train write trials and checkpoints there themselves; the driver's own files
(config, splits, the trial table, the best config, the plot) go through :class:`ExperimentDir`,
which uses ``pyarrow.fs`` (the filesystem layer Ray itself uses) for URIs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from transferkit.errors import TransferkitError

__all__ = ["ExperimentDir", "ExperimentExistsError"]


class ExperimentExistsError(TransferkitError, FileExistsError):
    """The experiment folder holds another search (never reused silently)."""


class ExperimentDir:
    """Where a search lives.

    Attributes:
        uri: the absolute local path or the URI, as given to Ray.
        parent / name: ``uri`` split at its last ``/`` (Ray's ``storage_path`` and ``name``).
        remote: True for a URI.
    """

    def __init__(self, where: str):
        self.remote = "://" in where
        self.uri = where.rstrip("/") if self.remote else str(Path(where).expanduser().resolve())
        self.parent, self.name = self.uri.rsplit("/", 1)
        self._fs = None
        if self.remote:
            import pyarrow.fs

            try:
                self._fs, self._root = pyarrow.fs.FileSystem.from_uri(self.uri)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several types per scheme
                raise TransferkitError(f"output: cannot open storage {self.uri!r}: {exc}") from exc

    @property
    def local_path(self) -> Path | None:
        """The folder on this machine, or None for a URI."""
        return None if self.remote else Path(self.uri)

    def join(self, *parts: str) -> str:
        """A path/URI inside the experiment."""
        return "/".join([self.uri, *parts])

    def is_used(self) -> bool:
        """True when the folder exists and holds anything."""
        if not self.remote:
            p = Path(self.uri)
            return p.exists() and (not p.is_dir() or any(p.iterdir()))
        import pyarrow.fs

        info = self._fs.get_file_info(self._root)
        if info.type == pyarrow.fs.FileType.NotFound:
            return False
        return bool(self._fs.get_file_info(pyarrow.fs.FileSelector(self._root, recursive=False)))

    def claim(self, overwrite: bool) -> None:
        """Make the folder for a new search.

        Raises:
            ExperimentExistsError: it holds something and ``overwrite`` is False.
        """
        if self.is_used():
            if not overwrite:
                raise ExperimentExistsError(
                    f"experiment folder {self.uri} is not empty: continue that search with "
                    f"`transferkit tune --resume {self.uri}`, pass --overwrite to replace it, or "
                    "choose another --output"
                )
            self.remove()
        if self.remote:
            self._fs.create_dir(self._root)
        else:
            Path(self.uri).mkdir(parents=True, exist_ok=True)

    def remove(self) -> None:
        """Delete the folder and everything in it."""
        if self.remote:
            self._fs.delete_dir(self._root)
        else:
            shutil.rmtree(self.uri, ignore_errors=True)

    def write_bytes(self, name: str, data: bytes) -> str:
        """Write ``name`` at the experiment's root; returns its path/URI."""
        if self.remote:
            with self._fs.open_output_stream(f"{self._root}/{name}") as f:
                f.write(data)
        else:
            (Path(self.uri) / name).write_bytes(data)
        return self.join(name)

    def write_text(self, name: str, text: str) -> str:
        """Write UTF-8 text ``name`` at the experiment's root; returns its path/URI."""
        return self.write_bytes(name, text.encode())

    def read_text(self, name: str) -> str:
        """Read ``name`` from the experiment's root.

        Raises:
            FileNotFoundError: it does not exist (not a transferkit experiment).
        """
        if self.remote:
            import pyarrow.fs

            path = f"{self._root}/{name}"
            if self._fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
                raise FileNotFoundError(f"{self.join(name)} not found")
            with self._fs.open_input_stream(path) as f:
                return f.read().decode()
        p = Path(self.uri) / name
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found")
        return p.read_text()
