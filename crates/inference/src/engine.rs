//! The inference engine: one OS thread per device owns the TorchScript module.
//!
//! Callers (any thread, any study) hand in tiles and block on their own reply channel; the
//! device thread batches tiles across callers ([`BatchState`]), runs the network under a
//! no-grad guard held for the thread's whole life, and answers each tile with its
//! probabilities. Dropping the [`Engine`] closes the queue and joins the thread.
//!
//! The module runs in the [`Precision`] it is given; on the CPU its 3-D convolution weights
//! are stored channels-last (NDHWC), the layout oneDNN's convolution kernels are fastest in
//! (about 1.8x in float32 and 1.5-1.8x in bfloat16 for this model's patches, measured on
//! one machine in docs/benchmarks.md), with the same results.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tch::{Device, Kind, Tensor};

use pulmo_backend::{BatchPolicy, BatchState, Bundle, Network, NetworkStats, Precision};

use crate::{Error, Result};

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
    /// Batches that held tiles of more than one `infer` call (several series at once).
    shared: AtomicU64,
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

    /// How many batches held tiles of more than one `infer` call: in `analyze` and `batch`,
    /// tiles of different series sharing a network call.
    pub fn shared_batches(&self) -> u64 {
        self.shared.load(Ordering::Relaxed)
    }
}

/// What the device thread needs to know besides the module.
#[derive(Debug, Clone, Copy)]
struct Settings {
    device: Device,
    kind: Kind,
    channels_last: bool,
    /// One input's `[d, h, w]`.
    patch: [i64; 3],
    head: Head,
}

/// What the network answers per input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// One value per input voxel (`[N, 1, d, h, w]`): the detector.
    Voxels,
    /// One value per input (`[N, 1]`): the candidate classifier.
    Score,
}

impl Head {
    fn output_shape(self, n: i64, [d, h, w]: [i64; 3]) -> Vec<i64> {
        match self {
            Head::Voxels => vec![n, 1, d, h, w],
            Head::Score => vec![n, 1],
        }
    }
}

/// A handle to the device thread. Cheap to share by reference across threads.
pub struct Engine {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<EngineStats>,
    device: Device,
    precision: Precision,
}

impl Engine {
    /// Loads the bundle's module on `device` in `precision` in a new thread, warms it up
    /// with one patch, and returns once the model is ready (or why it could not be).
    pub fn start(
        bundle: &Bundle,
        device: Device,
        precision: Precision,
        policy: BatchPolicy,
    ) -> Result<Engine> {
        let patch = bundle.manifest.input.patch;
        let weights = bundle.weights.clone();
        Engine::launch(weights, patch, Head::Voxels, device, precision, policy)
    }

    /// The same for the bundle's candidate classifier, if it has one: each input is one
    /// crop, each answer one logit.
    pub fn start_classifier(
        bundle: &Bundle,
        device: Device,
        precision: Precision,
        policy: BatchPolicy,
    ) -> Result<Option<Engine>> {
        let (Some(spec), Some(weights)) = (&bundle.manifest.classifier, &bundle.classifier) else {
            return Ok(None);
        };
        let engine = Engine::launch(
            weights.clone(),
            spec.crop,
            Head::Score,
            device,
            precision,
            policy,
        )?;
        Ok(Some(engine))
    }

    fn launch(
        weights: std::path::PathBuf,
        patch: [usize; 3],
        head: Head,
        device: Device,
        precision: Precision,
        policy: BatchPolicy,
    ) -> Result<Engine> {
        let settings = Settings {
            device,
            kind: crate::precision::kind(precision),
            channels_last: !device.is_cuda(),
            patch: patch.map(|p| p as i64),
            head,
        };
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let stats = Arc::new(EngineStats::default());
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name(format!(
                "pulmo-{}-{}",
                if head == Head::Voxels {
                    "infer"
                } else {
                    "classify"
                },
                crate::device::describe(device)
            ))
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
            precision,
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

    /// The number format the module runs in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Counters of the device thread.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Runs the network on `tiles` (each one patch, `[z, y, x]` row-major) and returns
    /// each tile's outputs as the network gives them (logits or probabilities, as the
    /// manifest's `output.kind` says), in order. Blocks until all are done; tiles of concurrent
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

impl Network for Engine {
    fn infer(&self, inputs: Vec<Vec<f32>>) -> pulmo_backend::Result<Vec<Vec<f32>>> {
        Ok(Engine::infer(self, inputs)?)
    }

    fn stats(&self) -> NetworkStats {
        let (batches, inputs, busy) = self.stats.snapshot();
        NetworkStats {
            batches,
            inputs,
            busy,
            shared_batches: self.stats.shared_batches(),
        }
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
    if settings.kind != Kind::Float {
        module.to(settings.device, settings.kind, false);
    }
    if settings.channels_last {
        to_channels_last(&module).map_err(load_err)?;
    }
    let [d, h, w] = settings.patch;
    let warmup = Tensor::zeros([1, 1, d, h, w], (Kind::Float, Device::Cpu));
    let output = forward(&module, settings, warmup).map_err(|source| Error::Forward {
        path: weights.to_owned(),
        source,
    })?;
    if output.size() != settings.head.output_shape(1, settings.patch) {
        let detail = format!(
            "output shape {:?} for input [1, 1, {d}, {h}, {w}]; expected {:?}",
            output.size(),
            settings.head.output_shape(1, settings.patch)
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
    let per_input = match settings.head {
        Head::Voxels => voxels,
        Head::Score => 1,
    };
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
    if let Some((first, rest)) = batch.split_first() {
        if rest.iter().any(|job| !job.reply.same_channel(&first.reply)) {
            stats.shared.fetch_add(1, Ordering::Relaxed);
        }
    }
    pulmo_metrics::batch_size(batch.len());
    stats
        .busy_us
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    match result {
        Ok(values) if values.len() == batch.len() * per_input => {
            for (job, chunk) in batch.into_iter().zip(values.chunks_exact(per_input)) {
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

/// Stores every 5-D parameter (the 3-D convolutions' weights) channels-last, in place, and
/// returns how many there were. Convolutions then produce channels-last activations and
/// the whole network stays in that layout.
fn to_channels_last(module: &tch::CModule) -> tch::Result<usize> {
    let mut converted = 0;
    for (_, mut parameter) in module.named_parameters()? {
        if parameter.dim() == 5 {
            let relaid = channels_last(&parameter)?;
            parameter.f_set_data(&relaid)?;
            converted += 1;
        }
    }
    Ok(converted)
}

/// A copy of a 5-D tensor `[n, c, d, h, w]` whose channels are its innermost dimension.
fn channels_last(tensor: &Tensor) -> tch::Result<Tensor> {
    let size = tensor.size();
    let mut out = Tensor::f_empty_strided(
        &size,
        channels_last_strides(&size),
        (tensor.kind(), tensor.device()),
    )?;
    out.f_copy_(tensor)?;
    Ok(out)
}

/// The strides of a channels-last `[n, c, d, h, w]` tensor.
fn channels_last_strides(size: &[i64]) -> [i64; 5] {
    let [_, c, d, h, w] = [0, 1, 2, 3, 4].map(|a| size.get(a).copied().unwrap_or(1));
    [c * d * h * w, 1, h * w * c, w * c, c]
}

/// Input on the CPU in float32; the network's outputs on the CPU in float32. Logits stay
/// logits: a sigmoid in float32 rounds every logit above about 17 to 1.0, and the
/// pipeline ranks findings by their peak logit.
fn forward(module: &tch::CModule, settings: Settings, input: Tensor) -> tch::Result<Tensor> {
    let mut input = input
        .f_to_device(settings.device)?
        .f_to_kind(settings.kind)?;
    if settings.channels_last && input.size().get(1) == Some(&1) {
        // One channel: the same memory, with the strides that say "channels last".
        let size = input.size();
        input = input.f_as_strided(&size, channels_last_strides(&size), None)?;
    }
    let output = module.forward_ts(&[input])?.f_to_kind(Kind::Float)?;
    output.f_to_device(Device::Cpu)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pulmo_backend::testing::{write_bundle, EXAMPLE};

    /// An engine on the CPU around the smoke model, its outputs being probabilities.
    pub(crate) fn smoke_engine(name: &str, precision: Precision, policy: BatchPolicy) -> Engine {
        let manifest = EXAMPLE.replace("kind = \"logits\"", "kind = \"probabilities\"");
        let dir = tempfile::Builder::new()
            .prefix(&format!("pulmo-{name}-"))
            .tempdir()
            .unwrap();
        let bundle = Bundle::open(&write_bundle(dir.path(), &manifest)).unwrap();
        // The engine has loaded the model when it starts; the folder may go after that.
        Engine::start(&bundle, Device::Cpu, precision, policy).unwrap()
    }

    fn engine(policy: BatchPolicy) -> Engine {
        smoke_engine("engine", Precision::Float32, policy)
    }

    /// The smoke model maps a constant field c to sigmoid(c + 0.5) inside.
    fn smoke_answer(value: f32) -> f32 {
        1.0 / (1.0 + (-(value + 0.5)).exp())
    }

    #[test]
    fn convolution_weights_are_stored_channels_last_in_place() {
        let path = pulmo_backend::testing::smoke_weights();
        let module = tch::CModule::load_on_device(&path, Device::Cpu).unwrap();
        let weight = |m: &tch::CModule| {
            let params = m.named_parameters().unwrap();
            let (_, w) = params.into_iter().find(|(_, p)| p.dim() == 5).unwrap();
            (w.size(), w.stride())
        };
        let (size, before) = weight(&module);
        assert_eq!(size, [1, 1, 3, 3, 3]);
        assert_eq!(before, [27, 27, 9, 3, 1], "contiguous NCDHW to begin with");
        assert_eq!(to_channels_last(&module).unwrap(), 1);
        let (_, after) = weight(&module);
        assert_eq!(
            after,
            channels_last_strides(&size),
            "the module's own weight changed"
        );
        assert_eq!(
            channels_last_strides(&[2, 8, 4, 5, 6]),
            [960, 1, 240, 48, 8]
        );
    }

    #[test]
    fn bfloat16_on_the_cpu_gives_the_float32_answers_to_bfloat16_accuracy() {
        let engine = smoke_engine("engine-bf16", Precision::BFloat16, BatchPolicy::default());
        assert_eq!(engine.precision(), Precision::BFloat16);
        let voxels = 32 * 32 * 32;
        let values = [-2.0f32, -0.3, 0.0, 0.7, 1.9];
        let tiles = values.iter().map(|v| vec![*v; voxels]).collect();
        let out = engine.infer(tiles).unwrap();
        let centre = (16 * 32 + 16) * 32 + 16;
        let mut largest_error = 0.0f32;
        for (value, tile) in values.iter().zip(out) {
            let error = (tile[centre] - smoke_answer(*value)).abs();
            // bfloat16 keeps 8 significant bits: about 0.4 % of the value.
            assert!(error < 0.01, "{value}: {}", tile[centre]);
            largest_error = largest_error.max(error);
        }
        // float32 would be exact to 1e-6: the network really ran in bfloat16.
        assert!(largest_error > 1e-4, "error {largest_error}");
    }

    #[test]
    fn concurrent_callers_share_batches_and_get_their_own_answers() {
        // A long wait, so that a loaded machine starting the callers slowly still mixes them.
        let policy = BatchPolicy {
            max_batch: 4,
            max_wait: Duration::from_millis(500),
        };
        let engine = engine(policy);
        let voxels = 32 * 32 * 32;
        std::thread::scope(|scope| {
            for caller in 0..3 {
                let engine = &engine;
                scope.spawn(move || {
                    let value = caller as f32 - 1.0;
                    let tiles = vec![vec![value; voxels]; 3];
                    let out = engine.infer(tiles).unwrap();
                    let centre = (16 * 32 + 16) * 32 + 16;
                    let want = smoke_answer(value);
                    for tile in out {
                        assert!((tile[centre] - want).abs() < 1e-5, "caller {caller}");
                    }
                });
            }
        });
        let (batches, tiles, _) = engine.stats().snapshot();
        assert_eq!(tiles, 9);
        assert!(batches < 9, "tiles were not batched: {batches} batches");
        let shared = engine.stats().shared_batches();
        assert!(
            shared >= 1 && shared <= batches,
            "{shared} of {batches} batches shared"
        );
    }
}
