"""The one client loop every HTTP backend (OpenAI-compatible servers, Anthropic) runs through.

A backend is a small payload adapter: ``_send(request)`` turns a request into one SDK call and
the SDK's answer into a :class:`Response`. Everything around that call lives here, once:

* in flight: up to ``max_in_flight`` requests at a time, on a thread pool;
* retries: the SDK's own retries are off (``max_retries=0`` on its client), so this loop is the
  only retry policy: at most ``max_retries`` retries, exponential backoff with jitter, or the
  server's ``Retry-After`` when it sends one (both capped at ``backoff_max``);
* error mapping: 408, 429, 5xx (529 "overloaded" included), timeouts and connection errors
  are retried; a 400 or other 4xx fails that request at once with the server's reason (the
  same request would fail again); 401, 403 and 404 stop the run, since every request would
  fail the same way: a 401 names the environment variable holding the key, never the key;
* capabilities: a request needing something the backend cannot do (continuing a prefill)
  is refused before anything is sent, rather than sent without it.

A request that still fails after its retries comes back with ``error`` set; the stage reports
it and a rerun resends only the failed ones (finished requests are journalled).
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from crossmodal.errors import CrossmodalError
from crossmodal.generation.registry import Capabilities, CapabilityError, prefill_fix
from crossmodal.generation.types import Request, Response

RETRYABLE_STATUS = frozenset({408, 429})  # and every 5xx, 529 "overloaded" included


class BackendRejected(CrossmodalError):
    """The server refused the configuration itself (key, permission, model or endpoint)."""


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``max_retries`` retries; waits grow from ``backoff`` seconds, doubling, with
    jitter so that many requests failing together do not retry together."""

    max_retries: int = 5
    backoff: float = 1.0
    backoff_max: float = 60.0

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_max)
        ceiling = min(self.backoff * 2**retry, self.backoff_max)
        return random.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class Failure:
    """One failed attempt: ``retry`` it, ``fail`` this request, or ``stop`` the whole run."""

    action: Literal["retry", "fail", "stop"]
    message: str
    retry_after: float | None = None


def retry_after_seconds(headers: Any) -> float | None:
    """The server's requested wait (``retry-after-ms`` or ``retry-after`` in seconds)."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            continue  # an HTTP date: fall back to our own backoff
    return None


def server_reason(body: Any) -> str:
    """The human-readable reason in an error body (both APIs use ``{"error": {"message"}}``)."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
    return str(body)[:500] if body else "no reason given"


def missing_key(env: str, hint: str = "") -> CrossmodalError:
    """The error for an unset key variable; ``hint`` adds another way out (a local server)."""
    return CrossmodalError(
        f"{env} is not set: export it (the key is read from the environment only and never "
        f"written anywhere){hint}"
    )


class HTTPGenerator:
    """The shared loop; subclasses implement ``_send`` (one SDK call, no retries)."""

    backend = "?"  # the config's name for the backend, for messages

    def __init__(
        self,
        model: str,
        *,
        sdk: ModuleType,
        client: Any,
        capabilities: Capabilities,
        key_env: str,
        key: str | None,
        base_url: str | None,
        timeout: float,
        max_in_flight: int,
        max_retries: int,
        backoff: float = 1.0,
        backoff_max: float = 60.0,
    ):
        if max_in_flight < 1:
            raise CrossmodalError(f"max_in_flight must be at least 1, got {max_in_flight}")
        if max_retries < 0:
            raise CrossmodalError(f"max_retries must be 0 or more, got {max_retries}")
        self.model = model
        self.sdk = sdk
        self.client = client
        self.capabilities = capabilities
        self.key_env = key_env
        self._key = key  # only to keep it out of messages
        self.base_url = base_url
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.policy = RetryPolicy(max_retries=max_retries, backoff=backoff, backoff_max=backoff_max)
        self._stopped = threading.Event()

    # -- the adapter's part -------------------------------------------------------------------

    def _send(self, req: Request) -> Response:
        """One SDK call for ``req``; SDK exceptions propagate to the loop."""
        raise NotImplementedError

    # -- the loop -----------------------------------------------------------------------------

    def check(self, requests: list[Request]) -> None:
        """Refuse requests that need what this backend cannot do, before sending any."""
        with_prefill = [r for r in requests if r.prefill]
        if with_prefill and not self.capabilities.prefill:
            raise CapabilityError(
                f"backend {self.backend!r} (model {self.model!r}) cannot continue an assistant "
                f"prefill, and {len(with_prefill)} request(s) carry one (e.g. "
                f"{with_prefill[0].prefill!r}); {prefill_fix(self.backend)}"
            )
        with_images = [r for r in requests if r.images()]
        if with_images and not self.capabilities.images:
            raise CapabilityError(
                f"backend {self.backend!r} (model {self.model!r}) takes no images, and "
                f"{len(with_images)} request(s) carry some; choose a backend that does"
            )

    def generate(self, requests: list[Request]) -> list[Response]:
        """Answers in request order; a request failed for good has ``error`` set."""
        self.check(requests)
        if not requests:
            return []
        self._stopped.clear()
        with ThreadPoolExecutor(max_workers=min(self.max_in_flight, len(requests))) as pool:
            futures = [pool.submit(self._one, r) for r in requests]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for f in done:
                if f.exception() is not None:
                    self._stopped.set()  # requests still waiting to retry give up
                    for p in pending:
                        p.cancel()
                    raise f.exception()
        return [f.result() for f in futures]

    def _one(self, req: Request) -> Response:
        """One request through the retry policy."""
        attempts = 0
        while True:
            attempts += 1
            try:
                return self._send(req)
            except self.sdk.APIError as exc:
                failure = self.classify(exc)
            if failure.action == "stop":
                raise BackendRejected(failure.message)
            retries_left = failure.action == "retry" and attempts <= self.policy.max_retries
            if not retries_left or self._stopped.is_set():
                tried = f"after {attempts} attempt{'s' if attempts > 1 else ''}"
                return Response("", error=f"{failure.message} ({tried})")
            # waits on the stop event: a run stopped by another request does not sit out
            # the backoff of every request waiting to retry
            self._stopped.wait(self.policy.delay(attempts - 1, failure.retry_after))

    def classify(self, exc: Exception) -> Failure:
        """Map an SDK error to retry / fail this request / stop the run, with a message."""
        where = f"{self.backend} model {self.model!r}"
        if isinstance(exc, self.sdk.APITimeoutError):
            return Failure("retry", f"{where}: no answer within the {self.timeout}s timeout")
        if isinstance(exc, self.sdk.APIConnectionError):
            server = self.base_url or "the API"
            cause = exc.__cause__ or exc
            return Failure("retry", f"{where}: could not reach {server} ({cause})")
        if not isinstance(exc, self.sdk.APIStatusError):  # e.g. an answer that does not parse
            return Failure("fail", f"{where}: {type(exc).__name__}: {self._redact(str(exc))}")
        status = exc.status_code
        reason = self._redact(server_reason(exc.body))
        if status in RETRYABLE_STATUS or status >= 500:
            wait_s = retry_after_seconds(exc.response.headers)
            return Failure("retry", f"{where}: HTTP {status}: {reason}", wait_s)
        if status == 401:
            return Failure(
                "stop",
                f"{where}: the server rejected the API key (HTTP 401); check the key in the "
                f"environment variable {self.key_env}",
            )
        if status == 403:
            return Failure(
                "stop",
                f"{where}: permission denied (HTTP 403: {reason}); check that the key in "
                f"{self.key_env} may use this model",
            )
        if status == 404:
            return Failure(
                "stop",
                f"{where}: not found (HTTP 404: {reason}); check the model name and base_url "
                f"({self.base_url or 'the default endpoint'})",
            )
        return Failure("fail", f"{where}: request rejected (HTTP {status}: {reason}); not retried")

    def _redact(self, message: str) -> str:
        """Server messages may echo the key (masked or not): never pass it on."""
        return message.replace(self._key, "***") if self._key else message

    def close(self) -> None:
        self.client.close()
