//! One engine, many clients: queueing, the 503 when the queue is full,
//! cancellation when a client disconnects, and `/health` answering while a
//! generation runs. A slow stand-in engine makes the timing observable.
#![allow(clippy::unwrap_used)]

mod serve_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lucebox_cli::serve::ServeOptions;
use lucebox_cli::serve::scripted::ScriptedEngine;
use serde_json::json;
use serve_support::*;

/// A stand-in engine that takes `delay` per token.
fn slow_engine(delay_ms: u64) -> ScriptedEngine {
    let mut e = ScriptedEngine::new(tiny_files().codec_vocab(), 4096);
    e.token_delay = Duration::from_millis(delay_ms);
    e
}

/// Send a raw HTTP request and return the open socket.
fn raw_post(addr: std::net::SocketAddr, path: &str, body: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

#[test]
fn health_answers_while_a_generation_runs() {
    let server = start_with_engine(Box::new(slow_engine(10)), ServeOptions::default());
    let base = server.url();
    let a = agent();
    let started = Instant::now();
    let gen_thread = {
        let base = base.clone();
        std::thread::spawn(move || {
            post(
                &agent(),
                &format!("{base}/v1/chat/completions"),
                &chat_body("hi", 200),
            )
        })
    };
    wait_health(&a, &base, Duration::from_secs(5), |h| {
        h["requests"]["running"] == true
    });
    // The generation takes 2 s; answers that still say `running` were given
    // during it, not after it.
    for _ in 0..5 {
        let (s, h) = get(&a, &format!("{base}/health"));
        assert_eq!(s, 200);
        assert_eq!(h["requests"]["running"], true);
    }
    let (s, r) = gen_thread.join().unwrap();
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["usage"]["completion_tokens"], 200);
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[test]
fn a_full_queue_answers_503_and_queued_requests_all_finish() {
    let server = start_with_engine(
        Box::new(slow_engine(10)),
        ServeOptions {
            queue_capacity: 2,
            ..ServeOptions::default()
        },
    );
    let base = server.url();
    let a = agent();
    let spawn = |n: u64| {
        let base = base.clone();
        std::thread::spawn(move || {
            post(
                &agent(),
                &format!("{base}/v1/chat/completions"),
                &chat_body("hi", n),
            )
        })
    };
    // One running (2 s), then two waiting.
    let running = spawn(200);
    wait_health(&a, &base, Duration::from_secs(5), |h| {
        h["requests"]["running"] == true
    });
    let waiting = [spawn(3), spawn(3)];
    wait_health(&a, &base, Duration::from_secs(5), |h| {
        h["requests"]["queued"] == 2
    });
    let (s, v) = post(
        &a,
        &format!("{base}/v1/chat/completions"),
        &chat_body("hi", 3),
    );
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "server_overloaded");
    let (s, v) = post(
        &a,
        &format!("{base}/v1/messages"),
        &json!({"max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["type"], "overloaded_error");
    // Nothing queued was lost.
    assert_eq!(running.join().unwrap().0, 200);
    for w in waiting {
        let (s, r) = w.join().unwrap();
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["usage"]["completion_tokens"], 3);
    }
    let h = wait_health(&a, &base, Duration::from_secs(5), |h| {
        h["requests"]["running"] == false
    });
    assert_eq!(h["requests"]["completed"], 3);
    assert_eq!(h["requests"]["rejected"], 2);
    assert_eq!(h["requests"]["queued"], 0);
}

#[test]
fn a_disconnected_streaming_client_stops_its_generation() {
    let engine = slow_engine(10);
    let tokens = engine.tokens_generated.clone();
    let server = start_with_engine(Box::new(engine), ServeOptions::default());
    let a = agent();
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000, "stream": true});
    let mut s = raw_post(server.addr, "/v1/chat/completions", &body.to_string());
    // Read until some tokens have streamed, then hang up.
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"content\":\"")
        || tokens.load(Ordering::SeqCst) < 5
    {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let h = wait_health(&a, &server.url(), Duration::from_secs(5), |h| {
        h["requests"]["cancelled"] == 1 && h["requests"]["running"] == false
    });
    assert_eq!(h["requests"]["completed"], 0);
    let made = tokens.load(Ordering::SeqCst);
    // 2000 tokens would take 20 s; the generation stopped within a few tokens.
    assert!(made < 200, "{made} tokens generated after the client left");
    // The engine is free again.
    let (st, _) = post(
        &a,
        &format!("{}/v1/chat/completions", server.url()),
        &chat_body("hi", 2),
    );
    assert_eq!(st, 200);
}

#[test]
fn a_disconnected_plain_client_stops_its_generation() {
    let engine = slow_engine(10);
    let tokens = engine.tokens_generated.clone();
    let server = start_with_engine(Box::new(engine), ServeOptions::default());
    let a = agent();
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let before = tokens.load(Ordering::SeqCst);
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000});
        let s = raw_post(server.addr, path, &body.to_string());
        wait_health(&a, &server.url(), Duration::from_secs(5), |h| {
            h["requests"]["running"] == true
        });
        drop(s);
        wait_health(&a, &server.url(), Duration::from_secs(5), |h| {
            h["requests"]["running"] == false
        });
        let made = tokens.load(Ordering::SeqCst) - before;
        assert!(
            made < 200,
            "{path}: {made} tokens generated after the client left"
        );
    }
    let h = get(&a, &format!("{}/health", server.url())).1;
    assert_eq!(h["requests"]["cancelled"], 2);
}

#[test]
fn a_client_that_leaves_while_queued_costs_at_most_a_few_tokens() {
    let engine = slow_engine(10);
    let tokens = engine.tokens_generated.clone();
    let server = start_with_engine(Box::new(engine), ServeOptions::default());
    let base = server.url();
    let a = agent();
    let first = {
        let base = base.clone();
        std::thread::spawn(move || {
            post(
                &agent(),
                &format!("{base}/v1/chat/completions"),
                &chat_body("hi", 100),
            )
        })
    };
    wait_health(&a, &base, Duration::from_secs(5), |h| {
        h["requests"]["running"] == true
    });
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000, "stream": true});
    let s = raw_post(server.addr, "/v1/chat/completions", &body.to_string());
    wait_health(&a, &base, Duration::from_secs(5), |h| {
        h["requests"]["queued"] == 1
    });
    drop(s);
    assert_eq!(first.join().unwrap().0, 200);
    let h = wait_health(&a, &base, Duration::from_secs(5), |h| {
        h["requests"]["queued"] == 0 && h["requests"]["running"] == false
    });
    assert_eq!(h["requests"]["cancelled"], 1);
    // The first request's 100 tokens, and at most a few of the second: a
    // streaming client that hung up is noticed at the next write.
    let made = tokens.load(Ordering::SeqCst);
    assert!(made <= 105, "{made} tokens");
}

#[test]
fn requests_are_served_in_arrival_order() {
    let server = start_with_engine(Box::new(slow_engine(10)), ServeOptions::default());
    let base = server.url();
    let a = agent();
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let blocker = {
        let base = base.clone();
        std::thread::spawn(move || {
            post(
                &agent(),
                &format!("{base}/v1/chat/completions"),
                &chat_body("hi", 200),
            )
        })
    };
    wait_health(&a, &base, Duration::from_secs(5), |h| {
        h["requests"]["running"] == true
    });
    let mut handles = vec![];
    for i in 0..4u64 {
        let url = format!("{base}/v1/chat/completions");
        let order = order.clone();
        handles.push(std::thread::spawn(move || {
            let (s, _) = post(&agent(), &url, &chat_body("hi", 4));
            assert_eq!(s, 200);
            order.lock().unwrap().push(i);
        }));
        // Each request is queued before the next is sent.
        wait_health(&a, &base, Duration::from_secs(5), |h| {
            h["requests"]["queued"] == i + 1
        });
    }
    assert_eq!(blocker.join().unwrap().0, 200);
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
}

/// Fails or panics on prompts that contain the token of `b'!'`; echoes
/// otherwise.
struct BrittleEngine {
    bang: u32,
}

impl lucebox_models::Engine for BrittleEngine {
    fn describe(&self) -> String {
        "brittle test engine".into()
    }
    fn max_context(&self) -> usize {
        1024
    }
    fn generate(
        &mut self,
        request: &lucebox_models::GenerationRequest,
        on_token: &mut dyn FnMut(u32) -> std::ops::ControlFlow<()>,
    ) -> Result<lucebox_models::GenerationOutcome, lucebox_models::ModelError> {
        let bangs = request.prompt.iter().filter(|&&t| t == self.bang).count();
        let _ = on_token(request.prompt[0]);
        match bangs {
            0 => Ok(lucebox_models::GenerationOutcome {
                generated: vec![request.prompt[0]],
                stop: lucebox_models::StopReason::Length,
                prefill_seconds: 0.0,
                decode_seconds: 0.0,
            }),
            1 => Err(lucebox_models::ModelError::Other(
                "simulated device error".into(),
            )),
            _ => panic!("simulated engine bug"),
        }
    }
}

#[test]
fn engine_failures_are_reported_and_the_server_keeps_serving() {
    // The simulated panic is expected: keep it out of the test log (its
    // message still reaches the assertions through the 500 answer).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() != Some("lucebox-engine") {
            default_hook(info);
        }
    }));
    let files = tiny_files();
    use lucebox_cli::serve::codec::TextCodec;
    let bang = files.codec.encode("!").unwrap()[0];
    let server = start_with_engine(Box::new(BrittleEngine { bang }), ServeOptions::default());
    let a = agent();
    let url = format!("{}/v1/chat/completions", server.url());
    let body =
        |text: &str| json!({"messages": [{"role": "user", "content": text}], "max_tokens": 1});
    let (s, v) = post(&a, &url, &body("fine"));
    assert_eq!(s, 200, "{v}");
    // An engine error: 500 with an error object.
    let (s, v) = post(&a, &url, &body("!"));
    assert_eq!(s, 500, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("simulated device error")
    );
    // An engine panic is caught: 500, and the worker thread lives on.
    let (s, v) = post(&a, &url, &body("! !"));
    assert_eq!(s, 500, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("panicked"));
    // Streaming: the error arrives as the last event before [DONE].
    let mut sbody = body("!");
    sbody["stream"] = json!(true);
    let (s, events) = post_sse(&a, &url, &sbody);
    assert_eq!(s, 200);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert!(
        events[events.len() - 2]
            .data
            .contains("simulated device error")
    );
    // Anthropic streaming: an `error` event.
    let (_, events) = post_sse(
        &a,
        &format!("{}/v1/messages", server.url()),
        &json!({"max_tokens": 1, "stream": true, "messages": [{"role": "user", "content": "!"}]}),
    );
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    assert!(last.data.contains("api_error"));
    let (s, _) = post(&a, &url, &body("fine again"));
    assert_eq!(s, 200);
    let h = get(&a, &format!("{}/health", server.url())).1;
    assert_eq!(h["requests"]["failed"], 4);
}
