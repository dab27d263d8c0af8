"""Renders a script with the real synthetic driver plugin (libbci2token_driver_synthetic.so, built
by cargo) through its C ABI (drivers/abi/src/ffi.rs, ABI 1.x), for measuring speller-40 on the
exact samples the daemon will see. eval_speller.py uses it with --plugin PATH.
"""

import ctypes as C
import json
from typing import List, Optional, Tuple

import numpy as np


class AbiStr(C.Structure):
    _fields_ = [("ptr", C.c_void_p), ("len", C.c_size_t)]


class AbiBuf(C.Structure):
    _fields_ = [("ptr", C.c_void_p), ("len", C.c_size_t), ("cap", C.c_size_t)]


class AbiHeader(C.Structure):
    _fields_ = [("abi_major", C.c_uint32), ("abi_minor", C.c_uint32), ("struct_size", C.c_uint32)]


class ReadOut(C.Structure):
    _fields_ = [
        ("data", C.POINTER(C.c_float)),
        ("capacity", C.c_size_t),
        ("kind", C.c_uint32),
        ("frames", C.c_uint32),
        ("flags", C.c_uint32),
        ("t", C.c_double),
        ("event", AbiBuf),
    ]


_probe = C.CFUNCTYPE(C.c_int32, C.POINTER(AbiBuf))
_open = C.CFUNCTYPE(C.c_int32, AbiStr, C.POINTER(C.c_void_p), C.POINTER(AbiBuf))
_handle_out = C.CFUNCTYPE(C.c_int32, C.c_void_p, C.POINTER(AbiBuf))
_handle = C.CFUNCTYPE(C.c_int32, C.c_void_p)
_read = C.CFUNCTYPE(C.c_int32, C.c_void_p, C.c_uint32, C.POINTER(ReadOut))
_close = C.CFUNCTYPE(None, C.c_void_p)
_free = C.CFUNCTYPE(None, AbiBuf)


class DriverVTable(C.Structure):
    _fields_ = [
        ("header", AbiHeader),
        ("name", AbiStr),
        ("version", AbiStr),
        ("probe", _probe),
        ("open", _open),
        ("describe", _handle_out),
        ("start", _handle),
        ("read", _read),
        ("stop", _handle),
        ("close", _close),
        ("last_error", _handle_out),
        ("free_buf", _free),
    ]


OK, TIMEOUT, END = 0, 1, 2
KIND_BLOCK, KIND_EVENT = 1, 2


def _text(buf: AbiBuf) -> str:
    return C.string_at(buf.ptr, buf.len).decode() if buf.ptr else ""


def render(
    plugin: str, script: List[Tuple[Optional[float], float]], settings: dict, seed: int
) -> Tuple[np.ndarray, List[Tuple[int, int, Optional[float]]]]:
    """Like synthetic_board.Board.render, from the plugin: ([channels, frames] µV, segments)."""
    lib = C.CDLL(plugin)
    entry = lib.bci2token_driver_entry
    entry.restype = C.POINTER(DriverVTable)
    vt = entry().contents
    if vt.header.abi_major != 1:
        raise RuntimeError(f"{plugin}: driver ABI {vt.header.abi_major}.{vt.header.abi_minor}, this reader knows 1.x")
    items = [
        {"label": "rest", "seconds": s} if f is None else {"label": f"{f}Hz", "frequency": f, "seconds": s}
        for f, s in script
    ]
    cfg = dict(settings, seed=seed, speed=0, loop=False, script=items)
    raw = json.dumps(cfg).encode()
    handle, err = C.c_void_p(), AbiBuf()
    keep = C.create_string_buffer(raw, len(raw))
    if vt.open(AbiStr(C.cast(keep, C.c_void_p), len(raw)), C.byref(handle), C.byref(err)) != OK:
        msg = _text(err)
        vt.free_buf(err)
        raise RuntimeError(f"synthetic plugin refused {cfg}: {msg}")
    try:
        info = AbiBuf()
        vt.describe(handle, C.byref(info))
        stream = json.loads(_text(info))
        vt.free_buf(info)
        channels = len(stream.get("channels", [])) or int(settings.get("channels", 8))
        if vt.start(handle) != OK:
            raise RuntimeError("synthetic plugin: start failed")
        cap = channels * 65536
        data = (C.c_float * cap)()
        blocks = []
        while True:
            out = ReadOut(data=C.cast(data, C.POINTER(C.c_float)), capacity=cap)
            rc = vt.read(handle, 1000, C.byref(out))
            if rc == END:
                break
            if rc == TIMEOUT:
                continue
            if rc != OK:
                e = AbiBuf()
                vt.last_error(handle, C.byref(e))
                msg = _text(e)
                vt.free_buf(e)
                raise RuntimeError(f"synthetic plugin read failed: {msg}")
            if out.kind == KIND_EVENT:
                vt.free_buf(out.event)
                continue
            n = out.frames
            blocks.append(np.ctypeslib.as_array(data)[: channels * n].reshape(channels, n).copy())
        vt.stop(handle)
    finally:
        vt.close(handle)
    x = np.concatenate(blocks, axis=1).astype(np.float64)
    fs = float(settings.get("sample_rate", 250.0))
    segs, start, elapsed = [], 0, 0.0
    for f, s in script:
        elapsed += s
        end = int(round(elapsed * fs))
        segs.append((start, end, f))
        start = end
    return x[:, : segs[-1][1]], segs
