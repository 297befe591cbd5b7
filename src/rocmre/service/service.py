"""The state one app serves: the extractor, its limits, the model lock and the model calls made under it."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from rocmre.inference.extractor import RelationExtractor
from rocmre.service.batching import DEFAULT_BATCH_DELAY_MS, DEFAULT_BATCH_SIZE, DEFAULT_MAX_QUEUE, DynamicBatcher
from rocmre.service.limits import Limits, Refusal, clean_message
from rocmre.service.metrics import ServiceMetrics
from rocmre.service.schemas import RelationInfo, RelationsResponse


def validate(model: type[BaseModel] | TypeAdapter, data: Any) -> Any:
    """``data`` validated as ``model``; a RequestValidationError (422) otherwise."""
    try:
        return model.validate_python(data) if isinstance(model, TypeAdapter) else model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False)) from None


class Service:
    """One served extractor: model calls run one at a time under the model lock; predictions through the dynamic
    batcher, relation changes and listings in the threadpool (waiting ones queue in order)."""

    def __init__(self, extractor: RelationExtractor, limits: Limits, api_token: str | None = None,
                 read_only: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                 batch_delay_ms: float = DEFAULT_BATCH_DELAY_MS, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.extractor = extractor
        self.limits = limits
        self.api_token = api_token
        self.read_only = read_only
        self.model_type = extractor.model.config.model_type
        self.negative_label = extractor.model.config.negative_label
        self.model_lock = threading.Lock()
        self.queue = asyncio.Lock()  # waiting requests queue here (in order), not in threadpool workers
        #: what the service did, exported at /metrics (one registry per service)
        self.metrics = ServiceMetrics()
        self.metrics.watch_relations(lambda: len(extractor.relations))
        #: predictions: concurrent requests grouped into forward passes, under the same model lock
        self.batcher = DynamicBatcher(extractor, self.model_lock, batch_size, batch_delay_ms, max_queue,
                                      metrics=self.metrics)

    async def locked(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in the threadpool under the model lock."""
        def call() -> Any:
            with self.model_lock:
                return fn(*args, **kwargs)

        async with self.queue:
            return await run_in_threadpool(call)

    def relations_response(self) -> RelationsResponse:
        described = self.extractor.describe_relations()
        examples = self.extractor.relation_examples()
        return RelationsResponse(model_type=self.model_type, negative_label=self.negative_label,
                                 relations=[RelationInfo(name=n, descriptions=d, examples=len(examples.get(n, [])))
                                            for n, d in described.items()])

    def check_write(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        """403 on a read-only server; 401 without the right bearer token when one is set."""
        if self.read_only:
            raise Refusal(403, "this server is read-only (--read-only): relations cannot be added or removed",
                          reason="read_only")
        if self.api_token is None:
            return
        if credentials is None:
            raise Refusal(401, "changing relations needs the header 'Authorization: Bearer <token>' with the "
                               "server's API token (--api-token / ROCMRE_API_TOKEN)",
                          headers={"WWW-Authenticate": "Bearer"}, reason="token_missing")
        if not secrets.compare_digest(credentials.credentials.encode(), self.api_token.encode()):
            raise Refusal(401, "wrong API token", headers={"WWW-Authenticate": "Bearer"}, reason="token_wrong")

    def add_checked(self, clean: dict[str, Any]) -> list[str]:
        """Add ``clean`` relations within the limits (413 above them, 422 for what the library refuses). Call
        under the lock."""
        limits, extractor = self.limits, self.extractor
        current = extractor.describe_relations()
        current_examples = extractor.relation_examples()
        new = [n for n in clean if n not in current]
        if len(current) + len(new) > limits.max_relations:
            raise Refusal(413, f"adding {len(new)} relations would make {len(current) + len(new)}, above the "
                               f"limit of {limits.max_relations} (see --max-relations)", reason="too_many_relations")
        for name, spec in clean.items():
            texts = spec["descriptions"] if isinstance(spec, dict) else spec
            total = len(current.get(name, [])) + len(texts)
            if total > limits.max_descriptions:
                raise Refusal(413, f"relation {name!r}: {total} descriptions exceeds the limit of "
                                   f"{limits.max_descriptions} per relation (see --max-descriptions)",
                              reason="too_many_descriptions")
            n_examples = len(current_examples.get(name, [])) + (len(spec["examples"]) if isinstance(spec, dict)
                                                                else 0)
            if n_examples > limits.max_examples:
                raise Refusal(413, f"relation {name!r}: {n_examples} examples exceeds the limit of "
                                   f"{limits.max_examples} per relation", reason="too_many_examples")
        previous = extractor.model.descriptions
        try:
            added = extractor.add_relations(clean)
        except (ValueError, TypeError) as e:  # a bad template or an example whose entities cannot be resolved
            raise Refusal(422, clean_message(e), reason="bad_relation") from None
        try:  # encode the new set now, not on the next predict; a set that cannot be encoded is not kept
            import torch

            with torch.inference_mode():
                extractor.model.description_vectors()
        except Exception as e:
            extractor.model.set_descriptions(previous)
            if isinstance(e, ValueError | TypeError):
                raise Refusal(422, f"the relations cannot be encoded ({clean_message(e)}); nothing was "
                                   "added", reason="bad_relation") from None
            raise
        return added
