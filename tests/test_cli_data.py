"""``rocmre data stats`` and ``rocmre data download`` (offline: a loopback server stands in for GitHub)."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rocmre.data.download import MNRE_TEXT_FILES, DownloadError, check_reachable, download_file, download_mnre

FIXTURES = Path(__file__).parent / "fixtures"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there


@pytest.fixture(scope="module")
def app():
    from rocmre.cli import app

    return app


def invoke(app, args: list[str], **kwargs):
    result = CliRunner().invoke(app, args, **kwargs)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.output
    return result


def test_stats_mnre(app, data_root, monkeypatch):
    monkeypatch.setenv("ROCMRE_DATA", str(data_root))
    r = invoke(app, ["data", "stats", "mnre/RE_data"])
    assert r.exit_code == 0, r.output
    out = r.stdout
    for split, n, with_image in [("train", "12,247", "49"), ("val", "1,624", "7"), ("test", "1,614", "51")]:
        row = next(line.split() for line in out.splitlines() if line.startswith(split + " "))
        assert row[1:4] == [n, with_image, f"{int(n.replace(',', '')) - int(with_image):,}"]
    assert "15,485" in out and "format mnre" in out and "23 labels" in out
    none_row = next(line.split() for line in out.splitlines() if line.startswith("None "))
    assert none_row == ["None", "7,744", "1,000", "974"]
    assert "/per/misc/race" in out


def test_stats_json_with_data_dir(app, data_root):
    r = invoke(app, ["data", "stats", "mnre/official", "--data-dir", str(data_root), "--split", "val,test", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["format"] == "mnre" and d["negative_label"] == "None" and len(d["labels"]) == 23
    val, test = d["splits"]
    assert (val["split"], val["records"], val["with_image"], val["without_image"]) == ("val", 1624, 0, 1624)
    assert test["records"] == 1614 and test["label_counts"]["None"] == 974 and test["num_problems"] == 0
    assert val["source"].endswith("mnre_val .txt")


def test_stats_mnre1_negative_label(app, data_root):
    root = data_root / "mnre" / "version1"
    r = invoke(app, ["data", "stats", str(root), "--split", "val", "--negative-label", "none", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["splits"][0]["records"] == 975 and d["splits"][0]["label_counts"]["none"] == 580 and len(d["labels"]) == 31


def test_stats_bad_lines(app, tmp_path):
    txt = tmp_path / "txt"
    txt.mkdir()
    good = {"token": ["A", "meets", "B"], "h": {"name": "A", "pos": [0, 1]}, "t": {"name": "B", "pos": [2, 3]},
            "img_id": "a.jpg", "relation": "None"}
    f = txt / "ours_train.txt"
    f.write_text("\n".join([repr(good), "{'token': oops", repr({**good, "relation": "nope"}), repr(good)]) + "\n")
    (txt / "ours_rel2id.json").write_text('{"None": 0, "/per/per/peer": 1}')
    r = invoke(app, ["data", "stats", str(tmp_path)])
    assert r.exit_code == 1
    assert f"{f}:2" in r.stderr and "--skip-bad-lines" in r.stderr and "Traceback" not in r.output
    r = invoke(app, ["data", "stats", str(tmp_path), "--skip-bad-lines"])
    assert r.exit_code == 0, r.output
    assert "train: not found" not in r.stdout and "val: not found" in r.stdout  # absent splits are noted
    row = next(line.split() for line in r.stdout.splitlines() if line.startswith("train "))
    assert row[1] == "2" and row[-1] == "2"
    assert "problems (2: bad lines skipped" in r.stdout
    assert f"{f}:2" in r.stdout and f"{f}:3, field 'relation'" in r.stdout
    d = json.loads(invoke(app, ["data", "stats", str(tmp_path), "--skip-bad-lines", "--json"]).stdout)
    assert d["num_problems"] == 2 and d["splits"][0]["records"] == 2


def test_stats_more_and_jsonl(app, tmp_path):
    shutil.copytree(FIXTURES / "more", tmp_path / "more")
    # without the ent_{split}_dict.pth object boxes, only records with a box in t['pos'] can be read
    r = invoke(app, ["data", "stats", str(tmp_path / "more"), "--json"])
    assert r.exit_code == 1 and "field 't.name'" in r.stderr and "has no box" in r.stderr
    r = invoke(app, ["data", "stats", str(tmp_path / "more"), "--json", "--skip-bad-lines"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["format"] == "more" and d["negative_label"] == "none" and len(d["labels"]) == 5
    assert [s["records"] for s in d["splits"]] == [1, 0, 1] and d["num_problems"] == 5
    assert [s["with_image"] for s in d["splits"]] == [0, 0, 0]
    r = invoke(app, ["data", "stats", str(FIXTURES / "jsonl" / "sample.jsonl")])
    assert r.exit_code == 0, r.output
    assert "format jsonl" in r.stdout and next(
        line.split() for line in r.stdout.splitlines() if line.startswith("sample "))[1] == "4"


def test_stats_missing_path(app, tmp_path, monkeypatch):
    monkeypatch.setenv("ROCMRE_DATA", str(tmp_path))
    r = invoke(app, ["data", "stats", "no/such/dataset"])
    assert r.exit_code == 2 and "ROCMRE_DATA" in r.stderr and "Traceback" not in r.output
    r = invoke(app, ["data", "stats", str(tmp_path)])  # exists but holds no split
    assert r.exit_code == 2 and "no MNRE train file" in r.stderr
    r = invoke(app, ["data", "stats", str(tmp_path), "--format", "xml"])
    assert r.exit_code == 2 and "unknown data format" in r.stderr


def test_stats_counts_unreadable_images(app, tmp_path):
    """``data stats`` checks that present images decode: a truncated or non-image file is a problem, counted as
    without image (exit 0); with --strict-images it is an error naming the file and line (exit 1)."""
    from PIL import Image

    txt, images = tmp_path / "txt", tmp_path / "img_org" / "train"
    txt.mkdir()
    images.mkdir(parents=True)
    line = {"token": ["A", "meets", "B"], "h": {"name": "A", "pos": [0, 1]}, "t": {"name": "B", "pos": [2, 3]},
            "relation": "None"}
    f = txt / "ours_train.txt"
    f.write_text("\n".join(repr({**line, "img_id": name}) for name in ("ok.png", "empty.jpg", "text.jpg")) + "\n")
    (txt / "ours_rel2id.json").write_text('{"None": 0, "/per/per/peer": 1}')
    Image.new("RGB", (4, 4)).save(images / "ok.png")
    (images / "empty.jpg").write_bytes(b"")
    (images / "text.jpg").write_text("hello")
    r = invoke(app, ["data", "stats", str(tmp_path), "--split", "train", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)["splits"][0]
    assert (s["records"], s["with_image"], s["without_image"], s["num_problems"]) == (3, 1, 2, 2)
    assert [p["source"] for p in s["problems"]] == [f"{f}:2", f"{f}:3"]
    r = invoke(app, ["data", "stats", str(tmp_path), "--split", "train", "--strict-images"])
    assert r.exit_code == 1 and r.stderr.startswith(f"error: {f}:2, field 'img_id': cannot load image ")
    assert len(r.stderr.strip().splitlines()) == 1


# --- the data folder and CLI errors ---------------------------------------------------------------------------------


def test_default_data_dir(tmp_path, monkeypatch):
    from rocmre.paths import default_data_dir, resolve_data_path

    monkeypatch.delenv("ROCMRE_DATA", raising=False)
    work = tmp_path / "project" / "main"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    with pytest.raises(FileNotFoundError, match=r"ROCMRE_DATA is not set and neither ./data nor ../shared/data "
                                                r"exists; set ROCMRE_DATA to the folder"):
        default_data_dir()
    with pytest.raises(FileNotFoundError, match=r"dataset 'mnre/RE_data' not found .*\$ROCMRE_DATA is not set"):
        resolve_data_path("mnre/RE_data")
    (tmp_path / "project" / "shared" / "data" / "mnre").mkdir(parents=True)
    assert default_data_dir() == Path("../shared/data")
    assert resolve_data_path("mnre") == Path("../shared/data/mnre")
    (work / "data").mkdir()
    assert default_data_dir() == Path("data")
    monkeypatch.setenv("ROCMRE_DATA", str(tmp_path / "project" / "shared" / "data"))
    assert default_data_dir() == tmp_path / "project" / "shared" / "data"
    (work / "data" / "more").mkdir()
    assert resolve_data_path("more", data_dir=work / "data") == work / "data" / "more"
    assert resolve_data_path(None, data_dir=work / "data") == work / "data"
    monkeypatch.setenv("ROCMRE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        default_data_dir()


def test_data_dir_means_the_same_everywhere(app, data_root, tmp_path, monkeypatch):
    """``--data-dir`` is where relative dataset paths are looked up, on ``data stats``, ``train`` and ``evaluate``;
    a missing dataset is one line naming that folder, exit 1 (a --data-dir that is no folder: exit 2)."""
    monkeypatch.delenv("ROCMRE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    r = invoke(app, ["data", "stats", "mnre/RE_data", "--data-dir", str(data_root), "--split", "val", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["splits"][0]["records"] == 1624
    empty = tmp_path / "empty"
    empty.mkdir()
    config = tmp_path / "run.yaml"
    config.write_text("data:\n  path: mnre/RE_data\n")
    model = tmp_path / "model"
    model.mkdir()
    for args, what in [(["data", "stats", "mnre/RE_data"], ""),
                       (["train", "--config", str(config)], "cannot train: "),
                       (["evaluate", "--model", str(model), "--data", "mnre/RE_data"], "cannot read the test split: ")]:
        r = invoke(app, [*args, "--data-dir", str(empty)])
        assert r.exit_code == (2 if not what else 1), r.output
        err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert err[0].startswith(f"error: {what}dataset 'mnre/RE_data' not found"), r.stderr
        assert f"the data folder {empty.resolve()}" in err[0] and "Traceback" not in r.output
        r = invoke(app, [*args, "--data-dir", str(tmp_path / "nope")])
        assert r.exit_code == 2 and "--data-dir" in r.stderr and "is not a folder" in r.stderr


def test_train_user_errors_are_one_line(app, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text("data:\n  path: mnre/RE_data\n")
    r = invoke(app, ["train", "--config", str(config), "--set", "train.epochs=many"])
    assert r.exit_code == 2 and r.stderr.startswith(f"error: invalid config {config}: ")
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    bad = tmp_path / "bad"
    (bad / "txt").mkdir(parents=True)
    (bad / "txt" / "ours_train.txt").write_text("{'token': oops\n")
    config.write_text(f"data:\n  path: {bad}\n")
    r = invoke(app, ["train", "--config", str(config)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.startswith(f"error: cannot train: {bad / 'txt' / 'ours_train.txt'}:1: not a Python/JSON literal")


def _rocmre(args: list[str], cwd: Path, **env: str):
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if k not in ("ROCMRE_DATA", "FORCE_COLOR", "PY_COLORS")}
    environ.update(env)
    exe = Path(sys.executable).with_name("rocmre")
    return subprocess.run([str(exe), *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=120)


def test_redirected_errors_have_no_colour_codes(tmp_path):
    """stderr that is not a terminal gets plain text: no ANSI colour codes, no box drawing, no traceback."""
    r = _rocmre(["train", "--config", "missing.yaml"], tmp_path)
    assert r.returncode == 2 and "missing.yaml" in r.stderr and "does not exist" in r.stderr
    assert "\x1b[" not in r.stderr and "\u256d" not in r.stderr
    config = tmp_path / "run.yaml"
    config.write_text("data:\n  path: nowhere/dataset\n")
    r = _rocmre(["train", "--config", str(config)], tmp_path)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("error: cannot train: dataset 'nowhere/dataset' not found") and "\x1b[" not in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_help_keeps_option_names_whole_at_80_columns(tmp_path):
    r = _rocmre(["train", "--help"], tmp_path, COLUMNS="80")
    assert r.returncode == 0 and max(len(line) for line in r.stdout.splitlines()) <= 80
    for option in ("--config", "--set", "--output-dir", "--data-dir", "--quiet"):
        assert f"{option} " in r.stdout
    assert "\u2026" not in r.stdout and "\x1b[" not in r.stdout
    r = _rocmre(["predict", "--help"], tmp_path, COLUMNS="80")
    assert "--skip-bad-lines / --fail-on-bad-line" in r.stdout and "\u2026" not in r.stdout


# --- download --------------------------------------------------------------------------------------------------------


def test_download_fails_fast_offline(app, tmp_path):
    start = time.monotonic()
    r = invoke(app, ["data", "download", "mnre", "--to", str(tmp_path / "mnre"), "--timeout", "5"],
               env={"ROCMRE_MNRE_BASE_URL": UNREACHABLE})
    assert time.monotonic() - start < 10
    assert r.exit_code == 1
    assert "ROCMRE_DATA" in r.stderr and "--data-dir" in r.stderr and "127.0.0.1:9" in r.stderr
    assert "Traceback" not in r.output and not isinstance(r.exception, DownloadError)
    assert not (tmp_path / "mnre" / "mnre_txt").exists()


def test_download_unknown_dataset(app, tmp_path):
    r = invoke(app, ["data", "download", "imagenet", "--to", str(tmp_path)])
    assert r.exit_code == 2 and "only mnre" in r.stderr
    r = invoke(app, ["data", "download", "more", "--to", str(tmp_path)])
    assert r.exit_code == 2 and "Baidu" in r.stderr and "ROCMRE_DATA" in r.stderr


def test_check_reachable():
    start = time.monotonic()
    with pytest.raises(DownloadError, match="cannot reach 127.0.0.1:9"):
        check_reachable(UNREACHABLE + "/x", timeout=2)
    with pytest.raises(DownloadError, match="not an http"):
        check_reachable("ftp://example.org/x")
    assert time.monotonic() - start < 5


class _RangeHandler(BaseHTTPRequestHandler):
    """Serves ``server.files`` ({url path: bytes}) with single-range support, and logs each Range header."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.server.files.get(self.path)  # type: ignore[attr-defined]
        self.server.ranges.append(self.headers.get("Range"))  # type: ignore[attr-defined]
        if body is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            body = body[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    srv.files, srv.ranges = {}, []  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: ThreadingHTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def test_download_file_resumes_and_verifies(server, tmp_path):
    body = bytes(range(256)) * 40
    digest = hashlib.sha256(body).hexdigest()
    server.files["/f.bin"] = body
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(body[:1000])  # an interrupted earlier download
    assert download_file(_url(server, "/f.bin"), dest, sha256=digest, timeout=5) == dest
    assert dest.read_bytes() == body and not (tmp_path / "f.bin.part").exists()
    assert server.ranges == ["bytes=1000-"]
    download_file(_url(server, "/f.bin"), dest, sha256=digest, timeout=5)  # complete already: no request
    assert len(server.ranges) == 1
    with pytest.raises(DownloadError, match="does not match"):
        download_file(_url(server, "/f.bin"), tmp_path / "g.bin", sha256="0" * 64, timeout=5)
    assert not (tmp_path / "g.bin").exists() and not (tmp_path / "g.bin.part").exists()
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(_url(server, "/missing"), tmp_path / "h.bin", timeout=5)


def test_download_mnre_from_mirror(app, server, data_root, tmp_path):
    official = data_root / "mnre" / "official"
    if not (official / "mnre_txt" / "mnre_val .txt").is_file():
        pytest.skip("the official MNRE text files are not available")
    for rel in MNRE_TEXT_FILES:
        server.files["/mirror/" + rel.replace(" ", "%20")] = (official / rel).read_bytes()
    to = tmp_path / "dl"
    r = invoke(app, ["data", "download", "mnre", "--to", str(to), "--no-images", "--timeout", "5"],
               env={"ROCMRE_MNRE_BASE_URL": _url(server, "/mirror")})
    assert r.exit_code == 0, r.output
    assert "sha256 verified" in r.stdout and f"ROCMRE_DATA={to}" in r.stdout
    for rel in MNRE_TEXT_FILES:
        assert (to / rel).read_bytes() == (official / rel).read_bytes()
    r = invoke(app, ["data", "stats", str(to), "--split", "val", "--json"])
    assert json.loads(r.stdout)["splits"][0]["records"] == 1624
    # images: without gdown (or offline) the text stays and the failure is a warning
    result = download_mnre(to, base_url=_url(server, "/mirror"), images=True, images_url=UNREACHABLE + "/img.zip",
                           timeout=2)
    assert result.images_dir is None and "127.0.0.1:9" in result.warnings[0]
