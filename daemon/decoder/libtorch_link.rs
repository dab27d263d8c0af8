// Shared by the build scripts of every crate whose binaries or tests link libtorch (included with
// `include!`): refuses a libtorch that is not 2.11.x (tch 0.24 is built for it, and the pip wheel
// carries no `build-version` file for torch-sys to check), and writes libtorch's lib directory into
// the binaries' RUNPATH so they start without LD_LIBRARY_PATH (`BCI2TOKEN_RUNPATH` instead, when
// set: where the packages install it).

fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(root) = std::env::var_os("LIBTORCH").map(std::path::PathBuf::from) else {
        panic!("LIBTORCH is not set: run tools/setup, which unpacks libtorch 2.11.0 into .cache/ (see .cargo/config.toml)");
    };
    let version_file = root.join("version.py");
    println!("cargo:rerun-if-changed={}", version_file.display());
    let text = std::fs::read_to_string(&version_file).unwrap_or_else(|e| {
        panic!("{}: {e}; LIBTORCH must point at the `torch` directory of a torch 2.11.0 wheel (run tools/setup)", version_file.display())
    });
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("__version__ = '"))
        .and_then(|v| v.split(['\'', '+']).next())
        .unwrap_or("unknown");
    if !version.starts_with("2.11.") {
        panic!("libtorch at {} is version {version}; tch 0.24 needs 2.11.x (run tools/setup)", root.display());
    }
    // Packages install libtorch elsewhere than the build found it: BCI2TOKEN_RUNPATH says where.
    println!("cargo:rerun-if-env-changed=BCI2TOKEN_RUNPATH");
    let lib = std::env::var_os("BCI2TOKEN_RUNPATH").map(std::path::PathBuf::from).unwrap_or_else(|| root.join("lib"));
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
