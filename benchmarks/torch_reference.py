"""A plain PyTorch training loop on the same architecture, the yardstick of train_speed.py.

torchvision's model where torchvision is installed (the GPU machine has it); on a machine
without it (torchvision wheels for this CPU torch are not to be had here) MobileNetV2 is
defined below with torch.nn alone (the torchvision layout: the same blocks, widths and
parameter count, 2,223,872 in the base), and other architectures are skipped with a note.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

# the nearest torchvision constructor of each Keras backbone
TORCHVISION = {"MobileNetV2": "mobilenet_v2", "VGG19": "vgg19", "InceptionV3": "inception_v3",
               "DenseNet201": "densenet201", "EfficientNetB3": "efficientnet_b3",
               "EfficientNetB7": "efficientnet_b7", "ResNet152V2": "resnet152"}


def _mobilenet_v2(nn: Any) -> Any:
    """MobileNetV2 (Sandler et al. 2018) with a 1-logit head, in plain torch.nn."""

    def conv(cin: int, cout: int, k: int, s: int, groups: int = 1, act: bool = True) -> list:
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        return layers + [nn.ReLU6(inplace=True)] if act else layers

    class Inverted(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            mid = cin * expand
            layers = conv(cin, mid, 1, 1) if expand != 1 else []
            layers += conv(mid, mid, 3, stride, groups=mid) + conv(mid, cout, 1, 1, act=False)
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x: Any) -> Any:
            return x + self.body(x) if self.residual else self.body(x)

    blocks, cin = conv(3, 32, 3, 2), 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            blocks.append(Inverted(cin, c, s if i == 0 else 1, t))
            cin = c
    blocks += conv(cin, 1280, 1, 1)
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                         nn.Linear(1280, 1))


def build(name: str) -> tuple[Any, str]:
    """(model with one output logit, where it came from) or (None, why not)."""
    from torch import nn

    try:
        import torchvision
    except ImportError:
        torchvision = None
    if torchvision is not None and name in TORCHVISION:
        kwargs = {"aux_logits": False, "init_weights": True} if name == "InceptionV3" else {}
        model = getattr(torchvision.models, TORCHVISION[name])(weights=None, num_classes=1,
                                                               **kwargs)
        return model, f"torchvision {TORCHVISION[name]}"
    if name == "MobileNetV2":
        return _mobilenet_v2(nn), "plain torch.nn MobileNetV2 (torchvision absent)"
    why = "no torchvision counterpart" if name not in TORCHVISION else "torchvision absent"
    return None, why


def reference(name: str, size: int, batch: int, x: np.ndarray, y: np.ndarray,
              steps: int = 10) -> dict[str, Any]:
    """Steady training and inference images/s of the torch model on uint8 NHWC batches
    (moved to the device, flipped, scaled there), Adam, BCE on the logit."""
    import torch

    model, source = build(name)
    if model is None:
        return {"torch_note": f"skipped: {source}"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    xb = torch.from_numpy(np.ascontiguousarray(x[:batch]))
    yb = torch.from_numpy(y[:batch].astype("float32"))

    def prepare(images: Any) -> Any:
        img = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        flip = torch.rand(len(img), device=device) < 0.5
        img = torch.where(flip[:, None, None, None], img.flip(3), img)
        return img.contiguous(memory_format=torch.channels_last)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(prepare(xb)).reshape(-1), yb.to(device))
        loss.backward()
        opt.step()

    def infer_step() -> None:
        with torch.no_grad():
            model(prepare(xb))

    out: dict[str, Any] = {"torch_source": source, "torch_device": device}
    for key, step, mode in (("train", train_step, model.train), ("infer", infer_step,
                                                                  model.eval)):
        mode()
        step()
        step()  # warm-up (cuDNN autotuning, allocator)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        out[f"torch_{key}_img_s"] = round(steps * batch / (time.perf_counter() - t0), 1)
    return out
