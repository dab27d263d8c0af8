"""Writers for the mi-eegnet package: exact float32 JSON lists, TOML values, and a byte-for-byte
reproducible torch.jit.save. (Self-contained so the motor-imagery export does not depend on the
SSVEP exporter's internals.)"""

import hashlib
import io
import json
import re
import zipfile

import numpy as np
import torch


def f32_list(a: np.ndarray) -> list:
    """Python floats equal to the float32 values: json writes them with repr, which round-trips
    exactly to the same float64 and therefore to the same float32."""
    return [float(v) for v in np.asarray(a, dtype=np.float32).ravel()]


def bits_list(a: np.ndarray) -> list:
    """The float32 values as u32 bit patterns."""
    return [int(v) for v in np.asarray(a, dtype=np.float32).ravel().view(np.uint32)]


def toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        r = repr(v)
        return r if ("." in r or "e" in r or "inf" in r or "nan" in r) else r + ".0"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def deterministic_jit_save(module: torch.jit.ScriptModule, path: str) -> None:
    """torch.jit.save, then the zip rewritten with fixed timestamps, stored entries and the
    original entry order, so the same module gives the same file byte for byte. torch.jit.load
    reads it like the original.

    Three things in torch's archive vary from run to run and are fixed here: `.data/serialization_id`
    (a random number per save; replaced by one derived from the other entries' bytes), and the order
    of the `Final` constants in the generated code, which follows Python's string hashing (the
    caller must run with PYTHONHASHSEED=0; train_mi_eegnet.py re-executes itself so), and the
    absolute paths in the debug_pkl entries (left out)."""
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    buf.seek(0)
    with zipfile.ZipFile(buf) as zin:
        # code/*.debug_pkl hold Python source locations (absolute paths of this checkout and of
        # the venv's torch) for error messages: left out, so the file does not depend on where
        # it was exported. torch.jit.load and libtorch load a module without them.
        entries = [(i, zin.read(i.filename)) for i in zin.infolist() if not i.filename.endswith(".debug_pkl")]
    digest = hashlib.sha256()
    for info, data in entries:
        if not info.filename.endswith("/serialization_id"):
            digest.update(info.filename.encode() + b"\0" + data)
    sid = str(int(digest.hexdigest(), 16))[:40].rjust(40, "0").encode()
    entries = [(i, sid if i.filename.endswith("/serialization_id") else d) for i, d in entries]
    with zipfile.ZipFile(path, "w") as zout:
        for info, data in entries:
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_STORED
            zi.external_attr = info.external_attr
            zout.writestr(zi, data)
