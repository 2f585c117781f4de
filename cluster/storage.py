"""Where a run's outputs live: ``run.storage``, as Ray Train's ``storage_path``: a local or shared path, or a URI
that `pyarrow.fs` opens (``s3://bucket/runs``, ``gs://bucket/runs``, ``file:///mnt/runs``).

    storage = RunStorage("s3://bucket/runs/smoke")
    storage.write_bytes("checkpoints/step_000010/state.json", data)     # whole or not at all
    with storage.writable_dir("checkpoints/step_000010/hf") as local:  # a local folder, uploaded on exit
        model.save_pretrained(local)

Each node writes what it produces straight to the storage (a learner rank its part of a checkpoint, the buffer
its snapshot), so nothing depends on a node's own disk. A plain path is used in place; on a cluster it must be
shared by the nodes (NFS, a mounted bucket). A URI goes through `pyarrow.fs`: files are written locally and
uploaded, and since object stores cannot rename a folder atomically, readers rely on a marker written last
(`learner.checkpoints`). A ``file://`` URI takes that same path on a local folder.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

# A Ray job's entrypoint runs in a copy of its working directory that Ray deletes when the job ends.
JOB_WORKING_DIR = ("runtime_resources", "working_dir_files")


class StorageError(OSError):
    """Reading or writing the run's storage failed; the message names the location."""


def is_uri(location: str) -> bool:
    return "://" in str(location)


def in_job_working_dir(location: str) -> bool:
    """Whether a local ``location`` falls inside a Ray job's temporary working directory."""
    if is_uri(location):
        return False
    parts = Path(location).resolve().parts
    return any(parts[i:i + 2] == JOB_WORKING_DIR for i in range(len(parts) - 1))


def join(location: str, *parts: str) -> str:
    location = str(location)
    return "/".join([location.rstrip("/"), *(p.strip("/") for p in parts if p)]) if is_uri(location) \
        else str(Path(location, *parts))


class RunStorage:
    """A folder of the run's storage (``location``: a path or a URI); every name is relative to it."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location) if is_uri(str(location)) else str(Path(location).expanduser().absolute())
        self._fs: Any = None
        self._root = ""

    def __reduce__(self):  # crosses to other processes as its location; the filesystem is opened where used
        return RunStorage, (self.location,)

    def __repr__(self) -> str:
        return f"RunStorage({self.location!r})"

    @property
    def local_root(self) -> Optional[Path]:
        """The folder itself when the storage is a plain path (written in place), else None."""
        return None if is_uri(self.location) else Path(self.location)

    def local_dir(self) -> Path:
        """Where this process writes files that end up here: the folder itself for a path; for a URI a staging
        folder on this node, named after the location (a process restarted on the same node finds its files)."""
        if self.local_root is not None:
            return self.local_root
        digest = hashlib.sha1(self.location.encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / "rltf-staging" / f"{self.location.rstrip('/').rpartition('/')[2]}-{digest}"

    @property
    def renames_atomically(self) -> bool:
        return self.local_root is not None

    def child(self, *parts: str) -> "RunStorage":
        return RunStorage(join(self.location, *parts))

    def url(self, name: str = "") -> str:
        return join(self.location, name) if name else self.location

    # --- pyarrow.fs for URIs -----------------------------------------------------------------------------------
    def _remote(self, name: str) -> tuple[Any, str]:
        if self._fs is None:
            import pyarrow.fs

            try:
                self._fs, self._root = pyarrow.fs.FileSystem.from_uri(self.location)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds; the location says which
                raise StorageError(f"run.storage {self.location}: cannot open it ({exc})") from exc
        return self._fs, "/".join(p for p in (self._root.rstrip("/"), name.strip("/")) if p)

    def _checked(self, what: str, name: str, action):
        try:
            return action()
        except StorageError:
            raise
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(f"cannot {what} {self.url(name)}: {exc}") from exc

    # --- files ---------------------------------------------------------------------------------------------------
    def exists(self, name: str = "") -> bool:
        if self.local_root is not None:
            return (self.local_root / name).exists()
        import pyarrow.fs

        fs, path = self._remote(name)
        return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound

    def read_bytes(self, name: str) -> bytes:
        if self.local_root is not None:
            return (self.local_root / name).read_bytes()

        def read() -> bytes:
            fs, path = self._remote(name)
            with fs.open_input_stream(path) as stream:
                return stream.read()
        return self._checked("read", name, read)

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode("utf-8")

    def write_bytes(self, name: str, data: bytes) -> None:
        """All of ``data`` or, if the writer dies, nothing under ``name``: a local file is written beside it and
        renamed; an object store makes an object visible only once its upload completes."""
        if self.local_root is not None:
            def write() -> None:
                target = self.local_root / name
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
                with open(tmp, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, target)
            return self._checked("write", name, write)

        def upload() -> None:
            fs, path = self._remote(name)
            fs.create_dir(path.rpartition("/")[0], recursive=True)
            with fs.open_output_stream(path) as stream:
                stream.write(data)
        return self._checked("write", name, upload)

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode("utf-8"))

    def list(self, name: str = "") -> list[str]:
        """Names directly under ``name`` (empty when it does not exist)."""
        if self.local_root is not None:
            folder = self.local_root / name
            return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        import pyarrow.fs

        fs, path = self._remote(name)
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
        return sorted(info.base_name for info in infos)

    def delete(self, name: str) -> None:
        """Remove a file or folder (nothing when it is absent)."""
        if self.local_root is not None:
            target = self.local_root / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            elif target.exists():
                target.unlink()
            return
        import pyarrow.fs

        fs, path = self._remote(name)
        kind = fs.get_file_info(path).type
        if kind == pyarrow.fs.FileType.Directory:
            fs.delete_dir(path)
        elif kind == pyarrow.fs.FileType.File:
            fs.delete_file(path)

    def rename(self, src: str, dst: str) -> None:
        """Atomic rename of a local folder (`renames_atomically` storages only)."""
        assert self.local_root is not None, "only local storage renames atomically"
        self._checked("rename", src, lambda: os.replace(self.local_root / src, self.local_root / dst))
        fd = os.open(self.local_root / Path(dst).parent, os.O_RDONLY)
        try:  # the rename itself survives a crash of the machine
            os.fsync(fd)
        finally:
            os.close(fd)

    # --- whole folders -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writable_dir(self, name: str) -> Iterator[Path]:
        """A local folder whose files end up under ``name``: the folder itself for a plain path, else a temporary
        folder uploaded when the block ends without error."""
        if self.local_root is not None:
            target = self.local_root / name
            self._checked("create", name, lambda: target.mkdir(parents=True, exist_ok=True))
            yield target
            return
        with tempfile.TemporaryDirectory(prefix="rltf-upload-") as tmp:
            yield Path(tmp)
            self.upload(tmp, name)

    @contextlib.contextmanager
    def readable_dir(self, name: str) -> Iterator[Path]:
        """A local folder holding the files under ``name`` (downloaded first for a URI)."""
        if self.local_root is not None:
            yield self.local_root / name
            return
        with tempfile.TemporaryDirectory(prefix="rltf-download-") as tmp:
            self.download(name, tmp)
            yield Path(tmp)

    def upload(self, local: str | Path, name: str = "") -> None:
        """Copy a local file or folder to ``name`` (in place for a plain path that is the same folder)."""
        import pyarrow.fs

        local = Path(local)
        if self.local_root is not None:
            target = self.local_root / name
            if target.resolve() != local.resolve():
                self._checked("write", name, lambda: shutil.copytree(local, target, dirs_exist_ok=True)
                              if local.is_dir() else shutil.copy2(local, target))
            return
        fs, path = self._remote(name)

        def copy() -> None:
            fs.create_dir(path if local.is_dir() else path.rpartition("/")[0], recursive=True)
            pyarrow.fs.copy_files(str(local), path, source_filesystem=pyarrow.fs.LocalFileSystem(),
                                  destination_filesystem=fs)
        self._checked("upload to", name, copy)

    def download(self, name: str, local: str | Path) -> None:
        import pyarrow.fs

        fs, path = self._remote(name)
        self._checked("download", name, lambda: pyarrow.fs.copy_files(
            path, str(local), source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem()))
