"""The Python module against PyTorch: values, zero-copy, errors, Ctrl-C, state dicts both ways.

Run by ctest (python.module) with the build's python/ folder on PYTHONPATH; skipped, with the
reason, where the module was not built or torch is missing.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

handgrad = pytest.importorskip("handgrad", reason="the handgrad module was not built (see CMake's output)")
torch = pytest.importorskip("torch", reason="torch (the oracle) is not installed")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from pyhelpers import fashion_dir  # noqa: E402

RNG = np.random.default_rng(2024)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# --- einsum ---------------------------------------------------------------------------------
CASES = [
    ("abcd,abcd->abcd", [(2, 3, 4, 5), (2, 3, 4, 5)]),
    ("abcd,ed->abce", [(2, 3, 4, 5), (6, 5)]),
    ("abcd->abd", [(2, 3, 4, 5)]),
    ("ij,jk->ik", [(7, 5), (5, 3)]),
    ("bij,bjk->bik", [(4, 3, 5), (4, 5, 2)]),
    ("ii->i", [(6, 6)]),
    ("...ij,...jk", [(2, 1, 3, 4), (5, 4, 2)]),
    ("ab,cd,bc->ad", [(8, 9), (10, 11), (9, 10)]),
    ("i,i->", [(13,), (13,)]),
    ("ij->ji", [(3, 8)]),
]


@pytest.mark.parametrize("eq,shapes", CASES)
def test_einsum_matches_torch_numpy_in_numpy_out(eq, shapes):
    ops = [rand(*s) for s in shapes]
    got = handgrad.einsum(eq, *ops)
    want = torch.einsum(eq, *[torch.from_numpy(o).double() for o in ops]).numpy()
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("eq,shapes", CASES[:5])
def test_einsum_torch_in_torch_out(eq, shapes):
    ops = [torch.from_numpy(rand(*s)) for s in shapes]
    got = handgrad.einsum(eq, *ops)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.device.type == "cpu"
    torch.testing.assert_close(got, torch.einsum(eq, *ops), rtol=1e-4, atol=1e-4)


def test_orders_agree():
    ops = [rand(6, 7), rand(8, 9), rand(7, 8)]
    ref = handgrad.einsum("ab,cd,bc->ad", *ops, order="left-to-right")
    for order in ("auto", "greedy"):
        np.testing.assert_allclose(handgrad.einsum("ab,cd,bc->ad", *ops, order=order), ref, rtol=1e-4, atol=1e-4)


def test_inputs_are_read_in_place_and_results_not_copied():
    a, b = rand(30, 40), rand(40, 50)
    assert handgrad._core._input_address(a) == (a.ctypes.data, False)
    ta = torch.from_numpy(a)
    assert handgrad._core._input_address(ta) == (ta.data_ptr(), False)
    before = handgrad._core._stats()
    out = handgrad.einsum("ij,jk->ik", a, b)
    after = handgrad._core._stats()
    assert after["inputs_converted"] == before["inputs_converted"]
    assert after["inputs_borrowed"] == before["inputs_borrowed"] + 2
    # The array numpy got is handgrad's result buffer (a capsule owns it), not a copy of it.
    assert out.ctypes.data == after["last_result_address"] and not out.flags.owndata
    tout = handgrad.einsum("ij,jk->ik", ta, torch.from_numpy(b))
    assert tout.data_ptr() == handgrad._core._stats()["last_result_address"]
    # The result outlives everything else: the capsule keeps it.
    del a, b, ta
    assert np.isfinite(out).all()


def test_other_inputs_are_converted_not_misread():
    a = rand(5, 6)
    for other in (a.astype(np.float64), a.T.copy().T, np.asfortranarray(a), a.tolist(),
                  torch.from_numpy(a).double(), torch.from_numpy(a.T.copy()).t()):
        before = handgrad._core._stats()["inputs_converted"]
        got = handgrad.einsum("ij->ji", other)
        np.testing.assert_array_equal(np.asarray(got), a.T)
        if not (isinstance(other, np.ndarray) and other.dtype == np.float32 and other.flags.c_contiguous):
            assert handgrad._core._stats()["inputs_converted"] == before + 1
    # A strided view of a float32 array: converted, and the values are the view's.
    big = rand(8, 8)
    np.testing.assert_array_equal(handgrad.einsum("ij->ij", big[::2, 1::3]), big[::2, 1::3])
    # A tensor that requires grad is read through detach().
    w = torch.ones(3, 3, requires_grad=True)
    assert float(handgrad.einsum("ij->", w)) == 9.0


def test_empty_and_odd_operands():
    # torch gives empty tensors arbitrary strides: still read (nothing to misread).
    assert handgrad.einsum("ij->i", torch.zeros(5, 0)).shape == (5,)
    assert handgrad.einsum("ij->i", np.zeros((5, 0), np.float32)).shape == (5,)
    np.testing.assert_array_equal(handgrad.einsum("ij->ji", rand(3, 4).astype(">f4")).shape, (4, 3))
    assert float(handgrad.einsum("->", np.float32(3.0))) == 3.0
    ro = rand(4, 4)
    ro.flags.writeable = False
    np.testing.assert_allclose(handgrad.einsum("ii->", ro), np.trace(ro), rtol=1e-5)


def test_calls_from_several_threads_are_serialised():
    import threading
    model = handgrad.ResNet18(seed=3, device="cpu")
    x = rand(3, 1, 28, 28)
    want = model(x)
    errors = []

    def work(batch):
        for _ in range(4):
            model(rand(batch, 1, 28, 28))  # re-sizes the model while the others use it
            c = handgrad.einsum("ij,jk->ik", np.ones((40, 30), np.float32), np.ones((30, 20), np.float32))
            if not (c == 30).all():
                errors.append(c)

    threads = [threading.Thread(target=work, args=(b,)) for b in (2, 5, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    np.testing.assert_array_equal(model(x), want)


@pytest.mark.parametrize("call,match", [
    (lambda: handgrad.einsum("ij,jk->iz", rand(2, 3), rand(3, 4)), "output subscript 'z'"),
    (lambda: handgrad.einsum("ij,jk->ik", rand(2, 3), rand(4, 4)), "subscript 'j'"),
    (lambda: handgrad.einsum("ij->", rand(2, 3), rand(2, 3)), "more operands"),
    (lambda: handgrad.einsum("i(j", rand(2, 3)), "einsum"),
    (lambda: handgrad.einsum("ij", np.array([["a", "b"]])), "takes real numbers"),
    (lambda: handgrad.einsum("ij", [["a", "b"]]), "takes real numbers"),
    (lambda: handgrad.einsum("ij", rand(2, 2), order="best"), "order must be"),
    (lambda: handgrad.contract_path("ij,jk", (2, 3), "x"), "neither an array nor a shape"),
    (lambda: handgrad.train_mlp(lrs=[-1.0], iters=10), "--lr must be positive"),
    (lambda: handgrad.ResNet18({"conv1.weight": np.zeros((3, 3))}, device="cpu"), "conv1.weight"),
    (lambda: handgrad.autodiff("y1 = x1 +", (1.0,)), ""),
    (lambda: handgrad.einsum("ij", rand(2, 2), device="tpu"), "device"),
    (lambda: handgrad.einsum("ij->", np.ones((2, 2), np.complex64)), "imaginary"),
    (lambda: handgrad.einsum("ij->", torch.ones(2, 2).to_sparse()), "dense one"),
    (lambda: handgrad.contract_path("ij,jk->ik", (2 ** 70, 3), (3, 4)), "beyond int64"),
    (lambda: handgrad.contract_path("...->", (1,) * 200), "at most 64"),
    (lambda: handgrad.train_mlp(indices=np.full(10, 0.5), iters=5), "integers"),
])
def test_bad_input_is_a_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_messages_are_one_readable_line():
    with pytest.raises(ValueError) as e:
        handgrad.einsum("\u00e9->", rand(2))
    assert str(e.value) and "\n" not in str(e.value) and "\\x" in str(e.value)
    with pytest.raises(ValueError, match="not a string"):
        handgrad.autodiff("squared", "12")  # a string is not a point


def test_a_progress_callback_may_not_call_handgrad():
    if fashion_dir() is None:
        pytest.skip("FashionMNIST is not installed")

    def callback(p):
        handgrad.einsum("i->", np.ones(3, np.float32))  # would wait for the lock the run holds

    with pytest.raises(ValueError, match="progress callback"):
        handgrad.train_transfer(weights="none", max_steps=1, eval=False, device="cpu", progress=callback,
                                data_dir=fashion_dir())
    assert float(handgrad.einsum("i->", np.ones(3, np.float32))) == 3.0  # and the lock was given back


def test_a_failed_load_leaves_the_model_unchanged():
    model = handgrad.ResNet18(seed=5, device="cpu")
    before = model.state_dict()
    bad = {k: v.copy() for k, v in before.items()}
    bad["conv1.weight"][:] = 0
    bad["fc.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="fc.weight"):
        model.load_state_dict(bad)
    np.testing.assert_array_equal(model.state_dict()["conv1.weight"], before["conv1.weight"])


def test_contract_path_matches_opt_einsum_conventions():
    path, info = handgrad.contract_path("ab,cd,bc->ad", (256, 256), (256, 256), (256, 256))
    assert path == [(0, 2), (0, 1)]
    assert info.opt_cost == 2 * 256 ** 3 * 2 and info.naive_cost > 100 * info.opt_cost
    assert info.step_equations == ["ab,bc->ac", "ac,cd->ad"]
    assert "Complete contraction:  ab,cd,bc->ad" in str(info)
    # Arrays and shapes give the same path; one operand is opt_einsum's [(0,)].
    ops = [rand(4, 5), rand(6, 7), rand(5, 6)]
    assert handgrad.contract_path("ab,cd,bc->ad", *ops)[0] == handgrad.contract_path(
        "ab,cd,bc->ad", *[o.shape for o in ops])[0]
    assert handgrad.contract_path("ij->i", (3, 4))[0] == [(0,)]


# --- Q2 -------------------------------------------------------------------------------------
def test_mlp_matches_a_torch_replay():
    n, d, h, iters, lr = 50, 8, 6, 300, 1e-3
    X, Y, W1, W2 = rand(n, d), rand(n), rand(d, h) * 0.3, rand(h) * 0.3
    idx = RNG.integers(0, n, iters)
    r = handgrad.train_mlp(X, Y, W1, W2, idx, lrs=lr, iters=iters, device="cpu")
    m = r["models"][0]
    w1, w2 = torch.from_numpy(W1.copy()), torch.from_numpy(W2.copy())
    losses = []
    for t in range(iters):  # the manual backward, replayed in torch (float32)
        x, y = torch.from_numpy(X[idx[t]]), torch.tensor(Y[idx[t]])
        a = x @ w1
        ar = torch.relu(a)
        yp = ar @ w2
        losses.append(float((yp - y) ** 2))
        dy = 2 * (yp - y)
        dw2 = ar * dy
        da = (dy * w2) * (a >= 0)
        w1 = w1 - lr * torch.outer(x, da)
        w2 = w2 - lr * dw2
    np.testing.assert_allclose(m["losses"], losses, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m["w1"], w1.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m["w2"], w2.numpy(), rtol=1e-4, atol=1e-6)
    assert m["diverged_at"] is None and r["best"] == 0


@pytest.mark.skipif(not os.environ.get("HANDGRAD_CLI"), reason="HANDGRAD_CLI (the handgrad binary) is not set")
def test_mlp_in_interruptible_blocks_is_the_cli_bit_for_bit(tmp_path):
    # 70000 iterations cross a block boundary (65536), with a model diverging in the first block.
    iters = 70000
    subprocess.run([os.environ["HANDGRAD_CLI"], "mlp", "--iters", str(iters), "--lr", "1e-5,0.03", "--no-plot",
                    "--device", "cpu", "--out-dir", str(tmp_path), "--save-weights", str(tmp_path / "w")],
                   check=True, capture_output=True)
    r = handgrad.train_mlp(lrs=[1e-5, 0.03], iters=iters, device="cpu")
    best = r["models"][r["best"]]
    assert r["models"][1]["diverged_at"] is not None and best["lr"] == 1e-5
    np.testing.assert_array_equal(best["w1"], np.load(tmp_path / "w" / "W1.npy"))
    np.testing.assert_array_equal(best["w2"].reshape(-1), np.load(tmp_path / "w" / "W2.npy").reshape(-1))


def test_mlp_divergence_is_returned_not_raised():
    r = handgrad.train_mlp(lrs=[0.03, 1e-5], iters=2000, device="cpu")
    assert r["models"][0]["diverged_at"] is not None and r["models"][1]["diverged_at"] is None
    assert r["best"] == 1 and np.isnan(r["models"][0]["losses"][-1])
    r = handgrad.train_mlp(lrs=0.03, iters=200, device="cpu")
    assert r["best"] is None


# --- Q3 -------------------------------------------------------------------------------------
def torchvision_resnet18():
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.resnet18(num_classes=10)
    net.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return net


def test_state_dict_round_trip_through_torchvision():
    x = rand(6, 1, 28, 28)
    ours = handgrad.ResNet18(seed=7, device="cpu")
    net = torchvision_resnet18()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    net.eval()
    with torch.no_grad():
        theirs = net(torch.from_numpy(x))
    np.testing.assert_allclose(ours(x), theirs.numpy(), rtol=1e-4, atol=1e-4)
    # And back: torchvision's weights (with trained-looking BN statistics) into handgrad.
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
        theirs = net(torch.from_numpy(x))
    back = handgrad.ResNet18(net.state_dict(), device="cpu")
    got = back(torch.from_numpy(x))
    assert isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, theirs, rtol=1e-4, atol=1e-4)
    assert set(back.state_dict()) == set(net.state_dict())


# --- the GPU path (the GPU check runs these; here they skip, saying why) ---------------------
needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and handgrad.cuda_available()),
                               reason="needs a GPU that torch and handgrad can both use")


@needs_gpu
@pytest.mark.parametrize("eq,shapes", CASES[:5])
def test_einsum_on_cuda_tensors_stays_on_the_device(eq, shapes):
    ops = [torch.from_numpy(rand(*s)).cuda() for s in shapes]
    got = handgrad.einsum(eq, *ops)
    assert isinstance(got, torch.Tensor) and got.device == ops[0].device
    torch.testing.assert_close(got, torch.einsum(eq, *ops), rtol=1e-4, atol=1e-4)


@needs_gpu
def test_dlpack_both_ways_on_torchs_current_stream():
    # Operands torch has only queued on its own (non-default) stream: handgrad must see them
    # written, and torch must see handgrad's result written, with no synchronize by the caller.
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        a = torch.randn(1024, 1024, device="cuda")
        b = a * 3 + 1  # queued behind a's fill, on `side`
        got = handgrad.einsum("ij,jk->ik", b, a)
        want = b @ a
        assert got.data_ptr() not in (a.data_ptr(), b.data_ptr())
        torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-2)
    # A CUDA tensor handgrad returns is a torch tensor on the same device, usable through DLPack.
    again = torch.from_dlpack(got)
    assert again.device == a.device and again.data_ptr() == got.data_ptr()


@needs_gpu
def test_state_dict_moves_between_gpu_models():
    x = torch.from_numpy(rand(6, 1, 28, 28)).cuda()
    ours = handgrad.ResNet18(seed=7, device="cuda")
    net = torchvision_resnet18().cuda()
    net.load_state_dict({k: torch.as_tensor(v).cuda() for k, v in ours.state_dict().items()})
    net.eval()
    with torch.no_grad():
        theirs = net(x)
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
        theirs_after = net(x)
    got = ours(x)
    assert isinstance(got, torch.Tensor) and got.device == x.device
    torch.testing.assert_close(got, theirs, rtol=1e-3, atol=1e-3)
    back = handgrad.ResNet18(net.state_dict(), device="cuda")  # CUDA tensors in, read on the device
    torch.testing.assert_close(back(x), theirs_after, rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(fashion_dir() is None, reason="FashionMNIST is not installed (dataset-fashion-mnist)")
def test_transfer_trains_reports_progress_and_returns_a_loadable_state():
    seen = []
    r = handgrad.train_transfer(weights="none", batch_size=8, max_steps=6, log_every=3, eval_limit=64,
                                device="cpu", progress=seen.append, data_dir=fashion_dir())
    assert [p["step"] for p in seen] == list(range(1, 7)) and seen[-1]["steps"] == 6
    assert len(r["history"]["train_loss"]) == 2 and r["steps"] == 6
    loss, acc = handgrad.evaluate_transfer(r["state_dict"], limit=64, device="cpu", data_dir=fashion_dir())
    assert abs(loss - r["test_loss"]) < 1e-6 and acc == r["test_accuracy"]
    net = torchvision_resnet18()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in r["state_dict"].items()})


@pytest.mark.skipif(fashion_dir() is None, reason="FashionMNIST is not installed (dataset-fashion-mnist)")
def test_normalize_is_the_exported_mean_and_std():
    """normalize=True feeds (pixel - FASHION_MNIST_MEAN) / FASHION_MNIST_STD: evaluate_transfer's
    loss equals the cross-entropy of the model's own logits on test images standardised so."""
    import gzip
    assert (handgrad.FASHION_MNIST_MEAN, handgrad.FASHION_MNIST_STD) == pytest.approx((0.2860, 0.3530))
    r = handgrad.train_transfer(weights="none", freeze="none", batch_size=8, max_steps=3, eval=False, normalize=True,
                                device="cpu", progress=False, data_dir=fashion_dir())
    n = 64
    with gzip.open(os.path.join(fashion_dir(), "t10k-images-idx3-ubyte.gz")) as f:
        f.read(16)
        images = np.frombuffer(f.read(n * 784), np.uint8).reshape(n, 1, 28, 28).astype(np.float32) / 255
    with gzip.open(os.path.join(fashion_dir(), "t10k-labels-idx1-ubyte.gz")) as f:
        f.read(8)
        labels = np.frombuffer(f.read(n), np.uint8).astype(np.int64)
    model = handgrad.ResNet18(r["state_dict"], device="cpu")

    def cross_entropy(x):
        return float(torch.nn.functional.cross_entropy(torch.from_numpy(model(x)), torch.from_numpy(labels)))
    want = cross_entropy((images - handgrad.FASHION_MNIST_MEAN) / handgrad.FASHION_MNIST_STD)
    want_raw = cross_entropy(images)
    loss, _ = handgrad.evaluate_transfer(r["state_dict"], limit=n, normalize=True, device="cpu", data_dir=fashion_dir())
    raw, _ = handgrad.evaluate_transfer(r["state_dict"], limit=n, normalize=False, device="cpu", data_dir=fashion_dir())
    # A barely trained model's losses differ by ~1e-3 between the two inputs; rounding moves them
    # by ~1e-7. Each evaluation must match its own input, far closer than the other's.
    assert abs(loss - want) < 0.1 * abs(want_raw - want) and abs(raw - want_raw) < 0.1 * abs(want_raw - want)


# --- Q4 -------------------------------------------------------------------------------------
def test_autodiff_tables():
    r = handgrad.autodiff("squared", (2, 4))
    assert r["outputs"] == [36.0, 4.0]
    assert r["jacobian_forward"] == r["jacobian_reverse"] == [[12.0, 12.0], [-4.0, 4.0]]
    assert len(r["tables"]) == 4 and "Table 1" in r["text"]


# --- Ctrl-C ---------------------------------------------------------------------------------
@pytest.mark.skipif(fashion_dir() is None, reason="FashionMNIST is not installed (dataset-fashion-mnist)")
def test_ctrl_c_stops_training_with_keyboard_interrupt():
    code = textwrap.dedent("""
        import sys, handgrad
        try:
            handgrad.train_transfer(weights="none", epochs=1, eval=False, device="cpu", progress=False,
                                    data_dir=sys.argv[1])
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(42)
        print("finished")
    """)
    # -X faulthandler: if the child crashes, its stderr says where (Python's side of the stack).
    p = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", code, fashion_dir()], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(4)  # past start-up and the data, into the steps
    t0 = time.time()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 42 and "interrupted" in out, f"exit {p.returncode}, stderr: {err[-3000:]}"
    assert time.time() - t0 < 10


def test_ctrl_c_stops_mlp_between_blocks():
    code = textwrap.dedent("""
        import sys, handgrad
        try:
            handgrad.train_mlp(iters=2**25, lrs=1e-5, device="cpu")
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(42)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    time.sleep(3)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 42 and "interrupted" in out
