"""Learned encoders: CNN backbones (pure PyTorch ResNets) and MoFA's semantic-code encoder."""

from engine.encoders.code import CodeLayout, SemanticCode
from engine.encoders.mofa_encoder import MofaEncoder
from engine.encoders.resnet import ResNet, build_backbone

__all__ = ["CodeLayout", "MofaEncoder", "ResNet", "SemanticCode", "build_backbone"]
