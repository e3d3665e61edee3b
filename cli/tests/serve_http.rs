//! `lucebox serve` through real HTTP (ureq) on 127.0.0.1: every endpoint,
//! streaming and not, parameters, and the 4xx answers to client mistakes.
#![allow(clippy::unwrap_used)]

mod serve_support;

use std::time::Duration;

use lucebox_cli::serve::{BackgroundServer, ServeOptions};
use serde_json::{Value, json};
use serve_support::*;

fn opts() -> ServeOptions {
    ServeOptions::default()
}

fn content_of(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn health_and_models_describe_the_served_model() {
    let server = start_model(opts());
    let a = agent();
    let (status, h) = get(&a, &format!("{}/health", server.url()));
    assert_eq!(status, 200);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["requests"]["running"], false);
    let (status, m) = get(&a, &format!("{}/v1/models", server.url()));
    assert_eq!(status, 200);
    assert_eq!(m["object"], "list");
    let model = &m["data"][0];
    assert_eq!(model["id"], "tiny-chat-model");
    assert_eq!(model["owned_by"], "lucebox");
    assert_eq!(model["context_length"], 1024);
    let (status, one) = get(&a, &format!("{}/v1/models/tiny-chat-model", server.url()));
    assert_eq!((status, &one["id"]), (200, &json!("tiny-chat-model")));
    let (status, missing) = get(&a, &format!("{}/v1/models/gpt-4", server.url()));
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "not_found");
}

#[test]
fn chat_completion_is_deterministic_and_counts_tokens() {
    let server = start_model(opts());
    let a = agent();
    let url = format!("{}/v1/chat/completions", server.url());
    let (status, r1) = post(&a, &url, &chat_body("Hello there", 12));
    assert_eq!(status, 200, "{r1}");
    assert_eq!(r1["object"], "chat.completion");
    assert_eq!(r1["model"], "tiny-chat-model");
    assert_eq!(r1["choices"][0]["message"]["role"], "assistant");
    let usage = &r1["usage"];
    let prompt_tokens = usage["prompt_tokens"].as_u64().unwrap();
    let completion_tokens = usage["completion_tokens"].as_u64().unwrap();
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        prompt_tokens + completion_tokens
    );
    // The prompt is the ChatML rendering of the message.
    let (_, counted) = post(
        &a,
        &format!("{}/v1/messages/count_tokens", server.url()),
        &json!({"messages": [{"role": "user", "content": "Hello there"}]}),
    );
    assert_eq!(counted["input_tokens"].as_u64().unwrap(), prompt_tokens);
    match r1["choices"][0]["finish_reason"].as_str().unwrap() {
        "length" => assert_eq!(completion_tokens, 12),
        "stop" => assert!(completion_tokens <= 12),
        other => panic!("finish_reason {other}"),
    }
    // Greedy: the same request gives the same text.
    let (_, r2) = post(&a, &url, &chat_body("Hello there", 12));
    assert_eq!(content_of(&r1), content_of(&r2));
    // max_completion_tokens wins over max_tokens.
    let mut body = chat_body("Hello there", 12);
    body["max_completion_tokens"] = json!(3);
    let (_, r3) = post(&a, &url, &body);
    assert!(r3["usage"]["completion_tokens"].as_u64().unwrap() <= 3);
    assert!(content_of(&r1).starts_with(&content_of(&r3)));
}

#[test]
fn seeded_sampling_repeats_and_parameters_are_accepted() {
    let server = start_model(opts());
    let a = agent();
    let url = format!("{}/v1/chat/completions", server.url());
    let body = json!({
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count"}],
        "max_tokens": 16, "temperature": 0.9, "top_p": 0.95, "top_k": 40, "seed": 7,
        "presence_penalty": 0.5, "frequency_penalty": 0.3, "repetition_penalty": 1.1,
        "chat_template_kwargs": {"enable_thinking": false},
    });
    let (s1, r1) = post(&a, &url, &body);
    let (s2, r2) = post(&a, &url, &body);
    assert_eq!((s1, s2), (200, 200), "{r1} {r2}");
    assert_eq!(content_of(&r1), content_of(&r2));
}

#[test]
fn streaming_chat_matches_the_plain_reply_and_ends_with_done() {
    let server = start_model(opts());
    let a = agent();
    let url = format!("{}/v1/chat/completions", server.url());
    let (_, plain) = post(&a, &url, &chat_body("Stream me", 10));
    let mut body = chat_body("Stream me", 10);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, events) = post_sse(&a, &url, &body);
    assert_eq!(status, 200);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut text = String::new();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    assert_eq!(text, content_of(&plain));
    // Last two: the finish chunk, then the usage chunk with no choices.
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(
        finish["choices"][0]["finish_reason"],
        plain["choices"][0]["finish_reason"]
    );
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], plain["usage"]);
    // Without include_usage no chunk carries usage.
    body["stream_options"] = json!(null);
    let (_, events) = post_sse(&a, &url, &body);
    assert!(events.iter().all(|e| !e.data.contains("\"usage\"")));
}

#[test]
fn stop_strings_cut_the_text() {
    let server = start_model(opts());
    let a = agent();
    let url = format!("{}/v1/chat/completions", server.url());
    let (_, full) = post(&a, &url, &chat_body("Tell me", 24));
    let text = content_of(&full);
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 6, "need some text to cut: {text:?}");
    let stop: String = chars[3..5].iter().collect();
    let expected = &text[..text.find(&stop).unwrap()];
    for stop_field in [json!(stop), json!(["\u{1}never\u{1}", stop])] {
        let mut body = chat_body("Tell me", 24);
        body["stop"] = stop_field;
        let (status, cut) = post(&a, &url, &body);
        assert_eq!(status, 200, "{cut}");
        assert_eq!(content_of(&cut), expected);
        assert_eq!(cut["choices"][0]["finish_reason"], "stop");
        // Streaming cuts at the same place.
        body["stream"] = json!(true);
        let (_, events) = post_sse(&a, &url, &body);
        let streamed: String = events
            .iter()
            .filter(|e| e.data != "[DONE]")
            .filter_map(|e| {
                let v: Value = serde_json::from_str(&e.data).unwrap();
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(streamed, expected);
    }
}

#[test]
fn text_completions_take_strings_and_token_ids() {
    let server = start_model(opts());
    let a = agent();
    let url = format!("{}/v1/completions", server.url());
    let (status, r) = post(
        &a,
        &url,
        &json!({"prompt": "The quick brown", "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "text_completion");
    let text = r["choices"][0]["text"].as_str().unwrap().to_string();
    let prompt_tokens = r["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 0);
    // The same prompt as a one-element list gives the same text.
    let (_, r2) = post(
        &a,
        &url,
        &json!({"prompt": ["The quick brown"], "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(r2["choices"][0]["text"], text.as_str());
    // Token ids.
    let (status, r3) = post(
        &a,
        &url,
        &json!({"prompt": [1, 87, 85], "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(status, 200, "{r3}");
    assert_eq!(r3["usage"]["prompt_tokens"], 3);
    // Streaming text completion.
    let (_, events) = post_sse(
        &a,
        &url,
        &json!({"prompt": "The quick brown", "max_tokens": 8, "temperature": 0, "stream": true}),
    );
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let streamed: String = events[..events.len() - 1]
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            v["choices"][0]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(streamed, text);
}

#[test]
fn anthropic_messages_plain_and_streaming() {
    let server = start_model(opts());
    let a = agent();
    let url = format!("{}/v1/messages", server.url());
    let body = json!({
        "model": "claude-whatever",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "temperature": 0,
        "thinking": {"type": "disabled"},
        "metadata": {"user_id": "someone"},
    });
    let resp = a
        .post(&url)
        .header("x-api-key", "anything")
        .header("anthropic-version", "2023-06-01")
        .send(body.to_string())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let plain: Value = serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(plain["type"], "message");
    assert_eq!(plain["role"], "assistant");
    assert_eq!(plain["content"][0]["type"], "text");
    assert!(["end_turn", "max_tokens"].contains(&plain["stop_reason"].as_str().unwrap()));
    let input_tokens = plain["usage"]["input_tokens"].as_u64().unwrap();
    assert!(input_tokens > 0);

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let (status, events) = post_sse(&a, &url, &sbody);
    assert_eq!(status, 200);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(names[..2], ["message_start", "content_block_start"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let mut text = String::new();
    for e in &events {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(v["type"], e.event.as_deref().unwrap());
        if e.event.as_deref() == Some("content_block_delta") {
            assert_eq!(v["delta"]["type"], "text_delta");
            text.push_str(v["delta"]["text"].as_str().unwrap());
        }
    }
    assert_eq!(text, plain["content"][0]["text"].as_str().unwrap());
    let start: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(start["message"]["usage"]["input_tokens"], input_tokens);
    let delta: Value = serde_json::from_str(&events[events.len() - 2].data).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], plain["stop_reason"]);
    assert_eq!(
        delta["usage"]["output_tokens"],
        plain["usage"]["output_tokens"]
    );

    // stop_sequences cut the text and are reported.
    let full = plain["content"][0]["text"].as_str().unwrap();
    let chars: Vec<char> = full.chars().collect();
    if chars.len() >= 4 {
        let stop: String = chars[2..4].iter().collect();
        let mut cbody = body.clone();
        cbody["stop_sequences"] = json!([stop]);
        let (_, cut) = post(&a, &url, &cbody);
        assert_eq!(cut["stop_reason"], "stop_sequence");
        assert_eq!(cut["stop_sequence"], stop.as_str());
        assert_eq!(
            cut["content"][0]["text"],
            &full[..full.find(&stop).unwrap()]
        );
    }
}

fn assert_openai_error(status: u16, v: &Value, expected_status: u16, needle: &str) {
    assert_eq!(status, expected_status, "{v}");
    let e = &v["error"];
    assert!(e["message"].as_str().unwrap().contains(needle), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
}

#[test]
fn client_mistakes_get_openai_style_4xx() {
    let server = start_model(ServeOptions {
        max_body_bytes: 64 * 1024,
        ..opts()
    });
    let a = agent();
    let url = format!("{}/v1/chat/completions", server.url());
    let (s, v) = post_raw(&a, &url, "{\"messages\": [");
    assert_openai_error(s, &v, 400, "not valid JSON");
    let (s, v) = post_raw(&a, &url, "");
    assert_openai_error(s, &v, 400, "empty");
    let (s, v) = post_raw(&a, &url, "[1, 2]");
    assert_openai_error(s, &v, 400, "invalid");
    let (s, v) = post(
        &a,
        &url,
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}),
    );
    assert_openai_error(s, &v, 400, "max_tokens");
    assert_eq!(v["error"]["param"], "max_tokens");
    let (s, v) = post(
        &a,
        &url,
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}),
    );
    assert_openai_error(s, &v, 400, "max_tokens");
    let (s, v) = post(&a, &url, &json!({"messages": "hello"}));
    assert_openai_error(s, &v, 400, "messages");
    let (s, v) = post(&a, &url, &json!({"messages": []}));
    assert_openai_error(s, &v, 400, "must not be empty");
    let (s, v) = post(&a, &url, &json!({"max_tokens": 3}));
    assert_openai_error(s, &v, 400, "`messages` is required");
    let (s, v) = post(
        &a,
        &url,
        &json!({"messages": [{"role": "wizard", "content": "hi"}]}),
    );
    assert_openai_error(s, &v, 400, "unknown role");
    let (s, v) = post(
        &a,
        &url,
        &json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
    );
    assert_openai_error(s, &v, 400, "not supported");
    let (s, v) = post(
        &a,
        &url,
        &json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 7}),
    );
    assert_openai_error(s, &v, 400, "temperature");
    let (s, v) = post(
        &a,
        &url,
        &json!({"messages": [{"role": "user", "content": "hi"}], "top_k": -3}),
    );
    assert_openai_error(s, &v, 400, "top_k");
    let (s, v) = post(
        &a,
        &url,
        &json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}),
    );
    assert_openai_error(s, &v, 400, "n: 1");
    let (s, v) = post(
        &a,
        &url,
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}),
    );
    assert_openai_error(s, &v, 400, "at least 1");
    let (s, v) = post(
        &a,
        &url,
        &json!({"messages": [{"role": "user", "content": "hi"}], "stop": 5}),
    );
    assert_openai_error(s, &v, 400, "stop");
    // A prompt longer than the context (1024 tokens).
    let long = "lorem ipsum dolor sit amet ".repeat(400);
    let (s, v) = post(&a, &url, &chat_body(&long, 4));
    assert_openai_error(s, &v, 400, "context");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    // A body over the limit.
    let huge = "x".repeat(100 * 1024);
    let (s, v) = post(&a, &url, &chat_body(&huge, 4));
    assert_openai_error(s, &v, 413, "larger than");
    // Absurd max_tokens is clamped to the room left in the context.
    let (s, v) = post(&a, &url, &chat_body("hi", 1_000_000_000_000));
    assert_eq!(s, 200, "{v}");
    let used = v["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used <= 1024, "{v}");
    // Completions: bad token ids, several prompts, echo.
    let curl = format!("{}/v1/completions", server.url());
    let (s, v) = post(&a, &curl, &json!({"prompt": [1, 99999]}));
    assert_openai_error(s, &v, 400, "outside the vocabulary");
    let (s, v) = post(&a, &curl, &json!({"prompt": ["a", "b"]}));
    assert_openai_error(s, &v, 400, "one prompt");
    let (s, v) = post(&a, &curl, &json!({"prompt": ""}));
    assert_openai_error(s, &v, 400, "empty");
    let (s, v) = post(&a, &curl, &json!({"prompt": "a", "echo": true}));
    assert_openai_error(s, &v, 400, "echo");
    // Unknown route and wrong method.
    let (s, v) = post(&a, &format!("{}/v1/nothing", server.url()), &json!({}));
    assert_openai_error(s, &v, 404, "no route");
    let (s, v) = get(&a, &url);
    assert_openai_error(s, &v, 405, "not allowed");
    // The server is still fine.
    let (s, _) = post(&a, &url, &chat_body("hi", 2));
    assert_eq!(s, 200);
}

#[test]
fn anthropic_mistakes_get_anthropic_style_4xx() {
    let server = start_model(opts());
    let a = agent();
    let url = format!("{}/v1/messages", server.url());
    let check = |status: u16, v: &Value, expected: u16, needle: &str| {
        assert_eq!(status, expected, "{v}");
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    };
    let (s, v) = post(
        &a,
        &url,
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    );
    check(s, &v, 400, "max_tokens");
    let (s, v) = post_raw(&a, &url, "{not json");
    check(s, &v, 400, "not valid JSON");
    let (s, v) = post(&a, &url, &json!({"max_tokens": 5, "messages": []}));
    check(s, &v, 400, "must not be empty");
    let (s, v) = post(
        &a,
        &url,
        &json!({"max_tokens": 5, "messages": [{"role": "system", "content": "hi"}]}),
    );
    check(s, &v, 400, "unknown role");
    let (s, v) = post(
        &a,
        &url,
        &json!({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}),
    );
    check(s, &v, 400, "not supported");
    let (s, v) = post(
        &a,
        &url,
        &json!({"max_tokens": "many", "messages": [{"role": "user", "content": "hi"}]}),
    );
    check(s, &v, 400, "max_tokens");
    let (s, v) = post(&a, &format!("{url}/nope"), &json!({}));
    assert_eq!(s, 404);
    assert_eq!(v["error"]["type"], "not_found_error");
}

#[test]
fn api_key_is_required_when_configured() {
    let server = start_model(ServeOptions {
        api_key: Some("sekret".into()),
        ..opts()
    });
    let a = agent();
    let url = format!("{}/v1/chat/completions", server.url());
    let (s, v) = post(&a, &url, &chat_body("hi", 2));
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error"]["type"], "authentication_error");
    let r = a
        .post(&url)
        .header("authorization", "Bearer sekret")
        .send(chat_body("hi", 2).to_string())
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = a
        .post(&format!("{}/v1/messages", server.url()))
        .header("x-api-key", "sekret")
        .send(json!({"max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // /health stays open.
    assert_eq!(get(&a, &format!("{}/health", server.url())).0, 200);
}

/// The body's arrival after its head, in the keep-alive tests: long enough
/// that the server has answered (without the fix) before it comes.
const BODY_DELAY: Duration = Duration::from_millis(200);

/// Send `method path` with a JSON body (after [`BODY_DELAY`]) on one
/// connection, expect `status`, then check that `GET /health` on the same
/// connection still gets its answer.
fn connection_survives(
    server: &BackgroundServer,
    method: &str,
    path: &str,
    extra_headers: &[(&str, &str)],
    status: u16,
) -> Value {
    let mut conn = RawConn::open(server.addr);
    let body = chat_body("hi", 2).to_string();
    conn.send(
        method,
        path,
        extra_headers,
        body.as_bytes(),
        Some(BODY_DELAY),
    );
    let first = conn.read_response();
    assert_eq!(first.status, status, "{first:?}");
    assert_ne!(first.header("connection"), Some("close"), "{first:?}");
    conn.send("GET", "/health", &[], b"", None);
    let health = conn.read_response();
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.json()["status"], "ok", "{health:?}");
    first.json()
}

#[test]
fn a_404_to_a_request_with_a_body_keeps_the_connection() {
    let server = start_model(opts());
    let v = connection_survives(&server, "POST", "/v1/nothing", &[], 404);
    assert_eq!(v["error"]["code"], "not_found");
}

#[test]
fn a_405_to_a_request_with_a_body_keeps_the_connection() {
    let server = start_model(opts());
    let v = connection_survives(&server, "PUT", "/v1/chat/completions", &[], 405);
    assert_eq!(v["error"]["code"], "method_not_allowed");
}

#[test]
fn a_401_to_a_request_with_a_body_keeps_the_connection() {
    let server = start_model(ServeOptions {
        api_key: Some("sekret".into()),
        ..opts()
    });
    let v = connection_survives(&server, "POST", "/v1/chat/completions", &[], 401);
    assert_eq!(v["error"]["type"], "authentication_error");
    // A wrong key, then the right one, on one connection.
    let mut conn = RawConn::open(server.addr);
    let body = chat_body("hi", 2).to_string();
    conn.send(
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer nope")],
        body.as_bytes(),
        Some(BODY_DELAY),
    );
    assert_eq!(conn.read_response().status, 401);
    conn.send(
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer sekret")],
        body.as_bytes(),
        None,
    );
    let ok = conn.read_response();
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["object"], "chat.completion");
}

#[test]
fn a_body_over_the_limit_gets_413_and_connection_close() {
    let server = start_model(ServeOptions {
        max_body_bytes: 1024,
        ..opts()
    });
    let huge = chat_body(&"x".repeat(4096), 2).to_string();
    let mut conn = RawConn::open(server.addr);
    conn.send("POST", "/v1/chat/completions", &[], huge.as_bytes(), None);
    let r = conn.read_response();
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    // An early reply to an oversized body keeps its status, but the server
    // stops reading at the limit and says it closes.
    let mut conn = RawConn::open(server.addr);
    conn.send(
        "POST",
        "/v1/nothing",
        &[],
        huge.as_bytes(),
        Some(BODY_DELAY),
    );
    let r = conn.read_response();
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    // A body within the limit is still fine.
    connection_survives(&server, "POST", "/v1/nothing", &[], 404);
}

#[test]
fn the_binary_serves_and_prints_its_address() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lucebox"))
        .args([
            "serve",
            "--port",
            "0",
            "--backend",
            MODEL_BACKEND,
            "--model",
        ])
        .arg(tiny_model_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    let a = agent();
    let (s, v) = post(
        &a,
        &format!("{base}/v1/chat/completions"),
        &chat_body("hi", 3),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(s, 200, "{v}");
}

#[test]
fn an_eos_token_ends_a_reply_with_finish_reason_stop() {
    let server = start_model(opts());
    let a = agent();
    let url = format!("{}/v1/chat/completions", server.url());
    // The random model ends some sampled replies with <|im_end|>; find one.
    let max_tokens = 40;
    let stopped = (0..64)
        .map(|seed| {
            let body = json!({
                "messages": [{"role": "user", "content": "Hello"}],
                "max_tokens": max_tokens, "temperature": 1.0, "seed": seed,
            });
            post(&a, &url, &body).1
        })
        .find(|r| r["choices"][0]["finish_reason"] == "stop")
        .expect("no reply of 64 ended with an EOS token");
    let n = stopped["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(n < max_tokens, "{stopped}");
    // The EOS token is counted but not shown.
    assert!(!content_of(&stopped).contains("<|im_end|>"));
    let (_, plain) = post(
        &a,
        &format!("{}/v1/messages", server.url()),
        &json!({"max_tokens": 1, "messages": [{"role": "user", "content": "Hello"}]}),
    );
    assert_eq!(plain["stop_reason"], "max_tokens");
}

#[test]
fn a_gguf_model_is_served_with_its_embedded_tokenizer_and_template() {
    use lucebox_cli::cmd::serve::{BackendKind, load_backend, open_model_files};
    use lucebox_cli::serve::BackgroundServer;
    use lucebox_models::synth::{SynthFormat, SynthOptions, SynthQuant, synth};

    // The tiny checkpoint's dimensions, written as a synthetic GGUF (random
    // weights, synthetic vocabulary, ChatML template in the metadata).
    let cfg = tiny_files().model.config.clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let synth_opts = SynthOptions {
        format: SynthFormat::Gguf,
        quant: SynthQuant::Bf16,
        seed: 1,
        vocab_base: None,
    };
    synth(&cfg, &path, &synth_opts, &mut |_, _| {}).unwrap();
    let files = open_model_files(&path).unwrap();
    assert!(
        files.codec.has_own_template,
        "the GGUF's template was not found"
    );
    let backend = load_backend(files, BackendKind::Cpu, None).unwrap();
    let server = BackgroundServer::start(backend, opts(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let a = agent();
    let (s, m) = get(&a, &format!("{}/v1/models", server.url()));
    assert_eq!(s, 200);
    assert_eq!(m["data"][0]["id"], "tiny");
    let (s, r) = post(
        &a,
        &format!("{}/v1/chat/completions", server.url()),
        &chat_body("Hello", 6),
    );
    assert_eq!(s, 200, "{r}");
    assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() > 3);
    assert!(r["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
}
