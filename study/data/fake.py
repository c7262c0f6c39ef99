"""Random images for benchmarks: the shapes and dtypes of a real data set, no files.

Like ``torchvision.datasets.FakeData`` the images are uniform noise with uniformly random
labels, reproducible from a seed. Unlike it, they are drawn in one call directly on the
device (FakeData makes one PIL image per index on the host), so a benchmark of a large
image size starts at once. Random numbers depend on the device's generator: the same seed
gives the same data on the same kind of device, not across CPU and CUDA.
"""

from __future__ import annotations

import torch

from study.errors import DataError


def load_fake(
    num_examples: int,
    image_size: int | tuple[int, int],
    num_classes: int,
    device: torch.device | str,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random RGB images and labels, as uint8 and int64 tensors on ``device``.

    Args:
        num_examples: how many images.
        image_size: side (``int``) or ``(height, width)``.
        num_classes: labels are drawn from ``0..num_classes-1``.
        device: where the tensors are made.
        seed: seeds the draw.

    Returns:
        ``(images, labels)``: ``(num_examples, 3, H, W)`` uint8 and ``(num_examples,)`` int64,
        ready for :class:`~study.data.gpu_loader.DeviceLoader`.

    Raises:
        DataError: a count or size below 1.

    Example:
        >>> images, labels = load_fake(1024, 224, 1000, "cuda", seed=0)
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    sizes = {"num_examples": num_examples, "image_size": min(height, width), "num_classes": num_classes}
    for name, value in sizes.items():
        if value < 1:
            raise DataError(f"{name} must be at least 1 for fake data, got {value}")
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    shape = (num_examples, 3, height, width)
    images = torch.randint(0, 256, shape, generator=generator, device=device, dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (num_examples,), generator=generator, device=device)
    return images, labels
