"""Webhook notifications: a JSON POST, retried, that never fails the pipeline."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


def redact_url(url: str) -> str:
    """Scheme and host only: webhook paths and queries often carry the secret token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}/…"


def post_json(
    url: str,
    payload: Mapping[str, Any],
    attempts: int = 3,
    backoff_seconds: float = 1.0,
    timeout_seconds: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """POST `payload` as JSON; retry on errors and 5xx/429; return whether it was delivered.

    Never raises: a notification is a courtesy, and its failure must change nothing else.
    """
    body = json.dumps(payload, default=str).encode()
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
                if response.status < 300:
                    return True
                problem = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            problem = f"HTTP {error.code}"
            if error.code < 500 and error.code != 429:
                log.warning("webhook %s refused the notification: %s", redact_url(url), problem)
                return False
        except (OSError, ValueError) as error:
            problem = type(error).__name__
        log.warning(
            "webhook %s: attempt %d of %d failed (%s)", redact_url(url), attempt, attempts, problem
        )
        if attempt < attempts:
            sleep(backoff_seconds * 2 ** (attempt - 1))
    return False
