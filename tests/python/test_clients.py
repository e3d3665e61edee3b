"""The official `openai` and `anthropic` Python clients against `lucebox serve`
(tiny random-weight checkpoint: the text is gibberish, the protocol is real)."""

import anthropic
import httpx
import openai
import pytest

# Any model name is accepted; the loaded model answers.
MODEL = "local"


@pytest.fixture(scope="module")
def oai(server_url):
    return openai.OpenAI(base_url=f"{server_url}/v1", api_key="not-needed", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def claude(server_url):
    return anthropic.Anthropic(base_url=server_url, api_key="not-needed", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def context_length(oai):
    return oai.models.list().data[0].model_extra["context_length"]


def test_health_and_models(server_url, oai, context_length):
    health = httpx.get(f"{server_url}/health", timeout=10).json()
    assert health["status"] == "ok"
    models = oai.models.list().data
    assert len(models) == 1 and models[0].id == health["model"]
    assert models[0].owned_by == "lucebox"
    assert context_length == health["context_length"] > 0


def test_chat_completion(oai):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello."},
    ]
    r = oai.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    again = oai.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    assert again.choices[0].message.content == choice.message.content


def test_chat_completion_streaming_matches(oai):
    messages = [{"role": "user", "content": "Stream a reply."}]
    plain = oai.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, temperature=0)
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == plain.choices[0].message.content
    assert finish == plain.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens


def test_chat_sampling_parameters_and_stop(oai):
    kwargs = dict(
        model=MODEL,
        messages=[{"role": "user", "content": "Sample."}],
        max_tokens=16,
        temperature=0.8,
        top_p=0.9,
        seed=1234,
        presence_penalty=0.2,
        frequency_penalty=0.2,
        extra_body={"top_k": 20, "repetition_penalty": 1.05},
    )
    a = oai.chat.completions.create(**kwargs)
    b = oai.chat.completions.create(**kwargs)
    assert a.choices[0].message.content == b.choices[0].message.content
    text = a.choices[0].message.content
    if len(text) >= 4:
        stop = text[2:4]
        cut = oai.chat.completions.create(**kwargs, stop=[stop])
        assert cut.choices[0].message.content == text[: text.index(stop)]
        assert cut.choices[0].finish_reason == "stop"


def test_text_completions(oai):
    r = oai.completions.create(model=MODEL, prompt="The quick brown", max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].finish_reason in ("stop", "length")
    streamed = "".join(
        c.choices[0].text
        for c in oai.completions.create(model=MODEL, prompt="The quick brown", max_tokens=8, temperature=0, stream=True)
        if c.choices
    )
    assert streamed == r.choices[0].text
    ids = oai.completions.create(model=MODEL, prompt=[1, 87, 85], max_tokens=4, temperature=0)
    assert ids.usage.prompt_tokens == 3


def test_openai_errors(oai, context_length):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=MODEL, messages=[], max_tokens=4)
    assert e.value.status_code == 400
    assert "messages" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * (context_length + 8)}], max_tokens=4
        )
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=9)


def test_anthropic_messages(claude):
    kwargs = dict(
        model="lucebox-local",
        max_tokens=12,
        system="You are terse.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}],
        # Newer clients dropped the `temperature` argument; the API still takes it.
        extra_body={"temperature": 0},
    )
    m = claude.messages.create(**kwargs)
    assert m.type == "message" and m.role == "assistant"
    assert m.content[0].type == "text"
    assert m.stop_reason in ("end_turn", "max_tokens")
    assert m.usage.input_tokens > 0 and 0 < m.usage.output_tokens <= 12

    with claude.messages.stream(**kwargs) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == m.content[0].text
    assert final.content[0].text == m.content[0].text
    assert final.stop_reason == m.stop_reason
    assert final.usage.output_tokens == m.usage.output_tokens

    raw_events = [e.type for e in claude.messages.create(**kwargs, stream=True)]
    assert raw_events[:2] == ["message_start", "content_block_start"]
    assert raw_events[-3:] == ["content_block_stop", "message_delta", "message_stop"]

    text = m.content[0].text
    if len(text) >= 4:
        stop = text[2:4]
        cut = claude.messages.create(**kwargs, stop_sequences=[stop])
        assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
        assert cut.content[0].text == text[: text.index(stop)]


def test_anthropic_errors(claude):
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model="x", max_tokens=4, messages=[])
    assert e.value.status_code == 400
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "invalid_request_error"
