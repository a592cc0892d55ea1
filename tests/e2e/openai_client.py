"""The official `openai` Python client against `r1host serve`, unchanged: chat (one-shot
and streamed), the reasoning split, n > 1, completions, 16 concurrent greedy clients
equal to sequential ones, bad inputs raising the client's usual exceptions, and the API
key. Run by host/tests/integration/serve_cli.rs with the interpreter in $R1_PY:

    python openai_client.py --base-url http://127.0.0.1:PORT/v1 --api-key KEY --model NAME
"""

import argparse
import concurrent.futures
import sys
import traceback

import openai


def chat(client, model, content, **kw):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], **kw
    )


def reasoning_of(message):
    return (message.model_extra or {}).get("reasoning_content") or ""


def test_chat_one_shot(client, model):
    r = chat(client, model, "What is 2+2?", max_tokens=12, temperature=0)
    assert r.object == "chat.completion", r.object
    assert r.id.startswith("chatcmpl-"), r.id
    assert r.model == model
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert isinstance(c.message.content, str)
    assert c.finish_reason in ("stop", "length"), c.finish_reason
    u = r.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert 1 <= u.completion_tokens <= 12
    assert u.completion_tokens_details.reasoning_tokens <= u.completion_tokens


def test_chat_stream_matches_one_shot(client, model):
    whole = chat(client, model, "Count to three.", max_tokens=16, temperature=0)
    stream = chat(
        client, model, "Count to three.", max_tokens=16, temperature=0,
        stream=True, stream_options={"include_usage": True},
    )
    content, reasoning, finish, usage = "", "", None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            content += c.delta.content or ""
            reasoning += (c.delta.model_extra or {}).get("reasoning_content") or ""
            finish = c.finish_reason or finish
    m = whole.choices[0].message
    assert content == m.content, (content, m.content)
    assert reasoning == reasoning_of(m), (reasoning, reasoning_of(m))
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_reasoning_split_and_raw(client, model):
    split = chat(client, model, "Think first.", max_tokens=24, temperature=0).choices[0].message
    raw = chat(
        client, model, "Think first.", max_tokens=24, temperature=0,
        extra_body={"reasoning_format": "none"},
    ).choices[0].message
    assert "reasoning_content" not in (raw.model_extra or {}), raw.model_extra
    # The default template opens <think> in the prompt: text up to </think> is reasoning.
    if "</think>" in raw.content:
        head, _, tail = raw.content.partition("</think>")
        assert reasoning_of(split).strip() == head.strip(), (reasoning_of(split), head)
        assert split.content.strip() == tail.strip(), (split.content, tail)
    else:
        assert reasoning_of(split).strip() == raw.content.strip(), (reasoning_of(split), raw.content)
        assert split.content == ""


def test_n_choices(client, model):
    r = chat(client, model, "Say something.", max_tokens=8, n=3, temperature=1.0, seed=7)
    assert [c.index for c in r.choices] == [0, 1, 2]
    again = chat(client, model, "Say something.", max_tokens=8, n=3, temperature=1.0, seed=7)
    assert [c.message for c in r.choices] == [c.message for c in again.choices]


def test_completions_and_models(client, model):
    r = client.completions.create(model=model, prompt="Once upon", max_tokens=5, temperature=0)
    assert r.object == "text_completion"
    assert isinstance(r.choices[0].text, str)
    assert model in [m.id for m in client.models.list()]


def test_concurrent_greedy_equals_sequential(client, model):
    prompts = [f"Question {i}: what is {i}+{3 * i}?" for i in range(16)]

    def answer(p):
        m = chat(client, model, p, max_tokens=10, temperature=0).choices[0].message
        return (m.content, reasoning_of(m))

    sequential = [answer(p) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        concurrent_answers = list(pool.map(answer, prompts))
    assert concurrent_answers == sequential


def expect(exc, f):
    try:
        f()
    except exc as e:
        return e
    raise AssertionError(f"expected {exc.__name__}")


def test_bad_inputs_raise_client_errors(client, model):
    e = expect(openai.BadRequestError, lambda: chat(client, model, "hi", n=1000))
    assert e.body["param"] == "n", e.body
    e = expect(
        openai.BadRequestError,
        lambda: client.chat.completions.create(model=model, messages=[{"role": "wizard", "content": "x"}]),
    )
    assert "wizard" in e.body["message"], e.body
    expect(openai.BadRequestError, lambda: chat(client, model, "hi", temperature=-1))
    e = expect(openai.NotFoundError, lambda: chat(client, "no-such-model", "hi"))
    assert e.body["code"] == "model_not_found", e.body


def test_wrong_key_is_refused(client, model):
    bad = openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0)
    expect(openai.AuthenticationError, lambda: bad.models.list())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=120)
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    passed = failed = 0
    for t in tests:
        try:
            t(client, args.model)
            passed += 1
            print(f"ok   {t.__name__}")
        except Exception:
            failed += 1
            print(f"FAIL {t.__name__}")
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
