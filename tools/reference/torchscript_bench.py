"""Peer for the decoder latency benchmark: the same TorchScript model run by Python torch.

usage: torchscript_bench.py MODEL_DIR WINDOWS IDLE_WINDOWS IDLE_MS THREADS BATCHES...
Prints one JSON object: per-window latency percentiles at batch 1 (µs), back to back and with
IDLE_MS of sleep before each of IDLE_WINDOWS windows (as in the daemon, where a window comes every
hop and the caches go cold in between), and windows/s per batch size.
"""
import json
import sys
import time
import tomllib

import torch


def main() -> None:
    model_dir, windows, idle_windows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    idle_s, threads = float(sys.argv[4]) / 1000, int(sys.argv[5])
    batches = [int(b) for b in sys.argv[6:]]
    torch.set_num_threads(threads)
    with open(f"{model_dir}/model.toml", "rb") as f:
        m = tomllib.load(f)
    c = len(m["input"]["channels"])
    t = round(m["input"]["window_seconds"] * m["input"]["sample_rate"])
    module = torch.jit.load(f"{model_dir}/model.pt")
    module.eval()
    gen = torch.Generator().manual_seed(1)
    x1 = torch.randn(1, c, t, generator=gen) * 10

    def latencies(n: int, idle: float) -> list:
        lat = []
        for _ in range(n):
            x = (torch.randn(1, c, t, generator=gen) * 10).numpy()  # the daemon also builds the input tensor
            if idle > 0:
                time.sleep(idle)
            start = time.perf_counter_ns()
            module(torch.from_numpy(x)).numpy()
            lat.append((time.perf_counter_ns() - start) / 1000)
        return sorted(lat)

    with torch.no_grad():
        for _ in range(20):
            module(x1)
        lat = latencies(windows, 0.0)
        idle = latencies(idle_windows, idle_s)
        out = {
            "p50_us": lat[len(lat) // 2],
            "p99_us": lat[int(len(lat) * 0.99)],
            "idle_p50_us": idle[len(idle) // 2],
            "idle_p99_us": idle[int(len(idle) * 0.99)],
            "throughput": {},
        }
        for b in batches:
            xb = torch.randn(b, c, t, generator=gen) * 10
            module(xb)
            reps = max(3, 2000 // b)
            start = time.perf_counter()
            for _ in range(reps):
                module(xb)
            out["throughput"][str(b)] = b * reps / (time.perf_counter() - start)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
