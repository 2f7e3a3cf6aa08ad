"""JSON mode: response_format {"type": "json_object"} makes the reply one
JSON object (tokens that would break it are never drawn) that ends when
the object closes; greedy, it equals `frugal run --json --temp 0`."""
import json

from .util import MODEL_ID

PROMPT = "Describe a cat as a JSON object with its name, age and color."
JSON = {"type": "json_object"}


def chat(client, **kw):
    kw.setdefault("max_tokens", 300)
    return client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": PROMPT}], **kw)


def test_greedy_json_object_equals_cli(client, cli_greedy):
    r = chat(client, temperature=0, response_format=JSON)
    c = r.choices[0]
    assert isinstance(json.loads(c.message.content), dict)
    assert c.finish_reason == "stop"
    assert c.message.content == cli_greedy(PROMPT, 300, flags=("--json",))
    # without JSON mode the same model answers in prose first
    plain = chat(client, temperature=0, max_tokens=40).choices[0].message.content
    assert not plain.lstrip().startswith("{")


def test_sampled_replies_parse_streamed_or_not(client):
    """Sampling with no truncation (top_k, top_p, min_p off) draws tokens
    the constraint must mask; every reply that ends does so as one
    object, and a stream equals the whole reply for the same seed."""
    ended = 0
    for seed in range(6):
        kw = dict(temperature=1.0, top_p=1, max_tokens=150, seed=seed, response_format=JSON,
                  extra_body={"top_k": 0, "min_p": 0})
        c = chat(client, **kw).choices[0]
        if c.finish_reason == "stop":
            assert isinstance(json.loads(c.message.content), dict), c.message.content
            ended += 1
        else:
            assert c.finish_reason == "length" and c.message.content.lstrip().startswith("{")
        parts = [ch.choices[0].delta.content or "" for ch in chat(client, stream=True, **kw) if ch.choices]
        assert "".join(parts) == c.message.content
    assert ended >= 2


def test_completions_json_mode_and_usage(client):
    r = client.completions.create(model=MODEL_ID, prompt='A JSON object of a user: {"name": "Ann",', max_tokens=200,
                                  temperature=0, extra_body={"response_format": JSON})
    c = r.choices[0]
    assert c.finish_reason == "stop" and isinstance(json.loads(c.text), dict)
    assert r.usage.completion_tokens >= 2
