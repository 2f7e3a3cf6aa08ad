"""Continuous batching under load: many clients at once get exactly what
each would get alone, a client that leaves frees its slot, and a full
queue answers 503 with Retry-After."""
import json
import socket
import threading
import time

from .util import MODEL_ID

N_CLIENTS = 16
N_TOKENS = 16


def requests_for_clients():
    """Different prompts (so each slot decodes something else), chat and
    raw, streamed and not."""
    out = []
    for i in range(N_CLIENTS):
        stream = i % 2 == 1
        if i % 4 < 3:
            out.append(("chat", f"Give me a fun fact about the number {i}.", stream))
        else:
            out.append(("raw", f"Item {i} on my shopping list is", stream))
    return out


def run(client, kind, prompt, stream):
    kw = dict(model=MODEL_ID, max_tokens=N_TOKENS, temperature=0, stream=stream)
    if kind == "chat":
        r = client.chat.completions.create(messages=[{"role": "user", "content": prompt}], **kw)
        if not stream:
            return r.choices[0].message.content
        return "".join(ch.choices[0].delta.content or "" for ch in r if ch.choices)
    r = client.completions.create(prompt=prompt, **kw)
    if not stream:
        return r.choices[0].text
    return "".join(ch.choices[0].text for ch in r if ch.choices)


def test_concurrent_greedy_equals_alone(server, client):
    reqs = requests_for_clients()
    alone = [run(client, *r) for r in reqs]
    together = [None] * len(reqs)
    errors = []

    def worker(i):
        try:
            together[i] = run(client, *reqs[i])
        except Exception as e:  # reported below, with the others
            errors.append((i, repr(e)))

    before = server.metrics()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    for i, (a, b) in enumerate(zip(alone, together)):
        assert a == b, (i, reqs[i], a, b)
    after = server.metrics()
    assert after["frugal_generations_total"] - before["frugal_generations_total"] == N_CLIENTS
    assert after["frugal_active_sequences"] == 0 and after["frugal_queue_length"] == 0


def open_stream(port, body, path="/v1/completions"):
    """Starts a streamed request on a raw socket; returns the socket once
    the first tokens have arrived."""
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
              % (path.encode(), len(data)) + data)
    got = b""
    while got.count(b"data: ") < 3:
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
    assert got.startswith(b"HTTP/1.1 200")
    return s


def test_client_leaving_mid_stream_frees_its_slot(server):
    before = server.metrics()
    s = open_stream(server.port, {"prompt": "Once upon a time", "max_tokens": 900, "stream": True})
    assert server.metrics()["frugal_active_sequences"] == 1
    s.close()
    server.wait_idle(timeout=10)
    after = server.metrics()
    # it stopped long before its 900 tokens
    assert after["frugal_completion_tokens_total"] - before["frugal_completion_tokens_total"] < 300
    assert after["frugal_generations_total"] - before["frugal_generations_total"] == 1


def test_client_leaving_while_waiting_for_whole_reply_frees_its_slot(server):
    before = server.metrics()
    data = json.dumps({"prompt": "Once upon a time", "max_tokens": 900}).encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    deadline = time.monotonic() + 30
    while server.metrics()["frugal_active_sequences"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    s.close()
    server.wait_idle(timeout=10)
    after = server.metrics()
    assert after["frugal_completion_tokens_total"] - before["frugal_completion_tokens_total"] < 300


def test_full_queue_answers_503_with_retry_after(server_factory):
    small = server_factory("--parallel", 1, "--queue", 1, "-c", 512)
    body = {"prompt": "Once upon a time", "max_tokens": 400, "stream": True}
    running = open_stream(small.port, body)  # holds the only slot
    data = json.dumps(body).encode()
    waiting = socket.create_connection(("127.0.0.1", small.port), timeout=60)  # holds the one queue place
    waiting.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    deadline = time.monotonic() + 30
    while small.metrics()["frugal_queue_length"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    status, headers, body = small.request("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
    assert status == 503 and headers.get("Retry-After") == "1"
    assert json.loads(body)["error"]["code"] == "server_busy"
    running.close()
    waiting.close()
    # both cancellations land within a step each; the queued one may first
    # be handed the freed slot, so wait for queue and slots to be empty
    small.wait_idle(timeout=60)
    status, _, _ = small.request("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
    assert status == 200


def test_long_prompt_is_prefilled_in_chunks_alongside_others(server, client, cli_greedy):
    """A prompt of ~700 tokens takes several prefill steps (256 tokens
    each) while a short request decodes; both replies are exact."""
    long_prompt = " ".join(f"Sentence number {i} talks about the weather in city {i * 7 % 13}."
                           for i in range(50)) + " In summary,"
    short = "Item 3 on my shopping list is"
    results = {}

    def go(name, prompt):
        r = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=12, temperature=0)
        results[name] = (r.choices[0].text, r.usage.prompt_tokens)

    threads = [threading.Thread(target=go, args=("long", long_prompt)),
               threading.Thread(target=go, args=("short", short))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert results["long"][1] > 2 * 256
    assert results["long"][0] == cli_greedy(long_prompt, 12, raw=True)
    assert results["short"][0] == cli_greedy(short, 12, raw=True)


def test_clients_that_left_the_queue_do_not_keep_their_places(server_factory):
    """A client that leaves while queued behind a live one gives its place
    back at once, not when a slot frees: else a queue of departed clients
    answers 503 to everyone for as long as the running reply lasts."""
    small = server_factory("--parallel", 1, "--queue", 2, "-c", 1024)
    running = open_stream(small.port, {"prompt": "Once upon a time", "max_tokens": 1000, "temperature": 0,
                                       "stream": True})
    body = json.dumps({"prompt": "Hello", "max_tokens": 4}).encode()
    queued = []
    for n in (1, 2):  # the first stays, the second (behind it) leaves
        s = socket.create_connection(("127.0.0.1", small.port), timeout=60)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        queued.append(s)
        deadline = time.monotonic() + 30
        while small.metrics()["frugal_queue_length"] != n:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    queued[1].close()
    # its connection notices within 50 ms; the running reply lasts far longer
    deadline = time.monotonic() + 5
    while True:
        c = socket.create_connection(("127.0.0.1", small.port), timeout=60)
        chat = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": True}).encode()
        c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(chat) + chat)
        status = c.recv(12)  # a chat stream's headers come at once, with its role chunk
        c.close()
        if status == b"HTTP/1.1 200":
            break
        assert status == b"HTTP/1.1 503" and time.monotonic() < deadline, status
        time.sleep(0.1)
    running.close()
    queued[0].close()
    small.wait_idle(timeout=60)


def test_long_stop_strings_do_not_slow_every_step(server_factory):
    """Stop strings of megabytes (a body under --max-body) cost each step
    of the thread that decodes for everyone a search as long as the text
    not yet released, not one as long as the strings."""
    big = server_factory("--parallel", 1, "-c", 512, "--max-body", 64 << 20)
    stops = ["~" * (15 << 20) + str(i) for i in range(4)]  # they never match

    def decode_time(**extra):
        """Seconds the 39 tokens after the first take (parsing excluded)."""
        times = []
        for n in (1, 40):
            body = json.dumps({"prompt": "Once upon a time", "max_tokens": n, "temperature": 0, **extra}).encode()
            t0 = time.monotonic()
            status, _, data = big.request("POST", "/v1/completions", body)
            times.append(time.monotonic() - t0)
            assert status == 200 and json.loads(data)["usage"]["completion_tokens"] == n, data
        return times[1] - times[0]

    plain = decode_time()
    long_stops = decode_time(stop=stops)
    # scanning all 60 MB of them at each token added seconds here
    assert long_stops < plain + 2.0, (plain, long_stops)
