//! Model packages built here with libtorch's tracer (no Python needed): loading, decoding,
//! batching, and every way a package can be wrong.

use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bci2token_decoder::engine::{Engine, Forward, Job};
use bci2token_decoder::{Model, ModelError};
use bci2token_sched::Class;
use tch::{CModule, Device, Kind, Tensor};

const CHANNELS: i64 = 3;
const FRAMES: i64 = 50;
const CLASSES: i64 = 4;

fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("bci2token-model-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn manifest(classes: i64) -> String {
    let labels: Vec<String> = (0..classes).map(|i| format!("\"c{i}\"")).collect();
    format!(
        r#"name = "traced"
version = "0.1.0"
[input]
channels = ["A", "B", "C"]
sample_rate = 50.0
window_seconds = 1.0
hop_seconds = 0.5
[output]
kind = "classes"
labels = [{}]
[tokens]
tokenizer = "gpt2"
[policy]
confidence_threshold = 0.5
"#,
        labels.join(", ")
    )
}

/// The weights of the traced model: logits = mean over time of x, times W ([C, K]).
fn weights(classes: i64) -> Tensor {
    Tensor::arange(CHANNELS * classes, (Kind::Float, Device::Cpu)).reshape([CHANNELS, classes]) / 10.0
}

fn expected(window: &[f32], classes: i64) -> Vec<f32> {
    let w = weights(classes);
    let x = Tensor::from_slice(window).reshape([1, CHANNELS, FRAMES]);
    let y = x.mean_dim(Some([2i64].as_slice()), false, Kind::Float).matmul(&w);
    let mut out = vec![0f32; classes as usize];
    y.copy_data(&mut out, classes as usize);
    out
}

/// Writes a package whose model computes `trace(x)`, traced on a batch of one window.
fn package(tag: &str, manifest_classes: i64, trace: impl Fn(&Tensor) -> Tensor) -> PathBuf {
    let dir = temp_dir(tag);
    let example = Tensor::zeros([1, CHANNELS, FRAMES], (Kind::Float, Device::Cpu));
    let module = CModule::create_by_tracing("Traced", "forward", &[example], &mut |xs| vec![trace(&xs[0])]).unwrap();
    module.save(dir.join("model.pt")).unwrap();
    std::fs::write(dir.join("model.toml"), manifest(manifest_classes)).unwrap();
    dir
}

fn mean_times_w(classes: i64) -> impl Fn(&Tensor) -> Tensor {
    move |x| x.mean_dim(Some([2i64].as_slice()), false, Kind::Float).matmul(&weights(classes))
}

fn window(seed: usize) -> Vec<f32> {
    (0..(CHANNELS * FRAMES) as usize).map(|i| ((i * 7 + seed * 13) % 29) as f32 - 14.0).collect()
}

#[test]
fn a_traced_model_loads_and_decodes_batches() {
    let dir = package("good", CLASSES, mean_times_w(CLASSES));
    let model = Model::load(&dir, Device::Cpu).unwrap();
    assert_eq!((model.channels(), model.classes(), model.input_len()), (3, 4, 150));
    let (a, b) = (window(1), window(2));
    let both: Vec<f32> = a.iter().chain(&b).copied().collect();
    let out = model.forward(&both, 2).unwrap();
    assert_eq!(&out[..4], expected(&a, CLASSES).as_slice());
    assert_eq!(&out[4..], expected(&b, CLASSES).as_slice());
}

#[test]
fn a_corrupt_model_file_is_named() {
    let dir = package("corrupt", CLASSES, mean_times_w(CLASSES));
    std::fs::write(dir.join("model.pt"), b"PK\x03\x04 definitely not a TorchScript archive").unwrap();
    let err = Model::load(&dir, Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::Load { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&dir.join("model.pt").display().to_string()) && msg.contains("torch.jit.save"), "{msg}");
}

#[test]
fn a_manifest_that_disagrees_with_the_model_is_refused_at_load() {
    // The model returns 4 logits; the manifest lists 5 labels.
    let dir = package("mismatch", 5, mean_times_w(CLASSES));
    let msg = Model::load(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("[1, 4]") && msg.contains("5 labels"), "{msg}");
    let dir = package("nomanifest", CLASSES, mean_times_w(CLASSES));
    std::fs::remove_file(dir.join("model.toml")).unwrap();
    let msg = Model::load(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("model.toml") && msg.contains("cannot read"), "{msg}");
}

#[test]
fn a_model_that_throws_at_run_time_gives_an_error_not_a_crash() {
    // Traced with a batch of one, the reshape is frozen to [1, C*T]: any larger batch throws.
    let w = Tensor::ones([CHANNELS * FRAMES, CLASSES], (Kind::Float, Device::Cpu));
    let dir = package("throws", CLASSES, move |x| x.reshape([1, CHANNELS * FRAMES]).matmul(&w));
    let model = Model::load(&dir, Device::Cpu).unwrap();
    let two: Vec<f32> = window(1).into_iter().chain(window(2)).collect();
    let err = model.forward(&two, 2).unwrap_err();
    assert!(matches!(err, ModelError::Forward { .. }), "{err}");
    assert!(err.to_string().contains("RuntimeError: shape"), "the TorchScript error line, not the traceback: {err}");
    // The model still works for what it can do.
    assert_eq!(model.forward(&window(3), 1).unwrap().len(), CLASSES as usize);
}

#[test]
fn the_engine_batches_windows_from_many_sessions() {
    let dir = package("engine", CLASSES, mean_times_w(CLASSES));
    let model: Arc<dyn Forward> = Arc::new(Model::load(&dir, Device::Cpu).unwrap());
    let engine = Engine::start(64).unwrap();
    // Bulk like the sessions' lanes: one decode thread serves them all.
    let gate_lane = engine.lane(Class::Bulk, 1);
    let (tx, rx) = mpsc::channel();
    // A first window whose callback holds the decode thread until every session has submitted,
    // so that what happens next does not depend on timing.
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let first_tx = tx.clone();
    let gate = Job {
        model: Arc::clone(&model),
        window: window(9999),
        done: Box::new(move |r| {
            gate_rx.recv().unwrap();
            first_tx.send((9999, r)).unwrap();
        }),
    };
    assert!(gate_lane.try_push(gate).is_ok());
    // Four "sessions" submit 50 windows each, each through a lane of its own.
    // A lane leaves with what it still queues: they live until the end.
    let lanes: Vec<_> = (0..4).map(|_| engine.lane(Class::Bulk, 1024)).collect();
    std::thread::scope(|s| {
        for (session, lane) in lanes.iter().enumerate() {
            let (tx, model) = (tx.clone(), Arc::clone(&model));
            s.spawn(move || {
                for i in 0..50 {
                    let seed = session * 100 + i;
                    let tx = tx.clone();
                    let job = Job {
                        model: Arc::clone(&model),
                        window: window(seed),
                        done: Box::new(move |r| tx.send((seed, r)).unwrap()),
                    };
                    assert!(lane.try_push(job).is_ok(), "a lane of 1024 never fills here");
                }
            });
        }
    });
    gate_tx.send(()).unwrap();
    drop(tx);
    let mut results = Vec::new();
    while let Ok(r) = rx.recv_timeout(Duration::from_secs(30)) {
        results.push(r);
    }
    assert_eq!(results.len(), 201);
    for (seed, logits) in results {
        assert_eq!(logits.unwrap(), expected(&window(seed), CLASSES), "window {seed}");
    }
    let stats = engine.stats();
    let batches = stats.batches.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(stats.windows.load(std::sync::atomic::Ordering::Relaxed), 201);
    // The gate's pass (with whatever had arrived), then the waiting windows in passes of at most 64.
    assert!(batches <= 1 + 200u64.div_ceil(64), "{batches} passes for 201 windows");
    assert_eq!(stats.largest_batch.load(std::sync::atomic::Ordering::Relaxed), 64);
}

#[test]
fn a_failing_window_does_not_fail_the_others_in_its_batch() {
    // Traced with a batch of one, the model throws for any larger batch: the engine must retry
    // the windows one by one, and every one of them then succeeds.
    let w = Tensor::ones([CHANNELS * FRAMES, CLASSES], (Kind::Float, Device::Cpu));
    let dir = package("isolate", CLASSES, move |x| x.reshape([1, CHANNELS * FRAMES]).matmul(&w));
    let model: Arc<dyn Forward> = Arc::new(Model::load(&dir, Device::Cpu).unwrap());
    let engine = Engine::start(16).unwrap();
    let lane = engine.lane(Class::Bulk, 64);
    let (tx, rx) = mpsc::channel();
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let first_tx = tx.clone();
    let gate = Job {
        model: Arc::clone(&model),
        window: window(0),
        done: Box::new(move |r| {
            gate_rx.recv().unwrap();
            first_tx.send(r).unwrap();
        }),
    };
    assert!(lane.try_push(gate).is_ok());
    for i in 1..=8 {
        let tx = tx.clone();
        let job = Job { model: Arc::clone(&model), window: window(i), done: Box::new(move |r| tx.send(r).unwrap()) };
        assert!(lane.try_push(job).is_ok());
    }
    gate_tx.send(()).unwrap();
    drop(tx);
    let results: Vec<_> = (0..9).map(|_| rx.recv_timeout(Duration::from_secs(30)).unwrap()).collect();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(engine.stats().largest_batch.load(std::sync::atomic::Ordering::Relaxed) > 1, "a batch was tried");
}

#[test]
fn a_ctc_model_reports_its_output_frames() {
    let dir = package("ctc", CLASSES, |x| {
        x.mean_dim(Some([1i64].as_slice()), false, Kind::Float).reshape([-1, 5, 10]).narrow(2, 0, CLASSES)
    });
    let manifest = std::fs::read_to_string(dir.join("model.toml")).unwrap();
    let manifest = manifest
        .replace("kind = \"classes\"", "kind = \"ctc\"\nblank_label = \"c0\"\nbeam_width = 4")
        .replace("hop_seconds = 0.5", "hop_seconds = 1.0");
    std::fs::write(dir.join("model.toml"), &manifest).unwrap();
    let model = Model::load(&dir, Device::Cpu).unwrap();
    assert_eq!((model.output_frames(), model.output_len()), (5, 20));
    let two: Vec<f32> = window(1).into_iter().chain(window(2)).collect();
    assert_eq!(model.forward(&two, 2).unwrap().len(), 40);

    // Overlapping windows make no sense for CTC segments: refused with the key named.
    std::fs::write(dir.join("model.toml"), manifest.replace("hop_seconds = 1.0", "hop_seconds = 0.5")).unwrap();
    let msg = Model::load(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("`input.hop_seconds`") && msg.contains("CTC"), "{msg}");
}
