"""Tell the CRM: the outbox's deliveries POSTed, signed, to the URL configured for their kind.

Configuration (``--notify-config FILE``, YAML read safely; the secret never in it)::

    targets:                       # a URL per kind; a kind left out is not sent (its deliveries: skipped)
      task.created: https://crm.example.com/hooks/playbook
      task.overdue: https://crm.example.com/hooks/playbook
      task.escalated: https://crm.example.com/hooks/escalations
    timeout: 10                    # seconds a receiver may take to answer
    max_attempts: 10               # then the delivery is dead (``playbook deliveries --dead``)
    backoff: 30                    # seconds before the first retry, doubling after each failure...
    max_backoff: 3600              # ...up to this

The shared secret comes from the environment, ``PLAYBOOK_NOTIFY_SECRET``.  Each request carries
``X-Playbook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``, the scheme the
generic inbound webhook verifies (:func:`adapters.webhook.generic_signature`; a receiver may check
it with :func:`adapters.webhook.verify_generic`), ``X-Playbook-Delivery`` (the same on every
attempt: the receiver's key for acting once) and ``X-Playbook-Event`` (the kind).  A 2xx answer
is delivered; anything else (another status, a redirect, a timeout, a refused connection) is a
failure, retried after the backoff.
"""

from __future__ import annotations

import datetime as dt
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adapters.webhook import generic_signature
from engine.store import Store
from engine.store.outbox import KINDS, DeliveryPolicy, claim, settle

__all__ = [
    "SECRET_ENV",
    "Deliverer",
    "NotifyConfig",
    "NotifyConfigError",
    "load_config",
    "start_background_delivery",
]

SECRET_ENV = "PLAYBOOK_NOTIFY_SECRET"  # noqa: S105 - the variable's name, not a secret
MIN_SECRET_CHARS = 16
_NUMBERS = {
    "timeout": (0.1, 300.0),
    "max_attempts": (1, 100),
    "backoff": (0.0, 86400.0),
    "max_backoff": (0.0, 604800.0),
}


class NotifyConfigError(ValueError):
    """The notification configuration cannot be used: said with the file and the key at fault."""


@dataclass(frozen=True)
class NotifyConfig:
    targets: Mapping[str, str]  # kind -> URL
    secret: str = field(repr=False)
    timeout: float = 10.0
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)


def load_config(path: str | Path, environ: Mapping[str, str]) -> NotifyConfig:
    """The configuration in ``path``, its secret from ``environ``; NotifyConfigError saying what is wrong."""
    where = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise NotifyConfigError(f"{where}: cannot read the notification configuration: {error}") from None
    if not isinstance(data, dict):
        raise NotifyConfigError(f"{where}: expected a mapping with 'targets'")
    unknown = sorted(set(data) - {"targets", *_NUMBERS})
    if unknown:
        hint = f" (the secret comes from {SECRET_ENV}, never the file)" if any("secret" in k for k in unknown) else ""
        raise NotifyConfigError(f"{where}: unknown key {', '.join(map(str, unknown))}{hint}")
    targets = data.get("targets")
    if not isinstance(targets, dict) or not targets:
        raise NotifyConfigError(f"{where}: 'targets' must map event kinds ({', '.join(KINDS.values())}) to URLs")
    for kind, url in targets.items():
        if kind not in KINDS.values():
            raise NotifyConfigError(f"{where}: targets: unknown kind '{kind}'; the kinds: {', '.join(KINDS.values())}")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise NotifyConfigError(f"{where}: targets.{kind}: expected an http:// or https:// URL")
    numbers: dict[str, float] = {}
    for name, (low, high) in _NUMBERS.items():
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise NotifyConfigError(f"{where}: {name}: expected a number from {low:g} to {high:g}")
        numbers[name] = value
    secret = environ.get(SECRET_ENV, "")
    if len(secret) < MIN_SECRET_CHARS:
        raise NotifyConfigError(
            f"set {SECRET_ENV} to the secret shared with the receivers ({MIN_SECRET_CHARS}+ characters)"
        )
    defaults = DeliveryPolicy()
    policy = DeliveryPolicy(
        max_attempts=int(numbers.get("max_attempts", defaults.max_attempts)),
        backoff=numbers.get("backoff", defaults.backoff),
        max_backoff=numbers.get("max_backoff", defaults.max_backoff),
    )
    return NotifyConfig(dict(targets), secret, numbers.get("timeout", 10.0), policy)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is a failure: following it would re-send the signed body elsewhere (as a GET, even)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> str | None:
    """POST ``body``; None when answered 2xx, else what went wrong, in words."""
    # the configuration admits only http:// and https:// URLs (load_config)
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(65536)
            status = int(response.status)
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return f"not delivered: {reason}"
    return None if 200 <= status < 300 else f"HTTP {status}"


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: int = 0  # to be retried
    dead: int = 0
    skipped: int = 0

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


class Deliverer:
    """Drains the outbox of one store: due deliveries claimed under a lease, sent, settled.

    The clock is the store's (a test fixes it); ``lease`` seconds must outlast an attempt, so it is
    the timeout and a margin."""

    def __init__(self, store: Store, config: NotifyConfig, *, batch: int = 50) -> None:
        self.store = store
        self.config = config
        self.batch = batch
        self.owner = uuid.uuid4().hex
        self.lease = config.timeout + 60.0

    def _claim(self) -> list[Any]:
        now = self.store.clock()
        with self.store._begin() as conn:
            until = (now + dt.timedelta(seconds=self.lease)).astimezone(dt.UTC).isoformat(timespec="microseconds")
            return claim(conn, self.owner, self.store.now(), until, self.batch)

    def _send(self, body: str, delivery_id: str, kind: str, url: str) -> str | None:
        raw = body.encode("utf-8")
        timestamp = str(int(self.store.clock().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "playbook-notify",
            "X-Playbook-Signature": f"t={timestamp},v1={generic_signature(self.config.secret, timestamp, raw)}",
            "X-Playbook-Delivery": delivery_id,
            "X-Playbook-Event": kind,
        }
        return post(url, raw, headers, self.config.timeout)

    def run_once(self) -> DeliveryReport:
        """Send every delivery due now (claimed a batch at a time); those that fail wait for their retry."""
        report = DeliveryReport()
        while True:
            claimed = self._claim()
            if not claimed:
                return report
            for delivery in claimed:
                url = self.config.targets.get(delivery.kind)
                error = None if url is None else self._send(delivery.body, delivery.delivery_id, delivery.kind, url)
                with self.store._begin() as conn:
                    status = settle(
                        conn, delivery, self.owner, self.store.now(), url=url, error=error, policy=self.config.policy
                    )
                if status == "delivered":
                    report.delivered += 1
                elif status == "skipped":
                    report.skipped += 1
                elif status == "dead":
                    report.dead += 1
                elif status == "pending":
                    report.failed += 1


def start_background_delivery(
    store: Store, config: NotifyConfig, *, every: float = 5.0, on_error: Callable[[BaseException], None] | None = None
) -> Callable[[], None]:
    """Drain the outbox every ``every`` seconds on a thread (``playbook serve``); returns the function that
    stops it (and waits for the round under way).  An error in a round is reported, not fatal: the next
    round tries again."""
    stop = threading.Event()
    deliverer = Deliverer(store, config)

    def loop() -> None:
        while not stop.is_set():
            try:
                deliverer.run_once()
            except Exception as error:  # noqa: BLE001 - a database hiccup must not end delivery for the process's life
                if on_error is not None:
                    on_error(error)
            stop.wait(every)

    thread = threading.Thread(target=loop, name="playbook-notify", daemon=True)
    thread.start()

    def halt() -> None:
        stop.set()
        thread.join()

    return halt
