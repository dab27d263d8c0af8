//! Every model package shipped in models/ loads, and the Rust decoder reproduces the outputs the
//! exporting Python computed on its test vectors, within the manifest's tolerance.

use std::path::Path;

use bci2token_decoder::{vectors, Model};
use tch::Device;

#[test]
fn shipped_models_reproduce_their_test_vectors() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let mut dirs: Vec<_> = std::fs::read_dir(&models)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.toml").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 2, "the SSVEP and speller models ship in {}", models.display());
    for dir in dirs {
        let model = Model::load(&dir, Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let check = vectors::check(&model)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("{} ships no test vectors", dir.display()));
        eprintln!(
            "{}: {} windows, max |Rust − Python| = {:e} (tolerance {:e})",
            model.name(),
            check.windows,
            check.max_abs_diff,
            check.tolerance
        );
        assert!(check.passed(), "{}: {check:?}", model.name());
    }
}
