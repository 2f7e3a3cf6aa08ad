"""Helpers for the server tests: paths, and a running `frugal serve` with
raw-HTTP helpers. (This directory is a package so that its conftest does
not take the module name "conftest" from tests/conftest.py.)"""
import http.client
import json
import os
import pathlib
import re
import signal
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FRUGAL = pathlib.Path(os.environ.get("FRUGAL_BIN", ROOT / "build" / "frugal"))  # e.g. a sanitizer build
MODELS = pathlib.Path(os.environ.get("FRUGAL_MODELS", pathlib.Path.home() / ".cache/frugal/models"))
MODEL = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"
THREADS = 2
CTX = 1024


class Server:
    """A running `frugal serve` and small raw-HTTP helpers for it."""

    def __init__(self, proc, port, log_path):
        self.proc, self.port, self.log_path = proc, port, log_path
        self.url = f"http://127.0.0.1:{port}"

    def request(self, method, path, body=None, headers=None, timeout=120):
        """One request on a fresh connection: (status, headers, body bytes)."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def json(self, method, path, body=None, headers=None):
        status, _, data = self.request(method, path, body, headers)
        return status, json.loads(data)

    def metrics(self):
        """The unlabelled samples of /metrics as {name: value}."""
        status, _, data = self.request("GET", "/metrics")
        assert status == 200
        out = {}
        for line in data.decode().splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.split()
                out[name] = float(value)
        return out

    def wait_idle(self, timeout=30):
        """Waits until nothing is queued and no slot is busy; returns the
        seconds it took."""
        t0 = time.monotonic()
        while True:
            m = self.metrics()
            if m["frugal_queue_length"] == 0 and m["frugal_active_sequences"] == 0:
                return time.monotonic() - t0
            assert time.monotonic() - t0 < timeout, m
            time.sleep(0.02)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signals the server and returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"server did not exit {timeout}s after {sig!r}:\n{self.log()}")
        return self.proc.returncode


def start_server(log_dir, *args):
    """Starts `frugal serve` with args and waits until /health answers."""
    if not FRUGAL.exists():
        pytest.skip("build/frugal is missing: run make")
    if not MODEL.exists():
        pytest.skip(f"model {MODEL} is missing: run scripts/fetch-model smollm2-135m")
    log_path = pathlib.Path(log_dir) / f"serve-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:  # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen([str(FRUGAL), "serve", "-m", str(MODEL), "--port", "0", "-t", str(THREADS),
                                 *map(str, args)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    port = None
    while port is None:
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", log_path.read_text(errors="replace"))
        if m:
            port = int(m.group(1))
        elif proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server did not start:\n{log_path.read_text(errors='replace')}")
        else:
            time.sleep(0.05)
    server = Server(proc, port, log_path)
    assert server.json("GET", "/health") == (200, {"status": "ok"})
    return server
