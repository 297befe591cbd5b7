"""``rocmre predict --ray`` on a real 2-node Ray cluster on loopback: the local command's rows, and every line
exactly once when a worker or the driver is killed mid-run. Skipped when Ray is not installed (``rocmre[ray]``)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

pytest.importorskip("ray", reason="Ray is not installed (pip install 'rocmre[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'rocmre[ray]')")

from rocmre.cli import app  # noqa: E402
from rocmre.inference import distributed  # noqa: E402
from rocmre.inference.distributed import RayOptions, done_lines, merge_parts, parts_dir, predict_ray  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning")  # Ray Data's own settings

N_RECORDS = 300
BATCH = 8  # small blocks: the kills land mid-run, and a resumed run has many blocks left
SPECIAL = {  # line -> what is wrong with it (the other lines are MNRE test pairs with images)
    40: "blank", 90: "bad json", 150: "missing image", 210: "model raises",
}


def mnre_lines(mnre_root: Path, folder: Path, n: int) -> list[str]:
    """``n`` MNRE test pairs as rocmre JSONL (10 images, relative to ``folder``), with the lines of SPECIAL."""
    images = sorted((mnre_root / "img_org" / "test").glob("*.jpg"))[:10]
    (folder / "images").mkdir(parents=True)
    for image in images:
        shutil.copy(image, folder / "images" / image.name)
    source = (mnre_root / "txt" / "ours_test.txt").read_text(encoding="utf-8").splitlines()
    lines, k = [], 0
    while len(lines) < n:
        lineno = len(lines) + 1
        kind = SPECIAL.get(lineno)
        if kind == "blank":
            lines.append("")
        elif kind == "bad json":
            lines.append('{"text": "Obama visited Paris", "head": ')
        elif kind == "missing image":
            lines.append(json.dumps({"text": "Obama visited Paris", "head": "Obama", "tail": "Paris",
                                     "image": "images/missing.jpg"}))
        elif kind == "model raises":  # a lone surrogate passes the input checks; the tokenizer cannot encode it
            lines.append(json.dumps({"text": "\ud800 Obama visited Paris", "head": "Obama", "tail": "Paris"}))
        else:
            d = ast.literal_eval(source[k])
            k += 1
            entity = {role: {"name": d[key]["name"], "start": d[key]["pos"][0], "end": d[key]["pos"][1]}
                      for role, key in (("head", "h"), ("tail", "t"))}
            lines.append(json.dumps({"tokens": d["token"], **entity, "image": f"images/{images[k % 10].name}",
                                     "id": f"mnre-{k}"}))
    return lines


@pytest.fixture(scope="module")
def pairs_file(mnre_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ray-input")
    path = folder / "pairs.jsonl"
    path.write_text("\n".join(mnre_lines(mnre_root, folder, N_RECORDS)) + "\n", encoding="utf-8")
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def local_rows(tiny_roc_dir: Path, cache_dir: Path, pairs_file: Path,
               tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The local ``rocmre predict`` output (fp32), which every Ray run must reproduce."""
    out = tmp_path_factory.mktemp("ray-local") / "local.jsonl"
    result = CliRunner().invoke(app, ["predict", "--model", str(tiny_roc_dir), "--input", str(pairs_file),
                                      "--output", str(out), "--cache-dir", str(cache_dir), "--precision", "fp32",
                                      "--batch-size", str(BATCH), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [r["line"] for r in rows] == list(range(1, N_RECORDS + 1))
    errors = {r["line"]: r["error"] for r in rows if "error" in r}
    assert set(errors) == set(SPECIAL)
    assert errors[40] == "blank line" and "invalid JSON" in errors[90] and "missing.jpg" in errors[150]
    assert errors[210].startswith("prediction failed (UnicodeEncodeError")
    assert sum(r.get("has_image", False) for r in rows) == N_RECORDS - len(SPECIAL)
    return rows


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on loopback (1 logical CPU and a 150 MB object store each); workers reserve 0.5 CPU."""
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 150 * 1024**2, "include_dashboard": False}
    c = Cluster(initialize_head=True, connect=False, head_node_args=node)
    c.add_node(**{k: v for k, v in node.items() if k != "include_dashboard"})
    c.wait_for_nodes()
    yield c
    c.shutdown()


def options(cluster) -> RayOptions:
    return RayOptions(address=cluster.address, workers=2, num_cpus=0.5, no_progress_timeout_s=180,
                      rows_per_block=BATCH)


def assert_same_rows(rows: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Every line exactly once, each row the expected one (scores within 1e-6)."""
    assert [r["line"] for r in rows] == [r["line"] for r in expected]
    for row, want in zip(rows, expected, strict=True):
        assert row.keys() == want.keys()
        assert {k: v for k, v in row.items() if k not in ("score", "top_k")} == \
            {k: v for k, v in want.items() if k not in ("score", "top_k")}
        if "score" in want:
            assert abs(row["score"] - want["score"]) <= 1e-6
            assert [c["relation"] for c in row["top_k"]] == [c["relation"] for c in want["top_k"]]
            assert [c["description"] for c in row["top_k"]] == [c["description"] for c in want["top_k"]]
            assert max(abs(a["score"] - b["score"]) for a, b in zip(row["top_k"], want["top_k"], strict=True)) <= 1e-6


def map_worker_pids() -> list[int]:
    """The processes of Ray Data's actors (their title names the MapWorker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker" in cmdline and b"RowPredictor" in cmdline:
                pids.append(int(entry.name))
    return pids


def wait_for_parts(work: Path, at_least: int, timeout: float = 240.0) -> int:
    """Wait until ``work`` holds ``at_least`` part files; their number then."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        n = len(list(work.glob("part-*.jsonl"))) if work.is_dir() else 0
        if n >= at_least:
            return n
        time.sleep(0.05)
    raise AssertionError(f"no {at_least} parts in {work} after {timeout} s")


# -- without a cluster ------------------------------------------------------------------------------------------------
def test_parts_merge_in_line_order_to_jsonl_and_parquet(local_rows: list[dict[str, Any]], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    work = tmp_path / "out.jsonl.parts"
    work.mkdir()
    lines = [json.dumps(r, ensure_ascii=False) for r in local_rows]
    for start in (16, 0, 40, 8, 32, 24):  # written out of order, as blocks may be
        distributed.write_part(work, [r["line"] for r in local_rows[start:start + 8]], lines[start:start + 8])
    (work / ".part-x.jsonl.123.tmp").write_text('{"line": 99}\n')  # a part whose writer was killed
    assert done_lines(work) == set(range(1, 49)) and not list(work.glob(".*.tmp"))
    assert merge_parts(work, tmp_path / "out.jsonl") == (47, 1)  # line 40 is blank
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines() == lines[:48]
    merge_parts(work, tmp_path / "out.parquet")
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["line"] for r in table] == list(range(1, 49))
    assert table[39]["error"] == "blank line" and table[39]["top_k"] is None
    assert table[0]["top_k"][0]["relation"] == local_rows[0]["top_k"][0]["relation"]
    assert table[0]["head"]["name"] == local_rows[0]["head"]["name"] and table[0]["error"] is None


def test_input_blocks_resolve_images_and_skip_done_lines(pairs_file: Path) -> None:
    blocks = list(distributed.input_blocks(pairs_file, set(range(1, 36)), 100))
    assert [len(b["line"]) for b in blocks] == [100, 100, 65] and blocks[0]["line"][0] == 36
    first = json.loads(blocks[0]["pair"][0])
    assert first["image"] == str(pairs_file.parent / "images" / Path(first["image"]).name)
    blank = blocks[0]["line"].index(40)
    assert blocks[0]["pair"][blank] is None and blocks[0]["error"][blank] == "blank line"


def test_parquet_input_rows_and_their_images(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rocmre.inference.batch import count_lines, iter_input

    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"text": ["Obama visited Paris", "Merkel met Macron"], "head": ["Obama", "Merkel"],
                             "tail": ["Paris", "Macron"], "image": [None, "images/a.jpg"]}), path)
    assert count_lines(path) == 2
    assert list(iter_input(path)) == [(1, {"text": "Obama visited Paris", "head": "Obama", "tail": "Paris"}),
                                      (2, {"text": "Merkel met Macron", "head": "Merkel", "tail": "Macron",
                                           "image": "images/a.jpg"})]
    (block,) = distributed.input_blocks(path, set(), 10)
    assert json.loads(block["pair"][1])["image"] == str(tmp_path / "images" / "a.jpg")


def test_cli_refuses_what_a_run_cannot_honour(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "in.jsonl").write_text("{}\n")
    base = ["predict", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "in.jsonl")]
    result = CliRunner().invoke(app, [*base, "--output", str(tmp_path / "out.parquet")])
    assert result.exit_code != 0 and "Parquet is written by --ray runs" in result.output
    result = CliRunner().invoke(app, [*base, "--output", str(tmp_path / "o.jsonl"), "--ray", "local",
                                      "--fail-on-bad-line"])
    assert result.exit_code != 0 and "a --ray run skips bad lines" in result.output


def test_a_parts_folder_of_another_input_is_refused(pairs_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.jsonl"
    other.write_text(pairs_file.read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    distributed._check_manifest(parts_dir(out), {"input": str(pairs_file), "top_k": 3})
    with pytest.raises(ValueError, match="another input"):
        distributed._check_manifest(parts_dir(out), {"input": str(other), "top_k": 3})
    distributed._check_manifest(parts_dir(out), {"input": str(pairs_file), "top_k": 3})  # the same run: resumed


# -- on a 2-node cluster ----------------------------------------------------------------------------------------------
def test_cli_on_ray_equals_local_predict(cluster, tiny_roc_dir: Path, cache_dir: Path, pairs_file: Path,
                                         local_rows: list[dict[str, Any]], tmp_path: Path) -> None:
    out = tmp_path / "ray.jsonl"
    result = CliRunner().invoke(app, ["predict", "--model", str(tiny_roc_dir), "--input", str(pairs_file),
                                      "--output", str(out), "--cache-dir", str(cache_dir), "--precision", "fp32",
                                      "--batch-size", str(BATCH), "--quiet", "--ray", cluster.address,
                                      "--workers", "2", "--num-cpus", "0.5"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"{N_RECORDS - len(SPECIAL)} predicted, {len(SPECIAL)} skipped" in result.stderr
    assert "pairs.jsonl:150, field 'image'" in result.stderr  # skipped lines are reported as locally
    assert_same_rows(read_rows(out), local_rows)
    assert not parts_dir(out).exists()


def test_worker_killed_mid_run_every_line_once(cluster, tiny_roc_dir: Path, cache_dir: Path, pairs_file: Path,
                                               local_rows: list[dict[str, Any]], tmp_path: Path) -> None:
    out = tmp_path / "ray.jsonl"
    killed: list[tuple[int, int]] = []  # (pid, parts written by then)

    def kill_a_worker() -> None:
        parts = wait_for_parts(parts_dir(out), 2)
        pids = map_worker_pids()
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append((pids[0], parts))

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    counts = predict_ray(tiny_roc_dir, pairs_file, out, options=options(cluster), batch_size=BATCH,
                         load_kwargs={"cache_dir": str(cache_dir), "precision": "fp32"}, show_progress=False)
    killer.join(timeout=5)
    assert killed, "no Ray Data worker process was found to kill"
    assert killed[0][1] < N_RECORDS // BATCH  # mid-run: most blocks were still to come
    assert counts == (N_RECORDS - len(SPECIAL), len(SPECIAL))
    assert_same_rows(read_rows(out), local_rows)


DRIVER = """
import sys
from rocmre.inference.distributed import RayOptions, predict_ray
model, inp, out, address, cache, batch = sys.argv[1:]
options = RayOptions(address=address, workers=2, num_cpus=0.5, no_progress_timeout_s=180, rows_per_block=int(batch))
predict_ray(model, inp, out, options=options, batch_size=int(batch), show_progress=False,
            load_kwargs={"cache_dir": cache, "precision": "fp32"})
"""


def test_driver_killed_then_resumed_every_line_once(cluster, tiny_roc_dir: Path, cache_dir: Path, pairs_file: Path,
                                                    local_rows: list[dict[str, Any]], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ray.jsonl"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(tiny_roc_dir), str(pairs_file), str(out),
                               cluster.address, str(cache_dir), str(BATCH)], env=os.environ.copy())
    try:
        wait_for_parts(parts_dir(out), 3)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    before = done_lines(parts_dir(out))
    assert 0 < len(before) < N_RECORDS and not out.exists()

    written: list[int] = []
    write_part = distributed.write_part

    def recording(work: Path, lines: list[int], rows: list[str]) -> None:
        written.extend(lines)
        write_part(work, lines, rows)

    monkeypatch.setattr(distributed, "write_part", recording)
    predict_ray(tiny_roc_dir, pairs_file, out, options=options(cluster), batch_size=BATCH,
                load_kwargs={"cache_dir": str(cache_dir), "precision": "fp32"}, show_progress=False)
    assert sorted(written) == sorted(set(range(1, N_RECORDS + 1)) - before)  # only the lines not yet written
    assert_same_rows(read_rows(out), local_rows)
