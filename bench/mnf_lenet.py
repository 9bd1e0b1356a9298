"""MNF LeNet against LeNet on MNIST (the embedded 4,000 digits without MNIST files): train both
(Adam; torch-mnf uses lr 1e-3 and batch 32 on a 60,000-image epoch; the defaults here, lr 2e-3 and
batch 16, are tests/test_mnf.py's, which make one epoch of 4,000 digits enough), then print a table of validation accuracy,
NLL, ECE, the predictive entropy of the 180-degree rotated nines, parameter counts and time,
write it as JSON, and draw torch-mnf's rotated-9 figure.

    OMP_NUM_THREADS=1 python bench/mnf_lenet.py --epochs 1 --out bench/results/mnf_lenet
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from zoo.classify import (LENET, MNF_LENET, build_classifier, classification_metrics, elbo_loss,
                          predictive, rotate, rotation_predictions, save_rotation_figure)
from zoo.data import split_labels


def images_and_labels(split) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's images scaled to [0, 1] (torch-mnf's ToTensor) and its labels."""
    x = torch.stack([split[i][0] for i in range(len(split))]) / 255
    return x, split_labels(split)


def train(model, x, y, epochs: int, batch_size: int = 32, lr: float = 1e-3, seed: int = 0) -> float:
    """Adam on the negative ELBO (plain NLL for a model without KL terms); returns seconds."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for batch in order[: len(x) // batch_size * batch_size].split(batch_size):
            optimizer.zero_grad()
            loss = elbo_loss(model(x[batch]), y[batch], model.kl_divergence(), len(x))
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--samples", type=int, default=500, help="per image of the rotated-9 figure")
    parser.add_argument("--eval-samples", type=int, default=20, help="per image of the metrics")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/mnf_lenet"))
    args = parser.parse_args()
    from zoo.plugins.datasets_images import mnist

    data = mnist()
    x_train, y_train = images_and_labels(data.train)
    x_val, y_val = images_and_labels(data.val)
    x_test, y_test = images_and_labels(data.test)
    nines = x_test[y_test == 9]
    rows, predictions, rotated = {}, {}, None
    for name, layers in (("MNF LeNet", MNF_LENET), ("LeNet", LENET)):
        torch.manual_seed(0)
        model = build_classifier(layers, data.shape)
        seconds = train(model, x_train, y_train, args.epochs, args.batch_size, args.lr)
        samples = args.eval_samples if model.bayesian else 1
        metrics = classification_metrics(predictive(model, x_val, samples).mean, y_val)
        upside_down = predictive(model, rotate(nines, 180), samples).entropy.mean().item()
        rotated, predictions[name] = rotation_predictions(model, nines[0], samples=args.samples)
        rows[name] = {**metrics, "entropy_rotated_9s": upside_down, "train_seconds": seconds,
                      "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    args.out.mkdir(parents=True, exist_ok=True)
    save_rotation_figure(args.out / "rotated_9.png", rotated, predictions)
    settings = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                "eval_samples": args.eval_samples, "n_train": len(x_train)}
    (args.out / "results.json").write_text(json.dumps({**settings,
                                                       "models": rows}, indent=2) + "\n")
    print(f"{'model':<10} {'params':>8} {'val acc':>8} {'val NLL':>8} {'ECE':>6} {'H(9 @180)':>10} {'train s':>8}")
    for name, r in rows.items():
        print(f"{name:<10} {r['parameters']:>8,} {r['accuracy']:>8.3f} {r['nll']:>8.3f} {r['ece']:>6.3f} "
              f"{r['entropy_rotated_9s']:>10.3f} {r['train_seconds']:>8.1f}")
    print(f"figure: {args.out / 'rotated_9.png'}")


if __name__ == "__main__":
    main()
