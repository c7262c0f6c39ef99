"""A data set of your own: ``data.name: python:my_data:shapes`` calls :func:`shapes`.

It returns the train/val/test splits as torch Datasets; nfstudy batches them with a
DataLoader (``data.num_workers`` workers) in a seeded order. Here the splits come from one
ImageFolder (``data.root``: one folder per class) by a fixed split of its files.
"""

import torch
from torchvision import transforms
from torchvision.datasets import ImageFolder


def shapes(root: str, image_size: int | None = None):
    size = image_size or 32
    normalise = transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    train_tf = transforms.Compose([transforms.Resize((size, size)), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), normalise])
    eval_tf = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(), normalise])
    train_all, eval_all = ImageFolder(root, train_tf), ImageFolder(root, eval_tf)
    order = torch.randperm(len(train_all), generator=torch.Generator().manual_seed(0)).tolist()
    tenth = max(1, len(order) // 10)
    train = torch.utils.data.Subset(train_all, order[2 * tenth:])
    train.classes = train_all.classes  # nfstudy counts the classes from here
    return (train, torch.utils.data.Subset(eval_all, order[tenth:2 * tenth]),
            torch.utils.data.Subset(eval_all, order[:tenth]))
