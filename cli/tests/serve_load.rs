//! Bounded load test on loopback: 200 requests from 8 concurrent clients
//! (chat, streaming chat, completions and Anthropic messages mixed) against
//! the tiny checkpoint. Every request must succeed with the right number of
//! tokens; none may be lost. Prints requests, errors and p50/p99 latency.
#![allow(clippy::unwrap_used)]

mod serve_support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lucebox_cli::serve::ServeOptions;
use serde_json::json;
use serve_support::*;

const REQUESTS: usize = 200;
const CLIENTS: usize = 8;
const MAX_TOKENS: u64 = 8;

#[test]
fn load_200_requests_from_8_clients() {
    let server = start_model(ServeOptions::default());
    let base = server.url();
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<(usize, Result<Duration, String>)>> = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..CLIENTS {
            scope.spawn(|| {
                let a = agent();
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        if *n == REQUESTS {
                            return;
                        }
                        *n += 1;
                        *n - 1
                    };
                    let t = Instant::now();
                    let outcome = one_request(&a, &base, i).map(|()| t.elapsed());
                    results.lock().unwrap().push((i, outcome));
                }
            });
        }
    });
    let wall = started.elapsed();
    let results = results.into_inner().unwrap();
    let errors: Vec<&String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    let mut latencies: Vec<Duration> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().copied())
        .collect();
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let mut ids: Vec<usize> = results.iter().map(|(i, _)| *i).collect();
    ids.sort();
    ids.dedup();
    println!(
        "serve load test: {} requests from {CLIENTS} clients in {:.2} s ({:.1} req/s), {} errors, \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        results.len(),
        wall.as_secs_f64(),
        results.len() as f64 / wall.as_secs_f64(),
        errors.len(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );
    assert!(errors.is_empty(), "errors: {errors:?}");
    assert_eq!(ids.len(), REQUESTS, "lost requests");
    let h = get(&agent(), &format!("{base}/health")).1;
    assert_eq!(h["requests"]["completed"], REQUESTS as u64, "{h}");
    assert_eq!(h["requests"]["failed"], 0);
    assert_eq!(h["requests"]["rejected"], 0);
}

/// Request `i`: one of four kinds, each checked for a complete answer.
fn one_request(a: &ureq::Agent, base: &str, i: usize) -> Result<(), String> {
    let prompt = format!("Request number {i}: say something.");
    let check_tokens = |n: &serde_json::Value| {
        let n = n.as_u64().ok_or("no token count")?;
        if n == 0 || n > MAX_TOKENS {
            return Err(format!("request {i}: {n} completion tokens"));
        }
        Ok(())
    };
    match i % 4 {
        0 => {
            let (s, v) = post(
                a,
                &format!("{base}/v1/chat/completions"),
                &chat_body(&prompt, MAX_TOKENS),
            );
            if s != 200 {
                return Err(format!("request {i}: {s} {v}"));
            }
            check_tokens(&v["usage"]["completion_tokens"])
        }
        1 => {
            let mut body = chat_body(&prompt, MAX_TOKENS);
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
            let (s, events) = post_sse(a, &format!("{base}/v1/chat/completions"), &body);
            if s != 200 || events.last().map(|e| e.data.as_str()) != Some("[DONE]") {
                return Err(format!("request {i}: {s}, stream did not end with [DONE]"));
            }
            let usage: serde_json::Value =
                serde_json::from_str(&events[events.len() - 2].data).map_err(|e| e.to_string())?;
            check_tokens(&usage["usage"]["completion_tokens"])
        }
        2 => {
            let (s, v) = post(
                a,
                &format!("{base}/v1/completions"),
                &json!({"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0.8, "seed": i}),
            );
            if s != 200 {
                return Err(format!("request {i}: {s} {v}"));
            }
            check_tokens(&v["usage"]["completion_tokens"])
        }
        _ => {
            let (s, v) = post(
                a,
                &format!("{base}/v1/messages"),
                &json!({"max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": prompt}]}),
            );
            if s != 200 {
                return Err(format!("request {i}: {s} {v}"));
            }
            check_tokens(&v["usage"]["output_tokens"])
        }
    }
}
