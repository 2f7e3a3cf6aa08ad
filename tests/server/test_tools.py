"""Tool calls: "tools" and "tool_choice" on the chat endpoint. A reply
that calls functions names only functions offered, with arguments valid
against their parameters (checked here by the jsonschema package); the
history (assistant tool_calls, tool results) renders as docs/server.md
says; a stream carries the same calls as the whole reply."""
import json

import jsonschema
import pytest

from .test_errors import post
from .util import MODEL_ID

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Get the time in a time zone",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}
TOOLS = [WEATHER, TIME]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def chat(client, **kw):
    kw.setdefault("max_tokens", 120)
    kw.setdefault("messages", ASK)
    kw.setdefault("tools", TOOLS)
    return client.chat.completions.create(model=MODEL_ID, **kw)


def check_calls(calls, names=("get_weather", "get_time"), tools=TOOLS):
    params = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    assert calls
    for c in calls:
        assert c.type == "function" and c.id.startswith("call_")
        assert c.function.name in names
        jsonschema.validate(json.loads(c.function.arguments), params[c.function.name])
    assert len({c.id for c in calls}) == len(calls)


def test_required_makes_one_valid_call(client):
    for kw in [dict(temperature=0)] + [dict(temperature=1.0, seed=s, extra_body={"top_k": 0}) for s in range(3)]:
        c = chat(client, tool_choice="required", **kw).choices[0]
        assert c.finish_reason == "tool_calls" and c.message.content is None
        assert len(c.message.tool_calls) == 1  # parallel_tool_calls not sent: one call
        check_calls(c.message.tool_calls)


def test_a_named_function_is_the_one_called(client):
    choice = {"type": "function", "function": {"name": "get_time"}}
    c = chat(client, tool_choice=choice, temperature=0).choices[0]
    assert c.finish_reason == "tool_calls"
    check_calls(c.message.tool_calls, names=("get_time",))


def test_parallel_calls_end_as_whole_calls(client):
    """Greedy, this model repeats its call; the list still ends, whole, at
    16 calls at most."""
    c = chat(client, tool_choice="required", parallel_tool_calls=True, temperature=0, max_tokens=800).choices[0]
    assert c.finish_reason == "tool_calls"
    assert 1 <= len(c.message.tool_calls) <= 16
    check_calls(c.message.tool_calls)


def test_a_stream_carries_the_same_calls(client):
    whole = chat(client, tool_choice="required", temperature=0).choices[0].message.tool_calls
    chunks = [ch for ch in chat(client, tool_choice="required", temperature=0, stream=True) if ch.choices]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(not ch.choices[0].delta.content for ch in chunks)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    streamed = [tc for ch in chunks for tc in ch.choices[0].delta.tool_calls or []]
    assert [(tc.index, tc.function.name, tc.function.arguments) for tc in streamed] == \
        [(i, tc.function.name, tc.function.arguments) for i, tc in enumerate(whole)]
    assert all(tc.id.startswith("call_") and tc.type == "function" for tc in streamed)


def test_auto_replies_in_text_or_with_a_call(client):
    """Greedy, this model answers this question in text, streamed as it is
    written; sampled replies are text or valid calls."""
    c = chat(client, temperature=0, max_tokens=40).choices[0]
    assert c.finish_reason in ("stop", "length") and c.message.tool_calls is None
    assert not c.message.content.lstrip().startswith("{")
    parts = [ch.choices[0].delta.content or "" for ch in chat(client, temperature=0, max_tokens=40, stream=True)
             if ch.choices]
    assert "".join(parts) == c.message.content and len([p for p in parts if p]) > 5
    for seed in range(4):
        c = chat(client, temperature=1.0, seed=seed, max_tokens=60).choices[0]
        if c.message.tool_calls:
            assert c.finish_reason == "tool_calls" and c.message.content is None
            check_calls(c.message.tool_calls)
        else:
            assert isinstance(c.message.content, str)


def test_tool_choice_none_is_as_without_tools(client):
    plain = client.chat.completions.create(model=MODEL_ID, messages=ASK, temperature=0, max_tokens=30)
    none = chat(client, tool_choice="none", temperature=0, max_tokens=30)
    assert none.choices[0].message.content == plain.choices[0].message.content
    assert none.usage.prompt_tokens == plain.usage.prompt_tokens


CALLS = [{"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
         {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}}]
HISTORY = ASK + [{"role": "assistant", "content": None, "tool_calls": CALLS},
                 {"role": "tool", "tool_call_id": "call_a", "content": "18 C and sunny"},
                 {"role": "tool", "tool_call_id": "call_b", "content": "14:05"}]
# the same conversation as docs/server.md says it is rendered
RENDERED = ASK + [
    {"role": "assistant", "content": '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}},'
                                     '{"name":"get_time","arguments":{"tz":"CET"}}]}'},
    {"role": "user", "content": "Result of get_weather:\n18 C and sunny\n\nResult of get_time:\n14:05"}]


# a user message after the results joins them (Gemma's template refuses two user turns in a row)
FOLLOW_UP = {"role": "user", "content": "Answer in one sentence."}
RENDERED_FOLLOW_UP = RENDERED[:-1] + [{"role": "user", "content": RENDERED[-1]["content"] + "\n\n" +
                                       FOLLOW_UP["content"]}]


@pytest.mark.parametrize("tool_choice", ["none", "auto"])
@pytest.mark.parametrize("follow_up", [False, True])
def test_history_renders_as_documented(client, tool_choice, follow_up):
    history, rendered = (HISTORY + [FOLLOW_UP], RENDERED_FOLLOW_UP) if follow_up else (HISTORY, RENDERED)
    a = chat(client, messages=history, tool_choice=tool_choice, temperature=0, max_tokens=40)
    b = chat(client, messages=rendered, tool_choice=tool_choice, temperature=0, max_tokens=40)
    assert a.usage.prompt_tokens == b.usage.prompt_tokens
    assert a.choices[0].message == b.choices[0].message or (
        [t.function for t in a.choices[0].message.tool_calls] == [t.function for t in b.choices[0].message.tool_calls])


def test_pydantic_function_tools_parse(client):
    """openai's pydantic_function_tool (strict, nested models under $defs)
    and parse(): the arguments come back as the model's instances."""
    import openai
    from pydantic import BaseModel

    class Place(BaseModel):
        city: str
        country: str

    class BookTrip(BaseModel):
        traveller: str
        destination: Place
        nights: int

    r = client.beta.chat.completions.parse(
        model=MODEL_ID, messages=[{"role": "user", "content": "Book Ann three nights in Rome, Italy."}],
        tools=[openai.pydantic_function_tool(BookTrip)], tool_choice="required", temperature=0, max_tokens=150)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "BookTrip"
    assert isinstance(call.function.parsed_arguments, BookTrip)
    assert isinstance(call.function.parsed_arguments.destination, Place)


def fn(name, **kw):
    return {"type": "function", "function": {"name": name, **kw}}


CHAT = "/v1/chat/completions"
BAD = [
    ({"tools": {"f": 1}}, "tools"),
    ({"tools": [{"type": "code", "function": {"name": "f"}}]}, "tools"),
    ({"tools": [fn("a b")]}, "tools"),
    ({"tools": [fn("x" * 65)]}, "tools"),
    ({"tools": [fn("f"), fn("f")]}, "tools"),
    ({"tools": [fn(f"f{i}") for i in range(65)]}, "tools"),
    ({"tools": [fn("f", description=5)]}, "tools"),
    ({"tools": [fn("f", parameters={"type": "string"})]}, "tools"),
    ({"tools": [fn("f", parameters={"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}})]},
     "tools"),
    ({"tools": [fn("f", parameters={"type": "object", "properties": {"a": {"$ref": "#/$defs/none"}}})]}, "tools"),
    ({"tools": [fn("f")], "tool_choice": "always"}, "tool_choice"),
    ({"tools": [fn("f")], "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [fn("f")], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"tools": [fn("f")], "response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": [fn("f")], "logprobs": True}, "logprobs"),
    ({"messages": [{"role": "tool", "tool_call_id": "call_x", "content": "1"}]}, "messages"),
    ({"messages": [{"role": "tool", "content": "1"}]}, "messages"),
    ({"messages": ASK + [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}]}, "messages"),
    ({"messages": ASK + [{"role": "assistant", "tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "{not json"}}]}]}, "messages"),
    ({"messages": ASK + [{"role": "assistant", "tool_calls": "f"}]}, "messages"),
]


@pytest.mark.parametrize("extra,param", BAD)
def test_bad_tool_requests_are_400(server, extra, param):
    status, _, data = post(server, CHAT, {"messages": ASK, "max_tokens": 5, **extra})
    err = json.loads(data)["error"]
    assert status == 400 and err["param"] == param, err
    assert err["type"] == "invalid_request_error" and err["message"]


def test_completions_refuse_tools(server):
    status, _, data = post(server, "/v1/completions", {"prompt": "Hi", "tools": [fn("f")]})
    assert status == 400 and json.loads(data)["error"]["param"] == "tools"


def test_functions_without_parameters_take_an_empty_object(client):
    c = chat(client, tools=[fn("ping", description="Check that the service is up")], tool_choice="required",
             temperature=0).choices[0]
    assert c.finish_reason == "tool_calls" and c.message.tool_calls[0].function.arguments == "{}"


def test_sigterm_while_a_call_is_held_back(server_factory):
    """A streamed call still being written when the server stops (after its
    5 s grace) ends with an error event and [DONE], and the server exits
    cleanly: a call that never finished is not read as one."""
    import signal
    import socket
    s = server_factory("--parallel", 1, "-c", 2048)
    long_call = fn("add", parameters={"type": "object", "properties": {"terms": {
        "type": "array", "items": {"type": "integer"}, "minItems": 2000}}, "required": ["terms"]})
    data = json.dumps({"messages": ASK, "tools": [long_call], "tool_choice": "required", "max_tokens": 1500,
                       "temperature": 0, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=60)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    got = b""
    while b"data: " not in got:
        got += sock.recv(65536)
    assert s.stop(signal.SIGTERM) == 0, s.log()
    while chunk := sock.recv(65536):
        got += chunk
    sock.close()
    assert b"shutting down" in got and b"data: [DONE]\n\n" in got and b"tool_calls" not in got, got[-400:]


def test_gemma_takes_a_user_message_after_tool_results(server_factory, gemma3):
    """Gemma's template wants user and model turns to alternate: a user
    message after tool results joins their user message, as documented,
    where two user messages in a row elsewhere stay the template's 400."""
    import openai
    s = server_factory("-m", gemma3, "-c", 1024, "--parallel", 1)
    c = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    model = c.models.list().data[0].id
    kw = dict(model=model, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=8)
    a = c.chat.completions.create(messages=HISTORY + [FOLLOW_UP], **kw)
    b = c.chat.completions.create(messages=RENDERED_FOLLOW_UP, **kw)
    assert a.usage.prompt_tokens == b.usage.prompt_tokens
    assert a.choices[0].message.content == b.choices[0].message.content
    status, body = s.json("POST", CHAT, {"model": model, "messages": HISTORY + [FOLLOW_UP, FOLLOW_UP],
                                         "tools": TOOLS, "max_tokens": 8})
    assert status == 400 and "alternate" in body["error"]["message"], body
