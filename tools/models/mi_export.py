"""Writers for the mi-eegnet package: exact float32 JSON lists, TOML values, and a byte-for-byte
reproducible torch.jit.save. (Self-contained so the motor-imagery export does not depend on the
SSVEP exporter's internals.)"""

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
    original entry order, so the same module gives the same file byte for byte.
    torch.jit.load reads it like the original."""
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    buf.seek(0)
    with zipfile.ZipFile(buf) as zin:
        entries = [(i, zin.read(i.filename)) for i in zin.infolist()]
    with zipfile.ZipFile(path, "w") as zout:
        for info, data in entries:
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_STORED
            zi.external_attr = info.external_attr
            zout.writestr(zi, data)
