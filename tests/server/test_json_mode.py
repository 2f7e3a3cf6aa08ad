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
    for seed in range(4):
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
    # a prompt whose greedy reply closes its object at every kernel level
    # (FRUGAL_ISA=avx2, avx512, amx): replies differ in their last bits
    # between levels, and a 135M model's JSON can run on until max_tokens
    r = client.completions.create(model=MODEL_ID, prompt="A JSON object of a user named Ann, aged 31:", max_tokens=200,
                                  temperature=0, extra_body={"response_format": JSON})
    c = r.choices[0]
    assert c.finish_reason == "stop" and isinstance(json.loads(c.text), dict)
    assert r.usage.completion_tokens >= 2


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "pets": {"type": "array", "items": {"$ref": "#/$defs/pet"}, "maxItems": 3},
        "email": {"type": ["string", "null"]},
    },
    "required": ["name", "age", "pets", "email"],
    "additionalProperties": False,
    "$defs": {"pet": {"type": "object", "properties": {"kind": {"enum": ["cat", "dog", "fish"]},
                                                        "name": {"type": "string"}},
                      "required": ["kind", "name"], "additionalProperties": False}},
}


def schema_format(schema, name="person"):
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


def test_json_schema_replies_validate(client):
    """Greedy and sampled replies (whole and streamed) are valid against
    the schema (checked by the jsonschema package), with properties in
    the schema's order."""
    import jsonschema
    prompt = "Describe a person who has two pets, as JSON."
    rf = schema_format(PERSON)
    msgs = [{"role": "user", "content": prompt}]
    ended = 0
    for seed in range(4):
        kw = dict(model=MODEL_ID, messages=msgs, max_tokens=250, response_format=rf, seed=seed,
                  temperature=0 if seed == 0 else 1.0)
        r = client.chat.completions.create(**kw)
        c = r.choices[0]
        # a sampled string may run on (an email of 200 tokens): such a
        # reply is cut at max_tokens, never ended early or malformed
        if c.finish_reason == "stop" or seed == 0:
            assert c.finish_reason == "stop", c.message.content
            value = json.loads(c.message.content)
            jsonschema.validate(value, PERSON)
            assert list(value) == ["name", "age", "pets", "email"]
            ended += 1
        else:
            assert c.finish_reason == "length" and r.usage.completion_tokens == 250
            assert c.message.content.startswith("{")
        parts = [ch.choices[0].delta.content or "" for ch in client.chat.completions.create(stream=True, **kw)
                 if ch.choices]
        assert "".join(parts) == c.message.content
    assert ended >= 3


def test_json_schema_from_pydantic_through_parse(client):
    """The openai client's parse() sends a pydantic model's strict schema
    and reads the reply back into the model."""
    from typing import Literal, Optional, Union
    from pydantic import BaseModel, Field

    class City(BaseModel):
        name: str
        country: str
        population: int
        coastal: bool
        climate: Literal["cold", "mild", "hot"]
        nickname: Optional[str]

    r = client.beta.chat.completions.parse(model=MODEL_ID, temperature=0, max_tokens=200, response_format=City,
                                           messages=[{"role": "user", "content": "Describe Lisbon as JSON."}])
    city = r.choices[0].message.parsed
    assert isinstance(city, City) and city.climate in ("cold", "mild", "hot")

    # a list of a discriminated union (told apart by a first field with a constant value)
    class Circle(BaseModel):
        kind: Literal["circle"]
        radius: float

    class Square(BaseModel):
        kind: Literal["square"]
        side: float

    class Drawing(BaseModel):
        title: str
        shapes: list[Union[Circle, Square]] = Field(max_length=3)  # maxItems: greedy may repeat a shape forever

    r = client.beta.chat.completions.parse(model=MODEL_ID, temperature=0, max_tokens=200, response_format=Drawing,
                                           messages=[{"role": "user", "content": "Draw two circles and a square."}])
    drawing = r.choices[0].message.parsed
    assert isinstance(drawing, Drawing) and all(isinstance(x, (Circle, Square)) for x in drawing.shapes)


def test_json_schema_errors(server):
    msgs = [{"role": "user", "content": "Hi"}]
    cases = [
        ({"type": "string", "pattern": "^a"}, "pattern"),
        ({"type": "integer", "minimum": 0}, "minimum"),
        ({"anyOf": [{"type": "object"}, {"type": "object", "properties": {"a": {}}}]}, "begin with"),
        ({"$ref": "#/$defs/nowhere"}, "nowhere"),
        ({"properties": {"a": {}}, "required": ["b"]}, "required"),
    ]
    for schema, words in cases:
        status, body = server.json("POST", "/v1/chat/completions",
                                   {"messages": msgs, "response_format": schema_format(schema)})
        assert status == 400 and body["error"]["param"] == "response_format", body
        assert words in body["error"]["message"], body
    for rf in [{"type": "json_schema"}, {"type": "json_schema", "json_schema": {"schema": {}}},
               {"type": "json_schema", "json_schema": {"name": "x", "schema": []}}]:
        status, body = server.json("POST", "/v1/chat/completions", {"messages": msgs, "response_format": rf})
        assert status == 400 and body["error"]["param"] == "response_format", body
    assert server.json("GET", "/health")[0] == 200


def test_keywords_are_case_sensitive(server):
    """"conSt" is no keyword (it once crashed the schema compiler): the
    property is any value, and null is a constant like any other."""
    msgs = [{"role": "user", "content": "Hi"}]
    schema = {"type": "object", "properties": {"k": {"conSt": "a"}, "n": {"const": None}}, "required": ["k", "n"]}
    status, body = server.json("POST", "/v1/chat/completions", {"messages": msgs, "max_tokens": 60, "temperature": 0,
                                                                "response_format": schema_format(schema)})
    assert status == 200, body
    reply = body["choices"][0]["message"]["content"]
    if body["choices"][0]["finish_reason"] == "stop":
        assert json.loads(reply)["n"] is None
    assert server.json("GET", "/health")[0] == 200
