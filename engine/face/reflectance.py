"""Reflectance models: coefficients ``(B, K, 3)`` -> per-vertex albedo ``(B, V, 3)``.

Our head models have no albedo PCA, so MoFA's reflectance is a mean skin colour plus the
``K`` smoothest eigenvectors of the graph Laplacian of the template's nearest-neighbour
graph (one RGB coefficient per mode; mode 0 is the constant = the global skin colour),
each with a prior std (``std_global`` for the global colour, ``std_local`` for the spatial
modes), so coefficients are in prior-std units.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["LaplacianReflectance", "laplacian_basis"]


def laplacian_basis(template: Tensor, k: int, neighbours: int = 8) -> Tensor:
    """The ``k`` smoothest eigenvectors (V, k) of the graph Laplacian of the template's
    k-nearest-neighbour graph, RMS 1 per vertex, signs fixed (largest entry positive).

    A spatial graph rather than the mesh's edges: the head mesh has separate parts (eyes,
    tongue, mouth cavity) whose indicator vectors would otherwise be the smoothest modes.
    Mode 0 is the constant (the global skin colour).
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh
    from scipy.spatial import cKDTree

    X = template.detach().cpu().double().numpy()
    V = X.shape[0]
    _, idx = cKDTree(X).query(X, k=neighbours + 1)
    rows = np.repeat(np.arange(V), neighbours)
    A = sp.coo_matrix((np.ones(V * neighbours), (rows, idx[:, 1:].ravel())), shape=(V, V))
    A = ((A + A.T) > 0).astype(np.float64)
    L = sp.diags(np.asarray(A.sum(1)).ravel()) - A
    v0 = np.ones(V) / np.sqrt(V)
    _, vecs = eigsh(L.tocsc(), k=k, sigma=-1e-3, which="LM", v0=v0)
    vecs = vecs * np.sqrt(V)
    signs = np.sign(vecs[np.abs(vecs).argmax(0), np.arange(k)])
    return torch.tensor(vecs * signs, dtype=torch.float32)


class LaplacianReflectance(nn.Module):
    """``albedo = mean + Σ_k c_k · std_k · basis_k`` (per RGB channel).

    Buffers: ``basis (K, V)`` (already multiplied by each mode's std) and ``mean (3,)``;
    both are saved in checkpoints, so a trained network keeps the basis it learned with.
    """

    def __init__(self, template: Tensor, n_modes: int, std_global: float, std_local: float,
                 mean: tuple[float, float, float]) -> None:
        super().__init__()
        basis = laplacian_basis(template, n_modes)  # (V, K)
        std = torch.full((n_modes,), float(std_local))
        std[0] = float(std_global)
        self.register_buffer("basis", (basis * std).T.contiguous())
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))

    @property
    def n_modes(self) -> int:
        return int(self.basis.shape[0])

    def forward(self, coefficients: Tensor) -> Tensor:
        """``(B, K, 3)`` coefficients in prior-std units -> albedo ``(B, V, 3)``."""
        return self.mean + torch.einsum("bkc,kv->bvc", coefficients.float(), self.basis)
