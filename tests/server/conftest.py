"""Fixtures for the server tests: a real `frugal serve` on a free loopback
port (the server picks it: --port 0, and prints it), stopped with SIGTERM
at the end, and the CLI's greedy output to compare against."""
import subprocess

import pytest

from .util import CTX, FRUGAL, MODEL, THREADS, start_server


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory):
    """start(*args) -> Server; every server still running at the end gets
    SIGTERM and must exit with status 0."""
    started = []
    log_dir = tmp_path_factory.mktemp("serve")

    def start(*args):
        s = start_server(log_dir, *args)
        started.append(s)
        return s

    yield start
    for s in started:
        assert s.stop() == 0, s.log()


@pytest.fixture(scope="session")
def server(server_factory):
    """The shared server: 4 slots of 1024 tokens."""
    return server_factory("--parallel", 4, "-c", CTX, "--queue", 64)


@pytest.fixture(scope="session")
def client(server):
    import openai
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def cli_greedy():
    """greedy(prompt, n, raw=False, flags=()) -> the reply `frugal run --temp
    0 -n n [flags]` prints (memoized)."""
    cache = {}

    def greedy(prompt, n, raw=False, flags=()):
        key = (prompt, n, raw, tuple(flags))
        if key not in cache:
            args = [str(FRUGAL), "run", "-m", str(MODEL), "-p", prompt, "-n", str(n), "--temp", "0",
                    "-t", str(THREADS), "--no-stats"] + (["--raw"] if raw else []) + list(flags)
            out = subprocess.run(args, capture_output=True, timeout=300, check=True).stdout.decode()
            assert out.endswith("\n")  # frugal run ends the reply with a newline
            cache[key] = out[:-1]
        return cache[key]

    return greedy
