"""The webhook dispatcher: a thread of the scheduler role that sends due outbox rows.

Each attempt is signed afresh with the `standardwebhooks` package (`webhook-id` is the
outbox row's id, the same on every retry; `webhook-timestamp` is the attempt's time), so
receivers verify with the same package. Requests never wait on it.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook as Signer

from dashtune.domain.webhook_events import public_payload
from dashtune.services import webhook_outbox, webhooks
from dashtune.services.runtime import Runtime

log = logging.getLogger("dashtune.webhooks")


class Dispatcher:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashtune-webhooks", daemon=True)
        self._http = httpx.Client(timeout=rt.settings.webhook_timeout, follow_redirects=False)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.rt.settings.webhook_timeout + 5)
        self._http.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("webhook dispatch failed")
            self._stop.wait(self.rt.settings.webhook_interval)

    def tick(self) -> int:
        due = webhook_outbox.claim_due(self.rt)
        for item in due:
            code, error = self.send(item)
            webhook_outbox.record(self.rt, item.id, code, error)
        return len(due)

    def send(self, item: webhook_outbox.Due) -> tuple[int | None, str | None]:
        """(HTTP status, error) of one attempt."""
        payload = public_payload(item.payload, self.rt.settings.data_dir)
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": item.id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Signer(item.secret).sign(item.id, now, body),
        }
        try:
            # Checked again at each attempt: a name may resolve elsewhere than at registration.
            webhooks.check_url(item.url, self.rt.settings.webhook_allow_private)
            r = self._http.post(item.url, content=body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        except Exception as exc:  # a refused address (InvalidParameter) and the like
            return None, str(exc)[:500]
        error = None if 200 <= r.status_code < 300 else f"HTTP {r.status_code}"
        return r.status_code, error
