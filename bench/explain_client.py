"""A client that asks for explanations back to back, beside the classification load.

It measures the explanation lane's isolation: classification p99 with and without
one such client (bench/targets.py compares the two points of the same run).
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# The costliest default method: 32 integrated-gradient steps, each a forward and a backward pass.
EXPLAIN_QUERY = "method=integrated_gradients&steps=32"


class ExplainClient:
    def __init__(self, predict_url: str, model: str, body: Path, content_type: str) -> None:
        parts = urlsplit(predict_url)
        path = f"/v1/models/{model}/explain"
        self.url = urlunsplit((parts.scheme, parts.netloc, path, EXPLAIN_QUERY, ""))
        self.body = body.read_bytes()
        self.content_type = content_type
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="explain-client", daemon=True)

    def __enter__(self) -> ExplainClient:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        headers = {"Content-Type": self.content_type}
        while not self._stop.is_set():
            request = urllib.request.Request(self.url, data=self.body, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    response.read()
                    self.statuses[response.status] += 1
            except urllib.error.HTTPError as error:
                self.statuses[error.code] += 1
            except OSError:
                self.statuses[0] += 1

    def summary(self) -> str:
        shown = ", ".join(
            f"{code or 'no answer'}: {n}" for code, n in sorted(self.statuses.items())
        )
        return f"explanations answered during the points: {shown or 'none'}"
