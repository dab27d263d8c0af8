#!/usr/bin/env python3
"""Measures the speller-40 package on the simulated synthetic board (synthetic_board.py, the
numpy twin of drivers/synthetic), the way the daemon runs it.

    .cache/export-venv/bin/python tools/models/eval_speller.py [--model models/speller-40]
        [--phrase "hello world"] [--seeds 3] [--json]

1. Separability: every label is "looked at" for dwell_seconds (with gap_seconds of rest between
   letters, letters in random order, `--reps` passes per seed) on a board with the manifest's
   [speller.board] settings, except ssvep_uv which is swept; the stream is preprocessed causally
   as the manifest says, cut into the daemon's sliding windows, and every window lying entirely
   inside a letter's intent is classified by model.pt (arg-max). Chance is 1/40.
With --plugin the signal comes from the real synthetic driver (synthetic_plugin.py, through its
C ABI) instead of the numpy twin synthetic_board.py.

2. Demo: the phrase is spelled with the manifest's timing (each character dwell_seconds at its
   frequency, then gap_seconds of rest), the emission policy of [policy] turns windows into
   tokens, and the emitted text is compared with the phrase, for several seeds.
"""

import argparse
import json
import os
import sys
import tomllib

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import pipeline  # noqa: E402
from synthetic_board import Board  # noqa: E402


def run_model(model, y: np.ndarray, ends: np.ndarray, win: int, batch: int = 256) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(ends), batch):
            w = np.stack([y[:, e - win : e] for e in ends[i : i + batch]]).astype(np.float32)
            out.append(model(torch.from_numpy(w)).numpy())
    return np.concatenate(out).astype(np.float64)


# The real synthetic driver plugin to render with instead of the numpy twin (--plugin).
PLUGIN = None


def stream(manifest: dict, model, script: list, board_settings: dict, seed: int):
    """Renders a script, preprocesses, windows and decodes it. Returns (segments, window ends in
    frames, logits)."""
    inp = manifest["input"]
    fs = inp["sample_rate"]
    if board_settings.get("sample_rate", 250.0) != fs:
        raise SystemExit(f"board sample rate {board_settings.get('sample_rate')} != model {fs}")
    if PLUGIN:
        import synthetic_plugin

        x, segs = synthetic_plugin.render(PLUGIN, script, board_settings, seed)
    else:
        x, segs = Board(seed=seed, **board_settings).render(script)
    y = pipeline.preprocess(x, fs, manifest.get("preprocessing", {}))
    win = int(round(inp["window_seconds"] * fs))
    hop = int(round(inp["hop_seconds"] * fs))
    ends = pipeline.window_ends(y.shape[1], win, hop)
    return segs, ends, run_model(model, y, ends, win)


def separability(manifest: dict, model, ssvep_uv: float, seeds: int, reps: int) -> dict:
    sp = manifest["speller"]
    labels = manifest["output"]["labels"]
    freqs = [sp["frequencies"][lab] for lab in labels]
    settings = dict(sp["board"], ssvep_uv=ssvep_uv)
    win = int(round(manifest["input"]["window_seconds"] * manifest["input"]["sample_rate"]))
    n = ok = 0
    inside_only = []
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        order = np.concatenate([rng.permutation(len(labels)) for _ in range(reps)])
        script = []
        for k in order:
            script += [(None, sp["gap_seconds"]), (freqs[k], sp["dwell_seconds"])]
        segs, ends, logits = stream(manifest, model, script, settings, seed)
        pred = logits.argmax(1)
        for (s, e, f), k in zip(segs[1::2], order):
            sel = (ends - win >= s) & (ends <= e)
            n += int(sel.sum())
            ok += int((pred[sel] == k).sum())
            inside_only.append(int(sel.sum()))
    return {"ssvep_uv": ssvep_uv, "windows": n, "accuracy": ok / n, "windows_per_letter": int(np.median(inside_only))}


def spell(manifest: dict, model, phrase: str, seed: int) -> dict:
    sp = manifest["speller"]
    labels = manifest["output"]["labels"]
    text = manifest["tokens"]["text"]
    by_char = {text[lab]: lab for lab in labels}
    pol = manifest["policy"]
    script = [(None, 2.0)]  # the board starts at rest
    for ch in phrase:
        if ch not in by_char:
            raise SystemExit(f"character {ch!r} is not on the speller")
        script += [(sp["frequencies"][by_char[ch]], sp["dwell_seconds"]), (None, sp["gap_seconds"])]
    script.append((None, 2.0))
    fs = manifest["input"]["sample_rate"]
    segs, ends, logits = stream(manifest, model, script, sp["board"], seed)
    probs = pipeline.softmax(logits)
    tokens = pipeline.emit_tokens(
        probs,
        ends / fs,
        labels,
        pol["confidence_threshold"],
        pol["consecutive"],
        pol["refractory_seconds"],
        manifest["output"].get("null_label", ""),
    )
    out = "".join(text[lab] for _, lab, _ in tokens)
    # Latency of each token from its letter's onset.
    onsets = [s / fs for s, e, f in segs if f is not None]
    lat = []
    for t, _, _ in tokens:
        prior = [o for o in onsets if o <= t]
        if prior:
            lat.append(t - prior[-1])
    return {
        "seed": seed,
        "phrase": phrase,
        "emitted": out,
        "correct": out == phrase,
        "tokens": len(tokens),
        "min_confidence": min((c for _, _, c in tokens), default=None),
        "mean_latency_s": float(np.mean(lat)) if lat else None,
        "seconds": segs[-1][1] / fs,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "speller-40"), help="model package directory")
    ap.add_argument("--phrase", default="hello world, how are you? 0123456789.", help="phrase for the demo run")
    ap.add_argument("--seeds", type=int, default=3, help="board seeds per measurement")
    ap.add_argument("--reps", type=int, default=2, help="passes over all 40 letters per seed (separability)")
    ap.add_argument("--uv", type=float, nargs="*", default=[1.0, 1.5, 2.0, 3.0, 4.0], help="ssvep_uv values to sweep")
    ap.add_argument(
        "--plugin",
        metavar="SO",
        help="render with the real synthetic driver (e.g. target/release/libbci2token_driver_synthetic.so) "
        "instead of the numpy twin synthetic_board.py",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    global PLUGIN
    PLUGIN = args.plugin
    torch.set_num_threads(1)
    with open(os.path.join(args.model, "model.toml"), "rb") as f:
        manifest = tomllib.load(f)
    model = torch.jit.load(os.path.join(args.model, "model.pt"), map_location="cpu")
    sep = [separability(manifest, model, uv, args.seeds, args.reps) for uv in args.uv]
    demo = [spell(manifest, model, args.phrase, seed) for seed in range(1, args.seeds + 1)]
    if args.json:
        print(json.dumps({"model": manifest["name"], "separability": sep, "demo": demo}, indent=1))
        return 0
    sp = manifest["speller"]
    print(
        f"{manifest['name']}: {'driver plugin ' + args.plugin if args.plugin else 'numpy board twin'}, board {sp['board']}, dwell {sp['dwell_seconds']} s + gap {sp['gap_seconds']} s, "
        f"{manifest['input']['window_seconds']} s windows every {manifest['input']['hop_seconds']} s"
    )
    print("window accuracy on windows entirely inside a letter (40 classes, chance 0.025):")
    for r in sep:
        print(f"  ssvep_uv {r['ssvep_uv']:4.1f} µV: {r['accuracy']:.4f} over {r['windows']} windows")
    print(f"demo phrase {args.phrase!r} with policy {manifest['policy']}:")
    for r in demo:
        print(
            f"  seed {r['seed']}: {'OK ' if r['correct'] else 'BAD'} emitted {r['emitted']!r} "
            f"({r['tokens']} tokens in {r['seconds']:.0f} s, min confidence {r['min_confidence']:.3f}, "
            f"mean latency from letter onset {r['mean_latency_s']:.2f} s)"
        )
    return 0 if all(r["correct"] for r in demo) else 1


if __name__ == "__main__":
    sys.exit(main())
