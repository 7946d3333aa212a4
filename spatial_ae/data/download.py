"""Download and extraction of the official Google Speech Commands archives (standard library only)."""

from __future__ import annotations

import hashlib
import http.client
import os
import pathlib
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request

from spatial_ae.data import corpus

SPEECH_COMMANDS_URLS = {
    "speech_commands_v0.01": "http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
    "speech_commands_v0.02": "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
}
# SHA-256 from torchaudio's SPEECHCOMMANDS `_CHECKSUMS`; the v0.02 value also matches
# TensorFlow Datasets' speech_commands/checksums.tsv (2,428,923,189 bytes).
SPEECH_COMMANDS_SHA256 = {
    "speech_commands_v0.01": "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
    "speech_commands_v0.02": "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
}
CONNECT_TIMEOUT_S = 15
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A Speech Commands archive could not be downloaded, verified or extracted."""


def _sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(path: pathlib.Path, actual: str, expected: str) -> None:
    """Delete ``path`` and raise if its checksum is wrong."""
    if actual != expected:
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {path}: sha256 {actual}, expected {expected}; file deleted"
        )


def _fetch(url: str, archive: pathlib.Path, expected_sha256: str, progress: bool) -> None:
    """Stream ``url`` to a ``.part`` file, verify it, then rename it to ``archive``."""
    from tqdm.auto import tqdm

    fd, part_name = tempfile.mkstemp(prefix=archive.name + ".", suffix=".part", dir=archive.parent)
    part = pathlib.Path(part_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=archive.name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, socket.timeout, OSError, http.client.HTTPException) as error:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"The download of {url} failed ({error}). Download the archive yourself and either pass "
            f"the extracted folder as `-P dataset=/path/to/speech_commands` or put the archive at "
            f"{archive}."
        ) from error
    _check_sha256(part, digest.hexdigest(), expected_sha256)
    os.replace(part, archive)


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Regular files and folders only, with relative paths that stay inside the target."""
    members = []
    for member in tar.getmembers():
        parts = pathlib.PurePosixPath(member.name).parts
        if member.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise DownloadError(f"unsafe path in archive: {member.name!r}")
        if member.isfile() or member.isdir():
            members.append(member)
    return members


def _extract(archive: pathlib.Path, target: pathlib.Path) -> None:
    """Extract into a temporary sibling of ``target``, then rename it into place."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _safe_members(tar)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:
                tar.extractall(tmp, members=members)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(tmp)  # another process extracted it first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def download_speech_commands(name: str, cache_dir: pathlib.Path | None = None,
                             progress: bool = True) -> pathlib.Path:
    """Return the extracted corpus ``<cache>/<name>``, downloading and extracting it the first time.

    An archive already at ``<cache>/downloads/<file>`` is verified and used without network.
    """
    if name not in SPEECH_COMMANDS_URLS:
        raise ValueError(f"unknown Speech Commands version {name!r}; known: {sorted(SPEECH_COMMANDS_URLS)}")
    cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else corpus.cache_dir()
    target = cache_dir / name
    if target.is_dir():
        return target
    url = SPEECH_COMMANDS_URLS[name]
    expected = SPEECH_COMMANDS_SHA256[name]
    downloads = cache_dir / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / url.rsplit("/", 1)[-1]
    if archive.is_file():
        _check_sha256(archive, _sha256_of(archive), expected)
    else:
        _fetch(url, archive, expected, progress)
    try:
        _extract(archive, target)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DownloadError(f"could not extract {archive}: {error}") from error
    return target
