"""A model of your own, registered for nfstudy (imported by the study's ``plugins:`` list).

The builder takes ``num_classes`` and ``in_chans`` (and, if it wants them, ``dropout``,
``stochastic_depth``, ``classifier_init_std``). Naming the last layer ``classifier`` (or
giving the model ``get_classifier()``) lets AGC leave it unclipped, as the paper does.
"""

from torch import nn

from study import register_model


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int, in_chans: int, width: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier


@register_model("tiny_cnn")
def tiny_cnn(*, num_classes: int, in_chans: int = 3) -> nn.Module:
    return TinyCNN(num_classes, in_chans, width=16)
