"""A restricted unpickler for FLAME-era model files.

FLAME's ``generic_model.pkl`` is a Python-2 pickle of numpy arrays, a ``scipy.sparse``
matrix and ``chumpy.ch.Ch`` objects. Unpickling normally imports and runs whatever the file
names, so we allow only the handful of array constructors these files use and map chumpy
and scipy classes to inert holders that merely keep their state. Anything else (``os.system``,
``builtins.eval``, ``subprocess``...) raises :class:`engine.errors.ModelFileError`.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy.core import multiarray

from engine.errors import ModelFileError


class ChumpyArray:
    """Stand-in for ``chumpy.ch.Ch``: keeps the pickled state; ``.x`` is the array."""

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"x": state}

    def array(self) -> np.ndarray:
        x = self.state.get("x")
        if isinstance(x, ChumpyArray):
            return x.array()
        if not isinstance(x, np.ndarray):
            raise ModelFileError("a chumpy object in the model file holds no array ('x').")
        return x


class SparseMatrix:
    """Stand-in for ``scipy.sparse.csc_matrix`` / ``csr_matrix``: state only, ``dense()``."""

    fmt = "csc"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def dense(self) -> np.ndarray:
        s = self.state
        shape = tuple(s.get("_shape", s.get("shape")))
        data, indices, indptr = (np.asarray(s[k]) for k in ("data", "indices", "indptr"))
        out = np.zeros(shape, dtype=np.float64)
        major = shape[1] if self.fmt == "csc" else shape[0]
        for j in range(major):
            sl = slice(indptr[j], indptr[j + 1])
            if self.fmt == "csc":
                out[indices[sl], j] = data[sl]
            else:
                out[j, indices[sl]] = data[sl]
        return out


class CsrMatrix(SparseMatrix):
    fmt = "csr"


_HOLDERS = (ChumpyArray, SparseMatrix, CsrMatrix)


def _reconstructor(cls: type, base: type, state: Any) -> object:
    """Safe replacement of ``copyreg._reconstructor`` (protocol-0/1 object pickles)."""
    if cls not in _HOLDERS or base is not object:
        raise ModelFileError(f"model file tries to rebuild a {cls!r}, which is not allowed.")
    return object.__new__(cls)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Safe ``_codecs.encode``: Python-3 pickles (protocol <= 2) store bytes this way."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ModelFileError("model file uses _codecs.encode in an unexpected way; refusing to load it.")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy", "dtype"): np.dtype,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("chumpy.ch", "Ch"): ChumpyArray,
    # inert containers that chumpy's object state may hold
    **{(mod, c.__name__): c for mod in ("__builtin__", "builtins") for c in (set, frozenset, list, dict, tuple)},
    ("scipy.sparse.csc", "csc_matrix"): SparseMatrix,
    ("scipy.sparse._csc", "csc_matrix"): SparseMatrix,
    ("scipy.sparse.csr", "csr_matrix"): CsrMatrix,
    ("scipy.sparse._csr", "csr_matrix"): CsrMatrix,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Only the globals in ``_ALLOWED`` may be referenced; everything else is refused."""

    source = "model file"

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise ModelFileError(
                f"{self.source} references {module}.{name}, which a model file never needs; "
                "refusing to load it (it may be corrupt or malicious).") from None


def load_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` (Python 2 or 3 pickle) with the restricted unpickler."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read {p} ({exc.strerror or exc}).") from None
    return loads(raw, str(p))


def loads(raw: bytes, source: str = "model file") -> Any:
    up = RestrictedUnpickler(io.BytesIO(raw), encoding="latin1")
    up.source = source
    try:
        return up.load()
    except ModelFileError:
        raise
    except Exception as exc:  # truncated/corrupt streams raise many kinds
        raise ModelFileError(f"{source} is not a readable model pickle ({type(exc).__name__}: {exc}).") from None


def load_npy(path: str | Path) -> Any:
    """Read a ``.npy``: plain arrays without pickle; object arrays via the restricted unpickler."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            shape, fortran, dtype = np.lib.format._read_array_header(fh, version)
            if dtype.hasobject:
                obj = loads(fh.read(), str(p))
                return obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj
        return np.load(p, allow_pickle=False)
    except ModelFileError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"cannot read {p} as a .npy file ({exc}).") from None


def to_array(x: Any) -> np.ndarray:
    """Arrays, chumpy holders and sparse holders -> numpy array."""
    if isinstance(x, ChumpyArray):
        return np.asarray(x.array())
    if isinstance(x, SparseMatrix):
        return x.dense()
    return np.asarray(x)
