"""engine.eval.reflectance: the held-out identity-group scores of learned networks (issue #13)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_scale_invariant_error_ignores_one_overall_scale():
    from engine.eval.reflectance import scale_invariant_error

    g = torch.Generator().manual_seed(0)
    true = torch.rand(50, 3, generator=g)
    assert scale_invariant_error(2.0 * true, true) < 1e-6  # a brighter guess of the same skin
    assert scale_invariant_error(true.flip(0), true) > 0.05  # another pattern is an error


def test_reflectance_report_scores_a_network_on_held_out_groups(tmp_path):
    """The committed MoFA network on one rendered held-out group (3 views): every figure is
    finite and in its range; the CLI prints the table and writes the JSON report."""
    from engine.eval.__main__ import main
    from engine.eval.reflectance import evaluate_reflectance, held_out_groups, load_network

    net = load_network(ROOT / "engine" / "assets" / "mofa_open_default.pt")
    data = held_out_groups(net.head, 1, net.image_size)
    assert data[0]["image"].shape == (3, 3, 128, 128)
    rep = evaluate_reflectance(net, 1, groups=data)
    d = rep.summary()
    assert d["views"] == 3 and len(rep.consistency) == 1
    assert 0.0 <= d["reflectance_si"] <= d["reflectance_raw"] + 1e-6 < 0.5
    assert 0.0 < d["photometric"] < 0.5 and 0.0 < d["geometric_mm_median"] < 20.0
    assert 0.0 < d["landmark_px_median"] < 30.0
    report = tmp_path / "r.json"
    assert main(["reflectance", "--checkpoint", str(ROOT / "engine/assets/mofa_open_default.pt"), "--n", "1",
                 "--quiet", "--report", str(report)]) == 0
    saved = json.loads(report.read_text())
    assert saved[0]["method"] == "mofa" and saved[0]["summary"]["views"] == 3
    with pytest.raises(SystemExit):
        main(["reflectance", "--checkpoint", str(tmp_path / "missing.pt"), "--n", "1", "--quiet"])
