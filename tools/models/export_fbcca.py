#!/usr/bin/env python3
"""Exports the filter-bank CCA model packages of models/: ssvep-fbcca-3 and speller-40.

    tools/models/setup-export-env                                   # once: .cache/export-venv
    .cache/export-venv/bin/python tools/models/export_fbcca.py          # both packages
    .cache/export-venv/bin/python tools/models/export_fbcca.py ssvep-fbcca-3

For each package it writes models/<name>/model.pt (torch.jit.script + torch.jit.save of
fbcca.FBCCA, buffers only), model.toml and test_vectors.json. The output is deterministic: the
same files byte for byte on every run (checked with --check, which exports to a temporary
directory and compares).

The model (see fbcca.py): a training-free filter-bank CCA, Chen et al. 2015. Nothing is learned,
nothing is read from the recordings except the four test-vector windows of ssvep-fbcca-3.
"""

import argparse
import filecmp
import json
import os
import re
import sys
import tempfile
import tomllib

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)



def _import_fbcca():
    """Imports fbcca.py under the repository-relative file name tools/models/fbcca.py, so that the
    source locations TorchScript stores in model.pt (code/*.debug_pkl) do not depend on where
    the repository is checked out: model.pt is then the same bytes from any clone."""
    import importlib.util
    import linecache

    if "fbcca" in sys.modules:
        return sys.modules["fbcca"]
    rel = "tools/models/fbcca.py"
    with open(os.path.join(HERE, "fbcca.py")) as f:
        src = f.read()
    # Pre-seeded and never re-checked (mtime None): inspect.getsource finds the lines under rel.
    linecache.cache[rel] = (len(src), None, src.splitlines(True), rel)
    spec = importlib.util.spec_from_loader("fbcca", loader=None, origin=rel)
    mod = importlib.util.module_from_spec(spec)
    mod.__file__ = rel
    sys.modules["fbcca"] = mod
    exec(compile(src, rel, "exec"), mod.__dict__)
    return mod


_fbcca = _import_fbcca()
FBCCA, fbcca_numpy = _fbcca.FBCCA, _fbcca.fbcca_numpy
import pipeline  # noqa: E402

DATA = os.environ.get("BCI2TOKEN_DATA", os.path.join(ROOT, "..", "shared", "data"))
SCRIPT = "tools/models/export_fbcca.py"

# ---------------------------------------------------------------------------------------------
# ssvep-fbcca-3: the 3 targets of ../shared/data/ssvep (Kalunga et al. 2016)
# ---------------------------------------------------------------------------------------------
SSVEP_FILES = [
    "ssvep/subject01_2012.07.06-19.02.16.edf",
    "ssvep/subject02_2012.07.19-17.41.14.edf",
    "ssvep/subject03_2012.07.11-15.25.23.edf",
    "ssvep/subject04_2012.07.18-17.52.30.edf",
    "ssvep/subject05_2012.07.19-11.24.02.edf",
]

SSVEP3 = {
    "name": "ssvep-fbcca-3",
    "version": "1.0.0",
    "description": (
        "Training-free filter-bank CCA (Chen et al. 2015) for 3 SSVEP targets at 13, 17 and 21 Hz "
        "(the SSVEP exoskeleton data set of Kalunga et al. 2016), 8 occipital channels at 256 Hz, 2 s windows"
    ),
    "input": {
        "channels": ["Oz", "O1", "O2", "PO3", "POz", "PO7", "PO8", "PO4"],
        "sample_rate": 256.0,
        "window_seconds": 2.0,
        "hop_seconds": 0.25,
    },
    "preprocessing": {
        "notch_hz": 50,
        "notch_harmonics": 1,
        "notch_q": 30.0,
        "bandpass_hz": [6.0, 90.0],
        "filter_order": 4,
        "car": False,
    },
    "labels": ["13Hz", "17Hz", "21Hz"],
    "text": {"13Hz": " yes", "17Hz": " no", "21Hz": " help"},
    "tokenizer": "gpt2",
    "policy": {"confidence_threshold": 0.6, "consecutive": 2, "refractory_seconds": 1.0},
    "fbcca": {
        "frequencies": [13.0, 17.0, 21.0],
        "harmonics": 5,
        "subband_low_hz": [8.0, 16.0, 24.0, 32.0, 40.0],
        "subband_high_hz": 88.0,
        "transition_hz": 2.0,
        "weight_a": 1.25,
        "weight_b": 0.25,
        "decimate": 1,
        "scale": 30.0,
    },
}

# ---------------------------------------------------------------------------------------------
# speller-40: a 40-target speller for the synthetic board (drivers/synthetic)
# ---------------------------------------------------------------------------------------------
SPELLER_LABELS = list("abcdefghijklmnopqrstuvwxyz") + ["_"] + list("0123456789") + [".", ",", "?"]
# 12.0 .. 23.7 Hz in 0.3 Hz steps: above the board's 10 Hz alpha rhythm (a target within ~1 Hz of
# it is swamped by alpha, 8 µV, or 16 µV at rest), inside one octave (no target's second harmonic
# falls on another target), second harmonics (24 .. 47.4 Hz) below the 50 Hz mains.
SPELLER_FREQS = [round(12.0 + 0.3 * i, 1) for i in range(40)]

SPELLER40 = {
    "name": "speller-40",
    "version": "1.0.0",
    "description": (
        "Training-free filter-bank CCA speller with 40 targets (a-z, space, 0-9, . , ?) flickering at "
        "12.0-23.7 Hz in 0.3 Hz steps, for the synthetic board (8 channels at 250 Hz), 2 s windows"
    ),
    "input": {
        "channels": ["O1", "Oz", "O2", "PO3", "POz", "PO4", "PO7", "PO8"],
        "sample_rate": 250.0,
        "window_seconds": 2.0,
        "hop_seconds": 0.25,
    },
    "preprocessing": {
        "notch_hz": 50,
        "notch_harmonics": 1,
        "notch_q": 30.0,
        "bandpass_hz": [6.0, 90.0],
        "filter_order": 4,
        "car": False,
    },
    "labels": SPELLER_LABELS,
    "text": {lab: (" " if lab == "_" else lab) for lab in SPELLER_LABELS},
    "tokenizer": "gpt2",
    "policy": {"confidence_threshold": 0.7, "consecutive": 3, "refractory_seconds": 3.5},
    "fbcca": {
        "frequencies": SPELLER_FREQS,
        "harmonics": 2,
        "subband_low_hz": [11.0, 23.0, 35.0],
        "subband_high_hz": 90.0,
        "transition_hz": 2.0,
        "weight_a": 1.25,
        "weight_b": 0.25,
        "decimate": 1,
        "scale": 30.0,
    },
    # Settings of the synthetic board the demo uses (its defaults), and the script timing.
    "board": {
        "sample_rate": 250.0,
        "noise_uv": 10.0,
        "alpha_uv": 8.0,
        "alpha_hz": 10.0,
        "line_hz": 50.0,
        "line_uv": 5.0,
        "ssvep_uv": 4.0,
    },
    "dwell_seconds": 3.0,
    "gap_seconds": 1.0,
}

SPECS = {s["name"]: s for s in (SSVEP3, SPELLER40)}


def build_model(spec: dict) -> FBCCA:
    fb = spec["fbcca"]
    inp = spec["input"]
    samples = int(round(inp["window_seconds"] * inp["sample_rate"]))
    return FBCCA(
        freqs=list(fb["frequencies"]),
        fs=inp["sample_rate"],
        channels=len(inp["channels"]),
        samples=samples,
        harmonics=fb["harmonics"],
        lows=list(fb["subband_low_hz"]),
        high=fb["subband_high_hz"],
        transition_hz=fb["transition_hz"],
        scale=fb["scale"],
        weight_a=fb["weight_a"],
        weight_b=fb["weight_b"],
        decimate=fb["decimate"],
    )


# ---------------------------------------------------------------------------------------------
# Data for the test vectors
# ---------------------------------------------------------------------------------------------
def read_ssvep(path: str):
    """Signals [8, frames] in µV (float64) and the trials [(stim_start seconds, cue label)]:
    each `stim_start` with the class cue annotation before it."""
    import pyedflib

    r = pyedflib.EdfReader(path)
    try:
        x = np.stack([r.readSignal(i) for i in range(r.signals_in_file)])
        labels = r.getSignalLabels()
        fs = r.getSampleFrequency(0)
        onsets, _, texts = r.readAnnotations()
    finally:
        r.close()
    trials = []
    cue = None
    for onset, text in zip(onsets, texts):
        if text in ("13Hz", "17Hz", "21Hz", "rest"):
            cue = text
        elif text == "stim_start" and cue is not None:
            trials.append((float(onset), cue))
            cue = None
    return x, labels, fs, trials


def ssvep_vector_windows(spec: dict) -> tuple:
    """4 windows of subject 01 after the manifest's preprocessing: the first trial of 13, 17 and
    21 Hz and the first rest trial, each the 2 s from stim_start + 2 s."""
    x, labels, fs, trials = read_ssvep(os.path.join(DATA, SSVEP_FILES[0]))
    assert labels == spec["input"]["channels"], labels
    assert fs == spec["input"]["sample_rate"], fs
    y = pipeline.preprocess(x, fs, spec["preprocessing"])
    win = int(round(spec["input"]["window_seconds"] * fs))
    out, names = [], []
    for want in ("13Hz", "17Hz", "21Hz", "rest"):
        onset, cue = next(t for t in trials if t[1] == want)
        start = int(round((onset + 2.0) * fs))
        out.append(y[:, start : start + win])
        names.append(f"{os.path.basename(SSVEP_FILES[0])}: {cue} trial at stim_start {onset:.3f} s, window from +2 s")
    return np.stack(out).astype(np.float32), names


def speller_vector_windows(spec: dict) -> tuple:
    """4 windows of the simulated board (synthetic_board.py, seed 7) after the manifest's
    preprocessing: the letters h, i, _ (space) and ?, each the last 2 s of its 3 s dwell."""
    from synthetic_board import Board

    fs = spec["input"]["sample_rate"]
    freqs = dict(zip(spec["labels"], spec["fbcca"]["frequencies"]))
    letters = ["h", "i", "_", "?"]
    script = []
    for lab in letters:
        script += [(None, 1.0), (freqs[lab], 3.0)]
    board = Board(seed=7, **spec["board"])
    x, segs = board.render(script)
    y = pipeline.preprocess(x, fs, spec["preprocessing"])
    win = int(round(spec["input"]["window_seconds"] * fs))
    out, names = [], []
    for lab, (s, e, f) in zip(letters, segs[1::2]):
        out.append(y[:, e - win : e])
        names.append(f"simulated board (seed 7): letter {lab!r} at {f} Hz, last 2 s of a 3 s dwell")
    return np.stack(out).astype(np.float32), names


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------
# The writers are shared with the motor-imagery export (tools/models/mi_export.py).
from mi_export import bits_list, f32_list, toml_key, toml_value  # noqa: E402


def manifest_text(spec: dict, notes: str, extra_tables: str) -> str:
    lines = [
        f"# {spec['name']}: written by {SCRIPT} (do not edit by hand; change the script and re-export).",
        f"name = {toml_value(spec['name'])}",
        f"version = {toml_value(spec['version'])}",
        f"description = {toml_value(spec['description'])}",
        "",
        "[input]",
        f"channels = {toml_value(spec['input']['channels'])}",
        f"sample_rate = {toml_value(spec['input']['sample_rate'])}",
        f"window_seconds = {toml_value(spec['input']['window_seconds'])}",
        f"hop_seconds = {toml_value(spec['input']['hop_seconds'])}",
        "",
        "[preprocessing]",
    ]
    for k, v in spec["preprocessing"].items():
        lines.append(f"{k} = {toml_value(v)}")
    lines += [
        "",
        "[output]",
        'kind = "classes"',
        f"labels = {toml_value(spec['labels'])}",
        'null_label = ""',
        "",
        "[tokens]",
        f"tokenizer = {toml_value(spec['tokenizer'])}",
        "",
        "[tokens.text]",
    ]
    for lab in spec["labels"]:
        lines.append(f"{json.dumps(lab)} = {toml_value(spec['text'][lab])}")
    lines += ["", "[policy]"]
    for k, v in spec["policy"].items():
        lines.append(f"{k} = {toml_value(v)}")
    lines += [
        "",
        "[provenance]",
        f"script = {toml_value(SCRIPT)}",
        "trained_on = []",
        f"notes = {toml_value(notes)}",
        "",
        "[test_vectors]",
        'file = "test_vectors.json"',
        "tolerance = 1e-6",
    ]
    if extra_tables:
        lines += ["", extra_tables.rstrip("\n")]
    return "\n".join(lines) + "\n"


def notes_for(spec: dict) -> str:
    fb = spec["fbcca"]
    n = len(fb["subband_low_hz"])
    freqs = "" if spec["name"] == "speller-40" else f"targets {', '.join(f'{f:g}' for f in fb['frequencies'])} Hz; "
    return (
        f"Analytic, no training (docs/models.md). Filter-bank CCA (Chen et al. 2015): {freqs}{n} zero-phase "
        f"sub-bands from [{', '.join(f'{lo:g}' for lo in fb['subband_low_hz'])}] Hz up to "
        f"{fb['subband_high_hz']:g} Hz (FFT-domain masks with {fb['transition_hz']:g} Hz raised-cosine edges"
        + (f", then decimation by {fb['decimate']}" if fb["decimate"] > 1 else "")
        + f"); sine/cosine references with {fb['harmonics']} harmonics; sub-band weights "
        f"n^-{fb['weight_a']:g} + {fb['weight_b']:g}, normalised to sum 1. "
        f"logits = {fb['scale']:g} * (sum_n w_n rho_n^2 - 0.5), rho_n = the largest canonical correlation "
        f"of sub-band n with the target's references: logits lie in [{-fb['scale'] / 2:g}, {fb['scale'] / 2:g}] "
        f"and a logit gap of 1 is a weighted rho^2 gap of {1 / fb['scale']:g}. Computed in float64 "
        f"inside forward, returned as float32."
    )


def speller_table(spec: dict) -> str:
    board = spec["board"]
    freqs = dict(zip(spec["labels"], spec["fbcca"]["frequencies"]))
    lines = [
        "# Informational (the daemon does not read it): where each target flickers, for a demo",
        "# that scripts the synthetic board to look at the letters of a phrase. Label \"_\" is the",
        "# space bar (its text is \" \"). Script each letter as an intent of dwell_seconds at its",
        "# frequency followed by gap_seconds of rest, on a board with the settings of [speller.board].",
        "[speller]",
        "frequencies = { " + ", ".join(f"{json.dumps(k)} = {toml_value(float(v))}" for k, v in freqs.items()) + " }",
        f"dwell_seconds = {toml_value(spec['dwell_seconds'])}",
        f"gap_seconds = {toml_value(spec['gap_seconds'])}",
        "",
        "[speller.board]",
    ]
    for k, v in board.items():
        lines.append(f"{k} = {toml_value(v)}")
    return "\n".join(lines) + "\n"


def export(spec: dict, outdir: str, verbose: bool = True) -> dict:
    torch.set_num_threads(1)
    os.makedirs(outdir, exist_ok=True)
    model = build_model(spec)
    model.eval()
    scripted = torch.jit.script(model)
    pt = os.path.join(outdir, "model.pt")
    # Deterministic: same bytes for the same model (the archive folder is named after the file's stem).
    torch.jit.save(scripted, pt)

    if spec["name"] == "ssvep-fbcca-3":
        x, names = ssvep_vector_windows(spec)
    else:
        x, names = speller_vector_windows(spec)

    loaded = torch.jit.load(pt, map_location="cpu")
    with torch.no_grad():
        y = loaded(torch.from_numpy(x)).numpy()
    # Cross-checks: the textbook CCA in numpy, window by window, other thread counts.
    ref = fbcca_numpy(x.astype(np.float64), model)
    err_numpy = float(np.abs(y - ref).max())
    with torch.no_grad():
        single = np.concatenate([loaded(torch.from_numpy(x[i : i + 1])).numpy() for i in range(len(x))])
        torch.set_num_threads(2)
        two = loaded(torch.from_numpy(x)).numpy()
        torch.set_num_threads(1)
    checks = {
        "max_abs_diff_vs_numpy_cca": err_numpy,
        "bit_identical_batch_vs_single": bool(np.array_equal(y.view(np.uint32), single.view(np.uint32))),
        "bit_identical_1_vs_2_threads": bool(np.array_equal(y.view(np.uint32), two.view(np.uint32))),
    }
    assert err_numpy < 1e-4 * spec["fbcca"]["scale"], err_numpy

    probs = pipeline.softmax(y.astype(np.float64))
    vectors = {
        "model": spec["name"],
        "description": (
            "Model input after the manifest's preprocessing, and the logits of model.pt run by "
            "torch.jit.load in Python (torch " + torch.__version__.split("+")[0] + ", CPU, "
            "torch.set_num_threads(1)). Floats are written so that they parse to the exact float32 "
            "values; input_bits/output_bits hold the same values as float32 bit patterns (u32)."
        ),
        "windows": names,
        "input_shape": list(x.shape),
        "output_shape": list(y.shape),
        "labels": spec["labels"],
        "expected_argmax": [spec["labels"][i] for i in y.argmax(1)],
        "output": f32_list(y),
        "output_bits": bits_list(y),
        "input": f32_list(x),
        "input_bits": bits_list(x),
    }
    with open(os.path.join(outdir, "test_vectors.json"), "w") as f:
        json.dump(vectors, f, separators=(",", ":"))
        f.write("\n")

    extra = speller_table(spec) if spec["name"] == "speller-40" else ""
    text = manifest_text(spec, notes_for(spec), extra)
    parsed = tomllib.loads(text)
    assert parsed["output"]["labels"] == spec["labels"]
    assert set(parsed["tokens"]["text"]) == set(spec["labels"])
    with open(os.path.join(outdir, "model.toml"), "w") as f:
        f.write(text)

    info = {
        "model.pt bytes": os.path.getsize(pt),
        "test_vectors.json bytes": os.path.getsize(os.path.join(outdir, "test_vectors.json")),
        "argmax": vectors["expected_argmax"],
        "max prob": [round(float(p), 3) for p in probs.max(1)],
        **checks,
    }
    if verbose:
        print(f"{spec['name']} -> {outdir}")
        for k, v in info.items():
            print(f"  {k}: {v}")
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", metavar="NAME", help=f"packages to export: {', '.join(SPECS)} (default: all)")
    ap.add_argument("--out", default=os.path.join(ROOT, "models"), help="parent directory of the packages")
    ap.add_argument("--check", action="store_true", help="export to a temporary directory and compare with --out")
    args = ap.parse_args()
    names = args.models or list(SPECS)
    for name in names:
        if name not in SPECS:
            ap.error(f"unknown model {name!r}; choose from {', '.join(SPECS)}")
    if args.check:
        bad = 0
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                export(SPECS[name], os.path.join(tmp, name), verbose=False)
                for fn in ("model.pt", "model.toml", "test_vectors.json"):
                    a, b = os.path.join(tmp, name, fn), os.path.join(args.out, name, fn)
                    same = os.path.exists(b) and filecmp.cmp(a, b, shallow=False)
                    print(f"{name}/{fn}: {'same' if same else 'DIFFERS'}")
                    bad += not same
        return 1 if bad else 0
    for name in names:
        export(SPECS[name], os.path.join(args.out, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
