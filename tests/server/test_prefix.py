"""The shared prefix cache: a request whose prompt starts like one that
another slot holds loads those KV blocks instead of computing them, and
its output is exactly what it would be without the cache."""
import threading

from .util import MODEL_ID

PREFIX = ("The following is a transcript of a long meeting of the town council about the new bridge, "
          "the budget for the coming year, the repairs to the library roof, and the summer festival. ") * 3


def complete(client, prompt, n):
    r = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=n, temperature=0)
    return r.choices[0].text


def test_second_slot_loads_shared_prefix(server_factory, cli_greedy):
    import openai
    srv = server_factory("--parallel", 2, "-c", 1024)
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    before = srv.metrics()
    assert before["frugal_prefix_cache_blocks"] == 0
    # A holds slot 1 (streaming a long reply) while B arrives and takes slot 2,
    # whose own cache is empty: only the shared cache can give it the prefix
    first_token = threading.Event()
    out_a = []

    def run_a():
        stream = client.completions.create(model=MODEL_ID, prompt=PREFIX + "The first item was", max_tokens=48,
                                           temperature=0, stream=True)
        for ch in stream:
            first_token.set()
            out_a.append(ch.choices[0].text if ch.choices else "")

    t = threading.Thread(target=run_a)
    t.start()
    assert first_token.wait(60)
    b = complete(client, PREFIX + "The second item was", 16)
    t.join(120)
    after = srv.metrics()
    assert after["frugal_prefix_cache_hits_total"] >= before["frugal_prefix_cache_hits_total"] + 1
    assert after["frugal_prefix_cache_tokens_total"] >= 64
    assert after["frugal_prefix_cache_blocks"] >= 2
    assert after["frugal_prefix_cache_bytes"] > 0
    # exactly what the engine gives without any cache
    assert b == cli_greedy(PREFIX + "The second item was", 16, raw=True)
    assert "".join(out_a) == cli_greedy(PREFIX + "The first item was", 48, raw=True)


def test_prefix_cache_can_be_turned_off(server_factory):
    import openai
    srv = server_factory("--parallel", 1, "-c", 512, "--prefix-cache", 0)
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    complete(client, PREFIX + "One", 4)
    complete(client, PREFIX + "Two", 4)
    m = srv.metrics()
    assert m["frugal_prefix_cache_blocks"] == 0 and m["frugal_prefix_cache_hits_total"] == 0


def test_compressed_budgeted_cache_serves(server_factory):
    """--kv-type and --kv-budget reach every slot: replies come, and the
    budget keeps each slot's cache small (budgeted slots never share)."""
    import openai
    srv = server_factory("--parallel", 2, "-c", 1024, "--kv-type", "kivi4", "--kv-budget", 64)
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    text = complete(client, PREFIX + "The first item was", 24)
    assert len(text) > 0
    m = srv.metrics()
    assert m["frugal_prefix_cache_blocks"] == 0
    assert 0 < m["frugal_kv_cache_bytes"] < 2 * 30 * 192 * 4 * 200  # well under 200 fp16 tokens per slot


def test_bad_kv_option_stops_the_server(tmp_path):
    import subprocess
    from .util import FRUGAL, MODEL
    proc = subprocess.run([str(FRUGAL), "serve", "-m", str(MODEL), "--port", "0", "--kv-type", "fp8"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 2 and b"unknown value 'fp8' for --kv-type" in proc.stderr


def test_repeated_prompt_evaluates_its_last_two_tokens(server_factory, cli_greedy):
    # A prompt's tokens are never evaluated as a run of one (that is a
    # decoding step, with its own arithmetic): a prompt found whole in a
    # slot's cache is evaluated again from its second-to-last token, and a
    # prompt one token longer than a chunk is not cut into 256 + 1. Either
    # way the reply is what `frugal run` gives.
    import openai
    srv = server_factory("--parallel", 1, "-c", 1024)
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    prompt = PREFIX + "The first item was"
    first = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=8, temperature=0)
    again = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=8, temperature=0)
    n = first.usage.prompt_tokens
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert again.usage.prompt_tokens_details.cached_tokens == n - 2
    assert again.choices[0].text == first.choices[0].text == cli_greedy(prompt, 8, raw=True)
    # 257 tokens: chunks of 255 + 2
    import httpx
    words = (PREFIX * 4).split(" ")
    text = ""
    for w in words:
        longer = (text + " " + w) if text else w
        if len(httpx.post(srv.url + "/tokenize", json={"content": longer}).json()["tokens"]) > 257:
            break
        text = longer
    assert len(httpx.post(srv.url + "/tokenize", json={"content": text}).json()["tokens"]) == 257
    r = client.completions.create(model=MODEL_ID, prompt=text, max_tokens=8, temperature=0)
    assert r.usage.prompt_tokens == 257
    assert r.choices[0].text == cli_greedy(text, 8, raw=True)
