"""Downloading and verifying data files, without the internet: file:// URLs, a local HTTP
server on 127.0.0.1, and openers that fail the way networks do."""

from __future__ import annotations

import hashlib
import http.server
import io as _io
import threading
import urllib.error

import pytest

from ssltrace.data import DataUnavailableError, RemoteFile, check_available, fetch
from ssltrace.data.download import CIFAR100_ARCHIVE, download, ensure, verify

PAYLOAD = bytes(range(256)) * 300  # 76.8 kB, more than one read block of a slow socket


def _remote(url: str, payload: bytes = PAYLOAD, name: str = "archive.tar.gz") -> RemoteFile:
    return RemoteFile(name, url, hashlib.md5(payload).hexdigest())


@pytest.fixture
def served(tmp_path) -> RemoteFile:
    """The payload at a file:// URL."""
    src = tmp_path / "server" / "archive.tar.gz"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    return _remote(src.as_uri())


def _never(url):
    raise AssertionError(f"no download expected, got {url}")


def _offline(url):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def _assert_manual_instructions(text: str, remote: RemoteFile) -> None:
    assert remote.filename in text and remote.url in text and remote.md5 in text
    assert "by hand" in text and "md5sum" in text


class _Interrupted(_io.BytesIO):
    """A response that delivers half the payload and then loses the connection."""

    def read(self, size=-1):
        if self.tell() >= len(PAYLOAD) // 2:
            raise ConnectionResetError("connection reset by peer")
        return super().read(min(size, 10_000))


# ----------------------------------------------------------------------------- ensure
def test_downloads_into_data_dir_and_verifies(tmp_path, served):
    data_dir = tmp_path / "resources"
    path = ensure(served, data_dir)
    assert path == data_dir / "archive.tar.gz" and path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in data_dir.iterdir()) == ["archive.tar.gz"]  # no .part left


def test_a_file_already_in_place_is_used_without_downloading(tmp_path, served):
    (tmp_path / "archive.tar.gz").write_bytes(PAYLOAD)  # e.g. placed by hand
    assert ensure(served, tmp_path, opener=_never).read_bytes() == PAYLOAD


def test_a_wrong_checksum_moves_the_file_aside_and_downloads_again(tmp_path, served):
    (tmp_path / "archive.tar.gz").write_bytes(b"half an archive")
    assert ensure(served, tmp_path).read_bytes() == PAYLOAD
    assert (tmp_path / "archive.tar.gz.corrupt").read_bytes() == b"half an archive"


def test_wrong_checksum_and_offline_names_file_url_md5_and_manual_steps(tmp_path, served):
    (tmp_path / "archive.tar.gz").write_bytes(b"half an archive")
    with pytest.raises(DataUnavailableError) as err:
        ensure(served, tmp_path, opener=_offline)
    text = str(err.value)
    _assert_manual_instructions(text, served)
    assert "moved to" in text and "Temporary failure in name resolution" in text
    assert not (tmp_path / "archive.tar.gz").exists()  # re-downloaded once, not looped


def test_a_download_with_the_wrong_content_is_not_kept(tmp_path):
    src = tmp_path / "other.bin"
    src.write_bytes(b"not the archive")
    remote = RemoteFile("archive.tar.gz", src.as_uri(), hashlib.md5(PAYLOAD).hexdigest())
    with pytest.raises(DataUnavailableError, match="downloaded file .15 bytes. has md5"):
        ensure(remote, tmp_path / "d")
    assert list((tmp_path / "d").iterdir()) == []


def test_an_interrupted_download_leaves_nothing_that_looks_complete(tmp_path):
    remote = _remote("https://example.invalid/archive.tar.gz")
    with pytest.raises(DataUnavailableError, match="ConnectionResetError"):
        ensure(remote, tmp_path, opener=lambda url: _Interrupted(PAYLOAD))
    assert list(tmp_path.iterdir()) == []


def test_a_complete_looking_part_file_is_never_taken_for_the_file(tmp_path, served):
    (tmp_path / "archive.tar.gz.part").write_bytes(PAYLOAD)  # right bytes, never renamed
    with pytest.raises(DataUnavailableError, match="does not exist"):
        verify(served, tmp_path)
    # a download overwrites the part and renames only after checking it
    assert ensure(served, tmp_path).read_bytes() == PAYLOAD
    assert not (tmp_path / "archive.tar.gz.part").exists()


def test_the_default_opener_offline_gives_the_manual_instructions(tmp_path):
    remote = _remote("http://127.0.0.1:9/cifar-100-python.tar.gz")  # nothing listens there
    with pytest.raises(DataUnavailableError) as err:
        ensure(remote, tmp_path)
    _assert_manual_instructions(str(err.value), remote)
    assert "URLError" in str(err.value)


# ----------------------------------------------------------------------------- over HTTP
class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/archive.tar.gz":
            self._send(PAYLOAD, len(PAYLOAD))
        elif self.path == "/truncated.tar.gz":  # promises the whole file, sends half
            self._send(PAYLOAD[: len(PAYLOAD) // 2], len(PAYLOAD))
        else:
            self.send_error(404)

    def _send(self, body: bytes, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def http_base():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_download(tmp_path, http_base):
    path = ensure(_remote(f"{http_base}/archive.tar.gz"), tmp_path)
    assert path.read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    "name, message", [("truncated", "IncompleteRead|closed after"), ("missing", "404")]
)
def test_http_failures_leave_no_file(tmp_path, http_base, name, message):
    remote = _remote(f"{http_base}/{name}.tar.gz", name="archive.tar.gz")
    with pytest.raises(DataUnavailableError, match=message):
        ensure(remote, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_writes_through_a_part_file(tmp_path, served):
    data_dir, seen = tmp_path / "resources", []

    class Watching(_io.BytesIO):
        def read(self, size=-1):
            seen.append(sorted(p.name for p in data_dir.iterdir()))
            return super().read(size)

    download(served, data_dir / "archive.tar.gz", opener=lambda url: Watching(PAYLOAD))
    assert seen[0] == ["archive.tar.gz.part"]  # while streaming, only the part exists
    assert sorted(p.name for p in data_dir.iterdir()) == ["archive.tar.gz"]


# ----------------------------------------------------------------------------- by dataset name
def test_check_available_names_official_file_url_and_md5(tmp_path):
    with pytest.raises(DataUnavailableError) as err:
        check_available("cifar100", tmp_path)
    _assert_manual_instructions(str(err.value), CIFAR100_ARCHIVE)
    assert CIFAR100_ARCHIVE.md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    with pytest.raises(DataUnavailableError) as err:
        check_available("cifar10h", tmp_path)
    assert "cifar-10-python.tar.gz" in str(err.value) and "cifar10h-counts.npy" in str(err.value)
    assert "c58f30108f718f92721af3b95e74349a" in str(err.value)
    assert "f1284b6fba48a67d3db69bbafb5685ad" in str(err.value)
    check_available("synthetic", tmp_path)  # nothing to download
    with pytest.raises(KeyError, match="unknown dataset 'imagenet21k'"):
        check_available("imagenet21k", tmp_path)


def test_check_available_reports_a_wrong_checksum_without_moving_the_file(tmp_path):
    (tmp_path / CIFAR100_ARCHIVE.filename).write_bytes(b"not it")
    with pytest.raises(DataUnavailableError, match="has md5 .* not the expected one"):
        check_available("cifar100", tmp_path)
    assert (tmp_path / CIFAR100_ARCHIVE.filename).read_bytes() == b"not it"


def test_fetch_by_name_with_injected_sources(tmp_path, served):
    sources = {
        CIFAR100_ARCHIVE.filename: RemoteFile(CIFAR100_ARCHIVE.filename, served.url, served.md5)
    }
    paths = fetch("cifar100", tmp_path / "r", sources=sources)
    assert paths[CIFAR100_ARCHIVE.filename].read_bytes() == PAYLOAD
    check_available("cifar100", tmp_path / "r", sources=sources)  # now passes
