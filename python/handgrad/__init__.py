"""handgrad from Python: the same C++ core as the `handgrad` command, on numpy arrays and torch tensors.

    >>> import numpy as np, handgrad
    >>> a, b = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    >>> handgrad.einsum("ij,jk->ik", a, b)          # a numpy array, computed by handgrad's kernels

Arrays: numpy arrays (buffer protocol) and torch tensors (DLPack, CPU or CUDA). A float32,
C-contiguous input is read in place, never copied; any other (float64, int, a transposed view, a
list) is converted to float32 C-contiguous first. Results are float32 and come back as the
caller's kind (a torch tensor if any operand was one, else a numpy array) on the caller's device,
in handgrad's own buffer (no copy).

GPU: CUDA tensors must be on cuda:0 and be used while cuda:0 is the current device (handgrad
drives one GPU). Calls from several Python threads are serialised. A progress callback runs between
two steps with handgrad free: threads it starts may call handgrad (the running call waits for the
callback to return); the callback's own thread may not (ValueError). When the interpreter exits
while a daemon thread is inside handgrad, that call stops at its next step (RuntimeError in that
thread) and Python finalizes without it.

Errors: bad input raises ValueError with handgrad's one-line message; anything else RuntimeError.
An exception your progress callback raises ends the training and reaches you as it was raised.
Long calls (training) run without the GIL and stop with KeyboardInterrupt on Ctrl-C between steps.
"""
from __future__ import annotations

import itertools as _itertools
import operator as _operator
import os as _os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as _np

from . import _core
from ._core import PathInfo

__version__: str = _core.__version__
# FashionMNIST's pixel mean and std (of ToTensor()'s [0, 1] values): `normalize=True` in
# train_transfer / evaluate_transfer feeds the network (pixel - MEAN) / STD; a model trained so
# expects its inputs standardised the same way.
FASHION_MNIST_MEAN: float = _core.FASHION_MNIST_MEAN
FASHION_MNIST_STD: float = _core.FASHION_MNIST_STD
__all__ = [
    "einsum", "contract_path", "PathInfo", "train_mlp", "ResNet18", "train_transfer", "evaluate_transfer",
    "autodiff", "cuda_available", "imagenet_weights_path", "info", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD",
]

# Arguments are checked here, before _core sees them: pybind11's own conversions raise TypeError
# (an int out of int64's range, a seed of -1, a list where a dict goes), and a NUL in a string
# would cut it short in C++. Bad input is ValueError, with the argument's name.
_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1


def _kind(value: Any) -> str:
    return type(value).__name__


def _int(value: Any, name: str, lo: int = _INT64_MIN, hi: int = _INT64_MAX) -> int:
    """An int (or numpy/torch integer, or a float with an integral value) in [lo, hi]."""
    try:
        if isinstance(value, (float, _np.floating)) and float(value).is_integer():
            value = int(value)
        v = _operator.index(value)
    except Exception:
        raise ValueError(f"{name} must be an integer, got {_kind(value)}") from None
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {v}")
    return v


def _float(value: Any, name: str) -> float:
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large for a float") from None
    except Exception:
        raise ValueError(f"{name} must be a number, got {_kind(value)}") from None


def _bool(value: Any, name: str) -> bool:
    try:
        return bool(value)
    except Exception:
        raise ValueError(f"{name} must be true or false, got {_kind(value)}") from None


def _str(value: Any, name: str, optional: bool = False, nul: bool = False) -> Optional[str]:
    """A str (None too when optional) that UTF-8 can hold; without NUL unless `nul` (einsum reports
    it in context). A str subclass becomes a plain str (its overrides are not asked)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string{' or None' if optional else ''}, got {_kind(value)}")
    value = str.__str__(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name} is not valid text: a lone surrogate at position {e.start}") from None
    if not nul and "\0" in value:
        raise ValueError(f"{name} contains a NUL character at position {value.index(chr(0))}")
    return value


def _path(value: Any, name: str, optional: bool = False) -> Optional[bytes]:
    """A path (str or bytes, or os.PathLike) as the bytes the file system sees (os.fsencode: also a
    name that is not UTF-8, as imagenet_weights_path() may return one); without NUL."""
    if value is None and optional:
        return None
    try:
        raw = _os.fsencode(value)
    except Exception:
        raise ValueError(f"{name} must be a path (str, bytes or os.PathLike){' or None' if optional else ''}, "
                         f"got {_kind(value)}") from None
    if b"\0" in raw:
        raise ValueError(f"{name} contains a NUL character at position {raw.index(0)}")
    return bytes(raw)


def _dict(value: Any, name: str, optional: bool = False) -> Optional[dict]:
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict (a state dict){' or None' if optional else ''}, got {_kind(value)}")
    # Keys are parameter names: str, a subclass becoming plain str (its __str__, __hash__ and __eq__
    # are not asked: a key names the parameter it holds); two keys with one text are refused.
    plain = {}
    for key, tensor in dict.items(value):
        if not isinstance(key, str):
            raise ValueError(f"{name}'s keys must be parameter names (str), got {_kind(key)}")
        key = str.__str__(key)
        if key in plain:
            raise ValueError(f"{name} has the key {key!r} twice")
        plain[key] = tensor
    return plain


def _seed(value: Any) -> int:
    return _int(value, "seed", 0, _UINT64_MAX)


class ResNet18(_core.ResNet18):
    __doc__ = _core.ResNet18.__doc__

    def __init__(self, state_dict: Optional[dict] = None, *, seed: int = 2024, device: str = "auto") -> None:
        super().__init__(_dict(state_dict, "state_dict", optional=True), seed=_seed(seed), device=_str(device, "device"))
        self._built = True

    def _require_built(self) -> None:
        # ResNet18.__new__(ResNet18) without __init__ holds no C++ model (its methods would crash).
        if not self.__dict__.get("_built", False):
            raise RuntimeError("this ResNet18 was never initialised: create it with handgrad.ResNet18(...)")

    def state_dict(self) -> Dict[str, Any]:
        self._require_built()
        return super().state_dict()

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> None:
        self._require_built()
        return super().load_state_dict(_dict(state_dict, "state_dict"), _bool(strict, "strict"))

    def forward(self, images: Any) -> Any:
        self._require_built()
        return super().forward(images)

    __call__ = forward

    @property
    def device(self) -> str:
        self._require_built()
        return super().device


def cuda_available() -> bool:
    """True when this handgrad was built with CUDA and a GPU is usable."""
    return _core.cuda_available()


def imagenet_weights_path() -> str:
    """torchvision's ImageNet ResNet18 file in the torch hub cache ("" when there is none)."""
    return _core.imagenet_weights_path()


def info() -> Dict[str, Any]:
    """What this module is: version, commit, whether CUDA was built in and is usable."""
    return {
        "version": _core.__version__,
        "commit": _core.commit,
        "built_with_cuda": _core.built_with_cuda,
        "cuda_available": _core.cuda_available(),
        "cuda_unavailable_reason": _core.cuda_unavailable_reason(),
    }


def einsum(equation: str, *operands: Any, order: str = "auto", device: Optional[str] = None) -> Any:
    """torch.einsum's semantics on handgrad's kernels.

    `order`: "auto" (the fewest FLOPs, as torch.einsum with opt_einsum), "greedy" (opt_einsum's
    greedy) or "left-to-right" (torch.einsum without opt_einsum). `device`: None computes where
    the operands are; "cpu" / "cuda" / "auto" moves them there first (a numpy caller still gets
    a numpy array back). Results are float32.
    """
    return _core.einsum(_str(equation, "equation", nul=True), *operands, order=_str(order, "order"),
                        device=_str(device, "device", optional=True))


def contract_path(equation: str, *operands: Any, order: str = "auto") -> Tuple[list, PathInfo]:
    """The contraction order einsum() takes, in the shape of opt_einsum.contract_path.

    Operands may be arrays or shapes (tuples of ints). Returns (path, info): `path` lists each
    step's pair of positions in the current operand list (the pair leaves it, its result is
    appended), as opt_einsum's; `info` has each step's equation, FLOPs and result size, the totals
    (`opt_cost`, `naive_cost`: left to right), `largest_intermediate` and `method`; print it.
    """
    return _core.contract_path(_str(equation, "equation", nul=True), *operands, order=_str(order, "order"))


def train_mlp(x: Any = None, y: Any = None, w1: Any = None, w2: Any = None, indices: Any = None, *,
              lrs: Union[float, Sequence[float]] = 1e-5, iters: int = 100000, log_every: int = 100,
              n: int = 500, d: int = 64, h: int = 64, seed: int = 2024, device: str = "auto",
              impl: str = "auto") -> Dict[str, Any]:
    """Q2: the two-layer ReLU regression MLP trained by batch-1 SGD, every derivative by hand.

    Data X [n, d], Y [n], weights W1 [d, h], W2 [h] and the sample indices (int, [>= iters]) are
    drawn from `seed` where not given (the CLI's problem). `lrs`: one rate or a sweep (trained
    side by side). Returns {"impl", "device", "seconds", "us_per_iter", "best", "models": [{"lr",
    "losses" (every iteration's), "w1", "w2" (final weights), "diverged_at" (None or the
    iteration), "final_loss", "last1000_mean", "dataset_mse"}]}; `best` is None when every model
    diverged. Inputs are copied (they are small).
    """
    try:
        many = hasattr(lrs, "__iter__") and not isinstance(lrs, (str, bytes)) and getattr(lrs, "ndim", 1) != 0
    except Exception:  # an ndim that raises
        many = True
    if many:
        try:
            listed = list(_itertools.islice(lrs, 1025))  # an endless iterable stops here
        except Exception:
            raise ValueError(f"lrs must be a number or a sequence of numbers, got {_kind(lrs)}") from None
        if len(listed) > 1024:
            raise ValueError("lrs: at most 1024 learning rates")
        lr_list = [_float(v, "lrs") for v in listed]
    else:
        lr_list = [_float(lrs, "lrs")]
    r = _core.train_mlp(x, y, w1, w2, indices, lr_list, _int(iters, "iters"), _int(log_every, "log_every"),
                        _int(n, "n"), _int(d, "d"), _int(h, "h"), _seed(seed), _str(device, "device"),
                        _str(impl, "impl"))
    for m, lr in zip(r["models"], lr_list):
        m["lr"] = lr  # the caller's value, not its float32 rounding
    return r


def train_transfer(*, data_dir: str = "", weights: Optional[str] = None, state_dict: Optional[dict] = None,
                   freeze: str = "backbone", batch_size: int = 16, lr: float = 0.01, momentum: float = 0.0,
                   epochs: int = 2, max_steps: int = 0, eval: bool = True, eval_limit: int = 0, seed: int = 2024,
                   device: str = "auto", normalize: bool = False, conv1_init: str = "rgb-sum",
                   progress: Union[bool, Callable[[dict], None]] = True, log_every: int = 20,
                   shuffle: bool = True) -> Dict[str, Any]:
    """Q3: fine-tune ResNet18 on FashionMNIST (as `handgrad transfer train`).

    Starts from `state_dict` (an adapted model: 1-channel conv1, 10-class fc) if given, else from
    `weights`: None finds torchvision's ImageNet file in the torch hub cache, "none" is random
    init, else a .pth / .safetensors path. `freeze`: "backbone" (only conv1 and fc train) or
    "none". `normalize`: standardise pixels with FASHION_MNIST_MEAN / _STD. `progress`: True prints a progress line on stderr, False is silent, a callable gets
    {"epoch", "epochs", "step", "steps", "loss", "images_per_second", "eta_seconds"} after every
    step. Returns {"history": {"samples_seen", "train_loss"}, "final_train_loss", "test_loss",
    "test_accuracy", "steps", "seconds", "images_per_second", "weights", "state_dict"}.
    """
    return _core.train_transfer(
        _path(data_dir, "data_dir"), _path(weights, "weights", optional=True),
        _dict(state_dict, "state_dict", optional=True), _str(freeze, "freeze"), _int(batch_size, "batch_size"),
        _float(lr, "lr"), _float(momentum, "momentum"), _int(epochs, "epochs"), _int(max_steps, "max_steps"),
        _bool(eval, "eval"), _int(eval_limit, "eval_limit"), _seed(seed), _str(device, "device"),
        _bool(normalize, "normalize"), _str(conv1_init, "conv1_init"),
        progress if callable(progress) else _bool(progress, "progress"), _int(log_every, "log_every"),
        _bool(shuffle, "shuffle"))


def evaluate_transfer(state_dict: dict, *, data_dir: str = "", limit: int = 0, batch_size: int = 256,
                      device: str = "auto", normalize: bool = False) -> Tuple[float, float]:
    """Q3: (test loss, test accuracy) of an adapted ResNet18 state dict on FashionMNIST's test set."""
    return _core.evaluate_transfer(_dict(state_dict, "state_dict"), _path(data_dir, "data_dir"), _int(limit, "limit"),
                                   _int(batch_size, "batch_size"), _str(device, "device"), _bool(normalize, "normalize"))


def autodiff(function: str = "squared", point: Sequence[float] = (2.0, 4.0)) -> Dict[str, Any]:
    """Q4: forward- and reverse-mode traces of a function at a point.

    `function`: "squared" (y1 = (x1 + x2)^2, y2 = (x1 - x2)^2, the homework's), "expanded", or
    text such as "y1 = (x1 + x2)^2; y2 = exp(x1) * x2". Returns {"function", "point", "tables"
    (one per seed: rows of primal, value, derivative, dvalue), "jacobian_forward",
    "jacobian_reverse", "outputs", "text" (the tables as the homework lays them out)}.
    """
    if isinstance(point, (str, bytes)):
        raise ValueError("point must be a sequence of numbers, not a string")
    try:
        coords = list(_itertools.islice(point, 17))  # at most 16 inputs; an endless iterable stops here
    except Exception:
        raise ValueError(f"point must be a sequence of numbers, got {_kind(point)}") from None
    return _core.autodiff(_str(function, "function"), [_float(v, "point") for v in coords])
