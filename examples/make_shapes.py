"""Write a small ImageFolder to try the example on: ``python examples/make_shapes.py shapes [PER_CLASS]``.

Three classes (square, disc, cross) of coloured shapes on noise, 32×32 PNGs, 120 per class.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def draw(kind: str, rng: np.random.Generator, size: int = 32) -> Image.Image:
    image = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
    centre, radius = rng.integers(10, size - 10, 2), int(rng.integers(5, 9))
    rows, cols = np.ogrid[:size, :size]
    dy, dx = rows - centre[0], cols - centre[1]
    mask = {"square": (abs(dy) <= radius) & (abs(dx) <= radius),
            "disc": dy ** 2 + dx ** 2 <= radius ** 2,
            "cross": ((abs(dy) <= 1) | (abs(dx) <= 1)) & (abs(dy) <= radius) & (abs(dx) <= radius)}[kind]
    image[mask] = rng.integers(120, 256, 3, dtype=np.uint8)
    return Image.fromarray(image)


def main(root: str, per_class: int = 120) -> None:
    rng = np.random.default_rng(0)
    for kind in ("square", "disc", "cross"):
        folder = Path(root) / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw(kind, rng).save(folder / f"{i:04d}.png")
    print(f"{root}: 3 classes x {per_class} images")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "shapes", *(int(n) for n in sys.argv[2:3]))
