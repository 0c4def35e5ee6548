"""JSON encoding of function outputs, the only thing a graded notebook sends back.

Standard library only (torch and numpy are used when already imported), so that the kernel
side can load this file by path without importing :mod:`minseg` (see ``collect.py``).

``encode`` turns tensors, arrays, numbers, strings, ``None``, lists, tuples and dicts into
plain JSON values with a few tagged objects; anything else becomes an opaque
``{"__object__": type name, "repr": ...}`` that compares unequal to every expected value.
``decode`` (grader side) rebuilds tensors; it never unpickles or evaluates anything, so a
hostile result file can at worst be wrong.
"""
from __future__ import annotations

import json
import math
import sys
from typing import Any

MAX_ELEMENTS = 2_000_000
"""Most numbers one result may contain (a larger output is reported as an error)."""

DTYPES = ("float16", "bfloat16", "float32", "float64", "uint8", "int8", "int16", "int32",
          "int64", "bool")


class Opaque:
    """A value that could not be encoded (a module, a generator, ...): its type and repr."""

    def __init__(self, type_name: str, text: str) -> None:
        self.type_name, self.text = type_name, text

    def __repr__(self) -> str:
        return f"<{self.type_name}: {self.text}>"

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]


def _array(kind: str, dtype: str, shape: list[int], flat: list, budget: list[int]) -> dict:
    budget[0] -= len(flat)
    if budget[0] < 0:
        raise ValueError(f"output too large (more than {MAX_ELEMENTS} numbers)")
    return {kind: True, "dtype": dtype, "shape": shape, "data": flat}


def encode(x: Any, _budget: list[int] | None = None, _depth: int = 0) -> Any:
    """A JSON-serialisable form of ``x`` (see the module docstring)."""
    budget = [MAX_ELEMENTS] if _budget is None else _budget
    if _depth > 20:
        raise ValueError("output nested too deeply")
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        return x
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.is_complex():
            return {"__object__": "complex tensor", "repr": repr(t)[:200]}
        dtype = str(t.dtype).replace("torch.", "")
        if dtype not in DTYPES:
            t, dtype = t.double(), "float64"
        if dtype in ("float16", "bfloat16"):
            t = t.float()
        if t.numel() > MAX_ELEMENTS:
            raise ValueError(f"output too large ({t.numel()} numbers)")
        return _array("__tensor__", dtype, list(t.shape), t.reshape(-1).tolist(), budget)
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(x, np.ndarray):
            dtype = str(x.dtype)
            if dtype not in DTYPES or x.dtype.kind == "c":
                if x.dtype.kind not in "biuf":
                    return {"__object__": f"ndarray[{dtype}]", "repr": repr(x)[:200]}
                x, dtype = x.astype("float64"), "float64"
            if x.size > MAX_ELEMENTS:
                raise ValueError(f"output too large ({x.size} numbers)")
            return _array("__ndarray__", dtype, list(x.shape), x.reshape(-1).tolist(), budget)
        if isinstance(x, np.generic) and x.dtype.kind in "biuf":
            return x.item()
    if isinstance(x, tuple):
        return {"__tuple__": [encode(v, budget, _depth + 1) for v in x]}
    if isinstance(x, list):
        return [encode(v, budget, _depth + 1) for v in x]
    if isinstance(x, dict):
        return {"__dict__": [[encode(k, budget, _depth + 1), encode(v, budget, _depth + 1)]
                             for k, v in x.items()]}
    try:
        text = repr(x)[:200]
    except Exception:  # a hostile __repr__
        text = "?"
    return {"__object__": type(x).__name__, "repr": text}


def dumps(x: Any) -> str:
    """``json.dumps(encode(x))``."""
    return json.dumps(encode(x), allow_nan=True)


def _decode_array(d: dict) -> Any:
    import torch

    dtype = d.get("dtype")
    shape = d.get("shape")
    data = d.get("data")
    if dtype not in DTYPES or not isinstance(shape, list) or not isinstance(data, list):
        return Opaque("malformed array", "")
    if not all(isinstance(s, int) and s >= 0 for s in shape) or math.prod(shape) != len(data):
        return Opaque("malformed array", f"shape {shape}, {len(data)} values")
    if not all(isinstance(v, (int, float, bool)) for v in data):
        return Opaque("malformed array", "non-numeric values")
    tdtype = getattr(torch, dtype)
    try:
        return torch.tensor(data, dtype=tdtype).reshape(shape)
    except (RuntimeError, OverflowError, TypeError) as e:
        return Opaque("malformed array", str(e)[:100])


def decode(v: Any, _depth: int = 0) -> Any:
    """Inverse of :func:`encode` (arrays come back as torch tensors)."""
    if _depth > 25:
        return Opaque("too deep", "")
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, list):
        return [decode(x, _depth + 1) for x in v]
    if isinstance(v, dict):
        if v.get("__tensor__") is True or v.get("__ndarray__") is True:
            return _decode_array(v)
        if isinstance(v.get("__tuple__"), list):
            return tuple(decode(x, _depth + 1) for x in v["__tuple__"])
        if isinstance(v.get("__dict__"), list):
            out = {}
            for item in v["__dict__"]:
                if not (isinstance(item, list) and len(item) == 2):
                    return Opaque("malformed dict", "")
                k = decode(item[0], _depth + 1)
                try:
                    out[k] = decode(item[1], _depth + 1)
                except TypeError:  # unhashable key
                    return Opaque("dict", "with unhashable keys")
            return out
        if "__object__" in v:
            return Opaque(str(v.get("__object__"))[:60], str(v.get("repr", ""))[:200])
    return Opaque("malformed value", "")


def roundtrip(x: Any) -> Any:
    """``decode(encode(x))`` through JSON text: exactly what the grader would see."""
    return decode(json.loads(dumps(x)))
