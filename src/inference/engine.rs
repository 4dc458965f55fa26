//! The inference engine: one OS thread per device owns the TorchScript module.
//!
//! Callers (any thread, any study) hand in tiles and block on their own reply channel; the
//! device thread batches tiles across callers ([`BatchState`]), runs the network under a
//! no-grad guard held for the thread's whole life, and answers each tile with its
//! probabilities. Dropping the [`Engine`] closes the queue and joins the thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tch::{Device, Kind, Tensor};

use super::batcher::{BatchPolicy, BatchState};
use super::manifest::{Bundle, OutputKind};
use super::{Error, Result};

/// One tile's probabilities, or why the batch it rode in failed.
type Reply = std::result::Result<Vec<f32>, String>;

struct Job {
    tile: Vec<f32>,
    index: usize,
    reply: Sender<(usize, Reply)>,
}

/// Counters the device thread keeps, for logs and benchmarks.
#[derive(Debug, Default)]
pub struct EngineStats {
    batches: AtomicU64,
    tiles: AtomicU64,
    busy_us: AtomicU64,
}

impl EngineStats {
    /// `(batches, tiles, time spent in the network)` so far.
    pub fn snapshot(&self) -> (u64, u64, Duration) {
        (
            self.batches.load(Ordering::Relaxed),
            self.tiles.load(Ordering::Relaxed),
            Duration::from_micros(self.busy_us.load(Ordering::Relaxed)),
        )
    }
}

/// What the device thread needs to know besides the module.
#[derive(Debug, Clone, Copy)]
struct Settings {
    device: Device,
    half: bool,
    logits: bool,
    patch: [i64; 3],
}

/// A handle to the device thread. Cheap to share by reference across threads.
pub struct Engine {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<EngineStats>,
    device: Device,
    half: bool,
}

impl Engine {
    /// Loads the bundle's module on `device` in a new thread, warms it up with one patch,
    /// and returns once the model is ready (or why it could not be).
    pub fn start(bundle: &Bundle, device: Device, policy: BatchPolicy) -> Result<Engine> {
        let manifest = &bundle.manifest;
        let settings = Settings {
            device,
            half: manifest.precision.half_on_cuda && device.is_cuda(),
            logits: manifest.output.kind == OutputKind::Logits,
            patch: manifest.input.patch.map(|p| p as i64),
        };
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let stats = Arc::new(EngineStats::default());
        let weights = bundle.weights.clone();
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name(format!("pulmo-infer-{}", super::device::describe(device)))
            .spawn(move || {
                let _no_grad = tch::no_grad_guard();
                match load(&weights, settings) {
                    Ok(module) => {
                        let _ = ready_tx.send(Ok(()));
                        serve(&module, settings, policy, &queue, &thread_stats);
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                    }
                }
            })
            .expect("could not spawn the inference thread. This is a bug.");
        let engine = Engine {
            jobs: Some(jobs),
            thread: Some(thread),
            stats,
            device,
            half: settings.half,
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(engine),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(Error::Engine(
                "the inference thread died while loading".into(),
            )),
        }
    }

    /// The device the module runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Whether the module runs in float16.
    pub fn half(&self) -> bool {
        self.half
    }

    /// Counters of the device thread.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Runs the network on `tiles` (each one patch, `[z, y, x]` row-major) and returns
    /// each tile's probabilities, in order. Blocks until all are done; tiles of concurrent
    /// callers share batches.
    pub fn infer(&self, tiles: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
        let count = tiles.len();
        let (reply, answers) = crossbeam_channel::unbounded();
        let jobs = self
            .jobs
            .as_ref()
            .expect("engine used after shutdown. This is a bug.");
        for (index, tile) in tiles.into_iter().enumerate() {
            let job = Job {
                tile,
                index,
                reply: reply.clone(),
            };
            jobs.send(job)
                .map_err(|_| Error::Engine("the inference thread has stopped".into()))?;
        }
        drop(reply);
        let mut out = vec![Vec::new(); count];
        for _ in 0..count {
            let (index, answer) = answers
                .recv()
                .map_err(|_| Error::Engine("the inference thread has stopped".into()))?;
            out[index] = answer.map_err(Error::Engine)?;
        }
        Ok(out)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn load(weights: &std::path::Path, settings: Settings) -> Result<tch::CModule> {
    let load_err = |source| Error::Load {
        path: weights.to_owned(),
        source,
    };
    let mut module = tch::CModule::load_on_device(weights, settings.device).map_err(load_err)?;
    module.set_eval();
    if settings.half {
        module.to(settings.device, Kind::Half, false);
    }
    let [d, h, w] = settings.patch;
    let warmup = Tensor::zeros([1, 1, d, h, w], (Kind::Float, Device::Cpu));
    let output = forward(&module, settings, warmup).map_err(|source| Error::Forward {
        path: weights.to_owned(),
        source,
    })?;
    if output.size() != [1, 1, d, h, w] {
        let detail = format!(
            "output shape {:?} for input [1, 1, {d}, {h}, {w}]",
            output.size()
        );
        return Err(Error::WrongOutput {
            path: weights.to_owned(),
            detail,
        });
    }
    Ok(module)
}

/// The device thread's loop: gather jobs into batches, run them, answer.
fn serve(
    module: &tch::CModule,
    settings: Settings,
    policy: BatchPolicy,
    queue: &Receiver<Job>,
    stats: &EngineStats,
) {
    let mut state = BatchState::new(policy);
    let mut open = true;
    while open || !state.is_empty() {
        let received = match state.deadline() {
            _ if !open => Err(RecvTimeoutError::Disconnected),
            None => queue.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(deadline) => queue.recv_deadline(deadline),
        };
        match received {
            Ok(job) => state.push(job, Instant::now()),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
        for job in queue.try_iter() {
            state.push(job, Instant::now());
        }
        let batch = if open {
            state.next_batch(Instant::now())
        } else {
            state.flush()
        };
        if let Some(batch) = batch {
            run_batch(module, settings, batch, stats);
        }
    }
}

fn run_batch(module: &tch::CModule, settings: Settings, batch: Vec<Job>, stats: &EngineStats) {
    let started = Instant::now();
    let [d, h, w] = settings.patch;
    let voxels = (d * h * w) as usize;
    let mut input = Vec::with_capacity(batch.len() * voxels);
    for job in &batch {
        input.extend_from_slice(&job.tile);
    }
    let result = Tensor::f_from_slice(&input)
        .and_then(|t| t.f_view([batch.len() as i64, 1, d, h, w]))
        .and_then(|t| forward(module, settings, t))
        .and_then(|t| Vec::<f32>::try_from(t.flatten(0, -1)));
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.tiles.fetch_add(batch.len() as u64, Ordering::Relaxed);
    crate::metrics::batch_size(batch.len());
    stats
        .busy_us
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    match result {
        Ok(values) if values.len() == batch.len() * voxels => {
            for (job, chunk) in batch.into_iter().zip(values.chunks_exact(voxels)) {
                let _ = job.reply.send((job.index, Ok(chunk.to_vec())));
            }
        }
        Ok(values) => answer_all(batch, format!("model returned {} values", values.len())),
        Err(err) => answer_all(batch, format!("model failed on a batch: {err}")),
    }
}

fn answer_all(batch: Vec<Job>, message: String) {
    for job in batch {
        let _ = job.reply.send((job.index, Err(message.clone())));
    }
}

/// Input on the CPU in float32; output probabilities on the CPU in float32.
fn forward(module: &tch::CModule, settings: Settings, input: Tensor) -> tch::Result<Tensor> {
    let kind = if settings.half {
        Kind::Half
    } else {
        Kind::Float
    };
    let input = input.f_to_device(settings.device)?.f_to_kind(kind)?;
    let output = module.forward_ts(&[input])?.f_to_kind(Kind::Float)?;
    let output = if settings.logits {
        output.f_sigmoid()?
    } else {
        output
    };
    output.f_to_device(Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::manifest::tests::{bundle_dir, EXAMPLE};

    fn engine(policy: BatchPolicy) -> Engine {
        let manifest = EXAMPLE.replace("kind = \"logits\"", "kind = \"probabilities\"");
        let bundle = Bundle::open(&bundle_dir("engine", &manifest)).unwrap();
        Engine::start(&bundle, Device::Cpu, policy).unwrap()
    }

    #[test]
    fn concurrent_callers_share_batches_and_get_their_own_answers() {
        let policy = BatchPolicy {
            max_batch: 4,
            max_wait: Duration::from_millis(50),
        };
        let engine = engine(policy);
        let voxels = 32 * 32 * 32;
        std::thread::scope(|scope| {
            for caller in 0..3 {
                let engine = &engine;
                scope.spawn(move || {
                    // The smoke model maps a constant field c to sigmoid(c + 0.5) inside.
                    let value = caller as f32 - 1.0;
                    let tiles = vec![vec![value; voxels]; 3];
                    let out = engine.infer(tiles).unwrap();
                    let centre = (16 * 32 + 16) * 32 + 16;
                    let want = 1.0 / (1.0 + (-(value + 0.5)).exp());
                    for tile in out {
                        assert!((tile[centre] - want).abs() < 1e-5, "caller {caller}");
                    }
                });
            }
        });
        let (batches, tiles, _) = engine.stats().snapshot();
        assert_eq!(tiles, 9);
        assert!(batches < 9, "tiles were not batched: {batches} batches");
    }
}
