"""A small domain classifier (A vs B) trained by the project: the weight-free 'FCN score'.

The CycleGAN paper scores translations with a pretrained segmentation network; we have no
external weights, so we train a tiny CNN on the training splits (seeded, CPU, seconds) and report
the share of translated images it assigns to the target domain. Its accuracy on the real test
images says how far to trust it, and the identity baseline (untranslated inputs) says what a
do-nothing model scores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cyclegan.evaluation.errors import EvalError
from cyclegan.evaluation.metrics import check_images


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Single-threaded torch for this tiny net: bit-reproducible, and far faster than a thread
    pool on a busy shared CPU (measured 10x on 2 contended cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class DomainClassifier(nn.Module):
    """Three strided convs + global average pool -> one logit (> 0 means domain B)."""

    def __init__(self, width: int = 16, channels: int = 3) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1),
            nn.BatchNorm2d(2 * w),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1),
            nn.BatchNorm2d(4 * w),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * w, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).reshape(-1)


@dataclass
class TrainedClassifier:
    """The classifier plus what it was trained on (goes into the metric's protocol)."""

    model: DomainClassifier
    steps: int
    seed: int
    n_train_a: int
    n_train_b: int
    train_acc: float
    final_loss: float
    batch_size: int = 32

    @torch.no_grad()
    def prob_b(self, x: Tensor, batch_size: int = 64) -> Tensor:
        """P(domain B) per image, for ``[-1, 1]`` images (CPU, float64)."""
        check_images(x, "classifier input")
        self.model.eval()
        with one_thread():
            out = [
                torch.sigmoid(self.model(x[i : i + batch_size].float().cpu())).double()
                for i in range(0, len(x), batch_size)
            ]
        return torch.cat(out)

    def assigned(self, x: Tensor, domain: str) -> Tensor:
        """1.0 where an image is classified as ``domain`` ("A" or "B"), else 0.0."""
        if domain not in ("A", "B"):
            raise EvalError(f"domain must be 'A' or 'B', got {domain!r}")
        p = self.prob_b(x)
        return (p > 0.5).double() if domain == "B" else (p <= 0.5).double()

    def protocol(self) -> dict[str, object]:
        return {
            "model": "DomainClassifier(width=16): 3 strided convs, GAP, linear",
            "channels": int(self.model.body[0].in_channels),
            "trained_on": "trainA (label A) vs trainB (label B), random horizontal flips",
            "steps": self.steps,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "optimizer": "Adam lr 2e-3, betas (0.5, 0.999)",
            "threads": 1,
            "n_train_A": self.n_train_a,
            "n_train_B": self.n_train_b,
            "train_acc": self.train_acc,
            "device": "cpu",
        }


def train_classifier(
    a: Tensor, b: Tensor, steps: int = 300, seed: int = 0, batch_size: int = 32
) -> TrainedClassifier:
    """Train on CPU with a private RNG: same data + seed -> same classifier, on any machine."""
    check_images(a, "classifier trainA")
    check_images(b, "classifier trainB")
    if a.shape[1:] != b.shape[1:]:
        raise EvalError(
            f"trainA and trainB image sizes differ: {tuple(a.shape)} vs {tuple(b.shape)} "
            "(load both with eval_transform(size))"
        )
    with one_thread():
        model, loss = _fit(torch.cat([a, b]).float().cpu(), len(a), steps, seed, batch_size)
    clf = TrainedClassifier(
        model.eval(), steps, seed, len(a), len(b), 0.0, float(loss.detach()), batch_size
    )
    hits = torch.cat([clf.assigned(a, "A"), clf.assigned(b, "B")])
    clf.train_acc = float(hits.mean())
    return clf


def _fit(
    x_all: Tensor, n_a: int, steps: int, seed: int, batch_size: int
) -> tuple[DomainClassifier, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DomainClassifier(channels=x_all.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.5, 0.999))
    y_all = torch.cat([torch.zeros(n_a), torch.ones(len(x_all) - n_a)])
    loss = torch.tensor(float("nan"))
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (batch_size,), generator=gen)
        x, y = x_all[idx], y_all[idx]
        flip = torch.rand(batch_size, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model, loss
