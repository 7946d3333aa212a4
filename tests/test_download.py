"""Tests for spatial_ae.data.download, without the internet (local archives and a local HTTP server)."""

import functools
import hashlib
import http.server
import io
import socket
import tarfile
import threading

import pytest

from spatial_ae.data import download
from spatial_ae.data.download import DownloadError, download_speech_commands

NAME = "speech_commands_v0.01"
FILE = "speech_commands_v0.01.tar.gz"


def _make_archive(path, members=None):
    """Write a small Speech-Commands-like tar.gz and return its sha256."""
    members = members or {"./yes/abc_nohash_0.wav": b"RIFF-fake", "./testing_list.txt": b"yes/abc_nohash_0.wav\n"}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_dir(tmp_path):
    """Serve a folder over HTTP on 127.0.0.1; yields (folder, base url)."""
    served = tmp_path / "served"
    served.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_offline_fails_fast_with_instructions(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}/x.tar.gz"
    monkeypatch.setitem(download.SPEECH_COMMANDS_URLS, NAME, url)
    with pytest.raises(DownloadError) as error:
        download_speech_commands(NAME, cache_dir=tmp_path, progress=False)
    message = str(error.value)
    assert f"download of {url} failed" in message
    assert "-P dataset=/path/to/speech_commands" in message
    assert str(tmp_path / "downloads" / "x.tar.gz") in message
    assert not list((tmp_path / "downloads").iterdir())  # no .part left behind
    assert not (tmp_path / NAME).exists()


def test_preplaced_archive_is_extracted_without_network(tmp_path, monkeypatch):
    archive = tmp_path / "downloads" / FILE
    archive.parent.mkdir()
    monkeypatch.setitem(download.SPEECH_COMMANDS_SHA256, NAME, _make_archive(archive))
    monkeypatch.setitem(download.SPEECH_COMMANDS_URLS, NAME, f"http://127.0.0.1:{_closed_port()}/{FILE}")
    root = download_speech_commands(NAME, cache_dir=tmp_path, progress=False)
    assert root == tmp_path / NAME
    assert (root / "yes" / "abc_nohash_0.wav").read_bytes() == b"RIFF-fake"
    assert (root / "testing_list.txt").read_text() == "yes/abc_nohash_0.wav\n"
    archive.unlink()  # a second call needs neither the archive nor the network
    assert download_speech_commands(NAME, cache_dir=tmp_path, progress=False) == root
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_checksum_mismatch_deletes_archive(tmp_path, monkeypatch):
    archive = tmp_path / "downloads" / FILE
    archive.parent.mkdir()
    _make_archive(archive)
    monkeypatch.setitem(download.SPEECH_COMMANDS_SHA256, NAME, "0" * 64)
    with pytest.raises(DownloadError, match="checksum mismatch") as error:
        download_speech_commands(NAME, cache_dir=tmp_path, progress=False)
    assert str(archive) in str(error.value)
    assert not archive.exists()
    assert not (tmp_path / NAME).exists()


def test_unsafe_archive_member_is_rejected(tmp_path, monkeypatch):
    archive = tmp_path / "downloads" / FILE
    archive.parent.mkdir()
    digest = _make_archive(archive, {"../evil.txt": b"x"})
    monkeypatch.setitem(download.SPEECH_COMMANDS_SHA256, NAME, digest)
    with pytest.raises(DownloadError, match="unsafe path"):
        download_speech_commands(NAME, cache_dir=tmp_path, progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / NAME).exists()


def test_real_http_download_with_progress(tmp_path, monkeypatch, http_dir, capsys):
    served, base_url = http_dir
    digest = _make_archive(served / FILE)
    monkeypatch.setitem(download.SPEECH_COMMANDS_URLS, NAME, f"{base_url}/{FILE}")
    monkeypatch.setitem(download.SPEECH_COMMANDS_SHA256, NAME, digest)
    cache = tmp_path / "cache"
    root = download_speech_commands(NAME, cache_dir=cache, progress=True)
    assert (root / "yes" / "abc_nohash_0.wav").read_bytes() == b"RIFF-fake"
    assert (cache / "downloads" / FILE).read_bytes() == (served / FILE).read_bytes()
    assert [p.name for p in (cache / "downloads").iterdir()] == [FILE]  # .part renamed
    assert FILE in capsys.readouterr().err  # tqdm bar


def test_http_download_with_wrong_checksum_raises(tmp_path, monkeypatch, http_dir):
    served, base_url = http_dir
    _make_archive(served / FILE)
    monkeypatch.setitem(download.SPEECH_COMMANDS_URLS, NAME, f"{base_url}/{FILE}")
    monkeypatch.setitem(download.SPEECH_COMMANDS_SHA256, NAME, "f" * 64)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_speech_commands(NAME, cache_dir=tmp_path, progress=False)
    assert not list((tmp_path / "downloads").iterdir())


def test_http_404_raises_download_error(tmp_path, monkeypatch, http_dir):
    _, base_url = http_dir
    monkeypatch.setitem(download.SPEECH_COMMANDS_URLS, NAME, f"{base_url}/missing.tar.gz")
    with pytest.raises(DownloadError, match="missing.tar.gz failed"):
        download_speech_commands(NAME, cache_dir=tmp_path, progress=False)


def test_unknown_name_and_real_checksums():
    with pytest.raises(ValueError):
        download_speech_commands("speech_commands_v9")
    assert set(download.SPEECH_COMMANDS_SHA256) == set(download.SPEECH_COMMANDS_URLS)
    assert all(len(v) == 64 and int(v, 16) for v in download.SPEECH_COMMANDS_SHA256.values())
