"""Download MNRE from its public sources (pinned GitHub text files, the Google Drive image archive through
``gdown``): resumable, sha256-verified, failing fast without a network, in the official layout."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import tarfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: thecharm/MNRE at the commit whose text files the checksums below were taken from.
MNRE_COMMIT = "354211ed7b8d066f989ade6fa6c4a387e3c6de81"
MNRE_BASE_URL = f"https://raw.githubusercontent.com/thecharm/MNRE/{MNRE_COMMIT}"
#: Overrides :data:`MNRE_BASE_URL` (a mirror, or a local server in tests).
BASE_URL_ENV = "ROCMRE_MNRE_BASE_URL"
MNRE_IMAGES_GDRIVE_ID = "1FYiJFtRayWY32nRH0rdycYzIdDcMmDFR"
GDRIVE_HOST = "drive.google.com"

#: Official MNRE-2 text files (path in the repository -> sha256). The HVPNeT ``ours_*.txt`` copies are identical.
MNRE_TEXT_FILES: dict[str, str] = {
    "mnre_txt/mnre_train.txt": "1cc34438a00e2a2db73e4eba297820f926f62abd1fddc693caa13c58b62428b7",
    "mnre_txt/mnre_val .txt": "c76865179b5678167b164c21fd25ed31f9a1416da393ac93ce70f32b00352b75",
    "mnre_txt/mnre_test.txt": "f53c2f9b7739bea7d08aee4a91bfd6ec7432e1d0eeb83debf10f5d3291bc5215",
}

LOCAL_COPY_HINT = ("To use a local copy instead, point rocmre at it with --data-dir DIR or the ROCMRE_DATA "
                   "variable (export ROCMRE_DATA=DIR), where DIR holds mnre_txt/ (official layout) or "
                   "RE_data/txt/ (HVPNeT layout).")

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed; the message says why and what to do instead."""


@dataclass
class DownloadResult:
    """What :func:`download_mnre` put where."""

    root: Path
    files: list[Path] = field(default_factory=list)
    images_dir: Path | None = None
    warnings: list[str] = field(default_factory=list)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _host_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadError(f"not an http(s) URL: {url!r}")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def check_reachable(url: str, timeout: float = 5.0) -> None:
    """Open (and close) a TCP connection to ``url``'s host within ``timeout`` seconds, DNS included."""
    host, port = _host_port(url)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(e)

    worker = threading.Thread(target=attempt, daemon=True)  # getaddrinfo has no timeout of its own
    worker.start()
    worker.join(timeout + 0.5)
    if not outcome:
        reason = f"no answer within {timeout:g} s"
    elif outcome[0] is not None:
        reason = f"{type(outcome[0]).__name__}: {outcome[0]}"
    else:
        return
    raise DownloadError(f"cannot reach {host}:{port} ({reason}); is there a network connection? {LOCAL_COPY_HINT}")


def download_file(url: str, dest: Path, *, sha256: str | None = None, timeout: float = 30.0,
                  progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part``; a checksum mismatch deletes it and raises
    :class:`DownloadError`."""
    dest = Path(dest)
    if dest.is_file() and sha256 is not None and sha256_file(dest) == sha256:
        log.info("%s is already complete", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "rocmre"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = getattr(response, "status", 200)
            if offset and status != 206:  # the server ignored the range: start over
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            with open(part, "ab" if offset else "wb") as out:
                done = offset
                while block := response.read(CHUNK):
                    out.write(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the .part file is already complete
            pass
        else:
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}. {LOCAL_COPY_HINT}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: {reason} (partial download kept in {part}; rerun to resume). "
                            f"{LOCAL_COPY_HINT}") from None
    if sha256 is not None:
        got = sha256_file(part)
        if got != sha256:
            part.unlink()
            raise DownloadError(f"{url}: sha256 {got} does not match the expected {sha256}; the file was deleted")
    part.replace(dest)
    return dest


def _safe_extract(archive: Path, into: Path) -> None:
    """Extract a zip or tar archive, refusing members that would land outside ``into``."""
    into = into.resolve()

    def inside(name: str) -> bool:
        return (into / name).resolve().is_relative_to(into)

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            bad = [n for n in z.namelist() if not inside(n)]
            if bad:
                raise DownloadError(f"{archive}: refusing members outside the target folder: {bad[:3]}")
            z.extractall(into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            bad = [m.name for m in t.getmembers() if not inside(m.name) or m.issym() or m.islnk()]
            if bad:
                raise DownloadError(f"{archive}: refusing links or members outside the target folder: {bad[:3]}")
            if hasattr(tarfile, "data_filter"):
                t.extractall(into, filter="data")
            else:  # pragma: no cover - Python < 3.11.4; members were checked above
                t.extractall(into)
    else:
        raise DownloadError(f"{archive} is neither a zip nor a tar archive")


def _place_images(root: Path, extracted: Path) -> Path | None:
    """Find ``img_org`` (or split folders of .jpg files) in the extracted archive and link it as ``root/img_org``."""
    target = root / "img_org"
    if (target / "train").is_dir():
        return target
    for cand in sorted(extracted.rglob("img_org")):
        if cand.is_dir() and (cand / "train").is_dir():
            shutil.move(str(cand), str(target))
            return target
    for cand in sorted(extracted.rglob("train")):
        if cand.is_dir() and any(cand.glob("*.jpg")):
            shutil.move(str(cand.parent), str(target))
            return target
    return None


def download_mnre_images(root: Path, *, timeout: float = 30.0, images_url: str | None = None) -> Path:
    """Fetch and extract the image archive into ``root/img_org``; returns that folder."""
    archive = root / "mnre_images.archive"
    if images_url is not None:
        check_reachable(images_url, min(timeout, 5.0))
        download_file(images_url, archive, timeout=timeout)
    else:
        try:
            import gdown
        except ImportError:
            raise DownloadError("downloading the images from Google Drive needs gdown: "
                                "pip install 'rocmre[download]' (or pass an images URL)") from None
        check_reachable(f"https://{GDRIVE_HOST}/", min(timeout, 5.0))
        try:
            got = gdown.download(id=MNRE_IMAGES_GDRIVE_ID, output=str(archive), quiet=False, resume=True)
        except Exception as e:  # gdown raises its own and requests' exception types
            raise DownloadError(f"Google Drive download failed ({type(e).__name__}: {e}). {LOCAL_COPY_HINT}") from None
        if not got:
            raise DownloadError(f"Google Drive download of {MNRE_IMAGES_GDRIVE_ID} failed. {LOCAL_COPY_HINT}")
    staging = root / "mnre_images.extract"
    staging.mkdir(exist_ok=True)
    _safe_extract(archive, staging)
    placed = _place_images(root, staging)
    if placed is None:
        raise DownloadError(f"no img_org/train folder of images found in the archive (extracted to {staging}); "
                            "pass --image-dir to the readers")
    shutil.rmtree(staging, ignore_errors=True)
    archive.unlink(missing_ok=True)
    return placed


def download_mnre(to: str | Path, *, timeout: float = 30.0, images: bool = True, base_url: str | None = None,
                  images_url: str | None = None,
                  progress: Callable[[str, int, int | None], None] | None = None) -> DownloadResult:
    """Download MNRE-2 text (and, with ``images``, the images) into ``to``; a failed image download is reported in
    ``result.warnings``."""
    root = Path(to)
    base = (base_url or os.environ.get(BASE_URL_ENV) or MNRE_BASE_URL).rstrip("/")
    check_reachable(base, min(timeout, 5.0))
    result = DownloadResult(root)
    for rel, digest in MNRE_TEXT_FILES.items():
        url = f"{base}/{urllib.parse.quote(rel)}"
        cb = (lambda done, total, rel=rel: progress(rel, done, total)) if progress is not None else None
        result.files.append(download_file(url, root / rel, sha256=digest, timeout=timeout, progress=cb))
    if images:
        try:
            result.images_dir = download_mnre_images(root, timeout=timeout, images_url=images_url)
        except DownloadError as e:
            result.warnings.append(f"images not downloaded: {e}")
    return result
