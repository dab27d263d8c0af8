"""Scores a hands-vs-feet motor-imagery decoder on an eegmmidb run the way the daemon runs it:
the whole run replayed causally (the manifest's preprocessing from the run's first frame),
windows of window_seconds every hop_seconds, softmax, the manifest's emission policy.

    .cache/export-venv/bin/python tools/models/mi_eval.py [--model models/mi-eegnet] [--json] [eegmmidb/S001R10.edf ...]

Figures (trials are the T1/T2 annotations with their durations; rest T0 is never scored as a class):
  trial_first   the first token emitted at a time inside [onset, onset + duration] decides the trial
                (a token's time is that of the last frame of the window that decided it, seconds from
                the run's first frame, as the daemon stamps it); a trial without one counts as wrong.
                This is the rule of `bci2tokenctl evaluate` for eegmmidb.
  trial_first_inside
                the same, counting only tokens decided by windows lying entirely inside the trial
                (window end in [onset + window, onset + duration]); stricter, as eval_ssvep.py does.
  trial_majority
                per trial, the hands/feet label most of its windows chose (windows entirely inside
                the trial, arg-max over hands and feet only, so a rest class does not vote).
  window        those windows' hands/feet arg-max against the trial label.
  no_token      trials without a token by the trial_first rule; rest_tokens: tokens at times inside
                T0 annotations (false alarms); decision_s: mean time from onset to the deciding token.
"""

import math
import os
import sys
from typing import Callable, Dict, List

import numpy as np

import mi_data
import pipeline


def wolpaw_bits(n: int, p: float) -> float:
    if p <= 1.0 / n:
        return 0.0
    bits = math.log2(n) + p * math.log2(p)
    if p < 1:
        bits += (1 - p) * math.log2((1 - p) / (n - 1))
    return bits


def replay(run: "mi_data.Run", spec: Dict, logits_fn: Callable[[np.ndarray], np.ndarray], batch: int = 256):
    """Logits [windows, labels] (float64) and window end frames for the whole run."""
    inp = spec["input"]
    y = mi_data.preprocessed(run, inp["channels"], spec.get("preprocessing", {})).astype(np.float32)
    win = int(round(inp["window_seconds"] * run.fs))
    hop = int(round(inp["hop_seconds"] * run.fs))
    ends = mi_data.window_ends(y.shape[1], win, hop)
    out = []
    for i in range(0, len(ends), batch):
        out.append(np.asarray(logits_fn(mi_data.stack(y, ends[i : i + batch], win)), dtype=np.float64))
    return np.concatenate(out), ends, win


def score(logits: np.ndarray, ends: np.ndarray, win: int, run: "mi_data.Run", spec: Dict) -> Dict:
    fs = run.fs
    labels: List[str] = spec["output"]["labels"]
    null = spec["output"].get("null_label", "")
    pol = spec["policy"]
    probs = pipeline.softmax(logits)
    # A token's time is its window's last frame, as in the daemon (WindowInfo::last_time).
    times = (ends - 1) / fs
    tokens = pipeline.emit_tokens(
        probs, times, labels, pol["confidence_threshold"], pol["consecutive"], pol["refractory_seconds"], null
    )
    tok_frames = np.array([int(round(t * fs)) for t, _, _ in tokens], dtype=int)
    hf = [labels.index("hands"), labels.index("feet")]
    pred_hf = np.where(logits[:, hf[0]] >= logits[:, hf[1]], "hands", "feet")

    n = first_ok = inside_ok = maj_ok = no_tok = 0
    n_win = n_win_ok = 0
    decision = []
    confusion = {a: {b: 0 for b in ["hands", "feet", "none"]} for a in ["hands", "feet"]}
    for onset, dur, lab in run.trials():
        s, e = int(round(onset * fs)), int(round((onset + dur) * fs))
        n += 1
        inside = (ends - win >= s) & (ends <= e)
        n_win += int(inside.sum())
        n_win_ok += int((pred_hf[inside] == lab).sum())
        votes = {k: int((pred_hf[inside] == k).sum()) for k in ("hands", "feet")}
        maj_ok += int(votes[lab] > votes["feet" if lab == "hands" else "hands"])
        first = [i for i, f in enumerate(tok_frames) if s <= f <= e]
        if first:
            t, got, _ = tokens[first[0]]
            first_ok += int(got == lab)
            decision.append(t - onset)
            confusion[lab][got] += 1
        else:
            no_tok += 1
            confusion[lab]["none"] += 1
        strict = [i for i, f in enumerate(tok_frames) if s + win <= f + 1 <= e]
        if strict:
            inside_ok += int(tokens[strict[0]][1] == lab)
    rest_tokens = 0
    for onset, dur, _ in run.trials(cues=("T0",)):
        s, e = int(round(onset * fs)), int(round((onset + dur) * fs))
        rest_tokens += int(((tok_frames > s) & (tok_frames < e)).sum())
    acc = first_ok / n
    dec = float(np.mean(decision)) if decision else float("nan")
    return {
        "file": run.rel,
        "trials": n,
        "trial_first": acc,
        "trial_first_inside": inside_ok / n,
        "trial_majority": maj_ok / n,
        "window": n_win_ok / n_win,
        "windows": n_win,
        "no_token": no_tok,
        "tokens_total": len(tokens),
        "rest_tokens": rest_tokens,
        "decision_s": dec,
        "itr_bits_per_min": wolpaw_bits(2, acc) * 60.0 / dec if decision else 0.0,
        "confusion": confusion,
    }


def evaluate(run: "mi_data.Run", spec: Dict, logits_fn) -> Dict:
    logits, ends, win = replay(run, spec, logits_fn)
    return score(logits, ends, win, run, spec)


def main() -> int:
    import argparse
    import json
    import tomllib

    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(mi_data.ROOT, "models", "mi-eegnet"), help="package directory")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("files", nargs="*", help="eegmmidb runs relative to the data folder (default: eegmmidb/S001R10.edf)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with open(os.path.join(args.model, "model.toml"), "rb") as f:
        spec = tomllib.load(f)
    model = torch.jit.load(os.path.join(args.model, "model.pt"), map_location="cpu")

    def logits(w):
        with torch.no_grad():
            return model(torch.from_numpy(w)).numpy()

    results = [evaluate(mi_data.Run(p), spec, logits) for p in (args.files or ["eegmmidb/S001R10.edf"])]
    if args.json:
        print(json.dumps({"model": spec["name"], "policy": spec["policy"], "files": results}, indent=1))
    else:
        print(f"{spec['name']}: policy {spec['policy']}")
        for r in results:
            print(
                f"{r['file']}: trials {r['trials']}  trial_first {r['trial_first']:.3f}  trial_first_inside "
                f"{r['trial_first_inside']:.3f}  trial_majority {r['trial_majority']:.3f}  window {r['window']:.3f} "
                f"({r['windows']})  no_token {r['no_token']}  tokens {r['tokens_total']} (in rest {r['rest_tokens']})  "
                f"decision {r['decision_s']:.2f} s  ITR {r['itr_bits_per_min']:.2f} bits/min"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
