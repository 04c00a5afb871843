"""tools/probe_features.py: linear probes of a network's backbone features (held out by person)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ridge_probe_reads_a_planted_signal_and_not_noise(load_tool):
    """A target that is a linear function of the features scores R² near 1 on held-out rows;
    one independent of them scores near 0 (never well above), with a strong ridge chosen."""
    mod = load_tool("probe_features")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 40))
    signal = x[:, :3] @ rng.normal(size=(3, 5)) + 0.05 * rng.normal(size=(600, 5))
    noise = rng.normal(size=(600, 5))
    score, lam = mod.ridge_r2(x[:450], signal[:450], x[450:], signal[450:])
    assert score > 0.95 and lam <= 100
    score, lam = mod.ridge_r2(x[:450], noise[:450], x[450:], noise[450:])
    assert score < 0.05 and lam >= 1000
    assert mod.r2(signal, signal) == pytest.approx(1.0)
    assert mod.r2(np.zeros_like(signal) + signal.mean(0), signal) == pytest.approx(0.0)


def test_probe_tool_runs_on_rendered_people_and_rejects_bad_input(capsys, load_tool):
    """End to end on a few people rendered from the config's validation seeds with the
    committed DECA network: one line per quantity (features R², its λ, the head's R²), the
    jaw, which the network reads, included; too few people and a missing file are clean errors."""
    mod = load_tool("probe_features")
    ckpt = REPO / "engine" / "assets" / "deca_open_default.pt"
    assert mod.main(["--checkpoint", str(ckpt), "--people", "12"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("features: 256-d on 24 crops (12 people); probe fit on 9, scored on 3 others")
    labels = [line.split("features R²")[0].strip() for line in out[2:]]
    assert labels == ["expression (ARKit weights)", "identity (first 10 modes)", "jaw rotation"]
    for line in out[2:]:
        feat = float(line.split("features R²")[1].split("(")[0])
        head = float(line.split("head R²")[1])
        assert np.isfinite(feat) and np.isfinite(head) and feat <= 1.0 and head <= 1.0
    assert mod.main(["--checkpoint", str(ckpt), "--people", "2"]) == 2
    assert "--people must be at least 4" in capsys.readouterr().err
    assert mod.main(["--checkpoint", str(REPO / "no_such.pt")]) == 2
    assert "error:" in capsys.readouterr().err
