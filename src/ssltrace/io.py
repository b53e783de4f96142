"""Atomic artifact writing and safe checkpoint loading.

Every artifact is written to a temporary file in its destination directory and renamed into
place, so an interrupted job never leaves a half-written file that looks complete. Reading
refuses pickled code (checkpoints: weights_only=True; .npz: allow_pickle=False) and reports a
damaged file as one message naming it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


class ArtifactWriteError(OSError):
    """Writing an artifact failed; the message names the path and the reason."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()  # the message alone, without "[Errno N]"


class ArtifactReadError(ValueError):
    """An artifact cannot be read (damaged, truncated, or carrying pickled code)."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get normal permissions
        os.close(fd)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise _write_error(path, exc) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _remove_stale_temps(path, suffix)


def _remove_stale_temps(path: Path, suffix: str) -> None:
    """Delete temp files of `path` left by writers that were killed before their rename.

    A SIGKILL skips every cleanup, and a checkpoint's temp can be as large as the checkpoint;
    the rerun that writes the same artifact is the one place that knows they are garbage
    (each artifact has one writer: the job that declares it).
    """
    stale = re.compile(
        re.escape(f".{path.name}.") + r"[A-Za-z0-9_]{8}" + re.escape(f".tmp{suffix}")
    )
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            if stale.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _write_error(path: Path, exc: OSError) -> ArtifactWriteError:
    reasons = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EACCES: "permission denied (is the results directory writable?)",
        errno.EROFS: "the file system is read-only",
    }
    reason = reasons.get(exc.errno, exc.strerror or str(exc))
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):  # mkdir met a file where a folder belongs
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            reason = f"{blocker} is a file, not a directory"
    return ArtifactWriteError(exc.errno, f"cannot write {path}: {reason}")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npz(path: str | os.PathLike, arrays: Mapping[str, Any], compress: bool = False) -> None:
    """Write arrays to an .npz atomically, as np.savez does, but byte-reproducible and plain.

    np.savez stamps every member with the current time, so identical results made a minute
    apart differ byte for byte (and miss ssltrace.store's content-keyed cache); members here
    carry a fixed timestamp. Object arrays are refused here as load_npz refuses them.
    """
    import zipfile

    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_path(path, suffix=".npz") as tmp:
        with zipfile.ZipFile(tmp, mode="w", compression=compression, allowZip64=True) as zf:
            for key, value in arrays.items():
                value = np.asanyarray(value)
                if value.dtype.hasobject:
                    raise ValueError(
                        f"cannot write {path}: array {key!r} holds Python objects (dtype "
                        f"{value.dtype}); artifacts hold only plain arrays"
                    )
                member = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIMESTAMP)
                member.compress_type = compression
                with zf.open(member, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, value, allow_pickle=False)


_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip file can record


def load_npz(path: str | os.PathLike, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Load the arrays `keys` (default: all) of an .npz eagerly; pickles are refused, and a
    damaged file or a missing array is one message naming the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            wanted = data.files if keys is None else list(keys)
            missing = [key for key in wanted if key not in data.files]
            if missing:
                raise ArtifactReadError(
                    f"{path} lacks array {missing[0]!r}; arrays present: {', '.join(data.files)}"
                )
            return {key: data[key] for key in wanted}
    except (FileNotFoundError, IsADirectoryError, PermissionError, ArtifactReadError):
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ArtifactReadError(
                f"refusing to load {path}: it holds pickled Python objects (which could run "
                "code), not plain arrays"
            ) from exc
        raise _damaged(path, exc) from exc
    except Exception as exc:  # BadZipFile, EOFError, zlib.error, ...: all mean a damaged file
        raise _damaged(path, exc) from exc


def _damaged(path, exc: BaseException) -> ArtifactReadError:
    first = (str(exc).splitlines() or [""])[0].split(". ")[0]  # torch's texts run on for lines
    return ArtifactReadError(
        f"cannot read {path}: damaged or truncated ({type(exc).__name__}: {first}); delete it "
        "and rerun the step that writes it"
    )


def save_table(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as a tab-separated table atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)


def torch_save(path: str | os.PathLike, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # A file object, not a path: given a path, torch names the archive's inner folder
        # after the (random) temp file, and identical checkpoints would differ byte for byte.
        try:
            torch.save(obj, fh)
        except RuntimeError as exc:
            # torch's zip writer reports a failed write as a RuntimeError ("unexpected pos",
            # "file write failed"); a full disk is then the likely cause, so say which.
            full = shutil.disk_usage(Path(tmp).parent).free < 1 << 20
            code = errno.ENOSPC if full else errno.EIO
            raise OSError(code, os.strerror(code) if not full else str(exc)) from exc


def torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint with weights_only=True: a file carrying pickled code is refused."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise _damaged(path, exc) from exc  # e.g. "pickle data was truncated"
        # torch's own text suggests weights_only=False, i.e. running the code: name it instead.
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise ArtifactReadError(
            f"refusing to load {path}: not a plain-weights checkpoint, it references Python "
            f"code{what}; checkpoints hold only tensors, numbers, strings, lists and dicts "
            "(loaded with weights_only=True)"
        ) from exc
    except Exception as exc:
        raise _damaged(path, exc) from exc


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Place `src` at `dst` atomically, as a hard link where the file system allows it."""
    dst = Path(dst)
    if dst.exists() and os.path.samefile(src, dst):
        return  # already in place; renaming a link onto itself would leave the temp name behind
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            import shutil

            shutil.copyfile(src, tmp)
