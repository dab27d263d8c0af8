"""LSL peer for bci2token's tests and benchmarks (pylsl, from .venv).

  lsl_peer.py outlet NAME SOURCE_ID CHANNELS RATE SECONDS [FORMAT [UNIT [START_INDEX [JUMP_AT JUMP_S]]]]
      Publishes a stream and pushes sample k (k = START_INDEX, ...) with value
      value(k, c) = (k % 100000) + c / 8 on channel c (exact in float32 and, for int formats,
      the integer part), stamped t0 + k / RATE on liblsl's clock, in real time. Prints one JSON
      line {"ready": t0, "first": START_INDEX} when the outlet exists, then {"done": n} at the end.
      FORMAT: float32 (default), double64, int32, int16, string; UNIT: written as each
      channel's <unit> ("" for none). CHANNELS may be 0. JUMP_AT, JUMP_S: from sample JUMP_AT on,
      the stamps are JUMP_S seconds later (a clock that jumps; the samples still come in real time).
  lsl_peer.py inlet NAME TYPE SECONDS
      Resolves the stream NAME of TYPE, pulls for SECONDS and prints each sample as a JSON line
      {"t": stamp, "sample": [...]}; first a line {"desc": <the stream's XML>}.
  lsl_peer.py latency NAME SECONDS
      Pulls NAME sample by sample and prints {"pulled": local_clock(), "stamp": stamp, "k": value}.
  lsl_peer.py lib
      Prints the path of the liblsl that pylsl carries.

Every run needs LSLAPICFG pointing at a config with [multicast] ResolveScope = machine.
"""
import json
import os
import sys
import time

if "LSLAPICFG" not in os.environ:
    sys.exit("lsl_peer.py: set LSLAPICFG to a config with [multicast] ResolveScope = machine")

import pylsl  # noqa: E402


def value(k, c):
    return (k % 100000) + c / 8.0


def outlet(name, source_id, channels, rate, seconds, fmt="float32", unit="microvolts", start=0, jump_at=-1,
           jump_s=0):
    channels, rate, seconds, start = int(channels), float(rate), float(seconds), int(start)
    jump_at, jump_s = int(jump_at), float(jump_s)
    info = pylsl.StreamInfo(name, "EEG", channels, rate, fmt, source_id)
    chs = info.desc().append_child("channels")
    for c in range(channels):
        ch = chs.append_child("channel")
        ch.append_child_value("label", f"C{c + 1}")
        if unit:
            ch.append_child_value("unit", unit)
        ch.append_child_value("type", "EEG")
    out = pylsl.StreamOutlet(info)
    t0 = pylsl.local_clock() - start / rate
    print(json.dumps({"ready": t0, "first": start}), flush=True)
    k = start
    end = start + int(seconds * rate)
    while k < end:
        due = t0 + k / rate
        now = pylsl.local_clock()
        if due > now:
            time.sleep(min(due - now, 0.01))
            continue
        if fmt == "string":
            sample = [str(value(k, c)) for c in range(channels)]
        elif fmt.startswith("int"):
            sample = [int(value(k, c)) for c in range(channels)]
        else:
            sample = [value(k, c) for c in range(channels)]
        out.push_sample(sample, due + (jump_s if 0 <= jump_at <= k else 0.0))
        k += 1
    print(json.dumps({"done": k - start}), flush=True)
    time.sleep(0.5)


def inlet(name, type_, seconds):
    streams = pylsl.resolve_byprop("name", name, 1, 10.0)
    streams = [s for s in streams if s.type() == type_]
    if not streams:
        sys.exit(f"lsl_peer.py: no stream {name!r} of type {type_!r}")
    inl = pylsl.StreamInlet(streams[0])
    inl.open_stream(10.0)
    print(json.dumps({"desc": inl.info(5.0).as_xml()}), flush=True)
    end = time.time() + float(seconds)
    while time.time() < end:
        sample, stamp = inl.pull_sample(timeout=0.1)
        if sample is not None:
            print(json.dumps({"t": stamp, "sample": sample}), flush=True)


def latency(name, seconds):
    streams = pylsl.resolve_byprop("name", name, 1, 10.0)
    inl = pylsl.StreamInlet(streams[0])
    inl.open_stream(10.0)
    end = time.time() + float(seconds)
    while time.time() < end:
        sample, stamp = inl.pull_sample(timeout=0.1)
        if sample is not None:
            print(json.dumps({"pulled": pylsl.local_clock(), "stamp": stamp, "k": sample[0]}), flush=True)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "outlet":
        outlet(*args)
    elif cmd == "inlet":
        inlet(*args)
    elif cmd == "latency":
        latency(*args)
    elif cmd == "lib":
        print(os.path.join(os.path.dirname(pylsl.__file__), "lib", "liblsl.so.2"))
    else:
        sys.exit(f"lsl_peer.py: unknown command {cmd!r}")
