"""Bad requests get clear 4xx answers in OpenAI's error shape, over raw
HTTP; a storm of malformed requests leaves the server healthy; the API
key is enforced."""
import http.client
import json
import random
import socket
import threading

import pytest

from .util import CTX, MODEL_ID

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MSGS = [{"role": "user", "content": "Hi"}]

# (path, body, status, param): each must be refused with that status
BAD_REQUESTS = [
    (CHAT, b"{not json", 400, None),
    (CHAT, b"", 400, None),
    (CHAT, b"[1, 2]", 400, None),
    (CHAT, b'{"messages": []} trailing', 400, None),
    (CHAT, {}, 400, "messages"),
    (CHAT, {"messages": "Hi"}, 400, "messages"),
    (CHAT, {"messages": [{"role": "user"}]}, 400, "messages"),
    (CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "messages"),
    (CHAT, {"messages": [{"role": "wizard", "content": "Hi"}]}, 400, "messages"),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "messages"),
    (CHAT, {"messages": MSGS, "model": "gpt-4"}, 400, "model"),
    (CHAT, {"messages": MSGS, "model": 7}, 400, "model"),
    (CHAT, {"messages": MSGS, "max_tokens": 0}, 400, "max_tokens"),
    (CHAT, {"messages": MSGS, "max_tokens": CTX + 1}, 400, "max_tokens"),
    (CHAT, {"messages": MSGS, "max_tokens": 2.5}, 400, "max_tokens"),
    (CHAT, {"messages": MSGS, "max_tokens": "10"}, 400, "max_tokens"),
    (CHAT, {"messages": MSGS, "temperature": -0.1}, 400, "temperature"),
    (CHAT, {"messages": MSGS, "temperature": 2.5}, 400, "temperature"),
    (CHAT, {"messages": MSGS, "top_p": 1.5}, 400, "top_p"),
    (CHAT, {"messages": MSGS, "top_p": "high"}, 400, "top_p"),
    (CHAT, {"messages": MSGS, "min_p": -1}, 400, "min_p"),
    (CHAT, {"messages": MSGS, "n": 2}, 400, "n"),
    (CHAT, {"messages": MSGS, "stream": "yes"}, 400, "stream"),
    (CHAT, {"messages": MSGS, "stop": 5}, 400, "stop"),
    (CHAT, {"messages": MSGS, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    (CHAT, {"messages": MSGS, "stop": [""]}, 400, "stop"),
    (CHAT, {"messages": MSGS, "logprobs": 1}, 400, "logprobs"),
    (CHAT, {"messages": MSGS, "logprobs": True, "top_logprobs": 21}, 400, "top_logprobs"),
    (CHAT, {"messages": MSGS, "logprobs": True, "top_logprobs": 1.5}, 400, "top_logprobs"),
    (CHAT, {"messages": MSGS, "top_logprobs": 2}, 400, "top_logprobs"),
    (COMPLETIONS, {"prompt": "Hi", "logprobs": True}, 400, "logprobs"),
    (COMPLETIONS, {"prompt": "Hi", "logprobs": 21}, 400, "logprobs"),
    (CHAT, {"messages": MSGS, "frequency_penalty": 2.5}, 400, "frequency_penalty"),
    (CHAT, {"messages": MSGS, "presence_penalty": "1"}, 400, "presence_penalty"),
    (CHAT, {"messages": MSGS, "logit_bias": [1, 2]}, 400, "logit_bias"),
    (CHAT, {"messages": MSGS, "logit_bias": {"x": 1}}, 400, "logit_bias"),
    (CHAT, {"messages": MSGS, "logit_bias": {"-1": 1}}, 400, "logit_bias"),
    (CHAT, {"messages": MSGS, "logit_bias": {" 1": 1}}, 400, "logit_bias"),
    (CHAT, {"messages": MSGS, "logit_bias": {"99999999": 1}}, 400, "logit_bias"),
    (CHAT, {"messages": MSGS, "logit_bias": {"1": 100.5}}, 400, "logit_bias"),
    (CHAT, {"messages": MSGS, "logit_bias": {"1": "5"}}, 400, "logit_bias"),
    (CHAT, b'{"messages": [{"role": "user", "content": "Hi"}], "logit_bias": {"5": 1, "05": 2}}', 400, "logit_bias"),
    (CHAT, {"messages": MSGS, "logit_bias": {str(i): 1 for i in range(1025)}}, 400, "logit_bias"),
    (CHAT, {"messages": MSGS, "tools": [{"type": "function"}]}, 400, "tools"),
    (CHAT, {"messages": MSGS, "response_format": {"type": "json_schema", "json_schema": {}}}, 400, "response_format"),
    (CHAT, {"messages": MSGS, "response_format": {"type": "JSON_object"}}, 400, "response_format"),
    (CHAT, {"messages": MSGS, "response_format": "json_object"}, 400, "response_format"),
    (COMPLETIONS, {"prompt": "Hi", "response_format": {"type": None}}, 400, "response_format"),
    (CHAT, {"messages": [{"role": "user", "content": "word " * 2000}]}, 400, "messages"),
    (COMPLETIONS, {}, 400, "prompt"),
    (COMPLETIONS, {"prompt": {"text": "Hi"}}, 400, "prompt"),
    (COMPLETIONS, {"prompt": ["a", "b"]}, 400, "prompt"),
    (COMPLETIONS, {"prompt": [1, 99999999]}, 400, "prompt"),
    (COMPLETIONS, {"prompt": ""}, 400, "prompt"),
    (COMPLETIONS, {"prompt": "word " * 2000}, 400, "prompt"),
    (CHAT, {"messages": MSGS, "echo": True}, 400, "echo"),
    (COMPLETIONS, {"prompt": "Hi", "echo": "yes"}, 400, "echo"),
    (COMPLETIONS, {"prompt": "Hi", "max_tokens": 0}, 400, "max_tokens"),
    (COMPLETIONS, {"prompt": "Hi", "echo": True, "max_tokens": -1}, 400, "max_tokens"),
    (COMPLETIONS, {"prompt": "Hi", "best_of": 3}, 400, "best_of"),
    # a NUL would cut the string short where cJSON keeps it (raw or escaped)
    (COMPLETIONS, b'{"prompt": "Say\\u0000 hello"}', 400, None),
    (COMPLETIONS, b'{"prompt": "Say\x00 hello"}', 400, None),
    (CHAT, {"messages": [{"role": "user", "content": "Hi\u0000there"}]}, 400, None),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": "a\u0000"}]}]}, 400, None),
    ("/tokenize", {"content": "a\u0000b"}, 400, None),
    ("/tokenize", {"content": 5}, 400, "content"),
    ("/detokenize", {"tokens": ["a"]}, 400, "tokens"),
    ("/detokenize", {"tokens": [-1]}, 400, "tokens"),
]


def post(server, path, body, headers=None):
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    return server.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})


@pytest.mark.parametrize("path,body,status,param", BAD_REQUESTS)
def test_bad_request_is_refused_with_an_openai_error(server, path, body, status, param):
    got, headers, data = post(server, path, body)
    assert got == status, data
    assert headers["Content-Type"] == "application/json"
    err = json.loads(data)["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    assert err["param"] == param


def test_prompt_too_long_says_so(server):
    _, _, data = post(server, COMPLETIONS, {"prompt": "word " * 2000})
    err = json.loads(data)["error"]
    assert err["code"] == "context_length_exceeded" and str(CTX) in err["message"]


def test_nul_is_refused_but_an_escaped_backslash_before_u0000_is_text(server):
    status, _, data = post(server, "/tokenize", b'{"content": "a\\\\u0000b"}')  # a, backslash, "u0000b"
    assert status == 200, data
    status, _, data = post(server, "/detokenize", json.loads(data))
    assert status == 200 and json.loads(data)["content"] == "a\\u0000b"
    status, _, data = post(server, "/tokenize", b'{"content": "a\\u0000b"}')
    assert status == 400 and "NUL" in json.loads(data)["error"]["message"]


def test_model_name_may_be_absent_or_the_loaded_one(server):
    for extra in [{}, {"model": MODEL_ID}, {"model": None}]:
        status, _, data = post(server, COMPLETIONS, {"prompt": "Hi", "max_tokens": 1, **extra})
        assert status == 200, data


def test_unknown_path_and_wrong_method(server):
    status, _, data = server.request("GET", "/v1/nothing")
    assert status == 404 and json.loads(data)["error"]["code"] == "not_found"
    status, _, data = post(server, "/v2/chat/completions", {"messages": MSGS})
    assert status == 404
    status, headers, _ = server.request("GET", CHAT)
    assert status == 405 and headers["Allow"] == "POST"
    status, headers, _ = server.request("DELETE", "/health")
    assert status == 405 and "GET" in headers["Allow"]
    status, _, _ = server.request("PUT", "/v1/models", b"{}")
    assert status == 405


def test_body_over_the_limit_is_413(server):
    big = b'{"prompt": "' + b"a" * (1 << 20) + b'"}'
    status, _, data = post(server, COMPLETIONS, big)
    assert status == 413 and json.loads(data)["error"]["code"] == "body_too_large"
    # the same without Content-Length (chunked), and the connection stays usable
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    c.request("POST", COMPLETIONS, body=iter([big[:600000], big[600000:]]), encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    assert r.status == 413
    r.read()
    c.request("GET", "/health")
    assert c.getresponse().status == 200
    c.close()


def storm_cases(rng):
    """About 1,100 malformed requests: (method, path, body bytes, headers)."""
    valid = json.dumps({"model": MODEL_ID, "messages": MSGS, "max_tokens": 4}).encode()
    paths = [CHAT, COMPLETIONS, "/tokenize", "/detokenize"]
    cases = []
    for _ in range(300):  # random bytes
        cases.append(("POST", rng.choice(paths), rng.randbytes(rng.randrange(0, 2000)), {}))
    for _ in range(250):  # valid JSON cut short
        cases.append(("POST", CHAT, valid[:rng.randrange(0, len(valid) - 1)], {}))
    huge = ["1e400", "-1e400", "9" * 400, "1" + "0" * 30, "-99999999999999999999"]
    for _ in range(150):  # numbers out of any range
        field = rng.choice(["max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "n"])
        cases.append(("POST", CHAT, b'{"messages": [{"role": "user", "content": "Hi"}], "%s": %s}'
                      % (field.encode(), rng.choice(huge).encode()), {}))
    wrong = [("messages", 1), ("messages", {}), ("messages", [1]), ("messages", [{"role": 1, "content": "x"}]),
             ("max_tokens", "4"), ("temperature", []), ("stream", 1), ("stop", {}), ("stop", [1]),
             ("model", False), ("n", 3), ("seed", "x"), ("top_k", 1.5), ("stream_options", 2)]
    for _ in range(200):  # wrong types
        k, v = rng.choice(wrong)
        body = {"messages": MSGS, "max_tokens": 4, k: v}
        cases.append(("POST", CHAT, json.dumps(body).encode(), {}))
    bad_utf8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82", b"\x80"]
    for _ in range(150):  # invalid UTF-8 inside otherwise valid JSON
        cases.append(("POST", rng.choice([CHAT, "/tokenize"]),
                      b'{"messages": [{"role": "user", "content": "a%sb"}], "content": "x%s"}'
                      % (rng.choice(bad_utf8), rng.choice(bad_utf8)), {}))
    for _ in range(30):  # odd structure
        depth = rng.randrange(500, 5000)
        cases.append(("POST", CHAT, b"[" * depth + b"]" * depth, {}))
        cases.append(("POST", COMPLETIONS, b'{"prompt": "a\x00b", "max_tokens": "\x00"}', {}))
    for _ in range(10):  # bodies over --max-body
        cases.append(("POST", rng.choice(paths), b"x" * ((1 << 20) + rng.randrange(1, 300000)), {}))
    for _ in range(30):  # wrong methods and paths
        cases.append((rng.choice(["GET", "PUT", "PATCH"]), rng.choice(paths), b"", {}))
        cases.append(("POST", "/" + rng.randbytes(8).hex(), b"{}", {}))
    rng.shuffle(cases)
    return cases


def test_malformed_request_storm(server):
    rng = random.Random(20240611)
    cases = storm_cases(rng)
    assert len(cases) >= 1000
    results, failures = [], []
    n_workers = 4

    def worker(k):
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        for method, path, body, headers in cases[k::n_workers]:
            try:
                c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                r.read()
                results.append(r.status)
                if not 400 <= r.status < 500:
                    failures.append((r.status, method, path, body[:80]))
            except (OSError, http.client.HTTPException) as e:
                failures.append((repr(e), method, path, body[:80]))
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        c.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not failures, failures[:10]
    assert len(results) == len(cases)
    assert server.json("GET", "/health") == (200, {"status": "ok"})
    status, _, data = post(server, COMPLETIONS, {"prompt": "The capital of France is", "max_tokens": 2,
                                                "temperature": 0})
    assert status == 200 and json.loads(data)["choices"][0]["text"].startswith(" Paris")
    assert server.metrics()["frugal_active_sequences"] == 0


def test_garbage_that_is_not_http_does_not_hurt(server):
    """Bytes that are not HTTP at all: libmicrohttpd answers 4xx/5xx, closes
    the connection, or (a NUL in the request line) waits for more until
    the idle timeout; whichever, the server lives on."""
    for raw in [b"GARBAGE\r\n\r\n", b"\x00\xff" * 100 + b"\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                b"POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n"]:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=2)
        try:
            s.sendall(raw)
            reply = s.recv(64)
        except ConnectionResetError:
            reply = b""
        except TimeoutError:
            reply = None
        finally:
            s.close()
        assert reply in (b"", None) or reply[:10] in (b"HTTP/1.1 4", b"HTTP/1.1 5"), (raw[:20], reply)
    assert server.json("GET", "/health") == (200, {"status": "ok"})


def test_api_key(server_factory):
    key = "s3cret-key"
    s = server_factory("--parallel", 1, "-c", 256, "--api-key", key)
    assert s.json("GET", "/health") == (200, {"status": "ok"})  # open, for load balancers
    for auth in [None, "Bearer wrong", "Bearer " + key[:-1], "Bearer " + key + "x", key, "Basic " + key]:
        headers = {"Authorization": auth} if auth else {}
        status, h, data = s.request("GET", "/v1/models", headers=headers)
        assert status == 401 and h["WWW-Authenticate"] == "Bearer", auth
        assert json.loads(data)["error"]["code"] == "invalid_api_key"
        status, _, _ = s.request("POST", COMPLETIONS, {"prompt": "Hi", "max_tokens": 1}, headers)
        assert status == 401
    status, _, _ = s.request("GET", "/v1/models", headers={"Authorization": "Bearer " + key})
    assert status == 200
    import openai
    good = openai.OpenAI(base_url=s.url + "/v1", api_key=key, max_retries=0, timeout=60)
    r = good.completions.create(model=MODEL_ID, prompt="Hi", max_tokens=2)
    assert r.usage.completion_tokens <= 2
    bad = openai.OpenAI(base_url=s.url + "/v1", api_key="nope", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model=MODEL_ID, prompt="Hi", max_tokens=2)
