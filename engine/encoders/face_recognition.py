"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch.

DECA's identity loss compares face-recognition descriptors of the photo and of the
rendering. The network we use is dlib's 29-convolution metric-learning ResNet (128-D
descriptors; the weights are public domain, see docs/identity_network.md). Its weights ship
in the ``face-recognition-models`` PyPI package, so it installs offline from the registry.

We read dlib's binary serialization ourselves, with ``struct``/``numpy`` only: no dlib at run
time, nothing from the file is ever executed. The layout follows dlib's sources
(``dlib/serialize.h``, ``dlib/dnn/core.h``, ``dlib/dnn/layers.h``, ``dlib/dnn/input.h``,
``dlib/dnn/loss.h``) and the network type of ``examples/dnn_face_recognition_ex.cpp``::

    loss_metric<fc_no_bias<128,avg_pool_everything<alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2,relu<affine<con<32,7,7,2,2,input_rgb_image_sized<150>>>>>>>>>>>>>

with ``alevel4`` = 3 residual blocks of 32 channels, ``alevel3`` = 1 down + 3 of 64,
``alevel2`` = 1 down + 2 of 128, ``alevel1`` = 1 down + 2 of 256, ``alevel0`` = 1 down of 256.
A block is con3x3 -> affine -> relu -> con3x3 -> affine (``affine`` is a frozen batch norm);
a down block's first convolution has stride 2 and its shortcut is a 2x2 average pool whose
sum with the block zero-pads the smaller tensor (dlib's ``add_prev``: channels and the
bottom/right border). dlib's strided convolutions and pools have no padding.

Input convention: ``FaceRecognitionNet`` takes (B, 3, 150, 150) RGB **in [0, 1]**, an
aligned face chip as made by :mod:`engine.encoders.face_chip` (dlib's ``get_face_chip``,
size 150, padding 0.25); internally ``(255·x − mean_rgb) / 256`` as dlib's input layer.
Output: (B, 128) descriptors, not normalised (dlib's own; norms are close to 1; dlib's
same-person threshold is a Euclidean distance of 0.6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.dlib_models import dlib_model_path
from engine.errors import ModelFileError

MODEL_NAME = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
SAME_PERSON_DISTANCE = 0.6  # dlib's threshold on the Euclidean distance of descriptors

# ---------------------------------------------------------------------------------------
# dlib's serialization primitives (dlib/serialize.h, dlib/cuda/tensor.h)


class _DlibFormatError(Exception):
    """Internal: the byte stream does not match dlib's format (turned into ModelFileError)."""


class _Reader:
    """A cursor over the bytes of a dlib-serialized object."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise _DlibFormatError(f"file ends early (need {n} bytes at offset {self.pos})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int_(self) -> int:
        """dlib's integer: a control byte (0x80 = negative, low 4 bits = byte count) and
        that many little-endian magnitude bytes."""
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F
        if size == 0 or size > 8 or ctrl & 0x70:
            raise _DlibFormatError(f"bad integer control byte 0x{ctrl:02x} at offset {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if ctrl & 0x80 else value

    def float_(self) -> float:
        """dlib's float: integer mantissa then integer exponent, value = m·2^e."""
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise _DlibFormatError("old ASCII float encoding is not supported")
        mantissa = self.int_()
        exponent = self.int_()
        if exponent == 32000:
            return math.inf
        if exponent == 32001:
            return -math.inf
        if exponent == 32002:
            return math.nan
        return math.ldexp(mantissa, exponent)

    def bool_(self) -> bool:
        ch = bytes(self._take(1))
        if ch not in (b"0", b"1"):
            raise _DlibFormatError(f"bad bool byte {ch!r} at offset {self.pos - 1}")
        return ch == b"1"

    def string(self) -> str:
        n = self.int_()
        if n > 256:
            raise _DlibFormatError(f"implausible string length {n} at offset {self.pos}")
        return bytes(self._take(n)).decode("ascii", errors="replace")

    def tensor(self) -> np.ndarray:
        """``resizable_tensor`` (version 2): shape (n, k, nr, nc) then float32 little endian."""
        version = self.int_()
        if version != 2:
            raise _DlibFormatError(f"unknown tensor version {version}")
        shape = tuple(self.int_() for _ in range(4))
        if min(shape) < 0 or math.prod(shape) > 50_000_000:
            raise _DlibFormatError(f"implausible tensor shape {shape}")
        count = math.prod(shape)
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4", count=count).astype(np.float32).reshape(shape)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        """``alias_tensor`` (version 1): only its shape; the data lives in ``params``."""
        version = self.int_()
        if version != 1:
            raise _DlibFormatError(f"unknown alias_tensor version {version}")
        return tuple(self.int_() for _ in range(4))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------
# the layers of dlib's face-recognition network, innermost (input) first


@dataclass
class DlibLayer:
    """One parsed layer: ``kind`` is dlib's serialization tag without its version
    ('con', 'affine', 'relu', 'max_pool', 'avg_pool', 'add_prev', 'fc', 'input',
    'loss_metric') or 'tag1'/'tag2'/'skip1' for dlib's tag and skip layers."""

    kind: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    ints: dict[str, int] = field(default_factory=dict)
    floats: dict[str, float] = field(default_factory=dict)


def _ares(stride_down: bool) -> list[str]:
    block = ["tag1", "con", "affine", "relu", "con", "affine"]
    if stride_down:
        return block + ["tag2", "skip1", "avg_pool", "add_prev", "relu"]
    return block + ["add_prev", "relu"]


# (channels, first block is a down block, number of blocks) from the input upwards
STAGES: tuple[tuple[int, bool, int], ...] = (
    (32, False, 3),   # alevel4
    (64, True, 4),    # alevel3
    (128, True, 3),   # alevel2
    (256, True, 3),   # alevel1
    (256, True, 1),   # alevel0
)


def network_layout() -> list[str]:
    """Layer kinds of ``anet_type`` from the input up (loss excluded)."""
    kinds = ["input", "con", "affine", "relu", "max_pool"]
    for _, down, n in STAGES:
        for i in range(n):
            kinds += _ares(down and i == 0)
    return kinds + ["avg_pool", "fc"]


def _layer_details(r: _Reader) -> DlibLayer:
    """One layer's ``details`` object, dispatched on its version string."""
    name = r.string()
    if name in ("con_4", "con_5", "con_6"):
        lay = DlibLayer("con")
        params = r.tensor().reshape(-1)
        lay.ints["num_filters"] = r.int_()
        lay.ints["nr"], lay.ints["nc"] = r.int_(), r.int_()
        lay.ints["stride_y"], lay.ints["stride_x"] = r.int_(), r.int_()
        lay.ints["padding_y"], lay.ints["padding_x"] = r.int_(), r.int_()
        fshape = r.alias_tensor()
        bshape = r.alias_tensor()
        for _ in range(4):
            r.float_()  # learning-rate / weight-decay multipliers
        use_bias = r.bool_() if name in ("con_5", "con_6") else True
        if name == "con_6":
            r.bool_()  # use_relu (fused relu; never set in this file)
        nf = math.prod(fshape)
        if params.size < nf:
            raise _DlibFormatError(f"con_ params ({params.size}) smaller than filters {fshape}")
        lay.arrays["weight"] = params[:nf].reshape(fshape)
        if use_bias:
            nb = math.prod(bshape)
            if params.size != nf + nb:
                raise _DlibFormatError(f"con_ params ({params.size}) != filters {fshape} + biases {bshape}")
            lay.arrays["bias"] = params[nf:].copy()
        return lay
    if name in ("affine_", "affine_2"):
        lay = DlibLayer("affine")
        params = r.tensor().reshape(-1)
        gshape = r.alias_tensor()
        r.alias_tensor()  # beta has gamma's shape
        lay.ints["mode"] = r.int_()
        lay.ints["disabled"] = int(r.bool_()) if name == "affine_2" else 0
        n = math.prod(gshape)
        if params.size != 2 * n:
            raise _DlibFormatError(f"affine_ params ({params.size}) != 2 x gamma {gshape}")
        lay.arrays["gamma"], lay.arrays["beta"] = params[:n].copy(), params[n:].copy()
        return lay
    if name in ("bn_con2",):
        # a batch-norm layer stored where dlib expects an affine one: fold its running stats
        lay = DlibLayer("affine")
        params = r.tensor().reshape(-1)
        gshape = r.alias_tensor()
        r.alias_tensor()
        r.tensor(), r.tensor()
        running_means, running_vars = r.tensor().reshape(-1), r.tensor().reshape(-1)
        r.int_(), r.int_()
        for _ in range(4):
            r.float_()
        eps = r.float_()
        n = math.prod(gshape)
        scale = params[:n] / np.sqrt(running_vars + eps)
        lay.arrays["gamma"] = scale.astype(np.float32)
        lay.arrays["beta"] = (params[n:] - scale * running_means).astype(np.float32)
        lay.ints["mode"], lay.ints["disabled"] = 0, 0
        return lay
    if name in ("relu_", "relu_2"):
        lay = DlibLayer("relu")
        lay.ints["disabled"] = int(r.bool_()) if name == "relu_2" else 0
        return lay
    if name in ("max_pool_2", "avg_pool_2"):
        lay = DlibLayer(name[:-2])
        for key in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"):
            lay.ints[key] = r.int_()
        return lay
    if name == "add_prev_":
        return DlibLayer("add_prev")
    if name in ("fc_2", "fc_3"):
        lay = DlibLayer("fc")
        n_out, n_in = r.int_(), r.int_()
        params = r.tensor().reshape(-1)
        wshape = r.alias_tensor()
        r.alias_tensor()
        lay.ints["bias_mode"] = r.int_()
        for _ in range(4):
            r.float_()
        if name == "fc_3":
            r.bool_()
        if math.prod(wshape) != n_in * n_out or params.size < n_in * n_out:
            raise _DlibFormatError(f"fc_ weights {wshape} do not match {n_in}x{n_out}")
        # dlib computes output = input · W with W stored (num_inputs, num_outputs)
        lay.arrays["weight"] = params[:n_in * n_out].reshape(n_in, n_out).T.copy()
        if lay.ints["bias_mode"] == 0 and params.size == n_in * n_out + n_out:  # FC_HAS_BIAS
            lay.arrays["bias"] = params[n_in * n_out:].copy()
        return lay
    if name == "input_rgb_image_sized":
        lay = DlibLayer("input")
        lay.floats["avg_red"], lay.floats["avg_green"], lay.floats["avg_blue"] = (
            r.float_(), r.float_(), r.float_())
        lay.ints["nr"], lay.ints["nc"] = r.int_(), r.int_()
        return lay
    raise _DlibFormatError(f"unexpected layer type {name!r}")


def _skip_trailer(r: _Reader, version: int, input_layer: bool) -> None:
    """The training state every ``add_layer`` stores after its details (ignored)."""
    for _ in range(3):
        r.bool_()  # this_layer_setup_called, gradient_input_is_stale, ..._disabled
    r.tensor(), r.tensor(), r.tensor()  # x_grad, cached_output, params_grad / grad_final
    if input_layer and version >= 3:
        r.int_()  # _sample_expansion_factor


def parse_dlib_metric_net(data: bytes) -> list[DlibLayer]:
    """Parse the serialized ``anet_type`` of dlib's face-recognition example.

    Returns its layers from the input up, the loss last. A nested dlib network stores, for
    each layer from the outside in, a version number, then (innermost first) each layer's
    details and training state; tag and skip layers store only their version."""
    r = _Reader(data)
    if r.int_() != 1:
        raise _DlibFormatError("not a dlib loss-layer network (version != 1)")
    loss_name = r.string()
    if loss_name not in ("loss_metric_", "loss_metric_2"):
        raise _DlibFormatError(f"expected a loss_metric_ network, found {loss_name!r}")
    loss = DlibLayer("loss_metric")
    if loss_name == "loss_metric_2":
        loss.floats["margin"], loss.floats["dist_thresh"] = r.float_(), r.float_()

    kinds = network_layout()[1:][::-1]  # outermost first, as stored; the input has no header
    versions = []
    for i, kind in enumerate(kinds):
        v = r.int_()
        if kind in ("tag1", "tag2", "skip1"):
            ok: tuple[int, ...] = (1,)
        elif i == len(kinds) - 1:
            ok = (2, 3)  # add_layer<con, input_rgb_image_sized>: the input-layer format
        else:
            ok = (1, 2)
        if v not in ok:
            raise _DlibFormatError(f"unexpected version {v} for a {kind} layer at offset {r.pos}")
        versions.append(v)

    layers: list[DlibLayer] = []
    for i, (kind, version) in enumerate(zip(kinds[::-1], versions[::-1])):
        if kind in ("tag1", "tag2", "skip1"):
            layers.append(DlibLayer(kind))
            continue
        if i == 0:  # the innermost add_layer stores the input layer before its own details
            inp = _layer_details(r)
            if inp.kind != "input":
                raise _DlibFormatError(f"expected the input layer, found {inp.kind}")
            layers.append(inp)
        lay = _layer_details(r)
        if lay.kind != kind:
            raise _DlibFormatError(f"expected a {kind} layer, found {lay.kind} (layer {len(layers)})")
        layers.append(lay)
        _skip_trailer(r, version, input_layer=i == 0)
    layers.append(loss)
    if r.pos != len(r.data):
        raise _DlibFormatError(f"{len(r.data) - r.pos} unexpected bytes after the network")
    return layers


# ---------------------------------------------------------------------------------------
# the PyTorch network


class Affine(nn.Module):
    """dlib's ``affine`` layer: a per-channel ``gamma·x + beta`` (a frozen batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


def _add_zero_padded(a: Tensor, b: Tensor) -> Tensor:
    """dlib's ``add_prev``: the sum over the larger shape, each tensor zero-padded at the
    end of channels, rows and columns."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: Tensor) -> Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """``ares``/``ares_down``: relu(block(x) + shortcut(x)); a down block's shortcut is a
    2x2/2 average pool, zero-padded to the block's channels."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        stride = 2 if down else 1
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=0 if down else 1)
        self.affine1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=1)
        self.affine2 = Affine(cout)

    def forward(self, x: Tensor) -> Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_zero_padded(y, shortcut))


class FaceRecognitionNet(nn.Module):
    """dlib's face-recognition ResNet: (B, 3, 150, 150) RGB in [0, 1] -> (B, 128).

    Build it with :meth:`from_dlib_file` (or :func:`load_face_recognition_net`); the module
    is returned in eval mode with frozen parameters (gradients still flow to the input, as
    an identity loss needs)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean_rgb", torch.tensor([122.782, 117.001, 104.298]))
        self.stem_conv = nn.Conv2d(3, 32, 7, 2, padding=0)
        self.stem_affine = Affine(32)
        blocks = []
        cin = 32
        for cout, down, n in STAGES:
            for i in range(n):
                blocks.append(ResidualBlock(cin, cout, down and i == 0))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(cin, 128, bias=False)

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, 150, 150) RGB chips, got {tuple(images.shape)}")
        x = (images * 255.0 - self.mean_rgb.view(1, 3, 1, 1).to(images.dtype)) / 256.0
        x = F.relu(self.stem_affine(self.stem_conv(x)))
        x = F.max_pool2d(x, 3, 2)
        for block in self.blocks:
            x = block(x)
        return self.fc(x.mean(dim=(2, 3)))

    @classmethod
    def from_dlib_file(cls, path: str | Path) -> "FaceRecognitionNet":
        """Read ``dlib_face_recognition_resnet_model_v1.dat`` (bytes parsed, never run)."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelFileError(f"cannot read dlib face-recognition model {path}: {exc.strerror}") from exc
        try:
            layers = parse_dlib_metric_net(data)
            net = cls()
            net._load_layers(layers)
        except (_DlibFormatError, ValueError, KeyError, StopIteration) as exc:
            raise ModelFileError(f"{path} is not dlib's face-recognition ResNet: {exc}") from exc
        net.eval()
        net.requires_grad_(False)
        return net

    def _load_layers(self, layers: list[DlibLayer]) -> None:
        inp = layers[0]
        if (inp.ints["nr"], inp.ints["nc"]) != (CHIP_SIZE, CHIP_SIZE):
            raise _DlibFormatError(f"input size {inp.ints['nr']}x{inp.ints['nc']}, expected 150x150")
        self.mean_rgb.copy_(torch.tensor([inp.floats["avg_red"], inp.floats["avg_green"],
                                          inp.floats["avg_blue"]]))
        it = iter([lay for lay in layers[1:] if lay.kind in ("con", "affine", "fc", "avg_pool", "max_pool")])

        def take(kind: str) -> DlibLayer:
            lay = next(it)
            if lay.kind != kind:
                raise _DlibFormatError(f"expected {kind}, found {lay.kind}")
            return lay

        def set_conv(conv: nn.Conv2d, lay: DlibLayer, stride: int, padding: int) -> None:
            w = lay.arrays["weight"]
            got = (lay.ints["stride_y"], lay.ints["padding_y"], lay.ints["stride_x"], lay.ints["padding_x"])
            if tuple(w.shape) != tuple(conv.weight.shape) or got != (stride, padding, stride, padding):
                raise _DlibFormatError(f"convolution {w.shape} stride/padding {got} does not match "
                                       f"{tuple(conv.weight.shape)} stride {stride} padding {padding}")
            conv.weight.data.copy_(torch.from_numpy(w))
            bias = lay.arrays.get("bias")
            conv.bias.data.copy_(torch.from_numpy(bias) if bias is not None else torch.zeros_like(conv.bias))

        def set_affine(aff: Affine, lay: DlibLayer) -> None:
            g, b = lay.arrays["gamma"], lay.arrays["beta"]
            if g.size != aff.gamma.numel() or lay.ints["mode"] != 0:
                raise _DlibFormatError(f"affine layer of {g.size} channels (mode {lay.ints['mode']}), "
                                       f"expected {aff.gamma.numel()} in conv mode")
            if lay.ints["disabled"]:
                g, b = np.ones_like(g), np.zeros_like(b)
            aff.gamma.data.copy_(torch.from_numpy(g.reshape(-1)))
            aff.beta.data.copy_(torch.from_numpy(b.reshape(-1)))

        def check_pool(lay: DlibLayer, size: int, stride: int) -> None:
            got = tuple(lay.ints[k] for k in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"))
            if got != (size, size, stride, stride, 0, 0):
                raise _DlibFormatError(f"pooling {got}, expected {(size, size, stride, stride, 0, 0)}")

        set_conv(self.stem_conv, take("con"), 2, 0)
        set_affine(self.stem_affine, take("affine"))
        check_pool(take("max_pool"), 3, 2)
        for block in self.blocks:
            set_conv(block.conv1, take("con"), 2 if block.down else 1, 0 if block.down else 1)
            set_affine(block.affine1, take("affine"))
            set_conv(block.conv2, take("con"), 1, 1)
            set_affine(block.affine2, take("affine"))
            if block.down:
                check_pool(take("avg_pool"), 2, 2)
        check_pool(take("avg_pool"), 0, 1)  # avg_pool_everything
        fc = take("fc")
        if fc.arrays["weight"].shape != tuple(self.fc.weight.shape) or "bias" in fc.arrays:
            raise _DlibFormatError(f"fc layer {fc.arrays['weight'].shape}, expected 128x256 without bias")
        self.fc.weight.data.copy_(torch.from_numpy(fc.arrays["weight"]))


# ---------------------------------------------------------------------------------------
# finding the installed weights


def face_recognition_model_path() -> Path:
    """Path of dlib's face-recognition ResNet inside the face-recognition-models package."""
    return dlib_model_path(MODEL_NAME, "the identity network's weights")


def load_face_recognition_net(path: str | Path | None = None,
                              device: torch.device | str | None = None) -> FaceRecognitionNet:
    """The frozen identity network from ``path`` or from the installed package."""
    net = FaceRecognitionNet.from_dlib_file(path if path is not None else face_recognition_model_path())
    return net.to(device) if device is not None else net
