"""Downloading and checksum-verifying the real data files (urllib only).

A file is fetched into `data_dir` as `<name>.part`, its md5 checked while it streams, and only
then renamed to `<name>`, so a half-downloaded file is never taken for complete. A file already
in `data_dir` (downloaded earlier or placed there by hand) is used when its checksum matches;
one that does not match is moved aside to `<name>.corrupt` and downloaded again, once. When
that fails too (no network), the error names the file, its official URL and md5, and says how
to place it by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

Opener = Callable[[str], BinaryIO]  # url -> readable binary stream (closed by the caller)
_BLOCK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A file the real datasets need: its name in data_dir, official URL and md5."""

    filename: str
    url: str
    md5: str
    how: str = ""  # how to obtain it by hand where it cannot be downloaded (e.g. a login)


CIFAR100_ARCHIVE = RemoteFile(
    "cifar-100-python.tar.gz",
    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "eb9058c3a382ffc7106e4002c42a8d85",
)
CIFAR10_ARCHIVE = RemoteFile(
    "cifar-10-python.tar.gz",
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
)
CIFAR10H_COUNTS = RemoteFile(
    "cifar10h-counts.npy",
    "https://github.com/jcpeterson/cifar-10h/raw/master/data/cifar10h-counts.npy",
    "f1284b6fba48a67d3db69bbafb5685ad",
)


class DataUnavailableError(RuntimeError):
    """A real data file is missing or damaged and could not be downloaded."""


class _DownloadFailed(Exception):
    pass


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def unavailable_message(remote: RemoteFile, data_dir: Path, problem: str) -> str:
    path = (Path(data_dir) / remote.filename).absolute()
    if remote.how:
        return (
            f"{remote.filename} is not available: {problem}.\n"
            f"  expected md5: {remote.md5}\n"
            f"  to place it by hand: {remote.how} ({path}); check that `md5sum {path}` "
            f"prints {remote.md5}, and run again."
        )
    return (
        f"{remote.filename} is not available: {problem}.\n"
        f"  official URL: {remote.url}\n"
        f"  expected md5: {remote.md5}\n"
        f"  to place it by hand: download {remote.url} on a machine with internet access "
        f"(e.g. `curl -L -o {remote.filename} {remote.url}`), copy it to {path}, check that "
        f"`md5sum {path}` prints {remote.md5}, and run again."
    )


def verify(remote: RemoteFile, data_dir: Path) -> Path:
    """The path of `remote` in data_dir if it is there with the right md5; else raise."""
    path = Path(data_dir) / remote.filename
    if not path.is_file():
        raise DataUnavailableError(unavailable_message(remote, data_dir, f"{path} does not exist"))
    actual = md5sum(path)
    if actual != remote.md5:
        problem = f"{path} has md5 {actual}, not the expected one (truncated or a different file)"
        raise DataUnavailableError(unavailable_message(remote, data_dir, problem))
    return path


def ensure(remote: RemoteFile, data_dir: Path, opener: Opener | None = None) -> Path:
    """Return the verified path of `remote` in data_dir, downloading it if needed (once)."""
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise DataUnavailableError(f"data_dir {data_dir} is a file, not a directory")
    path = data_dir / remote.filename
    note = ""
    if path.is_file():
        actual = md5sum(path)
        if actual == remote.md5:
            return path
        corrupt = path.with_name(path.name + ".corrupt")
        os.replace(path, corrupt)
        note = f"{path} had md5 {actual} and was moved to {corrupt}; "
        log.warning(
            "%s has the wrong md5 (%s); moved to %s, downloading again", path, actual, corrupt
        )
    try:
        download(remote, path, opener)
    except _DownloadFailed as exc:
        raise DataUnavailableError(
            unavailable_message(remote, data_dir, f"{note}downloading it failed: {exc}")
        ) from None
    return path


def download(remote: RemoteFile, path: Path, opener: Opener | None = None) -> None:
    """Stream remote.url into path.part, check the md5, then rename the part onto path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    log.info("downloading %s to %s", remote.url, path)
    try:
        digest, size = _stream(opener or _urlopen, remote.url, part)
        if digest != remote.md5:
            raise _DownloadFailed(f"the downloaded file ({size} bytes) has md5 {digest}")
        os.replace(part, path)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
        raise _DownloadFailed(f"{type(exc).__name__}: {exc}") from exc
    finally:
        part.unlink(missing_ok=True)  # an interrupted download leaves nothing behind
    log.info("downloaded %s (%d bytes, md5 ok)", path, size)


def _stream(opener: Opener, url: str, part: Path) -> tuple[str, int]:
    digest, size = hashlib.md5(), 0
    with opener(url) as response, open(part, "wb") as out:
        expected = _content_length(response)
        for block in iter(lambda: response.read(_BLOCK), b""):
            out.write(block)
            digest.update(block)
            size += len(block)
        out.flush()
        os.fsync(out.fileno())
    if expected is not None and size != expected:
        raise _DownloadFailed(f"the connection closed after {size} of {expected} bytes")
    return digest.hexdigest(), size


def _content_length(response) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    return int(value) if value and value.isdigit() else None


def _urlopen(url: str) -> BinaryIO:
    request = urllib.request.Request(url, headers={"User-Agent": "ssltrace"})
    return urllib.request.urlopen(request, timeout=60)
