"""An image classifier: torchvision's ResNet-50 with random weights, on the GPU when the replica has one.

Nothing is downloaded: `resnet50(weights=None)` builds the network and initialises it from a fixed seed, so
every replica holds the same weights and answers the same classes for the same input. The classes are
meaningless, and with random weights they hardly depend on the image; the work per image is exactly a real
ResNet-50's.

A request is either
- JSON `{"seed": n}`: a 224x224 RGB image of uniform noise, drawn from seed n on the model's device, or
- the bytes of a PNG or JPEG image (any Content-Type but JSON): decoded, resized to 224x224 and normalised.

The answer is `{"top5": [class indices], "device": ..., "gpu": ..., "batch_size": n}`: the five highest-scoring
ImageNet class indices, where the model ran, and how many requests shared the forward pass.

The same file serves both APIs of cortado.yaml: `handle_async` takes one request per forward pass, and
`handle_batch` (used when `handler.max_batch_size` > 1) stacks the requests of a batch into one.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torchvision

SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class Handler:
    def __init__(self, config: dict[str, Any]) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        on_gpu = self.device.type == "cuda"
        # bf16 and channels-last is how ResNet-50 runs fastest on a recent NVIDIA GPU; CPUs get float32.
        self.dtype = torch.bfloat16 if on_gpu else torch.float32
        torch.manual_seed(int(config.get("weights_seed", 0)))
        model = torchvision.models.resnet50(weights=None)
        self.model = model.eval().to(self.device, self.dtype, memory_format=torch.channels_last)
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1)
        if on_gpu:
            properties = torch.cuda.get_device_properties(self.device)
            self.device_name = properties.name
            self.gpu = {
                "name": properties.name,
                "memory_mib": properties.total_memory // 2**20,
                "capability": f"{properties.major}.{properties.minor}",
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                "torch": torch.__version__,
            }
        else:
            self.device_name = "cpu"
            self.gpu = None
        # The first forward passes of a shape are slow (cuDNN picks kernels, allocators warm up): pay for
        # them here, before the replica reports ready.
        sizes = [1] + ([int(config.get("warmup_batch_size", 1))] if on_gpu else [])
        for size in sorted(set(sizes)):
            self._classify([torch.zeros(3, SIZE, SIZE, device=self.device)] * size)
        if on_gpu:
            torch.cuda.synchronize()

    def handle_async(self, payload: Any) -> dict[str, Any]:
        return self._classify([self._image(payload)])[0]

    def handle_batch(self, payloads: list[Any]) -> list[dict[str, Any]]:
        # A payload that cannot be read fails its whole batch: handle_batch answers for all or none.
        return self._classify([self._image(p) for p in payloads])

    def _image(self, payload: Any) -> torch.Tensor:
        """A 3x224x224 float image in [0, 1] on the model's device."""
        if isinstance(payload, dict):
            seed = payload.get("seed", 0)
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError(f'"seed" must be an integer, got {seed!r}')
            generator = torch.Generator(device=self.device)
            generator.manual_seed(seed % 2**63)
            return torch.rand(3, SIZE, SIZE, generator=generator, device=self.device)
        if isinstance(payload, bytes | bytearray):
            data = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
            try:
                image = torchvision.io.decode_image(data, mode=torchvision.io.ImageReadMode.RGB)
            except RuntimeError as exc:
                raise ValueError(f"the body is not a PNG or JPEG image: {exc}") from None
            image = image.to(self.device, torch.float32).unsqueeze(0) / 255.0
            resized = torch.nn.functional.interpolate(image, size=(SIZE, SIZE), mode="bilinear", antialias=True)
            return resized.squeeze(0).clamp(0.0, 1.0)
        raise ValueError('send JSON {"seed": <integer>} or the bytes of a PNG or JPEG image')

    def _classify(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        with torch.inference_mode():
            batch = (torch.stack(images) - self.mean) / self.std
            batch = batch.to(self.dtype).contiguous(memory_format=torch.channels_last)
            top5 = self.model(batch).float().topk(5, dim=1).indices.cpu().tolist()
        return [
            {"top5": classes, "device": self.device_name, "gpu": self.gpu, "batch_size": len(images)}
            for classes in top5
        ]
