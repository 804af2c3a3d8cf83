"""Built-in models of the launcher (`model.name` in a config): mlp, lenet, resnet,
lstm_classifier, transformer_lm. Each builder takes the data set's `in_shape` and
`num_classes` plus the config's `model.args`."""
import importlib
import math
import os
import sys

import dtrain as dt
from dtrain import nn


def mlp(in_shape, num_classes, hidden=(128,), dropout=0.0, activation="relu"):
    """Flatten, then Linear layers of `hidden` widths with an activation, then the head."""
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}
    if activation not in acts:
        raise ValueError(f"mlp: activation must be one of {sorted(acts)}, got {activation!r}")
    layers, width = [nn.Flatten()], math.prod(in_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), acts[activation]()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def lenet(in_shape, num_classes):
    """LeNet-5 (ReLU, max pooling) for (C, H, W) images; `padding=2` keeps 28x28 at 28."""
    c, h, w = in_shape
    pad = 2 if min(h, w) >= 16 else 2 + (16 - min(h, w)) // 2
    features = nn.Sequential(nn.Conv2d(c, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(6, 16, 5, padding=pad - 2 if pad > 2 else 0),
                             nn.ReLU(), nn.MaxPool2d(2))
    with dt.no_grad():
        flat = features(dt.zeros(1, c, h, w)).numel()
    return nn.Sequential(features, nn.Flatten(), nn.Linear(flat, 120), nn.ReLU(),
                         nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


class ResNet(nn.Module):
    """CIFAR-style ResNet: a 3x3 stem, stages of BasicBlocks, global average pooling."""

    def __init__(self, blocks, widths, in_channels, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (i and not j) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layers(self.bn1(self.conv1(x)).relu())
        return self.fc(self.pool(x).flatten(1))


def resnet(in_shape, num_classes, depth=20, width=16):
    """ResNet-20/32/44/56 (6n+2, widths w, 2w, 4w) or ResNet-18 (2-2-2-2, 64..512)."""
    if depth == 18:
        return ResNet([2, 2, 2, 2], [64, 128, 256, 512], in_shape[0], num_classes)
    if (depth - 2) % 6:
        raise ValueError(f"resnet: depth must be 18 or 6n+2 (20, 32, 44, 56), got {depth}")
    n = (depth - 2) // 6
    return ResNet([n] * 3, [width, 2 * width, 4 * width], in_shape[0], num_classes)


class LSTMClassifier(nn.Module):
    """An LSTM over the rows of each sample (a (T, F) sequence); classify the last state."""

    def __init__(self, in_shape, num_classes, hidden_size=64, num_layers=1,
                 bidirectional=False):
        super().__init__()
        features = in_shape[-1]
        self.lstm = nn.LSTM(features, hidden_size, num_layers, batch_first=True,
                            bidirectional=bidirectional)
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, x):
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def lstm_classifier(in_shape, num_classes, **kwargs):
    return LSTMClassifier(in_shape, num_classes, **kwargs)


class TransformerLM(nn.Module):
    """A causal Transformer language model: token + position embeddings, encoder layers
    with a causal mask, a linear head over the vocabulary."""

    def __init__(self, vocab_size, max_len, d_model=64, nhead=4, num_layers=2,
                 dim_feedforward=128, dropout=0.0):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens):
        t = tokens.shape[1]
        pos = dt.arange(t, device=tokens.device)
        causal = pos.unsqueeze(0) > pos.unsqueeze(1)  # True: position i may not see j > i
        x = self.tok(tokens) + self.pos(pos)
        return self.head(self.encoder(x, mask=causal))


def transformer_lm(in_shape, num_classes, **kwargs):
    return TransformerLM(vocab_size=num_classes, max_len=in_shape[0], **kwargs)


MODELS = {"mlp": mlp, "lenet": lenet, "resnet": resnet, "lstm_classifier": lstm_classifier,
          "transformer_lm": transformer_lm}


# The block of each built-in model: the unit that `distributed.strategy: fsdp` shards (and
# gathers) on its own; single layers where the model is a plain stack of them.
BLOCKS = {"mlp": (nn.Linear,), "lenet": (nn.Conv2d, nn.Linear), "resnet": (BasicBlock,),
          "lstm_classifier": (nn.LSTM,), "transformer_lm": (nn.TransformerEncoderLayer,)}


def blocks(mcfg, model):
    """The blocks of a built-in model, each after the blocks inside it ([] for a
    `model.target`)."""
    kinds = BLOCKS.get(mcfg.name, ())
    return [m for m in reversed(list(model.modules())) if kinds and isinstance(m, kinds)]


def build_model(mcfg, in_shape, num_classes):
    """The model of a config's `model` section: a built-in one (`name`, given the data's
    shape and classes) or `target`'s callable called with `args`."""
    if mcfg.name is not None:
        return MODELS[mcfg.name](in_shape, num_classes, **mcfg.args)
    return import_target(mcfg.target)(**mcfg.args)


def import_target(target):
    """The object named by 'package.module:attribute' (the current folder importable, as for
    the ranks that `python -m` starts there)."""
    module, _, attr = target.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
