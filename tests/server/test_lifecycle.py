"""Starting and stopping: SIGTERM and SIGINT end the server cleanly (exit
status 0), also in the middle of a streamed reply; bad options are clear
errors."""
import json
import signal
import socket
import subprocess
import time

import pytest

from .util import FRUGAL, MODEL


def test_sigterm_mid_stream_exits_cleanly(server_factory):
    s = server_factory("--parallel", 2, "-c", 512)
    data = json.dumps({"prompt": "Once upon a time", "max_tokens": 40, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=60)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    got = b""
    while b"data: " not in got:
        got += sock.recv(65536)
    t0 = time.monotonic()
    assert s.stop(signal.SIGTERM) == 0, s.log()
    assert time.monotonic() - t0 < 20
    while True:  # the reply ended: finished within the grace period, or cancelled
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    sock.close()
    assert b"data: [DONE]\n\n" in got and got.endswith(b"\r\n0\r\n\r\n"), got[-300:]  # all of it
    log = s.log()
    assert "shutting down" in log and "stopped" in log
    # nothing listens any more
    try:
        socket.create_connection(("127.0.0.1", s.port), timeout=2).close()
        refused = False
    except OSError:
        refused = True
    assert refused


def test_sigint_when_idle_exits_cleanly(server_factory):
    s = server_factory("--parallel", 1, "-c", 256)
    assert s.json("GET", "/health")[0] == 200
    assert s.stop(signal.SIGINT) == 0


def test_bad_options_are_clear_errors():
    if not FRUGAL.exists():
        pytest.skip("build/frugal is missing: run make")
    for args, needle in [(["--port", "70000"], "--port"), (["--parallel", "0"], "--parallel"),
                         (["--bogus"], "unknown option"), ([], "no model")]:
        model = [] if needle == "no model" else ["-m", str(MODEL)]
        p = subprocess.run([str(FRUGAL), "serve", *model, *args], capture_output=True, timeout=60)
        assert p.returncode != 0 and needle in p.stderr.decode(), (args, p.stderr)
