"""A stand-in for a loaded run in the web service's tests (no models): each request's work
is ``work(deadline)``; ``python serve_fake.py PORT MODE`` serves it as ``serve`` does."""

from __future__ import annotations

import sys
import time
from typing import Any

from ensemble_dfd.inference.limits import LimitExceeded, Limits
from ensemble_dfd.inference.verdict import LimitError


class FakePredictor:
    limits = Limits()

    def describe(self) -> dict[str, Any]:
        return {"run": "fake"}


def cooperative(seconds: float = 60.0):
    """Work like a long video: the deadline is checked between frames."""
    def run_one(path, kind, name, crops, deadline):
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < seconds:
                deadline.check()
                time.sleep(0.02)
        except LimitExceeded as exc:
            raise LimitError(str(exc), exc.reason) from None
        return {"input": name, "verdict": "real"}
    return run_one


def stubborn(path, kind, name, crops, deadline):
    """Work that never checks its deadline (one long decode)."""
    time.sleep(60)
    return {"input": name}


def quick(path, kind, name, crops, deadline):
    return {"input": name, "kind": kind, "verdict": "real"}


def make_app(run_one=quick, **kw):
    from ensemble_dfd.serve import create_app

    app = create_app("unused", predictor=FakePredictor(), warm=False, **kw)
    app.state.service.run_one = run_one
    return app


if __name__ == "__main__":
    from ensemble_dfd.serve import serve_app

    port, mode = int(sys.argv[1]), sys.argv[2]
    tmp = sys.argv[3] if len(sys.argv) > 3 else None
    app = make_app(cooperative() if mode == "cooperative" else stubborn, tmp_root=tmp)
    serve_app(app, "127.0.0.1", port, log_level="warning")
