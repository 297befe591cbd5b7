"""End-to-end tests of LLM description generation: a real OpenAI-protocol server, the local SmolLM2 backend,
filtering, de-duplication, the cache, dry runs, the unreachable-endpoint error and the shipped sets."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from rocmre.cli.describe import read_examples, register
from rocmre.descriptions.backends import LLMError, LocalBackend, OpenAIBackend
from rocmre.descriptions.generate import (
    GenerationConfig,
    build_messages,
    candidates,
    check_description,
    dedup_key,
    generate_descriptions,
    label_types,
    leaks_label,
    normalise,
)
from rocmre.descriptions.store import RelationDescriptions, load_builtin

MNRE_LABELS = ["None", "/per/per/parent", "/per/per/siblings", "/per/per/couple", "/per/per/neighbor",
               "/per/per/peer", "/per/per/charges", "/per/per/alumi", "/per/per/alternate_names",
               "/per/org/member_of", "/per/loc/place_of_residence", "/per/loc/place_of_birth",
               "/org/org/alternate_names", "/org/org/subsidiary", "/org/loc/locate_at", "/loc/loc/contain",
               "/per/misc/present_in", "/per/misc/awarded", "/per/misc/race", "/per/misc/religion",
               "/per/misc/nationality", "/misc/misc/part_of", "/misc/loc/held_on"]
MORE_LABELS = ["none", "/per/per/opponent", "/per/per/partner", "/per/per/relatives", "/per/per/alternate_names",
               "/per/org/opposed_to", "/per/org/leader_of", "/per/org/member_of", "/per/loc/place_of_birth",
               "/per/loc/place_of_residence", "/per/loc/place_of_governance", "/per/misc/present_in",
               "/per/misc/awarded", "/per/misc/party", "/per/misc/nationality", "/per/misc/president",
               "/org/org/alternate_names", "/org/org/subsidiary", "/org/loc/locate_at", "/org/misc/present_in",
               "/loc/loc/contain"]
FAST = {"max_new_tokens": 24}


@pytest.fixture(scope="module")
def local() -> LocalBackend:
    """SmolLM2-135M-Instruct, loaded once (converted from the GGUF into the default cache on first use)."""
    return LocalBackend(threads=1)  # one thread: far faster on a small, busy CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(local: LocalBackend) -> Iterator[str]:
    """A real OpenAI-protocol HTTP server on loopback answering with the local model; yields base_url."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()
    lock = threading.Lock()

    @app.post("/v1/chat/completions")
    def chat(body: dict) -> JSONResponse:
        if body.get("model") == "refuse-me":
            return JSONResponse({"error": {"message": "model not found", "type": "invalid_request_error"}},
                                status_code=404)
        with lock:
            text = local.chat(body["messages"], max_new_tokens=int(body.get("max_tokens") or 32),
                              temperature=float(body.get("temperature") or 0.0), seed=body.get("seed"))
        return JSONResponse({
            "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        })

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "test server did not start"
    yield f"http://127.0.0.1:{port}/v1"
    srv.should_exit = True
    thread.join(timeout=10)


def _cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """rocmre (test app)."""

    register(app)
    return app


# -- (1) openai backend against a real server ---------------------------------------------------------------
def test_openai_backend_end_to_end_via_cli(server: str, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("/per/org/member_of\n/per/per/peer\n", encoding="utf-8")
    out = tmp_path / "desc.json"
    res = CliRunner().invoke(_cli(), [
        "describe", "--labels", str(labels), "--backend", "openai", "--base-url", server, "--model", "smollm2",
        "--api-key", "test", "--n", "2", "--examples", "0", "--max-attempts", "4", "--max-new-tokens", "24",
        "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--retries", "0"])
    assert res.exit_code == 0, res.output
    rd = RelationDescriptions.load(out)
    assert len(rd) >= 1 and set(rd.labels) <= {"/per/org/member_of", "/per/per/peer"}
    for label in rd.labels:
        for d in rd.relations[label].descriptions:
            assert d.provenance["method"] == "llm" and d.provenance["backend"] == "openai"
            assert d.provenance["model"] == "smollm2" and d.provenance["edited"] is False
            assert "prompt_version" in d.provenance and "date" in d.provenance
    assert rd.relations[rd.labels[0]].head_types == ["person"]


def test_openai_refusal_is_one_clear_line(server: str) -> None:
    be = OpenAIBackend("refuse-me", base_url=server, api_key="x", max_retries=0)
    with pytest.raises(LLMError) as e:
        be.chat([{"role": "user", "content": "hi"}])
    msg = str(e.value)
    assert server in msg and "404" in msg and "\n" not in msg


# -- (2) local backend ----------------------------------------------------------------------------------------
def test_local_backend_generates(local: LocalBackend, tmp_path: Path) -> None:
    cfg = GenerationConfig(n=2, k_examples=0, max_attempts=5, **FAST)
    res = generate_descriptions(["/per/org/member_of", "/per/loc/place_of_birth"], local, config=cfg,
                                negative_label=None, cache_dir=tmp_path)
    rd = res.descriptions
    assert rd.labels, res.rejected
    for label, entry in rd.relations.items():
        assert 1 <= len(entry.descriptions) <= 2
        assert label in ("/per/org/member_of", "/per/loc/place_of_birth")
        for d in entry.descriptions:
            assert check_description(d.text, label, entry.head_types, entry.tail_types) is None
            assert d.provenance["backend"] == "local" and d.provenance["model"] == "SmolLM2-135M-Instruct"
    for label in ("/per/org/member_of", "/per/loc/place_of_birth"):
        kept = len(rd.relations[label].descriptions) if label in rd else 0
        assert kept + res.shortfall.get(label, 0) == 2  # a shortfall is reported, never padded
    rd.save(tmp_path / "out.json")
    assert RelationDescriptions.load(tmp_path / "out.json").labels == rd.labels


def test_seeded_sampling_is_reproducible(local: LocalBackend) -> None:
    msgs = build_messages("/per/per/couple", ["person"], ["person"])
    a = local.chat(msgs, max_new_tokens=16, temperature=0.9, seed=3)
    b = local.chat(msgs, max_new_tokens=16, temperature=0.9, seed=3)
    assert a == b


# -- (3) filter, de-duplication, cache, dry run --------------------------------------------------------------
def test_normalise_and_candidates() -> None:
    assert normalise('  1. "The head person is a member of the tail organization"  ') == \
        "The head person is a member of the tail organization."
    assert normalise("Definition: the head lives in the tail location. It is nice.") == \
        "The head lives in the tail location."
    assert candidates("- The head A.\n\n2) The tail B.\n") == ["The head A.", "The tail B."]
    assert dedup_key("The head, person!") == dedup_key("the HEAD person")


def test_filter_rules() -> None:
    lab, h, t = "/per/org/member_of", ["person"], ["organization"]
    assert check_description("The head person is a member of the tail organization.", lab, h, t) is None
    assert check_description("The person belongs to the organization as staff.", lab, h, t) is None
    assert check_description("The head person.", lab, h, t) == "too short"
    assert check_description(" ".join(["word"] * 50) + " head tail", lab, h, t) == "too long"
    assert check_description("The head person is a peer of the head person.", lab, h, t) is not None
    assert check_description("The head is /per/org/member_of of the tail.", lab, h, t) == "label leakage"
    assert check_description("The head is a member_of the tail group.", lab, h, t) == "label leakage"
    assert check_description("The head per is in the tail org group.", lab, h, t) == "label leakage"
    assert "contradicts" in check_description("The head location is a member of the tail organization.",
                                              lab, h, t)
    assert check_description("The head person contains or contains the tail organization.", lab, h, t) \
        == "repetitive"
    assert "example entity" in check_description("The head person is a member of the Barcelona team and tail.",
                                                 lab, h, t, banned=["Barcelona"])
    assert leaks_label("uses /per/ here", lab) and not leaks_label("The head is a parent of the tail.",
                                                                    "/per/per/parent")
    assert label_types("/per/misc/present_in", tail_object=True) == (["person"], ["object", "miscellaneous"])
    assert label_types("None") == ([], [])


def test_dedup_and_cache(local: LocalBackend, tmp_path: Path) -> None:
    # Greedy decoding repeats itself, so de-duplication must stop identical sentences being kept twice.
    cfg = GenerationConfig(n=3, k_examples=0, max_attempts=3, **FAST)
    first = generate_descriptions(["/loc/loc/contain"], local, config=cfg, cache_dir=tmp_path)
    texts = first.descriptions.texts("/loc/loc/contain") if "/loc/loc/contain" in first.descriptions else []
    assert len({dedup_key(t) for t in texts}) == len(texts)
    assert first.model_calls == first.attempts["/loc/loc/contain"] > 0
    assert len(texts) + len(first.rejected["/loc/loc/contain"]) >= first.model_calls
    calls = local.calls
    second = generate_descriptions(["/loc/loc/contain"], local, config=cfg, cache_dir=tmp_path)
    assert local.calls == calls and second.model_calls == 0  # every completion came from the cache
    assert second.cache_hits == first.model_calls
    assert second.descriptions.to_dict() == first.descriptions.to_dict()
    assert list((tmp_path / "descriptions").glob("*.json"))


def test_dry_run(tmp_path: Path) -> None:
    exs = {"/per/org/member_of": [("Messi scores for Barcelona again", "Messi", "Barcelona")]}
    res = generate_descriptions(["None", "/per/org/member_of"], None, dry_run=True, examples=exs,
                                negative_label="None", cache_dir=tmp_path)
    assert len(res.descriptions) == 0 and res.model_calls == 0
    prompt = res.prompts["/per/org/member_of"][0]
    assert prompt[0]["role"] == "system"
    assert "member of" in prompt[-1]["content"] and "Messi" in prompt[-1]["content"]
    assert "/per/org" not in prompt[-1]["content"]
    assert "no relation" in res.prompts["None"][0][-1]["content"]
    out = CliRunner().invoke(_cli(), ["describe", "--dataset", "more", "--dry-run", "--examples", "0"])
    assert out.exit_code == 0, out.output
    assert out.output.count("=====") == 21 and "object in the image" in out.output


def test_read_examples(tmp_path: Path) -> None:
    f = tmp_path / "RE_data" / "txt" / "ours_train.txt"
    f.parent.mkdir(parents=True)
    f.write_text(
        "{'token': ['Messi', 'scores', 'for', 'Barca'], 'h': {'name': 'Messi', 'pos': [0, 1]}, "
        "'t': {'name': 'Barca', 'pos': [3, 4]}, 'img_id': 'a.jpg', 'relation': '/per/org/member_of'}\n"
        "{'token': ['x', 'y'], 'h': {'name': 'x', 'pos': [0, 1]}, 't': {'name': 'y', 'pos': [1, 2]}, "
        "'img_id': 'b.jpg', 'relation': 'None', 'caption': 'ignored'}\n", encoding="utf-8")
    got = read_examples(f, ["/per/org/member_of"])
    assert got == {"/per/org/member_of": [("Messi scores for Barca", "Messi", "Barca")]}
    # read by the MNRE reader: a bad line is named by file, line and field
    with f.open("a", encoding="utf-8") as fh:
        fh.write("{'token': ['a', 'b'], 'h': {'name': 'a', 'pos': [0, 1]}, 't': {'name': 'b', 'pos': [1, 2]}, "
                 "'img_id': 'c.jpg'}\n")
    with pytest.raises(ValueError, match=r"ours_train.txt:3, field 'relation': missing"):
        read_examples(f, ["/per/org/member_of"])
    with pytest.raises(ValueError, match="not an MNRE split file"):
        read_examples(tmp_path / "examples.txt", ["/per/org/member_of"])


def test_read_examples_from_mnre(data_root: Path) -> None:
    got = read_examples(data_root / "mnre" / "RE_data" / "txt" / "ours_val.txt", ["/per/per/couple"], per_label=2)
    assert list(got) == ["/per/per/couple"] and len(got["/per/per/couple"]) == 2
    sentence, head, tail = got["/per/per/couple"][0]
    assert head in sentence and tail in sentence


# -- (4) unreachable endpoint ---------------------------------------------------------------------------------
def test_unreachable_endpoint_fails_fast_and_names_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    be = OpenAIBackend("any", base_url=url, api_key="x", max_retries=1, backoff=0.05, timeout=3)
    t0 = time.time()
    with pytest.raises(LLMError) as e:
        generate_descriptions(["/per/org/member_of"], be, cache_dir=tmp_path)
    assert time.time() - t0 < 10
    msg = str(e.value)
    assert url in msg and "unreachable" in msg and "\n" not in msg
    assert be.calls == 2
    res = CliRunner().invoke(_cli(), ["describe", "--dataset", "mnre", "--backend", "openai", "--base-url", url,
                                      "--model", "m", "--retries", "0", "--examples", "0",
                                      "--out", str(tmp_path / "x.json"), "--cache-dir", str(tmp_path)])
    assert res.exit_code == 2 and url in res.output and not (tmp_path / "x.json").exists()


# -- (5) shipped sets -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "labels", "negative"), [("mnre", MNRE_LABELS, "None"),
                                                         ("more", MORE_LABELS, "none")])
def test_shipped_sets(name: str, labels: list[str], negative: str) -> None:
    rd = load_builtin(name)
    assert rd.negative_label == negative
    assert set(rd.labels) == set(labels)
    for label, entry in rd.relations.items():
        assert len(entry.descriptions) >= 3
        assert len({dedup_key(t) for t in entry.texts}) == len(entry.texts)
        for d in entry.descriptions:
            assert d.provenance["method"] == "hand" and d.provenance["edited"] is False
            assert d.provenance["author"] and d.provenance["date"]
            assert not leaks_label(d.text, label)
        if label != negative:
            h, t = label_types(label, tail_object=name == "more")
            assert (entry.head_types, entry.tail_types) == (h, t)
            if name == "more":
                assert "object" in entry.tail_types


def test_shipped_smollm2_set() -> None:
    path = Path(__file__).resolve().parents[1] / "src/rocmre/resources/descriptions/mnre_smollm2.json"
    if not path.exists():
        pytest.skip("mnre_smollm2.json not generated")
    rd = RelationDescriptions.load(path)
    assert rd.negative_label == "None"
    data = json.loads(path.read_text(encoding="utf-8"))
    for entry in data["relations"].values():
        for d in entry["descriptions"]:
            p = d["provenance"]
            assert p["method"] == "llm" and p["model"] == "SmolLM2-135M-Instruct" and p["edited"] is False
