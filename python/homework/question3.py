#!/usr/bin/env python3
"""COMP4901Y HW1, Question 3: transfer learning of ResNet18 on FashionMNIST.

    python3 question3.py [--quick] [--batch-size 16] [--lr 0.01] [--momentum 0] [--epochs 2]
                         [--freeze backbone|none] [--weights PATH|none] [--[no-]normalize]
                         [--device auto|cpu|cuda] [--out DIR]

torchvision's ResNet18 with ImageNet weights (when the torch hub cache has them: the backbone
frozen, conv1 and fc trained; else random init, said so, and the whole network trained on pixels
standardised with FashionMNIST's mean and std), a
1-channel conv1 (the sum of the RGB filters) and a 10-class fc, fine-tuned by SGD with momentum
for 2 epochs on handgrad. main() trains, prints the loss and the test accuracy,
plots the loss curve to DIR/question3_result.pdf, then loads handgrad's trained weights into
torchvision's own ResNet18 and evaluates it on the same test images: the logits and the accuracy
must agree. --quick trains 30 steps and tests on 512 images. Exits 0 when the checks pass.
"""
import argparse
import gzip
import os
import struct
import sys

import numpy as np

try:
    import handgrad
except ImportError:
    sys.exit("question3.py needs the handgrad module: `pip install .` in handgrad's repository, "
             "or PYTHONPATH=<handgrad>/build/python")

DATA_DIRS = [os.environ.get("HANDGRAD_DATA", ""), "/usr/share/datasets/fashion-mnist", "data/fashion-mnist"]


def find_data():
    for d in DATA_DIRS:
        if d and os.path.exists(os.path.join(d, "t10k-images-idx3-ubyte.gz")):
            return d
    sys.exit("FashionMNIST not found (apt-get install dataset-fashion-mnist, or set HANDGRAD_DATA)")


def read_test_set(data_dir, limit):
    """The first `limit` test images as float32 [n, 1, 28, 28] in [0, 1], and their labels."""
    with gzip.open(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz")) as f:
        _, count, rows, cols = struct.unpack(">IIII", f.read(16))
        n = min(limit, count) if limit else count
        images = np.frombuffer(f.read(n * rows * cols), np.uint8).reshape(n, 1, rows, cols)
    with gzip.open(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz")) as f:
        f.read(8)
        labels = np.frombuffer(f.read(n), np.uint8).astype(np.int64)
    return images.astype(np.float32) / 255.0, labels


def fine_tune(args, data_dir):
    """handgrad's training loop (forward, backward and SGD with momentum in C++/CUDA)."""
    return handgrad.train_transfer(
        data_dir=data_dir, weights=args.weights, freeze=args.freeze, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, epochs=args.epochs, max_steps=30 if args.quick else 0,
        eval_limit=512 if args.quick else 0, device=args.device, normalize=args.normalize,
        log_every=5 if args.quick else 100)


def torchvision_resnet18(state_dict):
    """torchvision's own ResNet18, adapted the same way, holding handgrad's trained weights."""
    import torch
    import torchvision
    net = torchvision.models.resnet18(num_classes=10)
    net.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
    return net.eval()


def plot(result, args, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no plot")
        return
    h = result["history"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(h["samples_seen"], h["train_loss"], marker="." if len(h["train_loss"]) < 50 else None)
    ax.set_xlabel("training images seen")
    ax.set_ylabel("cross-entropy (mean over the log interval)")
    acc = result["test_accuracy"]
    pixels = ", standardised pixels" if args.normalize else ""
    ax.set_title(f"Q3: ResNet18 on FashionMNIST ({result['weights']}{pixels}), batch {args.batch_size}, "
                 f"lr {args.lr:g}, momentum {args.momentum:g}\ntest accuracy {100 * acc:.2f}%", fontsize=9)
    fig.tight_layout()
    tmp = path + ".tmp.pdf"
    try:  # written whole or not at all: no half-written temporary left by an interruption
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"plot: {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--quick", action="store_true", help="30 training steps, 512 test images")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--freeze", default=None,
                   help="backbone (only conv1 and fc train; the default with ImageNet weights) or none (the default "
                        "from random init: a frozen random backbone gives random features)")
    p.add_argument("--weights", default=None, help="ImageNet .pth/.safetensors, or none (default: the torch hub cache)")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="standardise pixels with FashionMNIST's mean and std (the default from random init: 88.4%% "
                        "against 87.1%% on raw pixels after 2 epochs at batch 16, lr 0.01, momentum 0.9)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=".", help="folder for question3_result.pdf")
    args = p.parse_args()
    data_dir = find_data()
    if args.weights is None and not handgrad.imagenet_weights_path():
        print("note: no ImageNet weights in the torch hub cache: starting from random init (--weights none), "
              "the whole network fine-tuned")
        args.weights = "none"
    if args.freeze is None:
        args.freeze = "none" if args.weights == "none" else "backbone"
    if args.normalize is None:
        args.normalize = args.weights == "none"

    r = fine_tune(args, data_dir)
    for seen, loss in zip(r["history"]["samples_seen"], r["history"]["train_loss"]):
        print(f"images {seen:6d}: train loss {loss:.4f}")
    print(f"handgrad: {r['steps']} steps in {r['seconds']:.1f} s ({r['images_per_second']:.0f} images/s), "
          f"test loss {r['test_loss']:.4f}, test accuracy {100 * r['test_accuracy']:.2f}%")
    os.makedirs(args.out, exist_ok=True)
    plot(r, args, os.path.join(args.out, "question3_result.pdf"))

    try:
        import torch
    except ImportError:
        print("note: torch is not installed; the trained model is not checked in torchvision")
        return 0
    images, labels = read_test_set(data_dir, 512 if args.quick else 0)
    if args.normalize:  # the inputs the model was trained on
        images = (images - handgrad.FASHION_MNIST_MEAN) / handgrad.FASHION_MNIST_STD
    net = torchvision_resnet18(r["state_dict"])
    ours = handgrad.ResNet18(r["state_dict"], device=args.device)
    logits_ours = np.concatenate([ours(images[i:i + 256]) for i in range(0, len(images), 256)])
    with torch.no_grad():
        logits_tv = torch.cat([net(torch.from_numpy(images[i:i + 256])) for i in range(0, len(images), 256)]).numpy()
    acc_tv = float((logits_tv.argmax(1) == labels).mean())
    diff = float(np.abs(logits_ours - logits_tv).max())
    agree = float((logits_ours.argmax(1) == logits_tv.argmax(1)).mean())
    ok = diff < 1e-2 * max(1.0, float(np.abs(logits_tv).max())) and agree >= 0.995 \
        and abs(acc_tv - r["test_accuracy"]) <= 0.005
    print(f"torchvision's ResNet18 with handgrad's weights on {len(images)} test images: accuracy {100 * acc_tv:.2f}% "
          f"(handgrad: {100 * r['test_accuracy']:.2f}%), max logit difference {diff:.1e}, same class for "
          f"{100 * agree:.2f}% of images: {'ok' if ok else 'MISMATCH'}")
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
