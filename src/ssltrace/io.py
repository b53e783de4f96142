"""Atomic artifact writing, and reading that verifies what it reads.

Every artifact is written to a temporary file in its destination directory and renamed into
place, so an interrupted job never leaves a half-written file that looks complete. Reading
refuses pickled code (checkpoints: weights_only=True; .npz: allow_pickle=False) and verifies
content, since a file can still be damaged after it was written (a copy cut short, a flipped
bit, an editor):

- .npz and checkpoints are zip archives whose members carry a CRC-32: every member read is
  read to its end, where zipfile compares the CRC (torch's own reader does not check it);
- text artifacts (tables, JSON) have no checksum of their own: their sha256 is written beside
  them (`.NAME.sha256`, `sha256sum` format) before they are renamed into place, and compared
  on reading, which also catches a table cut exactly at a line boundary.

A damaged file is removed (with its digest) by the reader that finds it, and the error says so
in one line naming it: Snakemake then reruns the job that writes it, so a plain rerun heals
the damage instead of failing on it again. Files are never removed for being refused (pickled
code) or for a format they do not have (a hand-made table missing a column).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io as _io
import json
import os
import re
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


class ArtifactWriteError(OSError):
    """Writing an artifact failed; the message names the path and the reason."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()  # the message alone, without "[Errno N]"


class ArtifactReadError(ValueError):
    """An artifact cannot be read: damaged, truncated, missing from its folder, or refused.

    `path` is the file; `removed` whether the reader removed it, and `folder` the directory
    output holding it, removed with it where the workflow rewrites it (`remove_folder`), so
    that the next run of the workflow recomputes them.
    """

    def __init__(
        self,
        problem: str,
        path: str | os.PathLike | None = None,
        *,
        removed: bool = False,
        advice: bool = True,
    ):
        super().__init__(problem)
        self.problem = problem
        self.path = Path(path) if path is not None else None
        self.removed = removed
        self.advice = advice
        self.folder: Path | None = None
        self.folder_removed = False

    def __str__(self) -> str:
        rerun = "running snakemake again recomputes"
        if self.folder is not None and self.folder_removed:
            what = "it and the folder" if self.removed else "the folder"
            return f"{self.problem}; removed {what} {self.folder} holding it: {rerun} them"
        if self.folder is not None:
            done = "removed it; " if self.removed else ""
            return (
                f"{self.problem}; {done}delete the folder {self.folder} and rerun the step "
                "that writes it"
            )
        if self.removed:
            return f"{self.problem}; removed it: {rerun} it"
        if self.advice:
            return f"{self.problem}; delete it and rerun the step that writes it"
        return self.problem

    def remove_folder(self, folder: str | os.PathLike) -> ArtifactReadError:
        """Also remove `folder`, the directory output holding the file, and return self.

        Snakemake reruns a job whose declared folder is missing, never one whose folder lacks
        a file. Only a folder that Snakemake made (it holds Snakemake's `.snakemake_timestamp`)
        is removed: the workflow rewrites it (from stored checkpoints, from the cache, or
        anew); anything else may be someone's only copy, and is named instead.
        """
        self.folder = Path(folder)
        if (self.folder / SNAKEMAKE_TIMESTAMP).is_file():
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder_removed = not self.folder.exists()
        return self


SNAKEMAKE_TIMESTAMP = ".snakemake_timestamp"  # Snakemake's mark in each directory() output


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


def write_text(path: str | os.PathLike, text: str, digest: bool = False) -> None:
    """Write `text` atomically; with `digest`, its sha256 beside it (see `check_digest`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
        if digest:
            _write_digest(Path(path), tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", digest=True)


def digest_path(path: str | os.PathLike) -> Path:
    """Where the sha256 of text artifact `path` is kept: `.NAME.sha256` beside it."""
    path = Path(path)
    return path.parent / f".{path.name}.sha256"


def _write_digest(path: Path, tmp: Path) -> None:
    # Renamed into place before the artifact is: a kill between the two renames leaves a
    # digest that matches no file (the old one is rejected and recomputed), never a new file
    # without its digest.
    with open(tmp, "rb") as fh:
        value = hashlib.file_digest(fh, "sha256").hexdigest()
    write_text(digest_path(path), f"{value}  {path.name}\n")


def check_digest(path: str | os.PathLike, data: bytes | None = None, remove: bool = True) -> None:
    """Raise ArtifactReadError (removing `path` and its digest) if `path` (or its bytes `data`)
    no longer has the sha256 recorded when it was written. A file without a recorded digest
    (made by hand, or by an older version) passes: there is nothing to compare with."""
    path = Path(path)
    try:
        recorded = digest_path(path).read_text().split()
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError):
        recorded = []
    if data is None:
        with open(path, "rb") as fh:
            actual = hashlib.file_digest(fh, "sha256").hexdigest()
    else:
        actual = hashlib.sha256(data).hexdigest()
    if recorded[:1] != [actual]:
        raise damaged(
            path,
            f"its content differs from the sha256 recorded in {digest_path(path).name} when it "
            "was written (changed or damaged since)",
            remove=remove,
        )


def read_json(path: str | os.PathLike, remove: bool = True) -> Any:
    """A JSON artifact, verified against its digest (a flipped digit is still valid JSON)."""
    path = Path(path)
    data = path.read_bytes()
    check_digest(path, data, remove=remove)
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise damaged(path, exc, remove=remove and digest_path(path).exists()) from exc


def save_npz(path: str | os.PathLike, arrays: Mapping[str, Any], compress: bool = False) -> None:
    """Write arrays to an .npz atomically, as np.savez does, but byte-reproducible and plain.

    np.savez stamps every member with the current time, so identical results made a minute
    apart differ byte for byte (and miss ssltrace.store's content-keyed cache); members here
    carry a fixed timestamp. Object arrays are refused here as load_npz refuses them. A value
    may be a `RawArray` (an array spooled to disk): it is copied in without being loaded.
    """
    import zipfile

    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_path(path, suffix=".npz") as tmp:
        with zipfile.ZipFile(tmp, mode="w", compression=compression, allowZip64=True) as zf:
            for key, value in arrays.items():
                member = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIMESTAMP)
                member.compress_type = compression
                if isinstance(value, RawArray):
                    with zf.open(member, "w", force_zip64=True) as fh:
                        value.write_npy(fh)
                    continue
                value = np.asanyarray(value)
                if value.dtype.hasobject:
                    raise ValueError(
                        f"cannot write {path}: array {key!r} holds Python objects (dtype "
                        f"{value.dtype}); artifacts hold only plain arrays"
                    )
                with zf.open(member, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, value, allow_pickle=False)


_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip file can record


class RawArray:
    """A C-ordered array kept as raw bytes in a file (`tofile`), e.g. an extraction's layer
    appended batch by batch; `save_npz` copies it into an .npz member in blocks, so writing
    a layer never holds it in memory. The member is byte for byte what np.save would write
    for the same array (same header, same data)."""

    def __init__(self, path: str | os.PathLike, dtype, shape: tuple[int, ...]):
        self.path, self.dtype, self.shape = Path(path), np.dtype(dtype), tuple(shape)
        expected = int(np.prod(self.shape)) * self.dtype.itemsize
        found = self.path.stat().st_size
        if found != expected:
            raise ValueError(
                f"{self.path} holds {found} bytes, not the {expected} of a {self.dtype} array "
                f"of shape {self.shape}"
            )

    def load(self) -> np.ndarray:
        return np.fromfile(self.path, dtype=self.dtype).reshape(self.shape)

    def write_npy(self, fh) -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": self.shape,
        }
        try:  # np.lib.format.write_array takes the first version whose header fits
            np.lib.format.write_array_header_1_0(fh, header)
        except ValueError:
            np.lib.format.write_array_header_2_0(fh, header)
        with open(self.path, "rb") as src:
            shutil.copyfileobj(src, fh, _CHUNK)


def load_npz(
    path: str | os.PathLike,
    keys: Iterable[str] | None = None,
    missing_ok: bool = False,
    remove: bool = True,
) -> dict[str, np.ndarray]:
    """Load the arrays `keys` (default: all) of an .npz eagerly, each checked against its
    CRC-32; pickles are refused. A damaged file is removed (unless `remove` is false) and
    reported as one message naming it, as is a missing array (unless `missing_ok`: it is then
    left out of the result)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            _check_layout(zf, path)
            members = {name.removesuffix(".npy"): name for name in zf.namelist()}
            wanted = list(members) if keys is None else list(keys)
            missing = [key for key in wanted if key not in members]
            if missing and not missing_ok:
                raise ArtifactReadError(
                    f"{path} lacks array {missing[0]!r}; arrays present: {', '.join(members)}",
                    path,
                    advice=False,
                )
            return {key: _read_member(zf, members[key]) for key in wanted if key in members}
    except ArtifactReadError:
        raise
    except (OSError, MemoryError) as exc:
        if not _garbled(exc):
            raise
        raise damaged(path, exc, remove=remove) from exc
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ArtifactReadError(
                f"refusing to load {path}: it holds pickled Python objects (which could run "
                "code), not plain arrays",
                path,
                advice=False,
            ) from exc
        raise damaged(path, exc, remove=remove) from exc
    except Exception as exc:  # BadZipFile (also a CRC mismatch), EOFError, zlib.error, ...
        raise damaged(path, exc, remove=remove) from exc


class NpyRows:
    """Rows of a C-ordered array stored uncompressed in an .npz member, read from the file
    as they are sliced (`rows[a:b]`): a probe set of 224-px images is never all in memory.
    `load_npz_rows` checks the member's CRC first."""

    def __init__(self, path: Path, offset: int, dtype: np.dtype, shape: tuple[int, ...]):
        self.path, self.offset, self.dtype, self.shape = path, offset, dtype, shape
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("NpyRows reads contiguous row slices only (rows[a:b])")
        start, stop, _ = rows.indices(len(self))
        out = np.empty((max(stop - start, 0), *self.shape[1:]), dtype=self.dtype)
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + start * self.row_bytes)
            if fh.readinto(memoryview(out).cast("B")) != out.nbytes:
                raise ArtifactReadError(f"cannot read {self.path}: cut short", self.path)
        return out


def load_npz_rows(path: str | os.PathLike, key: str) -> np.ndarray | NpyRows:
    """Array `key` of an .npz as `NpyRows` (read by row slices on demand) when it is stored
    uncompressed in C order, else loaded (`load_npz`). Its CRC-32 is checked first by reading
    the member through once in blocks, so damage is found as `load_npz` finds it."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(f"{key}.npy")
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                readers = {
                    (1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0,
                }
                if version not in readers:  # a version-3 (unicode field names) header
                    return load_npz(path, [key])[key]
                shape, fortran, dtype = readers[version](fh)
                header = fh.tell()
                while fh.read(_CHUNK):  # to the end: zipfile compares the CRC
                    pass
        if info.compress_type != zipfile.ZIP_STORED or fortran or dtype.hasobject:
            return load_npz(path, [key])[key]
        with open(path, "rb") as raw:
            raw.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", raw.read(4))
        start = info.header_offset + 30 + name_len + extra_len + header
        return NpyRows(path, start, dtype, tuple(shape))
    except KeyError:
        return load_npz(path, [key])[key]  # names the missing array as load_npz does
    except (ArtifactReadError, OSError):
        raise
    except Exception as exc:  # BadZipFile (also a CRC mismatch), ValueError of a bad header
        raise damaged(path, exc) from exc


def _check_layout(zf: zipfile.ZipFile, path: Path) -> None:
    """The members tile the archive up to its directory, as every writer lays them out.

    A member's CRC guards its bytes, not the directory that lists it: a flipped byte there can
    hide a member (zipfile then lists one array less) without any CRC being wrong.
    """
    infos = sorted(zf.infolist(), key=lambda i: i.header_offset)
    ends = {0}
    with open(path, "rb") as fh:
        for info in infos:
            if info.header_offset not in ends:
                raise zipfile.BadZipFile(f"member {info.filename!r} is not where one ends")
            fh.seek(info.header_offset + 26)
            lengths = fh.read(4)
            if len(lengths) < 4:
                raise zipfile.BadZipFile(f"member {info.filename!r} is cut short")
            name_len, extra_len = struct.unpack("<HH", lengths)
            end = info.header_offset + 30 + name_len + extra_len + info.compress_size
            # torch's writer follows each member with a data descriptor (flag bit 3): crc and
            # sizes (4- or 8-byte), after an optional signature.
            ends = {end + n for n in (0, 12, 16, 20, 24)} if info.flag_bits & 8 else {end}
    if zf.start_dir not in ends:
        raise zipfile.BadZipFile("the archive's directory does not follow its last member")


def _read_member(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    with zf.open(name) as fh:
        array = np.lib.format.read_array(fh, allow_pickle=False)
        # zipfile compares a member's CRC-32 when its last byte is read. numpy reads only the
        # bytes its header announces, and a damaged header can announce fewer: read to the end.
        if fh.read(1):
            while fh.read(_CHUNK):
                pass
            raise zipfile.BadZipFile(f"member {name!r} is longer than its array header says")
    return array


_CHUNK = 1 << 22


def verify_zip(path: str | os.PathLike, remove: bool = True) -> None:
    """Read every member of a zip archive (.npz, checkpoint) to its end, so that zipfile
    checks each CRC-32; a damaged file is removed and reported naming it."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            _check_layout(zf, path)
            for info in zf.infolist():
                with zf.open(info) as fh:
                    while fh.read(_CHUNK):
                        pass
    except (OSError, MemoryError) as exc:
        if not _garbled(exc):
            raise
        raise damaged(path, exc, remove=remove) from exc
    except Exception as exc:  # BadZipFile (also a CRC mismatch), EOFError, zlib.error, ...
        raise damaged(path, exc, remove=remove) from exc


def _garbled(exc: BaseException) -> bool:
    """Whether an OSError while reading an archive comes from its bytes (a seek to an offset
    that a damaged directory names) rather than from the file system (missing, unreadable,
    an I/O error): only the first makes the file damaged."""
    return isinstance(exc, OSError) and exc.errno == errno.EINVAL


def damaged(
    path: str | os.PathLike, reason: BaseException | str, remove: bool = True
) -> ArtifactReadError:
    """The error for damaged artifact `path`, which is removed first (with its digest) unless
    `remove` is false, so that the job that writes it runs again instead of failing on it."""
    path = Path(path)
    if isinstance(reason, BaseException):
        first = (str(reason).splitlines() or [""])[0].split(". ")[0]  # torch's run on for lines
        reason = f"damaged or truncated ({type(reason).__name__}: {first})"
    removed = False
    if remove:
        with contextlib.suppress(FileNotFoundError):
            digest_path(path).unlink()
        try:
            path.unlink()
            removed = True
        except FileNotFoundError:
            removed = True  # another reader of the same file was first
        except OSError:
            pass
    return ArtifactReadError(f"cannot read {path}: {reason}", path, removed=removed)


def save_table(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as a plain tab-separated table atomically, its sha256 beside."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)
        _write_digest(Path(path), tmp)


def read_table(
    path: str | os.PathLike,
    columns: Iterable[str],
    integers: Iterable[str] = (),
    keys: Iterable[str] = (),
    remove: bool = True,
):
    """A tab-separated table, verified: its recorded digest (if any), a complete last line,
    the `columns`, whole numbers in `integers` and a value in every `keys` column.

    A file whose digest does not match is removed (see `damaged`); one without a digest that
    fails a check is only refused: ssltrace did not write it, or not this version.
    """
    import pandas as pd

    path = Path(path)
    data = path.read_bytes()
    check_digest(path, data, remove=remove)
    ours = remove and digest_path(path).exists()
    if data and not data.endswith(b"\n"):
        raise damaged(path, "truncated (its last line is incomplete)", remove=ours)
    try:
        # Only an empty field is missing: a run may be named "NA" or "null".
        table = pd.read_csv(_io.BytesIO(data), sep="\t", keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise damaged(path, exc, remove=ours) from exc
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ArtifactReadError(
            f"{path} lacks column {missing[0]!r} (columns: {', '.join(map(str, table.columns))})",
            path,
            advice=False,
        )
    for column in keys:
        empty = table[column].isna()
        if empty.any():
            line = int(empty.to_numpy().argmax()) + 2  # 1-based, after the header
            raise damaged(path, f"line {line} has no {column!r}", remove=ours)
    for column in integers:
        values = pd.to_numeric(table[column], errors="coerce")
        whole = values.notna() & (values == values.round())
        if not whole.all():
            line = int((~whole).to_numpy().argmax()) + 2
            raise damaged(path, f"line {line}: {column!r} is not a whole number", remove=ours)
        table[column] = values.astype("int64")
    return table


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


def torch_load(path: str | os.PathLike, map_location: Any = "cpu", remove: bool = True) -> Any:
    """Load a checkpoint with weights_only=True: a file carrying pickled code is refused.

    Every member's CRC-32 is checked first (`verify_zip`): torch's reader skips it, and a
    flipped byte in a tensor would load without error as a changed weight.
    """
    import pickle

    import torch

    verify_zip(path, remove=remove)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, MemoryError) as exc:
        if not _garbled(exc):
            raise
        raise damaged(path, exc, remove=remove) from exc
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise damaged(path, exc, remove=remove) from exc  # e.g. "pickle data was truncated"
        # torch's own text suggests weights_only=False, i.e. running the code: name it instead.
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise ArtifactReadError(
            f"refusing to load {path}: not a plain-weights checkpoint, it references Python "
            f"code{what}; checkpoints hold only tensors, numbers, strings, lists and dicts "
            "(loaded with weights_only=True)",
            path,
            advice=False,
        ) from exc
    except Exception as exc:
        raise damaged(path, exc, remove=remove) from exc


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
