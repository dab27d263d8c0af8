#!/usr/bin/env python3
"""Evaluates an SSVEP model package on ../shared/data/ssvep, the way the daemon runs it.

    .cache/export-venv/bin/python tools/models/eval_ssvep.py [--model models/ssvep-fbcca-3] [--json]

For each subject's recording (pyedflib, µV): the manifest's preprocessing applied causally to the
whole recording from its first sample (pipeline.py), sliding windows of window_seconds every
hop_seconds over the whole recording, model.pt (torch.jit.load, 1 thread), softmax, and the
emission policy of the manifest. Trials: each `stim_start` annotation with the class cue before
it (`13Hz`, `17Hz`, `21Hz`; `rest` trials are not scored as classes); a trial lasts 5 s.

Figures per subject:
  window_acc   windows lying entirely inside a trial's 5 s (13 per trial for 2 s windows at a
               0.25 s hop), arg-max against the cue: the plain classification accuracy;
  vote_acc     per trial, the label most windows of that trial chose;
  token_acc    per trial, the first token the policy emits from a window lying entirely inside the
               trial (window end from stim_start + window_seconds to stim_start + 5 s; the policy
               runs over the whole recording, so its run of agreeing windows may start earlier);
               a trial without such a token counts as wrong;
  no_token     trials without such a token; decision_s: mean time from stim_start to the end of
               the window that decided the token;
  itr          Wolpaw bits/min from token_acc, 3 classes and the mean decision time;
  precision    of all tokens decided inside class trials, the fraction matching the cue;
  rest_tokens  tokens emitted from windows lying entirely inside the 5 s of `rest` trials (false
               alarms: the model has no rest class, the policy should stay silent).
"""

import argparse
import json
import math
import os
import sys
import tomllib

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import pipeline  # noqa: E402
from export_fbcca import DATA, SSVEP_FILES, read_ssvep  # noqa: E402

TRIAL_S = 5.0


def wolpaw_bits(n: int, p: float) -> float:
    if p <= 1.0 / n:
        return 0.0
    bits = math.log2(n) + p * math.log2(p)
    if p < 1:
        bits += (1 - p) * math.log2((1 - p) / (n - 1))
    return bits


def evaluate_file(path: str, manifest: dict, model, batch: int = 256) -> dict:
    inp, pol = manifest["input"], manifest["policy"]
    labels = manifest["output"]["labels"]
    x, chans, fs, trials = read_ssvep(path)
    if chans != inp["channels"] or fs != inp["sample_rate"]:
        raise SystemExit(f"{path}: channels {chans} at {fs} Hz do not match the manifest")
    y = pipeline.preprocess(x, fs, manifest.get("preprocessing", {})).astype(np.float32)
    win = int(round(inp["window_seconds"] * fs))
    hop = int(round(inp["hop_seconds"] * fs))
    ends = pipeline.window_ends(y.shape[1], win, hop)
    logits = []
    with torch.no_grad():
        for i in range(0, len(ends), batch):
            w = np.stack([y[:, e - win : e] for e in ends[i : i + batch]])
            logits.append(model(torch.from_numpy(w)).numpy())
    logits = np.concatenate(logits).astype(np.float64)
    probs = pipeline.softmax(logits)
    pred = probs.argmax(1)
    t_end = ends / fs  # time of each window's last sample (+1 frame)
    tokens = pipeline.emit_tokens(
        probs,
        t_end,
        labels,
        pol["confidence_threshold"],
        pol["consecutive"],
        pol["refractory_seconds"],
        manifest["output"].get("null_label", ""),
    )
    n_win = n_win_ok = 0
    n_trials = vote_ok = tok_ok = no_tok = rest_tokens = 0
    decision = []
    trial_tokens = trial_tokens_ok = 0
    confusion = np.zeros((len(labels), len(labels)), dtype=int)  # rows: cue, cols: first token
    for onset, cue in trials:
        # Windows lying entirely inside the trial (ends compared in frames, exactly).
        s, e = int(round(onset * fs)), int(round((onset + TRIAL_S) * fs))
        inside = (ends - win >= s) & (ends <= e)
        # Tokens decided on windows lying entirely inside the trial (window end in [start + window, end]).
        toks = [tk for tk in tokens if s + win <= round(tk[0] * fs) <= e]
        if cue not in labels:
            rest_tokens += len(toks)
            continue
        k = labels.index(cue)
        n_trials += 1
        n_win += int(inside.sum())
        n_win_ok += int((pred[inside] == k).sum())
        votes = np.bincount(pred[inside], minlength=len(labels))
        vote_ok += int(votes.argmax() == k)
        trial_tokens += len(toks)
        trial_tokens_ok += sum(tk[1] == cue for tk in toks)
        if toks:
            t, lab, _ = toks[0]
            tok_ok += int(lab == cue)
            decision.append(t - onset)
            confusion[k, labels.index(lab)] += 1
        else:
            no_tok += 1
    token_acc = tok_ok / n_trials
    dec = float(np.mean(decision)) if decision else float("nan")
    bits = wolpaw_bits(len(labels), token_acc)
    return {
        "file": os.path.basename(path),
        "trials": n_trials,
        "windows": n_win,
        "window_acc": n_win_ok / n_win,
        "vote_acc": vote_ok / n_trials,
        "token_acc": token_acc,
        "no_token": no_tok,
        "decision_s": dec,
        "itr_bits_per_min": bits * 60.0 / dec if decision else 0.0,
        "token_precision": trial_tokens_ok / trial_tokens if trial_tokens else float("nan"),
        "rest_tokens": rest_tokens,
        "tokens_total": len(tokens),
        "confusion": confusion.tolist(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "ssvep-fbcca-3"), help="model package directory")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("files", nargs="*", help=f"recordings (default: the five of {DATA}/ssvep)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with open(os.path.join(args.model, "model.toml"), "rb") as f:
        manifest = tomllib.load(f)
    model = torch.jit.load(os.path.join(args.model, "model.pt"), map_location="cpu")
    files = args.files or [os.path.join(DATA, p) for p in SSVEP_FILES]
    results = [evaluate_file(p, manifest, model) for p in files]
    focus = [r for r in results if r["file"][:9] in ("subject01", "subject03", "subject04", "subject05")]
    summary = {
        "model": manifest["name"],
        "files": results,
        "mean_window_acc_01_03_04_05": float(np.mean([r["window_acc"] for r in focus])) if focus else None,
        "mean_token_acc_01_03_04_05": float(np.mean([r["token_acc"] for r in focus])) if focus else None,
        "mean_window_acc_all": float(np.mean([r["window_acc"] for r in results])),
    }
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(
        f"{manifest['name']}: {manifest['input']['window_seconds']} s windows every {manifest['input']['hop_seconds']} s, "
        f"policy threshold {manifest['policy']['confidence_threshold']}, consecutive {manifest['policy']['consecutive']}, "
        f"refractory {manifest['policy']['refractory_seconds']} s"
    )
    print(f"{'file':36s} {'trials':>6s} {'window':>7s} {'vote':>6s} {'token':>6s} {'none':>5s} {'dec s':>6s} {'ITR':>6s} {'prec':>5s} {'rest tok':>8s}")
    for r in results:
        print(
            f"{r['file']:36s} {r['trials']:6d} {r['window_acc']:7.3f} {r['vote_acc']:6.3f} {r['token_acc']:6.3f} "
            f"{r['no_token']:5d} {r['decision_s']:6.2f} {r['itr_bits_per_min']:6.1f} {r['token_precision']:5.2f} {r['rest_tokens']:8d}"
        )
    print(
        f"mean over subjects 01, 03, 04, 05: window {summary['mean_window_acc_01_03_04_05']:.3f}, "
        f"token {summary['mean_token_acc_01_03_04_05']:.3f}; window mean over all five {summary['mean_window_acc_all']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
