"""The state one app serves: the extractor, its limits, the model lock and the model calls made under it."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from rocmre.inference.extractor import EntityNotFoundError, PairInput, Prediction, RelationExtractor
from rocmre.service.limits import Limits, check_pair, clean_message
from rocmre.service.schemas import RelationInfo, RelationsResponse


def validate(model: type[BaseModel] | TypeAdapter, data: Any) -> Any:
    """``data`` validated as ``model``; a RequestValidationError (422) otherwise."""
    try:
        return model.validate_python(data) if isinstance(model, TypeAdapter) else model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False)) from None


class Service:
    """One served extractor: model calls run in a threadpool, one at a time, waiting requests queue in order."""

    def __init__(self, extractor: RelationExtractor, limits: Limits, api_token: str | None = None,
                 read_only: bool = False) -> None:
        self.extractor = extractor
        self.limits = limits
        self.api_token = api_token
        self.read_only = read_only
        self.model_type = extractor.model.config.model_type
        self.negative_label = extractor.model.config.negative_label
        self.model_lock = threading.Lock()
        self.queue = asyncio.Lock()  # waiting requests queue here (in order), not in threadpool workers

    async def locked(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in the threadpool under the model lock."""
        def call() -> Any:
            with self.model_lock:
                return fn(*args, **kwargs)

        async with self.queue:
            return await run_in_threadpool(call)

    def run_batch(self, pairs: list[PairInput], top_k: list[int]) -> list[Prediction]:
        """Predictions for ``pairs`` (each with its own top-k); errors name their item. Call under the lock."""
        for i, pair in enumerate(pairs):  # resolve first, so an error names its item
            prefix = f"item {i}: " if len(pairs) > 1 else ""
            try:
                check_pair(pair, self.extractor)
            except EntityNotFoundError as e:
                raise EntityNotFoundError(prefix + clean_message(e), e.candidates) from None
            except (ValueError, TypeError) as e:
                raise HTTPException(422, prefix + clean_message(e)) from None
        indexed: list[tuple[int, Prediction]] = []
        try:
            for k in sorted(set(top_k)):  # one batched call per distinct top_k
                idx = [i for i, kk in enumerate(top_k) if kk == k]
                preds = self.extractor.predict_batch([pairs[i] for i in idx], batch_size=32, top_k=k)
                indexed.extend(zip(idx, preds, strict=True))
        except (ValueError, TypeError) as e:
            raise HTTPException(422, clean_message(e)) from None
        except MemoryError:
            raise HTTPException(413, "the input is too large to process (out of memory)") from None
        return [p for _, p in sorted(indexed, key=lambda x: x[0])]

    def relations_response(self) -> RelationsResponse:
        described = self.extractor.describe_relations()
        examples = self.extractor.relation_examples()
        return RelationsResponse(model_type=self.model_type, negative_label=self.negative_label,
                                 relations=[RelationInfo(name=n, descriptions=d, examples=len(examples.get(n, [])))
                                            for n, d in described.items()])

    def check_write(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        """403 on a read-only server; 401 without the right bearer token when one is set."""
        if self.read_only:
            raise HTTPException(403, "this server is read-only (--read-only): relations cannot be added or removed")
        if self.api_token is None:
            return
        if credentials is None:
            raise HTTPException(401, "changing relations needs the header 'Authorization: Bearer <token>' with the "
                                     "server's API token (--api-token / ROCMRE_API_TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(credentials.credentials.encode(), self.api_token.encode()):
            raise HTTPException(401, "wrong API token", headers={"WWW-Authenticate": "Bearer"})

    def add_checked(self, clean: dict[str, Any]) -> list[str]:
        """Add ``clean`` relations within the limits (413 above them, 422 for what the library refuses). Call
        under the lock."""
        limits, extractor = self.limits, self.extractor
        current = extractor.describe_relations()
        current_examples = extractor.relation_examples()
        new = [n for n in clean if n not in current]
        if len(current) + len(new) > limits.max_relations:
            raise HTTPException(413, f"adding {len(new)} relations would make {len(current) + len(new)}, above the "
                                     f"limit of {limits.max_relations} (see --max-relations)")
        for name, spec in clean.items():
            texts = spec["descriptions"] if isinstance(spec, dict) else spec
            total = len(current.get(name, [])) + len(texts)
            if total > limits.max_descriptions:
                raise HTTPException(413, f"relation {name!r}: {total} descriptions exceeds the limit of "
                                         f"{limits.max_descriptions} per relation (see --max-descriptions)")
            n_examples = len(current_examples.get(name, [])) + (len(spec["examples"]) if isinstance(spec, dict)
                                                                else 0)
            if n_examples > limits.max_examples:
                raise HTTPException(413, f"relation {name!r}: {n_examples} examples exceeds the limit of "
                                         f"{limits.max_examples} per relation")
        try:
            added = extractor.add_relations(clean)
        except (ValueError, TypeError) as e:  # a bad template or an example whose entities cannot be resolved
            raise HTTPException(422, clean_message(e)) from None
        with contextlib.suppress(AttributeError, TypeError):  # encode the new set now, not on the next predict
            import torch

            with torch.inference_mode():
                extractor.model.description_vectors()
        return added
