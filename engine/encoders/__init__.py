"""Learned encoders: CNN backbones (pure PyTorch ResNets), MoFA's semantic-code encoder and
the frozen identity network (dlib's face-recognition ResNet, read from its .dat file) with
dlib's face-chip alignment; small U-Net / conv encoders for UV-space estimators."""

from engine.encoders.code import CodeLayout, SemanticCode
from engine.encoders.face_chip import face_chip, face_chip_transform
from engine.encoders.face_recognition import (FaceRecognitionNet, face_recognition_model_path,
                                              load_face_recognition_net)
from engine.encoders.mofa_encoder import MofaEncoder
from engine.encoders.resnet import ResNet, build_backbone
from engine.encoders.unet import ConvEncoder, UNet

__all__ = ["CodeLayout", "ConvEncoder", "FaceRecognitionNet", "MofaEncoder", "ResNet", "SemanticCode", "UNet",
           "build_backbone", "face_chip", "face_chip_transform", "face_recognition_model_path", "load_face_recognition_net"]
