"""``describe_state_mismatch``: a wrong-architecture checkpoint in one short sentence (#16 item 7)."""

from __future__ import annotations

import torch

from engine.checkpoints import MAX_MESSAGE, describe_state_mismatch


def _shapes(module: torch.nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in module.state_dict().items()}


def test_names_the_first_differing_tensors_and_what_it_was_trained_for():
    expected = {"backbone.conv.weight": torch.Size([64, 3, 7, 7]), "head.weight": torch.Size([306, 512]),
                "head.bias": torch.Size([306]), "refl_mean": torch.Size([15069])}
    got = {**expected, "head.weight": torch.Size([456, 512]), "head.bias": torch.Size([456])}
    msg = describe_state_mismatch(expected, got, "head model 'flame' (5023 vertices)")
    assert msg == ("the checkpoint was trained for head model 'flame' (5023 vertices): head.weight is 456x512 in "
                   "it, 306x512 here; head.bias is 456 in it, 306 here")


def test_counts_the_rest_and_reports_missing_and_unexpected_tensors():
    expected = {f"layer{i}.weight": torch.Size([8, i + 1]) for i in range(6)}
    got = {f"layer{i}.weight": torch.Size([9, i + 1]) for i in range(5)}
    got["extra.bias"] = torch.Size([3])
    msg = describe_state_mismatch(expected, got, "a resnet50 encoder")
    assert msg.startswith("the checkpoint was trained for a resnet50 encoder: layer0.weight is 9x1 in it, 8x1 here; "
                          "layer1.weight is 9x2 in it, 8x2 here")
    assert msg.endswith("; 3 more differ in shape; 1 missing; 1 unexpected")
    only_missing = describe_state_mismatch({"a": torch.Size([1]), "b": torch.Size([])}, {"a": torch.Size([1])}, "x")
    assert only_missing == "the checkpoint was trained for x: b is missing from it"
    assert describe_state_mismatch({"a": torch.Size([1])}, {"a": torch.Size([1])}, "x") == ""


def test_long_names_and_descriptions_stay_within_the_limit():
    deep = ".".join(["block"] * 40) + ".weight"
    expected = {deep: torch.Size([4, 4]), deep + "2": torch.Size([4])}
    got = {deep: torch.Size([5, 4]), deep + "2": torch.Size([5])}
    msg = describe_state_mismatch(expected, got, "head model " + "'x'" * 100)
    assert len(msg) <= MAX_MESSAGE and "\n" not in msg
    assert "5x4 in it, 4x4 here" in msg and msg.startswith("the checkpoint was trained for head model")


def test_a_real_network_of_another_architecture():
    """MoFA with another backbone width and code size: load_state_dict's message is kilobytes,
    ours names the first differing tensor and fits in MAX_MESSAGE characters."""
    from engine.methods.mofa import Mofa, MofaConfig

    here = Mofa(MofaConfig(n_identity=20, n_expression=10))
    other = Mofa(MofaConfig(n_identity=40, n_expression=10, width=0.5))
    msg = describe_state_mismatch(_shapes(here), _shapes(other), "head model 'open', resnet18 at width 0.5")
    assert len(msg) <= MAX_MESSAGE and "\n" not in msg, msg
    assert msg.startswith("the checkpoint was trained for head model 'open', resnet18 at width 0.5: ")
    first = next(k for k, v in _shapes(here).items() if _shapes(other)[k] != v)
    assert f"{first} is {'x'.join(map(str, _shapes(other)[first]))} in it" in msg
    assert "more differ in shape" in msg
    try:
        here.load_state_dict(other.state_dict())
        raise AssertionError("the state dicts should not match")
    except RuntimeError as exc:
        assert len(str(exc)) > 2000  # what users saw before
