//! The generation worker: one OS thread owns the engine and runs queued
//! requests one after another (FIFO). Generation is blocking CPU/GPU work, so
//! it never runs on the async executor; handlers talk to the worker through a
//! bounded queue and get text back through a channel. A handler that goes
//! away (client disconnected) drops its receiver, and the worker stops that
//! generation at the next token or skips it if it has not started.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::Instant;

use lucebox_models::{Engine, GenerationRequest, StopReason};
use serde::Serialize;
use tokio::sync::mpsc;

use super::codec::TextCodec;
use super::text::{IncrementalDecoder, StopMatcher};

/// One queued request.
pub struct GenerationJob {
    pub request: GenerationRequest,
    pub stop_strings: Vec<String>,
    pub events: mpsc::UnboundedSender<GenEvent>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    /// New text (never empty).
    Delta(String),
    /// Generation ended; always the last event of a job that ran.
    Finished(Finish),
    /// The engine failed; the last event.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    /// Every token the engine generated, the stop token included.
    pub completion_tokens: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token.
    StopToken,
    /// A stop string; the text was cut before it.
    StopString(String),
    /// `max_tokens` (or the context) was reached.
    Length,
}

/// Counters readable without touching the engine (for `/health`).
#[derive(Debug, Default)]
pub struct WorkerStats {
    queued: AtomicUsize,
    running: AtomicBool,
    completed: AtomicU64,
    cancelled: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Requests waiting for the engine.
    pub queued: usize,
    /// Whether a generation is running now.
    pub running: bool,
    pub completed: u64,
    /// Requests stopped or skipped because their client went away.
    pub cancelled: u64,
    pub failed: u64,
    /// Requests refused with 503 because the queue was full.
    pub rejected: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    QueueFull { capacity: usize },
    WorkerGone,
}

/// The handlers' side of the worker.
#[derive(Clone)]
pub struct WorkerHandle {
    queue: std_mpsc::SyncSender<GenerationJob>,
    stats: Arc<WorkerStats>,
    capacity: usize,
}

impl WorkerHandle {
    /// Start the worker thread; it ends when every handle is dropped.
    pub fn spawn(
        engine: Box<dyn Engine>,
        codec: Arc<dyn TextCodec>,
        queue_capacity: usize,
    ) -> std::io::Result<Self> {
        let capacity = queue_capacity.max(1);
        let (tx, rx) = std_mpsc::sync_channel(capacity);
        let stats = Arc::new(WorkerStats::default());
        let worker_stats = stats.clone();
        std::thread::Builder::new()
            .name("lucebox-engine".into())
            .spawn(move || worker_loop(engine, codec, rx, worker_stats))?;
        Ok(Self {
            queue: tx,
            stats,
            capacity,
        })
    }

    /// Queue a job; fails at once when the queue is full.
    pub fn submit(&self, job: GenerationJob) -> Result<(), SubmitError> {
        self.stats.queued.fetch_add(1, Ordering::SeqCst);
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.stats.queued.fetch_sub(1, Ordering::SeqCst);
                match e {
                    std_mpsc::TrySendError::Full(_) => {
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        Err(SubmitError::QueueFull {
                            capacity: self.capacity,
                        })
                    }
                    std_mpsc::TrySendError::Disconnected(_) => Err(SubmitError::WorkerGone),
                }
            }
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            queued: s.queued.load(Ordering::SeqCst),
            running: s.running.load(Ordering::SeqCst),
            completed: s.completed.load(Ordering::Relaxed),
            cancelled: s.cancelled.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
        }
    }
}

fn worker_loop(
    mut engine: Box<dyn Engine>,
    codec: Arc<dyn TextCodec>,
    jobs: std_mpsc::Receiver<GenerationJob>,
    stats: Arc<WorkerStats>,
) {
    while let Ok(job) = jobs.recv() {
        stats.queued.fetch_sub(1, Ordering::SeqCst);
        if job.events.is_closed() {
            // The client left while its request waited.
            stats.cancelled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        stats.running.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            run_job(engine.as_mut(), codec.as_ref(), &job)
        }));
        stats.running.store(false, Ordering::SeqCst);
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                JobOutcome::Failed(format!("the engine panicked: {msg}"))
            }
        };
        match outcome {
            JobOutcome::Finished(finish) => {
                tracing::info!(
                    prompt_tokens = finish.prompt_tokens,
                    completion_tokens = finish.completion_tokens,
                    reason = ?finish.reason,
                    seconds = started.elapsed().as_secs_f64(),
                    "request done"
                );
                stats.completed.fetch_add(1, Ordering::Relaxed);
                let _ = job.events.send(GenEvent::Finished(finish));
            }
            JobOutcome::ClientGone => {
                tracing::info!("client went away; generation stopped");
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            JobOutcome::Failed(msg) => {
                tracing::error!("generation failed: {msg}");
                stats.failed.fetch_add(1, Ordering::Relaxed);
                let _ = job.events.send(GenEvent::Failed(msg));
            }
        }
    }
}

enum JobOutcome {
    Finished(Finish),
    ClientGone,
    Failed(String),
}

fn run_job(engine: &mut dyn Engine, codec: &dyn TextCodec, job: &GenerationJob) -> JobOutcome {
    let stop_tokens: HashSet<u32> = job.request.stop_tokens.iter().copied().collect();
    let mut decoder = IncrementalDecoder::new();
    let mut matcher = StopMatcher::new(job.stop_strings.clone());
    let mut seen = 0usize;
    let mut client_gone = false;
    let mut stop_hit: Option<String> = None;
    let events = &job.events;
    let emit = |text: String, client_gone: &mut bool| {
        if !text.is_empty() && events.send(GenEvent::Delta(text)).is_err() {
            *client_gone = true;
        }
    };
    let result = engine.generate(&job.request, &mut |token| {
        seen += 1;
        if events.is_closed() {
            client_gone = true;
            return ControlFlow::Break(());
        }
        if stop_tokens.contains(&token) {
            return ControlFlow::Continue(());
        }
        let piece = decoder.push(codec, token);
        let released = matcher.push(&piece);
        emit(released.text, &mut client_gone);
        if client_gone {
            return ControlFlow::Break(());
        }
        if let Some(stop) = released.stop {
            stop_hit = Some(stop);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => return JobOutcome::Failed(e.to_string()),
    };
    if client_gone {
        return JobOutcome::ClientGone;
    }
    if stop_hit.is_none() {
        // The tail held by the decoder may still complete a stop string.
        let released = matcher.push(&decoder.flush(codec));
        emit(released.text, &mut client_gone);
        stop_hit = released.stop;
        if stop_hit.is_none() {
            emit(matcher.finish(), &mut client_gone);
        }
        if client_gone {
            return JobOutcome::ClientGone;
        }
    }
    let reason = match (stop_hit, outcome.stop) {
        (Some(stop), _) => FinishReason::StopString(stop),
        (None, StopReason::StopToken) => FinishReason::StopToken,
        (None, StopReason::Length) => FinishReason::Length,
        (None, StopReason::Cancelled) => {
            return JobOutcome::Failed("the engine stopped without a reason".into());
        }
    };
    JobOutcome::Finished(Finish {
        reason,
        prompt_tokens: job.request.prompt.len(),
        completion_tokens: seen.max(outcome.generated.len()),
    })
}
