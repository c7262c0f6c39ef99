"""A tiny CIFAR-10 copy in the official ``cifar-10-batches-py/`` format, for the loader and
the bench tests (the real reader runs on it).
"""

import pickle

import numpy as np


def to_rows(images_hwc):
    """(n, 32, 32, 3) -> the official (n, 3072) rows: all red, then green, then blue, row-major."""
    return np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2)).reshape(len(images_hwc), -1)


def write(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the official files are protocol-2 pickles with str keys


def write_cifar10(root, per_batch=2, num_test=3, seed=0):
    """A tiny cifar-10-batches-py/ in the official layout; returns the HWC images and labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch).tolist()
        files = [f"{i}_{k}.png" for k in range(per_batch)]
        write(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": y,
                                            "data": to_rows(x), "filenames": files})
        train_x.append(x)
        train_y += y
    test_x = rng.integers(0, 256, (num_test, 32, 32, 3), dtype=np.uint8)
    test_y = rng.integers(0, 10, num_test).tolist()
    write(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_y,
                                   "data": to_rows(test_x), "filenames": ["t.png"] * num_test})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write(folder / "batches.meta", {"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072})
    return np.concatenate(train_x), np.array(train_y), test_x, np.array(test_y)
