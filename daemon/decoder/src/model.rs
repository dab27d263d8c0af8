//! A loaded model: its manifest and its TorchScript module on a device, warmed up and checked.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tch::{CModule, Device, Kind, Tensor};

use crate::manifest::{DevicePreference, Manifest, ManifestError, OutputKind, MODEL_FILE};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{}: cannot load the TorchScript model: {message}; re-export it with torch.jit.save", path.display())]
    Load { path: PathBuf, message: String },
    #[error("model `{model}`: {message}")]
    Shape { model: String, message: String },
    #[error("model `{model}` failed while decoding: {message}")]
    Forward { model: String, message: String },
    #[error("device `cuda` was asked for, but CUDA is not available here: {0}")]
    NoCuda(String),
}

/// libtorch's CUDA library, loaded at run time: nothing in the binary references it, so the
/// linker drops it, and without it libtorch never sees a GPU (see DESIGN.md). Kept loaded for
/// the life of the process.
static CUDA_LIBRARY: OnceLock<Result<libloading::Library, String>> = OnceLock::new();

/// Loads libtorch_cuda once and says whether CUDA is usable.
pub fn cuda_available() -> Result<(), String> {
    let loaded = CUDA_LIBRARY.get_or_init(|| {
        // The build's libtorch first (its lib dir is also in our RUNPATH), then the search path.
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(root) = option_env!("LIBTORCH") {
            candidates.push(Path::new(root).join("lib/libtorch_cuda.so"));
        }
        candidates.push(PathBuf::from("libtorch_cuda.so"));
        let mut errors = Vec::new();
        for candidate in candidates {
            // SAFETY: loading libtorch's own CUDA backend; its initialisers register CUDA with libtorch.
            match unsafe { libloading::Library::new(&candidate) } {
                Ok(lib) => return Ok(lib),
                Err(e) => {
                    errors.push(format!("{}: {}", candidate.display(), bci2token_driver_abi::host::error_chain(&e)))
                }
            }
        }
        Err(errors.join("; "))
    });
    match loaded {
        Ok(_) if tch::Cuda::is_available() => Ok(()),
        Ok(_) => Err("libtorch_cuda loaded but no CUDA device is visible".into()),
        Err(e) => Err(e.clone()),
    }
}

/// Chooses the torch device for a preference.
pub fn choose_device(pref: DevicePreference) -> Result<Device, ModelError> {
    match pref {
        DevicePreference::Cpu => Ok(Device::Cpu),
        DevicePreference::Cuda => cuda_available().map(|()| Device::Cuda(0)).map_err(ModelError::NoCuda),
        DevicePreference::Auto => match cuda_available() {
            Ok(()) => Ok(Device::Cuda(0)),
            Err(why) => {
                log::debug!("decoding on CPU: {why}");
                Ok(Device::Cpu)
            }
        },
    }
}

/// A model package loaded for decoding.
pub struct Model {
    pub manifest: Manifest,
    module: CModule,
    device: Device,
    /// Frames per window in the output: 1 for classes, T' for CTC (measured at warm-up).
    output_frames: usize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("name", &self.manifest.name).field("device", &self.device).finish()
    }
}

impl Model {
    /// Loads `DIR/model.toml` and `DIR/model.pt` onto `device`, runs a warm-up window, and checks
    /// that the output has one logit per label.
    pub fn load(dir: &Path, device: Device) -> Result<Model, ModelError> {
        let manifest = Manifest::load(dir)?;
        let path = dir.join(MODEL_FILE);
        let mut module = CModule::load_on_device(&path, device)
            .map_err(|e| ModelError::Load { path: path.clone(), message: first_line(&e.to_string()) })?;
        module
            .f_set_eval()
            .map_err(|e| ModelError::Load { path: path.clone(), message: first_line(&e.to_string()) })?;
        let mut model = Model { manifest, module, device, output_frames: 1 };
        // The warm-up run also measures how many output frames a CTC model gives per window.
        let zeros = vec![0f32; model.input_len()];
        let size = model.run(&zeros, 1)?.size();
        if model.manifest.output.kind == OutputKind::Ctc {
            match size.as_slice() {
                [1, frames, _] if *frames > 0 => model.output_frames = *frames as usize,
                _ => {}
            }
        }
        model.forward(&zeros, 1)?;
        Ok(model)
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn channels(&self) -> usize {
        self.manifest.input.channels.len()
    }

    pub fn classes(&self) -> usize {
        self.manifest.output.labels.len()
    }

    /// Output frames per window (1 for a classes model).
    pub fn output_frames(&self) -> usize {
        self.output_frames
    }

    /// Logits per window: output frames × classes.
    pub fn output_len(&self) -> usize {
        self.output_frames * self.classes()
    }

    /// Floats in one input window: channels × window frames.
    pub fn input_len(&self) -> usize {
        self.channels() * self.manifest.window_frames()
    }

    /// Runs `batch` windows (`input` holds `batch * input_len()` floats, each window channel-major)
    /// and returns `batch * classes()` logits.
    pub fn forward(&self, input: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        let y = self.run(input, batch)?;
        let (k, frames) = (self.classes() as i64, self.output_frames() as i64);
        let (want, shape) = match self.manifest.output.kind {
            OutputKind::Classes => (vec![batch as i64, k], format!("[{batch}, {k}]")),
            OutputKind::Ctc => (vec![batch as i64, frames, k], format!("[{batch}, frames, {k}]")),
        };
        let size = y.size();
        if size != want {
            return Err(ModelError::Shape {
                model: self.name().into(),
                message: format!(
                    "the model returned a tensor of shape {size:?} for {batch} window(s); the manifest lists {k} labels, \
                     so it must return {shape}"
                ),
            });
        }
        let n = batch * self.output_len();
        // Each conversion is a trip through libtorch's dispatcher, which costs when its code has
        // gone cold between windows: only convert what needs it.
        let y =
            if y.kind() == Kind::Float { y } else { y.f_to_kind(Kind::Float).map_err(|e| self.forward_error(e))? };
        let y = if y.device() == Device::Cpu {
            y
        } else {
            y.f_to_device(Device::Cpu).map_err(|e| self.forward_error(e))?
        };
        let mut out = vec![0f32; n];
        y.f_copy_data(&mut out, n).map_err(|e| self.forward_error(e))?;
        Ok(out)
    }

    fn forward_error(&self, e: tch::TchError) -> ModelError {
        ModelError::Forward { model: self.name().into(), message: first_line(&e.to_string()) }
    }

    /// The module's raw output for `batch` windows.
    fn run(&self, input: &[f32], batch: usize) -> Result<Tensor, ModelError> {
        let (c, t) = (self.channels(), self.manifest.window_frames());
        assert_eq!(input.len(), batch * c * t, "input holds {batch} windows of {c}×{t}");
        let _guard = tch::no_grad_guard();
        let x = Tensor::f_from_slice(input)
            .and_then(|x| x.f_reshape([batch as i64, c as i64, t as i64]))
            .and_then(|x| if self.device == Device::Cpu { Ok(x) } else { x.f_to_device(self.device) })
            .map_err(|e| self.forward_error(e))?;
        self.module.forward_ts(&[x]).map_err(|e| self.forward_error(e))
    }
}

/// The line of a libtorch error a person needs: TorchScript failures end with the Python-style
/// `SomethingError: what happened` after a traceback; other errors say it on their first line
/// (C++ frames follow).
fn first_line(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let python_style = lines
        .iter()
        .rev()
        .find(|l| l.split_once(": ").is_some_and(|(kind, _)| kind.ends_with("Error") && !kind.contains(' ')));
    python_style.or(lines.first()).map_or_else(|| text.trim().to_string(), |l| l.to_string())
}

/// Sets the number of threads libtorch uses for intra-op parallelism (0 = libtorch's default).
pub fn set_threads(threads: usize) {
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
}
