"""What cyclegan.py promises, as tests, in cyclegan.py's order.

    python -m pytest -q -m "not slow"    # the quick ones, in one process
    python -m pytest -q                  # all of them, as CI runs them

Tests marked slow start other processes: the command line, torchrun, a Jupyter kernel,
download_data.sh, or train the full demo. Small networks (--ngf 4 --n-blocks 1) and 32px images
keep the training tests fast; the shapes and parameter counts are checked at the paper's sizes.
GPUs are pretended to by monkeypatching the torch.cuda queries that cyclegan.py asks; several GPUs
by 2 torchrun processes on the CPU (gloo).
"""
import argparse
import base64
import csv
import errno
import functools
import http.server
import importlib.util
import io
import json
import math
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
import zipfile
import zlib

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

import cyclegan

# A run on the CPU takes as many threads as there are free cores unless OMP_NUM_THREADS is set:
# the tests compare runs bit for bit, which holds at one thread count.
os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "cyclegan.py")  # started by its path: printed commands show it
# A run of tiny networks on the test's small dataset in data/ (32px crops of 36px images), in
# fp32: auto times each new run on CPUs with bf16 (section 11), and these tests count the steps
# and compare runs bit for bit
TINY = ["--data", "data", "--image-size", "32", "--ngf", "4", "--ndf", "4", "--n-blocks", "1",
        "--precision", "fp32"]
# The slow marker is registered by no ini file (the project has none): its warning, and only it,
# is silenced here. `-m "not slow"` works without registration.
warnings.filterwarnings("ignore", "Unknown pytest.mark.slow", pytest.PytestUnknownMarkWarning)
slow = pytest.mark.slow


# --- helpers ----------------------------------------------------------------------------------

def write_image(path, mode="RGB", size=(40, 36), value=None):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # The same pixels in every run: seeded by the folder and name, not by the test's own folder
    name = "/".join(pathlib.PurePath(path).parts[-2:])
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    if mode == "I;16":
        image = Image.new("I;16", size, 40000 if value is None else value)
    else:
        rgb = (torch.rand(size[1], size[0], 3, generator=gen) * 255).to(torch.uint8).numpy()
        image = Image.fromarray(rgb, "RGB").convert(mode)
    if mode == "P" and value == "transparent":
        image.info["transparency"] = 0
    image.save(path)
    return path


def make_dataset(root, layout="official", n_x=3, n_y=4, n_test=2):
    """A small folder dataset in one of the two layouts, images of mixed kinds."""
    names = {"official": ("trainA", "trainB", "testA", "testB"),
             "udacity": ("summer/summer", "winter/winter", "test_summer/x", "test_winter/x"),
             }[layout]
    modes = ["RGB", "L", "RGBA", "P"]
    for folder, count in zip(names, (n_x, n_y, n_test, n_test)):
        for i in range(count):
            extension = ".jpg" if i % 2 == 0 and modes[i % 4] in ("RGB", "L") else ".png"
            write_image(os.path.join(root, folder, f"{i}{extension}"), modes[i % 4],
                        size=(40 + i, 36))
    return str(root)


@pytest.fixture
def run_dir(request, tmp_path, monkeypatch):
    """The test's own folder as the working directory, with a small dataset in data/; its sizes
    (make_dataset's n_x, n_y) by indirect parametrization."""
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "data", **getattr(request, "param", {}))
    return tmp_path


def run_main(args, capsys):
    cyclegan.main(args)
    return capsys.readouterr()


def fails_with(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cyclegan.main(args)
    assert exit_info.value.code == 1
    return capsys.readouterr().err


def tensors_equal(a, b):
    """Deep comparison of checkpoint contents, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b))
    return a == b


def tiny_args(*flags):
    """The settings that train() gets from the command line TINY + flags (nothing is written)."""
    typed = vars(cyclegan.build_arg_parser().parse_args([*TINY, "--out", "unused", *flags]))
    return cyclegan.prepare_run(typed)[0]  # with --out, a new run's folder is not made here


def bare_log(folder, device):
    """A ProgressLog of a new run on `device`, for its lines alone (no sample grids)."""
    data = argparse.Namespace(images_X=torch.zeros(1, 3, 4, 4, dtype=torch.uint8),
                              images_Y=torch.zeros(1, 3, 4, 4, dtype=torch.uint8), image_size=4)
    training = argparse.Namespace(device=torch.device(device), iteration=0)
    test_images = torch.rand(1, 3, 4, 4)
    return cyclegan.ProgressLog(str(folder), training, data, test_images, test_images)


def importable(name):
    """Is an optional package installed? (Found, not imported: importing ipykernel here would
    make cyclegan.in_notebook() true in this process.) Under CI it must be."""
    found = importlib.util.find_spec(name) is not None
    assert found or os.environ.get("CI") != "true", (
        f"CI must install {name} (README's test command)")
    return found


def command_line(args, cwd):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


# cyclegan.py's command line, with one of its functions slowed down: it prints "STALLED" and
# waits `seconds` before each call, so that a test can stop the process there.
STALLED = """
import sys, time
sys.path.insert(0, {here!r})
import cyclegan
real_function = cyclegan.{name}
def stalled(*args, **kwargs):
    print("STALLED", flush=True)
    time.sleep({seconds})
    return real_function(*args, **kwargs)
cyclegan.{name} = stalled
cyclegan.main(sys.argv[1:])
"""


def stalled_process(name, seconds, args, cwd):
    """cyclegan.py ARGS with cyclegan.NAME stalled, started -> the process, in its first call."""
    script = STALLED.format(here=HERE, name=name, seconds=seconds)
    process = subprocess.Popen([sys.executable, "-c", script, *args], cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if line == "STALLED\n":
            return process
    pytest.fail("the stalled function was not called")


# --- 1. Networks ------------------------------------------------------------------------------

def test_discriminator_scores_70x70_patches():
    """An output score depends on the pixels of a 70x70 window and no others. (Instance norm
    mixes in whole-image statistics, so it is left out for this check of the convolutions.)"""
    torch.manual_seed(0)
    net = cyclegan.Discriminator(ndf=8)
    for i, layer in enumerate(net.model):
        if isinstance(layer, torch.nn.InstanceNorm2d):
            net.model[i] = torch.nn.Identity()
    image = torch.rand(1, 3, 128, 128, requires_grad=True)
    net(image)[0, 0, 7, 7].backward()
    rows = image.grad.abs().sum((0, 1, 3)).nonzero().flatten()
    assert rows.max() - rows.min() + 1 == 70


def official_keys(n_blocks=9):
    """The official ResNet generator's state_dict keys, in order (from its networks.py)."""
    keys = ["model.1", "model.4", "model.7"]
    keys += [f"model.{10 + i}.conv_block.{j}" for i in range(n_blocks) for j in (1, 5)]
    keys += [f"model.{10 + n_blocks + k}" for k in (0, 3, 7)]
    return [f"{key}.{kind}" for key in keys for kind in ("weight", "bias")]


def test_networks_have_the_official_parameters_keys_and_shapes():
    assert sum(p.numel() for p in cyclegan.Generator().parameters()) == 7_837_699
    assert sum(p.numel() for p in cyclegan.Discriminator().parameters()) == 2_764_737
    state = cyclegan.Generator(64, 9).state_dict()
    assert list(state) == official_keys(9)
    assert state["model.1.weight"].shape == (64, 3, 7, 7)
    assert state["model.10.conv_block.1.weight"].shape == (256, 256, 3, 3)
    assert state["model.19.weight"].shape == (256, 128, 3, 3)  # transposed: (in, out, k, k)
    assert state["model.26.weight"].shape == (3, 64, 7, 7)
    with torch.no_grad():
        for size, patches in ((128, 14), (256, 30)):
            image = torch.rand(1, 3, size, size) * 2 - 1
            assert cyclegan.Generator(8, 2)(image).shape == (1, 3, size, size)
            assert cyclegan.Discriminator(8)(image).shape == (1, 1, patches, patches)
    model = cyclegan.CycleGAN()  # weights from N(0, 0.02), biases 0
    weights = torch.cat([m.weight.flatten() for m in model.modules()
                         if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))])
    assert abs(weights.mean().item()) < 1e-4 and abs(weights.std().item() - 0.02) < 1e-4
    assert all(torch.count_nonzero(m.bias) == 0 for m in model.modules()
               if getattr(m, "bias", None) is not None)


# --- 3. The history pool ----------------------------------------------------------------------

def test_image_pool_fills_to_its_size_then_swaps_and_never_grows():
    torch.manual_seed(0)
    pool = cyclegan.ImagePool(50)
    for i in range(50):  # filling: every new image comes straight back
        image = torch.full((1, 3, 2, 2), float(i))
        assert torch.equal(pool.query(image), image)
    assert len(pool.images) == 50
    returned_old = 0
    for i in range(50, 250):
        image = torch.full((1, 3, 2, 2), float(i))
        out = pool.query(image)
        assert len(pool.images) == 50
        if out[0, 0, 0, 0].item() != i:
            returned_old += 1
            assert out[0, 0, 0, 0].item() < i  # an older fake ...
            assert any(stored[0, 0, 0, 0].item() == i for stored in pool.images)  # ... swapped
    assert 70 < returned_old < 130  # about half of 200
    assert torch.equal(cyclegan.ImagePool(0).query(image), image)  # size 0: no pool


# --- 4. One training step ---------------------------------------------------------------------

class PlusConstant(torch.nn.Module):
    """A stand-in network whose output is known: its input (as a discriminator: each image's
    mean) plus a learnable constant."""
    def __init__(self, value, mean=False):
        super().__init__()
        self.shift = torch.nn.Parameter(torch.tensor(value))
        self.mean = mean

    def forward(self, x):
        return (x.mean((1, 2, 3), keepdim=True) if self.mean else x) + self.shift


class FixedPool:
    """A stand-in history pool: records what it is given, returns a known older fake."""
    def __init__(self, value):
        self.value = value
        self.given = []

    def query(self, images):
        self.given.append(images.detach().clone())
        return torch.full_like(images, self.value)


class StandInOptimizer:
    """Keeps the gradients that a step would apply, and changes nothing."""
    def __init__(self, params):
        self.params = list(params)
        self.param_groups = [{"params": self.params}]

    def zero_grad(self, set_to_none=True):
        for param in self.params:
            param.grad = None

    def step(self):
        self.applied = [param.grad.clone() for param in self.params]


def test_training_step_computes_each_loss_from_the_right_networks():
    """Every logged loss (the functions of section 2 included), worked out by hand from stand-in
    networks with known outputs. Wrong wiring (a fake judged by the wrong discriminator, a cycle
    or identity term through the wrong generator, an identity weight other than 0.5 x lambda,
    real and fake targets swapped, or the pool bypassed) changes at least one of these numbers.
    The gradients that each optimiser applies are worked out too: a term whose value is right
    but whose gradient does not reach the network it trains (a stray detach() or no_grad)
    changes one of them."""
    model = cyclegan.CycleGAN(4, 4, 1)
    model.G_XtoY = PlusConstant(0.1)               # G(x) = x + 0.1
    model.G_YtoX = PlusConstant(0.25)              # F(y) = y + 0.25
    model.D_X = PlusConstant(0.3, mean=True)       # D_X(image) = mean + 0.3
    model.D_Y = PlusConstant(-0.2, mean=True)      # D_Y(image) = mean - 0.2
    real_X = torch.full((1, 3, 8, 8), 0.2)
    real_Y = torch.full((1, 3, 8, 8), -0.4)
    pool_X = FixedPool(0.6)   # hands D_X an older fake F(y) of value 0.6
    pool_Y = FixedPool(-0.5)  # hands D_Y an older fake G(x) of value -0.5
    opt_G = StandInOptimizer([model.G_XtoY.shift, model.G_YtoX.shift])
    opt_D = StandInOptimizer([model.D_X.shift, model.D_Y.shift])
    args = tiny_args("--lambda-cycle", "10", "--lambda-identity", "0.5")
    precision = cyclegan.Precision("fp32", torch.device("cpu"))
    losses = cyclegan.train_step(model, real_X, real_Y, opt_G, opt_D, pool_X, pool_Y, precision,
                                 args)
    # G(x) = 0.3 and F(y) = -0.15 everywhere
    expected = {
        "adv_XtoY": (0.3 - 0.2 - 1) ** 2,           # (D_Y(G(x)) - 1)^2
        "adv_YtoX": (-0.15 + 0.3 - 1) ** 2,         # (D_X(F(y)) - 1)^2
        "cycle_X": 10 * abs(0.1 + 0.25),           # 10 |F(G(x)) - x|
        "cycle_Y": 10 * abs(0.25 + 0.1),           # 10 |G(F(y)) - y|
        "idt_X": 0.5 * 10 * 0.25,                  # 5 |F(x) - x|
        "idt_Y": 0.5 * 10 * 0.1,                   # 5 |G(y) - y|
        "D_X": 0.5 * ((0.2 + 0.3 - 1) ** 2 + (0.6 + 0.3) ** 2),     # real x, pooled fake 0.6
        "D_Y": 0.5 * ((-0.4 - 0.2 - 1) ** 2 + (-0.5 - 0.2) ** 2),   # real y, pooled fake -0.5
    }
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value, abs=1e-6), name
    # each pool was given its own domain's newest fakes: F(y) for D_X, G(x) for D_Y
    assert len(pool_X.given) == len(pool_Y.given) == 1
    assert torch.allclose(pool_X.given[0], torch.full((1, 3, 8, 8), -0.15))
    assert torch.allclose(pool_Y.given[0], torch.full((1, 3, 8, 8), 0.3))
    # The gradients, by hand. With G(x) = x + a, F(y) = y + b, D_X = mean + c, D_Y = mean + d:
    # loss_G = (x + a + d - 1)^2 + (y + b + c - 1)^2 + 10|a + b| + 10|b + a| + 5|b| + 5|a|
    # loss_D = ((x + c - 1)^2 + (0.6 + c)^2) / 2 + ((y + d - 1)^2 + (-0.5 + d)^2) / 2
    expected_G = [2 * (0.2 + 0.1 - 0.2 - 1) + 10 + 10 + 5,        # d/da: adversarial, 2 cycles, idt
                  2 * (-0.4 + 0.25 + 0.3 - 1) + 10 + 10 + 5]      # d/db
    expected_D = [(0.2 + 0.3 - 1) + (0.6 + 0.3),                  # d/dc: D_X's real and fake
                  (-0.4 - 0.2 - 1) + (-0.5 - 0.2)]                # d/dd
    assert [g.item() for g in opt_G.applied] == pytest.approx(expected_G, abs=1e-5)
    assert [g.item() for g in opt_D.applied] == pytest.approx(expected_D, abs=1e-5)


@pytest.mark.parametrize("precision_name", ["fp32", "bf16", "fp16"])
def test_training_step_updates_all_four_networks(precision_name):
    """The generators' step changes the generators alone, and leaves the discriminators without
    gradients and unfrozen; a whole step changes all four, in every precision."""
    args = tiny_args("--lr", "1e-3")
    precision = cyclegan.Precision(precision_name, torch.device("cpu"))
    training = cyclegan.Training(args, precision, torch.device("cpu"))
    model = training.model
    real_X = torch.rand(1, 3, 32, 32) * 2 - 1
    real_Y = torch.rand(1, 3, 32, 32) * 2 - 1
    before = {name: [p.detach().clone() for p in getattr(model, name).parameters()]
              for name in ("G_XtoY", "G_YtoX", "D_X", "D_Y")}
    cyclegan.generator_step(model, real_X, real_Y, training.opt_G, precision, args)
    precision.scaler.update()
    for name in ("D_X", "D_Y"):
        net = getattr(model, name)
        assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before[name]))
        assert all(p.grad is None and p.requires_grad for p in net.parameters())
    # fp16's scaler starts at 2^16 and skips steps whose gradients overflow while it finds its
    # level, so give every precision a few steps.
    for _ in range(8):
        losses = cyclegan.train_step(model, real_X, real_Y, training.opt_G, training.opt_D,
                                     training.pool_X, training.pool_Y, precision, args)
    assert list(losses) == list(cyclegan.LOSS_NAMES)
    for name, value in losses.items():
        assert value.dtype == torch.float32 and torch.isfinite(value) and value > 0, name
    for name, params in before.items():
        assert all(not torch.equal(p, q) for p, q in zip(getattr(model, name).parameters(),
                                                          params)), name
    assert precision.scaler.is_enabled() == (precision_name == "fp16")
    if precision_name == "fp16":
        assert 1 < precision.scaler.get_scale() < 2**16  # the gradient scaler really took part
    assert len(training.pool_X.images) == len(training.pool_Y.images) == 8


def test_without_the_identity_loss_a_step_runs_no_identity_pass(run_dir, capsys, monkeypatch):
    """--lambda-identity 0 through the real loop: each step runs the generators 4 times (G(x),
    F(y) and their way back), not 6 (the identity's G(y) and F(x)), and logs the terms as 0."""
    passes = []
    real_step = cyclegan.train_step

    def counting_step(model, *args):
        passes.append(0)

        def count(*_):
            passes[-1] += 1
        hooks = [model.G_XtoY.register_forward_hook(count),
                 model.G_YtoX.register_forward_hook(count)]
        losses = real_step(model, *args)
        for hook in hooks:
            hook.remove()
        return losses
    monkeypatch.setattr(cyclegan, "train_step", counting_step)
    run_main([*TINY, "--lambda-identity", "0", "--max-iters", "3", "--log-every", "1"], capsys)
    assert passes == [4, 4, 4]
    rows = [line.split(",") for line in open("runs/data/losses.csv").read().splitlines()]
    idt_X = rows[0].index("idt_X")
    assert [row[idt_X:idt_X + 2] for row in rows[1:]] == [["0.00000", "0.00000"]] * 3


# --- 5. Data ----------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["official", "udacity"])
def test_loader_reads_mixed_images_in_both_layouts(tmp_path, capsys, monkeypatch, layout):
    """Decoded once into uint8 (no file is opened per step); an epoch has max(|X|, |Y|) places.
    An image smaller than the crops is scaled up, and named."""
    root = make_dataset(tmp_path / "data", layout, n_x=3, n_y=3)
    folder_X = os.path.join(root, "trainA" if layout == "official" else "summer")
    write_image(os.path.join(folder_X, "tiny.png"), size=(1, 1))
    data, test_X, test_Y = cyclegan.load_dataset(tiny_args("--data", root))
    assert (f"note: 1 of 4 images in {folder_X} are smaller than the 32px crops and are scaled up "
            "to 36px (blurred): tiny.png 1x1; replace them, or train with a smaller "
            "--image-size\n") in capsys.readouterr().out
    assert data.images_X.shape == (4, 3, 36, 36) and data.images_X.dtype == torch.uint8
    assert data.images_Y.shape == (3, 3, 36, 36)
    assert test_X.shape == test_Y.shape == (2, 3, 32, 32)
    assert data.epoch_length == 4
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("decoded an image per step"))
    x, y = batch(data, 2, 0, 0, 0)
    assert x.shape == y.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.1


def coded_images(count, first_number, size=36):
    """Images whose pixels say where they come from: channel 0 is the image's number, channel 1
    the row and channel 2 the column of the pixel (uint8, count x 3 x size x size)."""
    images = torch.empty(count, 3, size, size, dtype=torch.uint8)
    images[:, 0] = torch.arange(first_number, first_number + count).view(count, 1, 1)
    images[:, 1] = torch.arange(size).view(size, 1)
    images[:, 2] = torch.arange(size).view(1, size)
    return images


def decode(batch):
    """A batch of crops of coded images -> (number, top, left, mirrored) of each."""
    pixels = cyclegan.to_pixels(batch).int()
    return [(p[0, 0, 0].item(), p[1, 0, 0].item(), p[2, :, [0, -1]].min().item(),
             p[2, 0, 0].item() > p[2, 0, -1].item()) for p in pixels]


def batch(data, batch_size, seed, epoch, iteration):
    settings = argparse.Namespace(batch_size=batch_size, seed=seed)
    return cyclegan.planned_batch(data, settings, epoch, iteration, "cpu")


def epoch_seen(data, epoch):
    """What every place of an epoch at batch 2 shows: a list of (x's code, y's code) per place."""
    seen = []
    for iteration in range(math.ceil(data.epoch_length / 2)):
        real_X, real_Y = batch(data, 2, 0, epoch, iteration)
        seen += list(zip(decode(real_X), decode(real_Y)))
    return seen


def test_an_epoch_shuffles_x_draws_a_random_y_and_crops_and_mirrors_each_image_its_own_way():
    """20 images of X (numbered 0-19) and 15 of Y (100-114): an epoch shows each x once in a
    shuffled order, a y drawn at random for each (repeats allowed, not in step with x), and
    every image at its own crop position and mirroring, about half mirrored; nothing of x's
    draws is reused for y. Any of these dropped, or crossed between the domains, fails here."""
    data = cyclegan.UnpairedImages(coded_images(20, 0), coded_images(15, 100), 32)
    epochs = [epoch_seen(data, epoch) for epoch in (0, 1)]
    for seen in epochs:
        xs = [x for x, _ in seen]
        ys = [y for _, y in seen]
        assert sorted(x[0] for x in xs) == list(range(20))  # each x once ...
        assert [x[0] for x in xs] != list(range(20))  # ... shuffled
        assert all(100 <= y[0] < 115 for y in ys)  # y from Y
        assert len({y[0] for y in ys}) < 15  # drawn with repeats, not a shuffle of Y
        assert [y[0] - 100 for y in ys] != [x[0] % 15 for x in xs]  # not tied to x
        for domain in (xs, ys):
            assert all(0 <= top <= 4 and 0 <= left <= 4 for _, top, left, _ in domain)
            assert len({(top, left) for _, top, left, _ in domain}) > 8  # each its own crop
            assert 5 <= sum(mirrored for *_, mirrored in domain) <= 15  # about half
        # x's draws are not y's: their corners and mirrorings differ place by place
        assert [x[1:3] for x in xs] != [y[1:3] for y in ys]
        assert [x[3] for x in xs] != [y[3] for y in ys]
    assert [x for x, _ in epochs[0]] != [x for x, _ in epochs[1]]  # a new order each epoch


def test_an_epochs_plan_depends_on_the_seed_and_epoch_alone():
    """A resumed run (other draws from torch's global random stream meanwhile)
    sees exactly the batches of an uninterrupted one, from any iteration on; another seed sees
    others. Under torchrun, 2 processes at batch 1 see exactly what 1 process sees at batch 2,
    and the last iteration wraps round so that every process has a full batch."""
    data = cyclegan.UnpairedImages(coded_images(5, 0), coded_images(4, 100), 32)
    alone = [batch(data, 2, 3, 7, iteration) for iteration in range(3)]  # ceil(5 / 2)
    torch.manual_seed(12345)
    torch.rand(10)
    assert tensors_equal(batch(data, 2, 3, 7, 2), alone[2])  # a resume mid-epoch
    assert not tensors_equal(batch(data, 2, 4, 7, 0), alone[0])
    shares = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cyclegan, "process_count", lambda: 2)
        for rank in (0, 1):
            patch.setattr(cyclegan, "process_rank", lambda rank=rank: rank)
            shares.append([batch(data, 1, 3, 7, iteration) for iteration in range(3)])
    for (x_alone, y_alone), (x_first, y_first), (x_second, y_second) in zip(alone, *shares):
        assert torch.equal(x_alone, torch.cat([x_first, x_second]))
        assert torch.equal(y_alone, torch.cat([y_first, y_second]))
    assert torch.equal(shares[1][2][0], shares[0][0][0])  # place 5 is place 0 again


# --- 6. The training loop ---------------------------------------------------------------------

def test_learning_rate_is_constant_then_falls_linearly_to_zero():
    paper = argparse.Namespace(lr=2e-4, epochs=100, decay_epochs=100)
    factors = [cyclegan.learning_rate(epoch, paper) / 2e-4 for epoch in range(200)]
    assert factors[:100] == [1.0] * 100
    steps = [a - b for a, b in zip(factors[99:], factors[100:])]
    assert all(step == pytest.approx(1 / 101) for step in steps)
    assert factors[-1] == pytest.approx(1 / 101)  # the next epoch would be 0
    assert cyclegan.learning_rate(200, paper) == pytest.approx(0)


# --- 7. Did it learn? -------------------------------------------------------------------------

@slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cyclegan_learns_the_demo_translation(run_dir, capsys, precision):
    """`python cyclegan.py --data demo` as it is (bf16: the default on CPUs that have it).
    G(x) must come close to the true winter twin of x, which no unpaired image showed it:
    clearly closer than the average winter image, which is what a generator that ignores its
    input (or a run without the cycle loss) converges to."""
    model = cyclegan.main(["--data", "demo", "--precision", precision])
    printed = capsys.readouterr().out
    assert f"precision {precision}" in printed
    assert "warning:" not in printed  # the check at every sample: these generators learn
    assert sorted(os.listdir("runs/demo/samples")) == ["iter_0000100.png", "iter_0000200.png",
                                                       "iter_0000300.png", "iter_0000400.png",
                                                       "last.png"]
    errors = cyclegan.demo_translation_errors(model, 32, cyclegan.Precision(
        precision, torch.device("cpu")))
    print(precision, errors)
    assert demo_check_passes(errors), errors
    # The run leaves held-out summer scenes to try --translate on, and prints how; their
    # translations come closer to the true winter scenes than the summer inputs are.
    command = printed.split("translate them to winter with:\n")[1].splitlines()[0].strip()
    assert command == "python cyclegan.py --data demo --translate runs/demo/held_out_summer"
    run_main(shlex.split(command)[2:], capsys)
    winter = cyclegan.demo_images(cyclegan.DEMO_TEST_FIRST + 200, 4, 36, "winter").float()
    for number in range(4):
        summer = TF.pil_to_tensor(Image.open(f"runs/demo/held_out_summer/scene_{number}.png"))
        translated = TF.pil_to_tensor(Image.open(f"translated/scene_{number}_XtoY.png"))
        assert translated.shape == summer.shape == (3, 36, 36)
        error = (translated - winter[number]).abs().mean()
        assert error < 0.25 * (summer - winter[number]).abs().mean()
    # Held-out scenes drawn at 4x the learned size (144px), and their true winter twins there:
    # the translation carried back to full size is clearly closer to the truth than the small
    # translation scaled up bicubically, and about as close as the small one is at its size.
    # Measured (fp32, seed 0, 16 scenes): 0.042 at full size, 0.059 bicubic, 0.052 small.
    first = cyclegan.DEMO_TEST_FIRST + 300
    summer = cyclegan.demo_images(first, 16, 4 * 36, "summer")
    winter = cyclegan.to_model_range(cyclegan.demo_images(first, 16, 4 * 36, "winter"))
    errors = full_size_errors(model.G_XtoY, summer, winter)
    print(errors)
    assert errors["full"] < 0.85 * errors["bicubic"] and errors["full"] < 1.2 * errors["small"]


def full_size_errors(generator, photos, truths, size=36):
    """Each photo (uint8) translated at a shorter side of `size` and compared with its true
    translation (in [-1, 1], the photo's size): the mean |error| of the translation carried back
    to full size, of the small translation scaled up bicubically, and of the small translation
    against the truth scaled down as its input was."""
    errors = {"full": 0.0, "bicubic": 0.0, "small": 0.0}
    for photo, truth in zip(photos, truths):
        small_input = cyclegan.to_model_range(cyclegan.scale_down(photo, size))
        with torch.no_grad():
            small = cyclegan.translate_image(generator, small_input[None])[0].float()
        maps = cyclegan.fit_colour_maps(small_input, small)
        full = cyclegan.to_model_range(cyclegan.apply_colour_maps(maps, photo))
        bicubic = torch.nn.functional.interpolate(small[None], size=photo.shape[1:],
                                                  mode="bicubic")[0].clamp(-1, 1)
        small_truth = cyclegan.to_model_range(cyclegan.scale_down(cyclegan.to_pixels(truth), size))
        for name, error in (("full", full - truth), ("bicubic", bicubic - truth),
                            ("small", small - small_truth)):
            errors[name] += error.abs().mean().item() / len(photos)
    return errors


def demo_check_passes(errors):
    """Both directions below DEMO_BAR x the error of the target season's median image, the best
    answer that ignores the input (and what a run without the cycle loss ends at or above)."""
    return (errors["XtoY"] < DEMO_BAR * errors["median_XtoY"]
            and errors["YtoX"] < DEMO_BAR * errors["median_YtoX"])


DEMO_BAR = 0.9


def test_the_demo_check_fails_a_generator_that_ignores_its_input():
    """The bar above is not met by generators that return the median image of their target
    season's training images."""
    winter = cyclegan.to_model_range(cyclegan.demo_images(200, 200, 32, "winter")).median(0).values
    summer = cyclegan.to_model_range(cyclegan.demo_images(0, 200, 32, "summer")).median(0).values
    model = argparse.Namespace(G_XtoY=lambda x: winter.expand_as(x),
                               G_YtoX=lambda y: summer.expand_as(y),
                               parameters=lambda: iter([torch.zeros(1)]))
    precision = cyclegan.Precision("fp32", torch.device("cpu"))
    errors = cyclegan.demo_translation_errors(model, 32, precision)
    print(errors["XtoY"] / errors["median_XtoY"], errors["YtoX"] / errors["median_YtoX"])
    assert not demo_check_passes(errors), errors


def flat_colours(root, count):
    """Each image one flat colour, light in X and dark in Y (4 test images each). Instance norm
    leaves the generators nothing to see in a flat image (the next test), so both must ignore
    their input: the failure that the not-learning check is for."""
    random = torch.Generator().manual_seed(1)
    for folder, images, lightness in (("trainA", count, 128), ("trainB", count, 0),
                                      ("testA", 4, 128), ("testB", 4, 0)):
        os.makedirs(os.path.join(root, folder))
        for number in range(images):
            colour = (torch.rand(3, generator=random) * 100 + lightness + 14).to(torch.uint8)
            image = Image.new("RGB", (36, 36), tuple(colour.tolist()))
            image.save(os.path.join(root, folder, f"{number}.png"))


def test_instance_norm_hides_a_constant_per_channel_and_a_common_gain_not_a_gain_per_channel():
    """The first convolution's instance norm removes each of its channels' mean and scale: a
    constant added to each input channel, and one gain on all three, change nothing the generator
    computes (README.md, "When it does not learn"); a gain of its own for each input channel
    changes how the convolution mixes them, and so the output."""
    torch.manual_seed(0)
    generator = cyclegan.Generator(8, 2)
    image = torch.rand(1, 3, 32, 32) * 1.6 - 0.8
    with torch.no_grad():
        plain = generator(image)
        shifted = generator(image + torch.tensor([0.2, -0.1, 0.15]).view(1, 3, 1, 1))
        scaled = generator(image * 0.6)
        tinted = generator(image * torch.tensor([1.2, 1.0, 0.7]).view(1, 3, 1, 1))
    assert (shifted - plain).abs().max() < 1e-5
    assert (scaled - plain).abs().max() < 1e-4  # up to the norm's epsilon
    assert (tinted - plain).abs().max() > 1e-2


def test_generators_that_ignore_their_input_are_warned_about_and_the_run_goes_on(run_dir, capsys):
    """Flat colours at the flags of a quick trial (32px, small networks, 400 iterations in the
    schedule, a progress line every 100): by half-way the cycle brings the test images back no
    closer than their domain's median image at every line: one warning line that says what it
    measured and where to look, and the run goes on."""
    flat_colours("flat", 40)
    printed = run_main(["--data", "flat", "--image-size", "32", "--ngf", "16", "--ndf", "16",
                        "--n-blocks", "2", "--lr", "1e-3", "--epochs", "5", "--decay-epochs", "5",
                        "--max-iters", "300"], capsys).out
    warnings = [line for line in printed.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, printed
    assert re.fullmatch(
        r"warning: at every progress line from iteration 100 to 200 the cycle brought the test "
        r"images back no closer than \d\.\d\d times the error of their domain's median image "
        r"\(1\.00: what generators ignoring their input reach\); it may still learn, but look at "
        r"the sample grids in runs/flat/samples, and README.md, \"When it does not learn\"",
        warnings[0]), warnings[0]
    assert "done: 300 iterations" in printed


def test_sample_grids_and_loss_curves(run_dir, capsys, monkeypatch):
    """The grids: rows x, G(x), F(G(x)), y, F(y), G(F(y)), each labelled, of test images 0, 3, 6
    and 9 of 12 (sorted by name), at every grid and after a resume. losses.png: three panels
    (discriminators; adversarial terms; cycle and identity), each loss in its own colour, redrawn
    at every grid from the whole of losses.csv."""
    for number in range(10):
        for folder in ("testA", "testB"):
            write_image(f"data/{folder}/t{number}.png")
    shown = []
    real_grid = cyclegan.save_sample_grid

    def recording_grid(model, test_X, test_Y, precision, path):
        shown.append(test_X.clone())
        return real_grid(model, test_X, test_Y, precision, path)
    monkeypatch.setattr(cyclegan, "save_sample_grid", recording_grid)
    run_main([*TINY, "--max-iters", "30", "--log-every", "1", "--sample-every", "10"], capsys)
    assert len(open("runs/data/losses.csv").read().splitlines()) == 31  # header + 30 rows
    picture = TF.pil_to_tensor(Image.open("runs/data/losses.png").convert("RGB"))
    assert picture.shape == (3, 3 * 180, 640)

    def drawn(panel, colour):  # pixels of exactly this curve's colour in this panel
        area = picture[:, panel * 180:(panel + 1) * 180]
        return (area == torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1)).all(0).sum()
    first, second, third, fourth = cyclegan.CURVE_COLOURS
    for panel in (0, 1):  # two losses each: D_X, D_Y; adv_XtoY, adv_YtoX
        assert drawn(panel, first) > 50 and drawn(panel, second) > 50
        assert drawn(panel, third) == 0 and drawn(panel, fourth) == 0
    assert all(drawn(2, colour) > 50 for colour in cyclegan.CURVE_COLOURS)  # cycle and identity
    before = open("runs/data/losses.png", "rb").read()
    run_main(["--data", "data", "--resume", "--max-iters", "40"], capsys)
    assert open("runs/data/losses.png", "rb").read() != before  # redrawn, 10 rows longer
    paths = cyclegan.list_images("data/testA")
    expected = [cyclegan.load_image(paths[i], 36)[:, 2:34, 2:34] for i in (0, 3, 6, 9)]
    expected = cyclegan.to_model_range(torch.stack(expected))
    assert len(shown) == 6 and all(torch.equal(images, expected) for images in shown)
    # 6 rows of 4 test images, 32px and 2px padding, and a 50px strip on the left that labels
    # each row (dark text on white)
    grid = TF.pil_to_tensor(Image.open("runs/data/samples/iter_0000040.png"))
    assert grid.shape == (3, 2 + 6 * 34, 50 + 2 + 4 * 34)
    for row in range(6):
        label = grid[:, 2 + row * 34: (row + 1) * 34, :50]
        assert (label < 100).any() and (label > 200).any(), row


def test_loss_curves_are_drawn_against_the_iteration_on_the_scale_of_the_later_rows(tmp_path):
    """Rows at iterations 1 (one iteration, as a run's first), 100, 110, 200 and 300; D_X is 9 at
    1, 3 at 100, 0.4 at 200, else 0.2. Left out: the one-iteration row. 100 to 300 span the
    panel's box (x 50 to 630), so 200's peak is drawn half-way (x 340; evenly spaced rows would
    put it at 437), and the scale comes from the rows after the first tenth: 0.4 reaches the top
    of the box (y 20), and 3 runs off it."""
    rows = [[iteration, 1, "0.0002", value, *[0.1] * 7, "0.5", "0.1"] for iteration, value in
            ((1, 9.0), (100, 3.0), (110, 0.2), (200, 0.4), (300, 0.2))]
    cyclegan.draw_loss_curves(rows, str(tmp_path / "losses.png"))
    picture = TF.pil_to_tensor(Image.open(tmp_path / "losses.png").convert("RGB"))[:, :180]
    colour = torch.tensor(cyclegan.CURVE_COLOURS[0], dtype=torch.uint8).view(3, 1, 1)
    ys, xs = (picture == colour).all(0).nonzero().T
    assert xs.min() >= 48 and xs.max() <= 632
    peak = xs[(ys <= 22) & (xs > 100)]
    assert len(peak) > 0 and (peak - 340).abs().max() <= 10, peak


def test_losses_csv_holds_each_iteration_once_after_a_kill_and_a_resume(run_dir, capsys,
                                                                        monkeypatch):
    """Rows every 2 iterations, a checkpoint every 4. A run killed after iteration 7 (faked: it
    ends without its closing save) has logged rows 1, 2, 4 and 6 and saved iteration 4; resumed
    to 10, it repeats iterations 5-10 and logs 5 (its first iteration, alone: no ETA from it),
    6, 8 and 10: each iteration once in the file."""
    common = [*TINY, "--log-every", "2", "--checkpoint-every", "4"]
    real_finish = cyclegan.finish_training
    monkeypatch.setattr(cyclegan, "finish_training", lambda *args: None)
    run_main([*common, "--max-iters", "7"], capsys)
    monkeypatch.setattr(cyclegan, "finish_training", real_finish)

    def logged():
        with open("runs/data/losses.csv") as f:
            return [int(line.split(",")[0]) for line in f.read().splitlines()[1:]]
    assert logged() == [1, 2, 4, 6]
    assert torch.load("runs/data/checkpoint.pt")["iteration"] == 4
    printed = run_main(["--data", "data", "--resume", "--max-iters", "10"], capsys).out
    assert logged() == [1, 2, 4, 5, 6, 8, 10]
    assert "it 5/10 | " in printed and "s for this iteration (no ETA yet)" in printed


# --- 8. Using the trained model ---------------------------------------------------------------

def test_translate_scales_photos_to_the_size_the_model_learned(run_dir, capsys):
    """Photos larger than the checkpoint's load size (36px here) are translated at that shorter
    side (keeping their aspect ratio) and come back at their own size and orientation, or stay
    small with --small-output; smaller photos are translated as they are; --translate-size sets
    the size, 'original' at every photo's own."""
    run_main([*TINY, "--max-iters", "1"], capsys)
    write_image("photos/odd.jpg", size=(301, 217))
    write_image("photos/more/a.png", "RGBA", size=(30, 20))
    phone_photo("photos/phone.jpg", size=(400, 300))  # upright 300 wide, 400 high
    translate = ["--data", "data", "--translate", "photos/odd.jpg", "photos/more",
                 "photos/phone.jpg", "--direction", "YtoX"]
    printed = run_main(translate, capsys).out
    assert ("translating with runs/data/checkpoint.pt at a shorter side of 36px at most "
            "(--translate-size sets it)\nphotos/odd.jpg -> translated/odd_YtoX.png (301x217, "
            "translated at 50x36)\n") in printed
    assert "photos/phone.jpg -> translated/phone_YtoX.png (300x400, translated at 36x48)" in printed
    assert "done: translated 3 images YtoX" in printed
    printed = run_main([*translate, "--out", "small", "--small-output"], capsys).out
    assert "photos/phone.jpg -> small/phone_YtoX.png (36x48)" in printed
    assert [Image.open(f"small/{name}_YtoX.png").size for name in ("odd", "a", "phone")] == [
        (50, 36), (30, 20), (36, 48)]  # a: smaller, not enlarged
    # the output is the generator's, not a copy of the input, rounded to the nearest 8-bit value
    model = cyclegan.CycleGAN(4, 4, 1)
    model.load_state_dict(torch.load("runs/data/checkpoint.pt")["model"])
    image = cyclegan.to_model_range(cyclegan.load_image("photos/more/a.png"))[None]
    with torch.no_grad(), cyclegan.Precision("auto", torch.device("cpu")).autocast():
        expected = cyclegan.to_pixels(cyclegan.translate_image(model.G_YtoX, image)[0])
    written = TF.pil_to_tensor(Image.open("translated/a_YtoX.png"))
    assert torch.equal(written[:3], expected) and written[3].min() == 255  # its alpha, opaque
    for size, out, expected in (("original", "full", (300, 400)), ("24", "small24", (24, 32))):
        run_main(["--data", "data", "--translate", "photos/phone.jpg", "--out", out,
                  "--translate-size", size, "--small-output"], capsys)
        assert Image.open(f"{out}/phone_XtoY.png").size == expected
    error = fails_with(["--translate", "photos", "--translate-size", "big"], capsys)
    assert "'big' is neither a number of pixels (8 or more) nor 'original'" in error
    write_image("photos/a.jpg")  # a second "a": a_YtoX.png would be written twice
    error = fails_with(["--data", "data", "--translate", "photos"], capsys)
    assert "two inputs have the same name" in error


def test_a_folder_is_translated_around_the_photos_that_cannot_be(run_dir, capsys, monkeypatch):
    """An unreadable file, one too small for the generator (4 x 4; 5 x 5 is the smallest it
    takes), one too large for the memory (estimated before it runs: at least 600 bytes a pixel,
    0.18 GB at 600 x 500): each gets its own error line and the rest are translated; the run
    ends with the count, exit status 1. A transparent PNG keeps its alpha. A later run never
    writes over an earlier one's files; a full disk stops with one line."""
    run_main([*TINY, "--max-iters", "1"], capsys)
    write_image("photos/good.jpg")
    open("photos/broken.jpg", "w").write("not an image")
    write_image("photos/four.png", size=(4, 4))
    write_image("photos/five.png", size=(5, 5))
    write_image("photos/wide.png", size=(600, 500))
    alpha = (torch.arange(60) * 4).to(torch.uint8).repeat(50, 1)[None]  # clear on the left
    colours = TF.pil_to_tensor(Image.open(write_image("photos/clear.png", size=(60, 50))))
    TF.to_pil_image(torch.cat([colours, alpha])).save("photos/clear.png")
    monkeypatch.setattr(cyclegan, "available_memory", lambda device: 1e8)
    with pytest.raises(SystemExit):
        cyclegan.main(["--data", "data", "--translate", "photos", "--translate-size", "original"])
    errors = capsys.readouterr().err.splitlines()
    assert errors[0].startswith("error: cannot read image photos/broken.jpg: ")
    assert errors[1:] == [
        "error: photos/four.png is 4x4 pixels, too small to translate: the generator needs at "
        "least 5 on each side",
        "error: translating photos/wide.png at 600x500: about 0.18 GB of memory needed, more "
        "than the 0.1 GB available on cpu; drop --translate-size original, to translate it "
        "scaled down",
        "error: 3 of 6 images could not be translated (the lines above); the other 3 are in "
        "translated/"]
    assert sorted(os.listdir("translated")) == ["clear_XtoY.png", "five_XtoY.png",
                                                "good_XtoY.png"]
    clear = TF.pil_to_tensor(Image.open("translated/clear_XtoY.png"))
    assert clear.shape == (4, 50, 60) and torch.equal(clear[3:], alpha)
    first = files_below("translated")
    printed = run_main(["--data", "data", "--translate", "photos/clear.png", "--small-output"],
                       capsys).out
    assert "photos/clear.png -> translated/clear_XtoY2.png (43x36)" in printed
    assert Image.open("translated/clear_XtoY2.png").mode == "RGBA"
    fill_the_disk_at(f"good_XtoY.png.{os.getpid()}", monkeypatch)  # written, then renamed
    error = fails_with(["--data", "data", "--translate", "photos/five.png", "photos/good.jpg"],
                       capsys)
    assert re.fullmatch(rf"error: cannot write translated/good_XtoY.png.{os.getpid()} \(No space "
                        r"left on device, [\d.]+ MB free in translated/\); free some space\n",
                        error), error
    after = files_below("translated")
    assert sorted(after) == ["translated/clear_XtoY.png", "translated/clear_XtoY2.png",
                             "translated/five_XtoY.png", "translated/five_XtoY2.png",
                             "translated/good_XtoY.png"]
    assert all(after[path] == first[path] for path in first)  # nothing overwritten


@slow
def test_a_translation_killed_part_way_leaves_no_file(run_dir, capsys):
    """kill -9 while a photo is translated (say, by the kernel's out-of-memory killer): neither
    an empty nor a partial translation is left."""
    run_main([*TINY, "--max-iters", "1"], capsys)
    write_image("photo.jpg")
    process = stalled_process("translate_image", 120, ["--data", "data", "--translate",
                                                       "photo.jpg"], run_dir)
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert not os.path.exists("translated")  # made only to write a finished translation


class GlobalColourMap(torch.nn.Module):
    """A stand-in generator whose output is a known colour map of its input, the same at every
    pixel: channels mixed, shifted, and bent by a tanh."""
    def forward(self, x):
        mix = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.2], [0.1, 0.2, 0.8]])
        shift = torch.tensor([0.1, -0.05, 0.2]).view(1, 3, 1, 1)
        return torch.tanh(1.3 * (torch.einsum("ij,njhw->nihw", mix, x) + shift))


def test_a_global_colour_map_is_reproduced_at_full_size():
    """The colour maps fitted at 36px and applied to demo scenes drawn at 144px reproduce a
    stand-in generator's global colour map at full size to within one 8-bit level on average
    (measured: 0.0045, a level is 0.0078), a third of the error of the small output scaled up
    bicubically (0.013); and a map that is only affine, exactly up to rounding."""
    photos = cyclegan.demo_images(cyclegan.DEMO_TEST_FIRST + 300, 4, 144, "summer")
    truths = GlobalColourMap()(cyclegan.to_model_range(photos))
    errors = full_size_errors(GlobalColourMap(), photos, truths)
    assert errors["full"] < 2 / 255 and errors["full"] < errors["bicubic"] / 2, errors
    affine = torch.rand(3, 20, 30) * 2 - 1
    photo = cyclegan.to_pixels(affine)
    small = cyclegan.to_model_range(photo)[:, ::2, ::2]
    maps = cyclegan.fit_colour_maps(small, 0.5 * small.flip(0) + 0.1, eps=1e-6)
    expected = cyclegan.to_pixels(0.5 * cyclegan.to_model_range(photo).flip(0) + 0.1)
    assert (cyclegan.apply_colour_maps(maps, photo).int() - expected.int()).abs().max() <= 1
    # in strips of any size (60 pixels: 2 rows of 30; 7, less than a row: 1 row), the same result
    for strip_pixels in (60, 7):
        assert torch.equal(cyclegan.apply_colour_maps(maps, photo, strip_pixels),
                           cyclegan.apply_colour_maps(maps, photo))


def test_every_written_image_rounds_to_the_nearest_value(tmp_path):
    """One conversion for every image written: [-1, 1] -> the nearest of 256 values (a
    truncating conversion would write 0 for 0.9 of a level, and 254 for 254.9)."""
    level = 2 / 255  # one 8-bit step in [-1, 1]
    values = torch.tensor([-1.0, -1 + 0.9 * level, -1 + 1.4 * level, 1 - 0.1 * level, 1.0, 3.0])
    assert cyclegan.to_pixels(values).tolist() == [0, 1, 1, 255, 255, 255]
    cyclegan.save_png(cyclegan.to_pixels(values.view(3, 1, 2)), str(tmp_path / "p.png"))
    assert TF.pil_to_tensor(Image.open(tmp_path / "p.png")).flatten().tolist() == [0, 1, 1, 255,
                                                                                  255, 255]


# ==============================================================================================
# The machinery (sections 9-18 of cyclegan.py), then the download script and the project files.
# ==============================================================================================

# --- 9. Image files and dataset folders -------------------------------------------------------

def phone_photo(path, size=(60, 40)):
    """A JPEG stored 60 wide and 40 high (or `size`), red in its stored top-left corner, with the
    EXIF tag (orientation 6) that tells viewers to turn it 90 degrees clockwise: upright it is
    40 x 60, red in the top-right corner."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 4, size[1] // 3))
    exif = Image.Exif()
    exif[0x0112] = 6
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    image.save(path, exif=exif.tobytes(), quality=95)
    return path


def test_unusual_images_load_as_rgb_and_phone_photos_upright(tmp_path):
    cases = {"grey16.png": ("I;16", 65535, (255, 255, 255)),
             "grey16_half.png": ("I;16", 32896, (128, 128, 128)),
             "cmyk.jpg": ("CMYK", None, None), "palette_alpha.png": ("P", "transparent", None),
             "rgba.png": ("RGBA", None, None), "grey.png": ("L", None, None),
             "tiny.png": ("RGB", None, None)}
    for name, (mode, value, expected) in cases.items():
        size = (7, 5) if name == "tiny.png" else (40, 36)
        image = cyclegan.load_image(write_image(str(tmp_path / name), mode, size, value), 36)
        assert image.shape == (3, 36, 36) and image.dtype == torch.uint8, name
        if expected:
            assert tuple(image[:, 10, 10].tolist()) == expected, name
    upright = cyclegan.load_image(phone_photo(str(tmp_path / "phone.jpg")))
    assert upright.shape == (3, 60, 40)  # height 60, width 40
    # turned clockwise, the stored top-left corner is now the top-right
    assert upright[0, 2, -3] > 200 and upright[2, 2, -3] < 60 and upright[0, 2, 2] < 60


def test_a_missing_or_damaged_dataset_is_named_before_anything_is_written(run_dir, capsys):
    for data, looked_in, hint in [
            ("summer2winter", "datasets/summer2winter_yosemite",
             "get it with: bash download_data.sh summer2winter_yosemite"),
            ("dmeo", "datasets/dmeo", "check the name or path (README.md, \"Your own dataset\")"),
            ("my/photos", "my/photos", "check the name or path (README.md, \"Your own dataset\")")]:
        error = fails_with(["--data", data], capsys)
        assert error == (f"error: no dataset for --data {data}: looked in {looked_in}/ for trainA/ "
                         "trainB/ (testA/ testB/) or summer/ winter/ (test_summer/ test_winter/); "
                         f"{hint}\n")
    for name in ("big", "cut"):  # two damaged files of 5: both named in one decode
        write_image(f"data/trainA/{name}.jpg", size=(200, 200))
        data = open(f"data/trainA/{name}.jpg", "rb").read()
        open(f"data/trainA/{name}.jpg", "wb").write(data[: len(data) // 2])
    error = fails_with(TINY, capsys)
    assert error.startswith("error: 2 of 5 images in data/trainA cannot be read. The first: "
                            "cannot read image data/trainA/big.jpg: ") and error.count("\n") == 1
    assert error.endswith("; delete or replace it. The others: data/trainA/cut.jpg\n"), error
    os.remove("data/trainA/big.jpg")
    os.remove("data/trainA/cut.jpg")
    for name in os.listdir("data/trainB"):
        os.remove(os.path.join("data/trainB", name))
    open("data/trainB/notes.txt", "w").write("not an image")
    error = fails_with(TINY, capsys)
    assert error.startswith("error: no images in data/trainB (looked for .jpg, .jpeg, .png")
    assert error.count("\n") == 1 and not os.path.exists("runs")


def test_a_dataset_too_large_for_the_memory_of_the_machine_or_its_container_is_refused(
        run_dir, capsys, monkeypatch):
    """Fake /proc/meminfo and cgroup files of both layouts: a container's limit minus its usage
    (the page cache that the kernel can drop counted as free) wins when it is lower; a GPU counts
    the blocks PyTorch's allocator holds unused. 50,000 training images (only their names exist)
    at the paper's 286px need 12.3 GB decoded: refused before any is decoded, with both numbers;
    under torchrun each process on the machine holds its own copy."""
    def fake(name, text):  # in the test's folder, the working directory
        (run_dir / name).write_text(text)
        return name
    monkeypatch.setattr(cyclegan, "MEMINFO", fake("meminfo", "MemTotal: 32000000 kB\n"
                                                              "MemAvailable: 8000000 kB\n"))
    monkeypatch.setattr(cyclegan, "CGROUP_MEMORY_FILES", (
        ("v2.max", "v2.current", "v2.stat", "inactive_file"),
        ("v1.limit", "v1.usage", "v1.stat", "total_inactive_file")))
    assert cyclegan.available_memory() == 8_192_000_000  # no cgroup files: the machine's
    fake("v2.max", "2000000000\n")
    fake("v2.current", "1500000000\n")
    fake("v2.stat", "anon 1300000000\nactive_file 100000000\ninactive_file 100000000\n")
    assert cyclegan.available_memory() == 600_000_000
    fake("v2.max", "max\n")  # no limit
    fake("v1.limit", "9223372036854771712\n")  # version 1's "no limit"
    fake("v1.usage", "5000000000\n")
    fake("v1.stat", "cache 300000000\ntotal_inactive_file 200000000\n")
    assert cyclegan.available_memory() == 8_192_000_000
    fake("v1.limit", "1000000000\n")
    fake("v1.usage", "700000000\n")
    assert cyclegan.available_memory() == 500_000_000
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2_000_000_000, 16e9))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 9_000_000_000)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 1_000_000_000)
    assert cyclegan.available_memory(torch.device("cuda")) == 10_000_000_000
    real_list_images = cyclegan.list_images
    monkeypatch.setattr(cyclegan, "available_memory", lambda device: 8e9)
    monkeypatch.setattr(cyclegan, "list_images", lambda folder: real_list_images(folder) if
                        "train" not in folder else [f"{i}.jpg" for i in range(25_000)])
    monkeypatch.setattr(cyclegan, "load_image", lambda *a, **k: pytest.fail("decoded an image"))
    error = fails_with(["--data", "data", "--image-size", "256", "--load-size", "286"], capsys)
    assert error == ("error: the training images (50,000 at 286px) decoded: about 12.3 GB of "
                     "memory needed, more than 50% of the 8 GB available on cpu; use a smaller "
                     "--load-size, or fewer images\n")
    assert not os.path.exists("runs")
    monkeypatch.setattr(cyclegan, "list_images", lambda folder: ["a.jpg"] * 7_500)
    cyclegan.check_memory_for_images(["data/trainA", "data/trainB"], 286)  # 3.7 GB: fits
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(cyclegan.CycleGANError, match=r"in each of 2 processes.*about 7.36 GB"):
        cyclegan.check_memory_for_images(["data/trainA", "data/trainB"], 286)
    monkeypatch.undo()  # the real figure, read from Linux
    assert not os.path.exists("/proc/meminfo") or 1e8 < cyclegan.available_memory() < 1e13


# --- 11. Hardware and precision ---------------------------------------------------------------

def pretend_cuda(monkeypatch, capability):
    """Makes torch.cuda answer as a machine with two GPUs of this capability; records which
    device each capability query asked about."""
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda device=None: asked.append(device) or capability)
    # is_bf16_supported() says True on a T4 (it counts emulation): it must not be trusted
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    return asked


def test_auto_precision_follows_the_hardware(monkeypatch):
    """fp16 and its scaler on a T4 (7.5) or V100 (7.0), bf16 from Ampere (8.0) on, asked of the
    chosen GPU; on a CPU, bf16 where /proc/cpuinfo lists its instructions; fp32 on MPS."""
    for capability, expected in (((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"),
                                 ((9, 0), "bf16")):
        asked = pretend_cuda(monkeypatch, capability)
        precision = cyclegan.Precision("auto", cyclegan.choose_device("cuda:1"))
        assert precision.name == expected and precision.scaler.is_enabled() == (expected == "fp16")
        assert asked and all(torch.device(d) == torch.device("cuda:1") for d in asked)
    assert cyclegan.Precision("fp32", torch.device("cuda:1")).name == "fp32"  # asked for
    assert cyclegan.automatic_precision(torch.device("mps")) == "fp32"

    def fake_cpuinfo(flags):
        def opener(path, *args, **kwargs):
            assert path == "/proc/cpuinfo"
            if flags is None:
                raise FileNotFoundError(path)
            return io.StringIO(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 {flags}\n")
        return opener
    for flags, expected in (("avx512f avx512_bf16", "bf16"), ("amx_tile amx_bf16", "bf16"),
                            ("avx512f avx512_vnni", "fp32"), (None, "fp32")):
        monkeypatch.setattr(cyclegan, "open", fake_cpuinfo(flags), raising=False)
        assert cyclegan.Precision("auto", torch.device("cpu")).name == expected, flags


def test_auto_precision_on_a_cpu_with_bf16_is_timed_once_per_run(run_dir, capsys, monkeypatch):
    """Where the CPU lists bf16 instructions, auto times 3 steps of each precision (a faked
    clock: fp32 1 s, bf16 1.5 s) and keeps the faster; the checkpoint keeps it, so a resume
    times nothing (though bf16 is faster now); a CPU without them takes fp32 untimed."""
    clock = [0.0]
    cost = {"fp32": 1.0, "bf16": 1.5}
    steps = []
    real_step = cyclegan.train_step

    def timed_step(*args):
        clock[0] += cost[args[7].name]
        steps.append(args[7].name)
        return real_step(*args)
    monkeypatch.setattr(cyclegan, "train_step", timed_step)
    monkeypatch.setattr(cyclegan, "time", argparse.Namespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(cyclegan, "automatic_precision", lambda device: "bf16")  # flags listed
    printed = run_main([*TINY[:-2], "--max-iters", "2"], capsys).out
    assert ("precision auto on this CPU: a step took 1.000 s in fp32 and 1.500 s in bf16 (the "
            "best of 2 each): fp32\n") in printed and "precision fp32;" in printed
    assert steps == ["fp32", "bf16"] * 3 + ["fp32"] * 2
    cost["fp32"] = 2.0
    printed = run_main(["--data", "data", "--resume", "--max-iters", "3"], capsys).out
    assert "precision fp32;" in printed and steps[8:] == ["fp32"]
    monkeypatch.setattr(cyclegan, "automatic_precision", lambda device: "fp32")  # no bf16
    run_main([*TINY[:-2], "--max-iters", "1"], capsys)
    assert steps[9:] == ["fp32"]


def test_a_cpu_run_follows_the_free_cores(monkeypatch, capsys):
    """Of 4 cores, those that other work kept busy between two counts (a faked /proc/stat: this
    process's own ticks and a CPU outside its affinity do not count), and a container's quota,
    set the thread count; OMP_NUM_THREADS, or a GPU, leaves it alone."""
    monkeypatch.delenv("OMP_NUM_THREADS")
    threads = [4]
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads[0])
    monkeypatch.setattr(torch, "set_num_threads", lambda count: threads.__setitem__(0, count))
    monkeypatch.setattr(cyclegan, "THREADS_AT_START", 4)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    tick = os.sysconf("SC_CLK_TCK")
    own = [0]  # this process's ticks
    monkeypatch.setattr(os, "times", lambda: (own[0] / tick, 0.0, 0.0, 0.0, 0.0))
    busy = [0] * 5  # each CPU's busy ticks so far, of 100 more at each count
    counts = [0]
    cpu_max = ["max 100000"]

    def opener(path, *args, **kwargs):
        if path == cyclegan.CGROUP_CPU_MAX:
            return io.StringIO(cpu_max[0])
        return io.StringIO("cpu 1 2 3 4 5 6 7 8\n" + "".join(
            f"cpu{n} {b} 0 0 {100 * counts[0] - b} 0 0 0 0\n" for n, b in enumerate(busy)))
    monkeypatch.setattr(cyclegan, "open", opener, raising=False)
    cores = cyclegan.follow_free_cores(torch.device("cpu"))
    for busy_now, own_now, expected in (([100, 100, 0, 0, 100], 100, 3),  # 1 core's other work
                                        ([0, 50, 0, 0, 100], 50, 4),  # all of it ours
                                        ([70, 0, 0, 0, 0], 0, 4),  # under 3/4 of a core
                                        ([100, 100, 100, 10, 0], 0, 1)):  # 3.1 busy
        counts[0] += 1
        busy = [b + now for b, now in zip(busy, busy_now)]
        own[0] += own_now
        cores.follow()
        assert threads[0] == expected
    cpu_max[0] = "150000 100000"  # 1.5 cores: 2 threads
    counts[0] += 1
    cyclegan.follow_free_cores(torch.device("cpu")).follow()
    assert threads[0] == 2
    assert capsys.readouterr().out.splitlines() == [
        f"CPU threads {old} -> {new}: {others} of 4 cores busy with other work ({allowed} "
        "allowed); OMP_NUM_THREADS=N fixes the count" for old, new, others, allowed in
        ((4, 3, "1.0", 4), (3, 4, "0.0", 4), (4, 1, "3.1", 4), (1, 2, "0.0", 2))]
    assert cyclegan.follow_free_cores(torch.device("cuda")) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cyclegan.follow_free_cores(torch.device("cpu")) is None


@slow
def test_compiled_networks_train_as_eager_ones_and_save_plain_names(run_dir, capsys):
    """--compile (torch.compile, on the CPU here): from the same weights, fp32, the first step's
    losses are eager's within 1e-4 and three steps' within 1e-2 (measured: 1.7e-5 and 1.3e-3:
    fused kernels round differently, and the steps carry it on, as another thread count does);
    the checkpoint keeps the plain parameter names, which a resume with --no-compile loads."""
    common = [*TINY, "--max-iters", "3", "--log-every", "1"]
    run_main([*common, "--out", "eager"], capsys)
    printed = run_main([*common, "--out", "compiled", "--compile"], capsys).out
    assert "compiling the networks (torch.compile)" in printed
    eager, compiled = [[[float(value) for value in row[3:11]] for row in
                        list(csv.reader(open(f"{name}/losses.csv")))[1:]]
                       for name in ("eager", "compiled")]
    assert len(eager) == len(compiled) == 3
    differences = [max(abs(a - b) / abs(a) for a, b in zip(row, other))
                   for row, other in zip(eager, compiled)]
    assert differences[0] < 1e-4 and max(differences) < 1e-2, differences
    state = torch.load("compiled/checkpoint.pt")
    assert state["model"].keys() == torch.load("eager/checkpoint.pt")["model"].keys()
    assert state["settings"]["compile"] is True
    printed = run_main(["--out", "compiled", "--resume", "--no-compile", "--max-iters", "4"],
                       capsys).out
    assert "compiling" not in printed and torch.load("compiled/checkpoint.pt")["iteration"] == 4


def test_fp32_never_constructs_an_autocast(run_dir, capsys, monkeypatch):
    """fp32 is plain PyTorch: training and translating in fp32 build no autocast at all."""
    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported autocast device_type")
    monkeypatch.setattr(torch, "autocast", refuse)
    run_main([*TINY, "--max-iters", "2", "--sample-every", "1",
              "--precision", "fp32"], capsys)
    write_image("photo.jpg")
    printed = run_main(["--data", "data", "--translate", "photo.jpg", "--precision", "fp32"],
                       capsys).out
    assert "translated 1 image XtoY" in printed
    with pytest.raises(RuntimeError):  # and the patch did bite where autocast is used
        cyclegan.Precision("bf16", torch.device("cpu")).autocast()


# --- 12. Several GPUs or machines: torchrun --------------------------------------------------
# Two processes on the CPU (gloo), started by torchrun as a user would, with tiny networks.

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def torchrun(options, args, cwd, script=None, wait=True):
    """torchrun OPTIONS cyclegan.py ARGS (or another script), one thread per process."""
    command = [*TORCHRUN, *options, script or SCRIPT, *args]
    # On the CPU (gloo) even where there is a GPU: the runs that the tests compare
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=environment, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=300)


TWO_PROCESSES = ["--standalone", "--nproc_per_node=2"]


RECORDING_DRIVER = """
import os, sys, torch
sys.path.insert(0, {here!r})
import cyclegan
records = []
trainings = []
real_init = cyclegan.Training.__init__
def init(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    trainings.append(self)
cyclegan.Training.__init__ = init
real_train_step = cyclegan.train_step
def recording_step(networks, real_X, real_Y, opt_G, opt_D, *rest):
    record = {{"weights": {{k: v.clone() for k, v in trainings[0].model.state_dict().items()}},
              "real_X": real_X.clone(), "real_Y": real_Y.clone()}}
    for name, optimizer in (("G", opt_G), ("D", opt_D)):
        def step(optimizer=optimizer, name=name, real_step=optimizer.step):
            record["grads_" + name] = [p.grad.clone() for p in optimizer.param_groups[0]["params"]]
            return real_step()
        optimizer.step = step
    losses = real_train_step(networks, real_X, real_Y, opt_G, opt_D, *rest)
    del opt_G.step, opt_D.step
    records.append(record)
    return losses
cyclegan.train_step = recording_step
cyclegan.main(sys.argv[1:])
torch.save(records, "records_" + os.environ["RANK"] + ".pt")
"""


@slow
def test_two_processes_apply_the_full_batch_gradients_at_every_iteration(run_dir):
    """2 processes at batch 1 (--pool-size 0) against 1 process at batch 2 on the same plan: at
    each of 6 iterations the averaged gradients that each process applied equal the gradients
    of the whole batch of 2, computed in one process from the same weights, also after the first
    process alone drew a sample grid (iteration 3). One process writes: one run folder, one CSV
    header, each progress line once."""
    (run_dir / "driver.py").write_text(RECORDING_DRIVER.format(here=HERE))
    result = torchrun(TWO_PROCESSES, [*TINY, "--precision", "fp32", "--pool-size", "0",
                                      "--max-iters", "6", "--log-every", "1", "--sample-every",
                                      "3"], run_dir, script=str(run_dir / "driver.py"))
    assert result.returncode == 0, result.stderr[-3000:]
    records = [torch.load(run_dir / f"records_{rank}.pt") for rank in (0, 1)]
    assert len(records[0]) == len(records[1]) == 6
    args = tiny_args()  # the loss weights are the defaults
    precision = cyclegan.Precision("fp32", torch.device("cpu"))
    for iteration, (first, second) in enumerate(zip(*records)):
        assert tensors_equal(first["weights"], second["weights"])  # the same networks
        model = cyclegan.CycleGAN(4, 4, 1)
        model.load_state_dict(first["weights"])
        opt_G = StandInOptimizer([*model.G_XtoY.parameters(), *model.G_YtoX.parameters()])
        opt_D = StandInOptimizer([*model.D_X.parameters(), *model.D_Y.parameters()])
        real_X = torch.cat([first["real_X"], second["real_X"]])  # the whole batch of 2
        real_Y = torch.cat([first["real_Y"], second["real_Y"]])
        cyclegan.train_step(model, real_X, real_Y, opt_G, opt_D, cyclegan.ImagePool(0),
                            cyclegan.ImagePool(0), precision, args)
        for name, optimizer in (("G", opt_G), ("D", opt_D)):
            full = torch.cat([g.flatten() for g in optimizer.applied])
            averaged = torch.cat([g.flatten() for g in first["grads_" + name]])
            assert tensors_equal(first["grads_" + name], second["grads_" + name])
            # On this data at most 1.9e-6 apart. Other data (before the images were seeded by
            # name alone) was once 2.8e-3 and once 1.04e-2 apart, where instance norm divides by
            # the spread of an almost constant channel. A gradient not averaged (this process's
            # own) or summed instead of averaged is ~100% off.
            difference = ((averaged - full).norm() / full.norm()).item()
            assert difference < 1e-2, (iteration, name, difference)
    assert os.listdir(run_dir / "runs") == ["data"]
    rows = (run_dir / "runs/data/losses.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,") and len(rows) == 7  # one header, one row a line
    for iteration in range(1, 7):
        assert result.stdout.count(f" it {iteration}/6 |") == 1
    assert "2 processes (torchrun), each on its own device, 2 images per iteration" in result.stdout
    assert "4 in Y, 2 iterations per epoch" in result.stdout  # 4 places shared by 2 processes
    assert result.stdout.count("translate photos with this model:") == 1


@slow
def test_ctrl_c_under_torchrun_stops_both_and_the_printed_command_resumes_exactly(run_dir,
                                                                                  capsys):
    """torchrun passes Ctrl-C (SIGINT) on to each process; both stop after the same iteration,
    one checkpoint holds both processes' states, and the printed torchrun command resumes to
    the same weights, bit for bit, as a run that was never stopped, which ran on two machines
    (two torchrun agents meeting on 127.0.0.1, one process each, as README.md starts them).
    Resumed in one process, the pools and random streams start afresh, and it says so. An error
    is one numbered line from each process that prints it before torchrun stops the rest."""
    run = [*TINY, "--max-iters", "120", "--log-every", "1", "--pool-size", "3"]
    with socket.socket() as probe:  # a free port for the meeting point
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    agents = [torchrun(["--nnodes=2", "--nproc_per_node=1", f"--node_rank={rank}",
                        f"--rdzv-endpoint=127.0.0.1:{port}"],
                       [*run, "--out", "two_machines"], run_dir, wait=False)
              for rank in (0, 1)]
    outputs = [agent.communicate(timeout=300) for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], [err[-2000:] for _, err in outputs]
    process = torchrun(TWO_PROCESSES, run, run_dir, wait=False)
    for line in process.stdout:
        if " it 3/120 " in line:
            process.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
            break
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0  # torchrun reports its workers' exit status 130
    stopped_at = int(output.split("interrupted at iteration ")[1].split(";")[0])
    assert stopped_at % 10 == 0 and 10 <= stopped_at < 120  # agreed at a multiple of 10
    state = torch.load(str(run_dir / "runs/data/checkpoint.pt"))
    assert state["iteration"] == stopped_at and len(state["processes"]) == 2
    command = output.split("resume with: ")[1].splitlines()[0].strip()
    assert command == (f"torchrun --standalone --nproc_per_node=2 {shlex.quote(SCRIPT)} --resume "
                       "--out runs/data --max-iters 120")  # runnable from any folder
    words = shlex.split(command)
    resumed = torchrun(words[1:3], words[4:], run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed at iteration {stopped_at}" in resumed.stdout
    finished = torch.load(str(run_dir / "runs/data/checkpoint.pt"))
    expected = torch.load(str(run_dir / "two_machines/checkpoint.pt"))
    assert finished["iteration"] == 120
    for key in ("model", "optimizer_G", "optimizer_D", "processes"):
        assert tensors_equal(finished[key], expected[key]), key
    # alone it goes on from the same epoch: 120 iterations of 2 images are 240 of 1
    printed = run_main(["--resume", "--out", "runs/data", "--max-iters", "242"], capsys).out
    assert ("the checkpoint was saved by 2 processes and this run has 1: their iteration 120 is "
            "iteration 240 here (the same epoch and place), the history pools start empty, and "
            "the random streams are dealt afresh\n") in printed
    assert "\nresumed at iteration 240 (epoch 61)" in printed
    state = torch.load("runs/data/checkpoint.pt")
    assert len(state["processes"]) == 1 and len(state["processes"][0]["pool_X"]) == 2
    # a bad flag fails in both processes: each prints its own error line, numbered, unless
    # torchrun has stopped it first (it stops the others once one fails)
    result = torchrun(TWO_PROCESSES, ["--data", "demo", "--image_size", "64"], run_dir)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and 1 <= len(errors) <= 2 and set(errors) <= {
        f"error: (process {number}) unrecognized arguments: --image_size 64; see torchrun "
        f"--standalone --nproc_per_node=2 {shlex.quote(SCRIPT)} --help" for number in (0, 1)}, (
        result.stderr)
    assert 'File "' + SCRIPT not in result.stderr  # no traceback


# --- 13. Checkpoints, exact resume, progress --------------------------------------------------

def test_progress_lines_add_up(tmp_path, capsys, monkeypatch):
    """With a clock we control: iterations of 0.1 s, and 1 s of sample grid after every 5th. No
    ETA from the first iteration; then the ETA is the remaining iterations times the wall time
    per iteration since the last line (grids included), and the closing line's numbers multiply
    out."""
    clock = [100.0]
    monkeypatch.setattr(cyclegan, "time", argparse.Namespace(perf_counter=lambda: clock[0]))
    log = bare_log(tmp_path, "cpu")
    training = argparse.Namespace(iteration=0, opt_G=argparse.Namespace(param_groups=[{"lr": 1}]),
                                  precision=cyclegan.Precision("fp32", torch.device("cpu")),
                                  model=argparse.Namespace(G_XtoY=torch.neg, G_YtoX=torch.neg))
    lines = []
    for iteration in range(1, 21):
        clock[0] += 0.1
        log.add({name: torch.tensor(1.0) for name in cyclegan.LOSS_NAMES})
        training.iteration = iteration
        if iteration in (1, 10, 20):
            log.write(training, 0, 100)
            lines.append(capsys.readouterr().out.strip())
        if iteration % 5 == 0:
            clock[0] += 1.0  # a sample grid
    # The cycle gives the test images back unchanged: ratio 0 against the median image's error
    assert lines[0].endswith("| cycle_ratio 0.00 | 0.100 s for this iteration (no ETA yet)")
    # iterations 2-10 took 9 x 0.1 s + 1 s of grid: 0.211 s each; 90 to go
    assert lines[1].endswith("| 0.211 s/it, ETA 0:00:19")
    # iterations 11-20: 10 x 0.1 s + 2 s of grids (after 10 and 15) = 0.3 s each; 80 to go
    assert lines[2].endswith("| 0.300 s/it, ETA 0:00:24")
    assert log.summary() == "done: 20 iterations in 5.0 s (0.250 s per iteration)"
    assert log.summary(finished=False).startswith("stopped: 20 iterations in 5.0 s")
    assert bare_log(tmp_path, "cpu").summary() == "done: no iterations to run"
    # On CUDA it adds the run's own peak GPU memory on its own device (a notebook may run several
    # main() calls in one process, on several GPUs).
    peaks = {torch.device("cuda:0"): 7e9, torch.device("cuda:1"): 5e9}  # earlier runs' peaks
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats",
                        lambda device: peaks.__setitem__(torch.device(device), 0.0))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated",
                        lambda device: peaks[torch.device(device)])
    log = bare_log(tmp_path, "cuda:1")
    peaks[torch.device("cuda:1")] = 3e9  # what this run allocates
    log.add({name: torch.tensor(1.0) for name in cyclegan.LOSS_NAMES})
    assert log.summary().endswith(" s per iteration), peak GPU memory 3.00 GB")


def test_resume_continues_exactly(run_dir, capsys):
    """K iterations straight == stop mid-epoch, or at an epoch's end, and resume to K (3 images
    of X and 4 of Y: 4 iterations per epoch)."""
    common = [*TINY, "--epochs", "2", "--decay-epochs", "1", "--pool-size", "2",
              "--checkpoint-every", "3"]
    run_main([*common, "--out", "straight", "--max-iters", "7"], capsys)
    straight = torch.load("straight/checkpoint.pt")
    assert straight["iteration"] == 7  # epochs of 4: stopped inside the second
    for stop in (2, 4):
        out = f"stopped_at_{stop}"
        run_main([*common, "--out", out, "--max-iters", str(stop)], capsys)
        assert torch.load(f"{out}/checkpoint.pt")["iteration"] == stop
        printed = run_main(["--out", out, "--max-iters", "7", "--resume"], capsys).out
        assert f"resumed at iteration {stop}" in printed
        resumed = torch.load(f"{out}/checkpoint.pt")
        for key in ("model", "optimizer_G", "optimizer_D", "scaler", "processes", "iteration"):
            assert tensors_equal(straight[key], resumed[key]), (stop, key)
    printed = run_main(["--out", "straight", "--max-iters", "7", "--resume"], capsys).out
    assert "stopping at iteration 7: nothing to train" in printed
    assert tensors_equal(torch.load("straight/checkpoint.pt")["model"],
                         straight["model"])


@pytest.mark.parametrize("run_dir", [{"n_x": 2, "n_y": 2}], indirect=True)
def test_resume_takes_its_settings_from_the_checkpoint_and_can_extend_the_schedule(run_dir,
                                                                                   capsys):
    """A finished run of 1 + 1 epochs of 2 iterations at 24px, resumed with --epochs 3: its
    settings come from the checkpoint, and two more epochs run at the full rate, then the
    decaying one again, with the old and new schedule printed. A typed flag that agrees is fine;
    one that contradicts what the run learns is refused. How it runs may change: an fp32 run
    continues in fp16 (its saved scaler state is empty), then again with the scaler restored."""
    run_main([*TINY, "--image-size", "24", "--epochs", "1", "--decay-epochs", "1", "--lr",
              "0.001", "--log-every", "1"], capsys)
    assert torch.load("runs/data/checkpoint.pt")["iteration"] == 4
    printed = run_main(["--data", "data", "--resume", "--epochs", "3", "--ngf", "4"], capsys).out
    assert "typed: --data --resume --epochs --ngf" in printed
    assert "load-size 27" in printed and "image-size 24" in printed
    assert "schedule changed from 1 + 1 to 3 + 1 epochs (constant + decaying)" in printed
    assert "resumed at iteration 4 (epoch 3), learning rate 0.001" in printed
    state = torch.load("runs/data/checkpoint.pt")
    assert state["iteration"] == 8 and state["settings"]["epochs"] == 3
    rates = [float(row.split(",")[2]) for row in open("runs/data/losses.csv").read().split()[1:]]
    assert rates == [0.001, 0.001, 0.0005, 0.0005, 0.001, 0.001, 0.0005, 0.0005]
    for flags, message in ((["--ngf", "8"], "--ngf 8 does not match the checkpoint's 4"),
                           (["--lr", "0.01"], "--lr 0.01 does not match the checkpoint's 0.001")):
        error = fails_with(["--data", "data", "--resume", "--epochs", "4", *flags], capsys)
        assert error.count("\n") == 1 and message in error
    for limit in (["--max-iters", "9"], []):  # a limit binds only the run that typed it
        run_main(["--data", "data", "--resume", "--epochs", "4", *limit, "--precision", "fp16"],
                 capsys)
    state = torch.load("runs/data/checkpoint.pt")
    assert state["iteration"] == 10 and state["scaler"]["scale"] > 0


def poison_weights(losses, model):
    """A step that leaves a NaN in the weights behind finite losses."""
    with torch.no_grad():
        model.G_XtoY.model[1].weight[0, 0, 0, 0] = float("nan")
    return losses


def poison_losses(losses, model):
    return {name: loss * float("nan") for name, loss in losses.items()}


@pytest.mark.parametrize("poison", [poison_weights, poison_losses])
def test_nonfinite_values_stop_the_run_and_keep_the_last_good_checkpoint(run_dir, capsys,
                                                                        monkeypatch, poison):
    """At iteration 4 (the second step of a resumed run, just before a save), NaN weights behind
    finite losses, or NaN losses: the run stops with one line before it saves, and the
    checkpoint of iteration 2 stays."""
    run_main([*TINY, "--max-iters", "2", "--checkpoint-every", "2", "--log-every", "2"], capsys)
    good = torch.load("runs/data/checkpoint.pt")
    real_train_step = cyclegan.train_step
    calls = []

    def poisoning_step(model, *args):
        losses = real_train_step(model, *args)
        calls.append(1)
        return poison(losses, model) if len(calls) == 2 else losses
    monkeypatch.setattr(cyclegan, "train_step", poisoning_step)
    error = fails_with(["--data", "data", "--max-iters", "6", "--resume"], capsys)
    assert error == ("error: the losses or weights became non-finite (NaN or inf) before "
                     "iteration 4; runs/data/checkpoint.pt keeps the last good state. Try a "
                     "lower --lr or --precision fp32\n")
    kept = torch.load("runs/data/checkpoint.pt")
    assert kept["iteration"] == 2 and tensors_equal(kept["model"], good["model"])


@slow
def test_checkpoint_survives_sigkill_while_saving(run_dir, capsys):
    """kill -9 while a checkpoint is written (its temporary file open, torch.save under way): the
    previous one is whole, and the resume removes the stale temporary file (and those of a grid
    or losses.csv, left the same way)."""
    run_main([*TINY, "--max-iters", "1"], capsys)
    before = torch.load("runs/data/checkpoint.pt")
    process = stalled_process("torch.save", 120, ["--data", "data", "--max-iters", "3",
                                                  "--resume"], run_dir)
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert os.path.exists("runs/data/checkpoint.pt.tmp")  # the one being written
    after = torch.load("runs/data/checkpoint.pt")  # the previous one, whole
    assert tensors_equal(before["model"], after["model"]) and after["iteration"] == 1
    os.makedirs("runs/data/notes")  # a file of the user's in the folder: not ours to remove
    for stale in ("runs/data/losses.csv.tmp", "runs/data/samples/iter_0000002.png.tmp",
                  "runs/data/notes/report.tmp"):
        open(stale, "wb").write(b"half")
    run_main(["--data", "data", "--max-iters", "2", "--resume"], capsys)
    assert torch.load("runs/data/checkpoint.pt")["iteration"] == 2
    assert [path for path in files_below("runs") if path.endswith(".tmp")] == [
        "runs/data/notes/report.tmp"]


def fill_the_disk_at(name, monkeypatch):
    """From now on a file called `name` (or its temporary file), opened by cyclegan, fails with
    ENOSPC as it is forced onto the disk, its bytes written: as on a full disk."""
    doomed = set()  # descriptors of such files

    def opener(path, mode="r", *args, **kwargs):
        file = open(path, mode, *args, **kwargs)
        if mode[0] in "wa" and os.path.basename(path) in (name, name + ".tmp"):
            doomed.add(file.fileno())
        return file
    real_fsync = os.fsync

    def fsync(descriptor):
        if descriptor in doomed:
            doomed.discard(descriptor)  # the file is closed next: its number may be reused
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(descriptor)
    monkeypatch.setattr(cyclegan, "open", opener, raising=False)
    monkeypatch.setattr(os, "fsync", fsync)


def files_below(folder):
    """{path: bytes} of every file below `folder`."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                found[os.path.join(root, name)] = f.read()
    return found


@pytest.mark.parametrize("name, folder", [("checkpoint.pt", "runs/data"),
                                          ("iter_0000004.png", "runs/data/samples"),
                                          ("losses.csv", "runs/data")])
def test_a_write_that_fails_leaves_no_partial_file_and_says_how_to_resume(run_dir, capsys, name,
                                                                          folder):
    """A full disk while writing the checkpoint, a sample grid or losses.csv: one line that names
    the file, the space left and the command that resumes; the files on disk are as they were
    (the checkpoint of iteration 2 whole, no partial or temporary file); the command resumes."""
    run_main([*TINY, "--max-iters", "2", "--log-every", "1"], capsys)
    before = files_below("runs")
    with pytest.MonkeyPatch.context() as patch:
        fill_the_disk_at(name, patch)
        error = fails_with(["--data", "data", "--resume", "--max-iters", "4", "--sample-every",
                            "4", "--checkpoint-every", "4"], capsys)
    assert re.fullmatch(
        rf"error: cannot write {folder}/{name} \(No space left on device, [\d.]+ MB free in "
        rf"{folder}/\); free some space; runs/data/checkpoint.pt keeps the last saved state; "
        r"resume with: python cyclegan.py --resume --out runs/data --max-iters 4\n", error), error
    after = files_below("runs")
    assert after["runs/data/checkpoint.pt"] == before["runs/data/checkpoint.pt"]
    assert not [path for path in after if path.endswith(".tmp")]
    assert after.get(f"{folder}/{name}") == before.get(f"{folder}/{name}")  # old, or none
    run_main(["--resume", "--out", "runs/data", "--max-iters", "4"], capsys)
    assert torch.load("runs/data/checkpoint.pt")["iteration"] == 4


def test_a_folder_that_cannot_be_made_ends_in_one_line(run_dir, capsys, monkeypatch):
    """--out naming a file, or a folder below a file, to train or to translate into; a folder
    with no image to translate; a working folder where runs/ cannot be made (read-only, faked):
    one line each, exit 1."""
    write_image("photo.png")
    pretrained_file("g.pth")
    open("a_file", "w").close()
    for out in ("a_file", "a_file/run"):
        error = fails_with([*TINY, "--max-iters", "1", "--out", out], capsys)
        assert error.startswith(f"error: cannot make the run folder in {out} (") and error.endswith(
            "); choose another --out, or make the folder writable\n"), error
        error = fails_with(["--translate", "photo.png", "--checkpoint", "g.pth", "--out", out],
                           capsys)
        assert error.startswith(f"error: cannot write {out}/photo_g.png.") and error.endswith(
            "); make the folder writable\n") and error.count("\n") == 1, error
    os.makedirs("empty")  # and a folder with nothing to translate
    error = fails_with(["--translate", "empty", "--checkpoint", "g.pth"], capsys)
    assert error.startswith("error: --translate: no images in empty (looked for .jpg, .jpeg")

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
    monkeypatch.setattr(os, "makedirs", read_only)
    assert fails_with([*TINY, "--max-iters", "1"], capsys) == (
        "error: cannot make the run folder in runs (Read-only file system); choose another "
        "--out, or make the folder writable\n")


def test_a_write_that_fails_in_any_way_leaves_the_file_as_it_was(tmp_path):
    """write_file ended by a full disk or a folder without permission (each told what to do
    about it), or by a second Ctrl-C (passed on): the old contents stay, and no temporary file is
    left."""
    path = str(tmp_path / "losses.csv")
    open(path, "wb").write(b"old\n")

    def failing_with(error):
        def write(f):
            f.write(b"new, half")
            raise error
        return write
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(cyclegan.WriteFailed, match=r"MB free in .*/\); free some space$"):
        cyclegan.write_file(path, failing_with(full))
    denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    with pytest.raises(cyclegan.WriteFailed, match=r"\); make the folder writable$"):
        cyclegan.write_file(path, failing_with(denied))
    with pytest.raises(KeyboardInterrupt):
        cyclegan.write_file(path, failing_with(KeyboardInterrupt()))
    assert os.listdir(tmp_path) == ["losses.csv"] and open(path, "rb").read() == b"old\n"
    cyclegan.write_file(path, lambda f: f.write(b"new\n"))
    assert open(path, "rb").read() == b"new\n"


@slow
def test_a_real_full_disk_ends_in_one_line_and_keeps_the_last_checkpoint(run_dir):
    """A 1 MB filesystem (tmpfs, mounted in a private mount namespace: root on Linux) has room
    for one tiny checkpoint (~0.6 MB) and not two: the save at iteration 4 fails."""
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("unshare"):
        assert os.environ.get("CI") != "true" or sys.platform != "linux", "CI runs it as root"
        pytest.skip("needs root on Linux, to mount a small tmpfs under unshare -m")
    train = [sys.executable, SCRIPT, *TINY,
             "--max-iters", "6", "--checkpoint-every", "2", "--out", "disk/run"]
    script = (f"mkdir disk && mount -t tmpfs -o size=1m tmpfs disk && {shlex.join(train)}; "
              "echo exit $?; cp -r disk/run left")  # the tmpfs goes with the namespace
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=run_dir,
                            capture_output=True, text=True, timeout=300)
    assert "exit 1\n" in result.stdout, result.stderr
    assert re.fullmatch(
        r"error: cannot write disk/run/checkpoint.pt \(No space left on device, 0\.\d MB free "
        r"in disk/run/\); free some space; disk/run/checkpoint.pt keeps the last saved state; "
        r"resume with: python \S+/cyclegan.py --resume --out disk/run --max-iters 6\n",
        result.stderr)
    assert sorted(os.listdir("left")) == ["checkpoint.pt", "losses.csv"]  # no grid before 6
    assert torch.load("left/checkpoint.pt")["iteration"] == 2  # whole


def test_out_of_memory_half_way_through_an_iteration_saves_nothing(run_dir, capsys,
                                                                  monkeypatch):
    """Out of memory in the discriminators' step, after the generators' step has changed them:
    one line with what ran and what to lower; the checkpoint of iteration 2 is not replaced."""
    run_main([*TINY, "--max-iters", "2"], capsys)
    before = torch.load("runs/data/checkpoint.pt")

    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(cyclegan, "discriminator_step", out_of_memory)
    error = fails_with(["--data", "data", "--resume", "--max-iters", "4"], capsys)
    assert re.fullmatch(
        r"error: out of memory on cpu with 32px crops, batch 1, 1 residual "
        r"blocks, 4 filters; a run keeps its sizes when resumed, so start a new one with a "
        r"smaller --batch-size, --image-size or --n-blocks\n", error), error
    after = torch.load("runs/data/checkpoint.pt")
    assert after["iteration"] == 2 and tensors_equal(after["model"], before["model"])


# --- 14. Generator files: ours and the authors' -----------------------------------------------

def pretrained_file(path, ngf=8, n_blocks=3, legacy=True, running_stats=True, seed=1):
    """A generator state_dict as the authors publish them: official keys, saved by old PyTorch
    (the non-zip format) with instance-norm running statistics the network never uses."""
    torch.manual_seed(seed)
    generator = cyclegan.Generator(ngf, n_blocks)
    state = dict(generator.state_dict())
    if running_stats:
        for index, channels in ((2, ngf), (5, 2 * ngf), (8, 4 * ngf)):
            state[f"model.{index}.running_mean"] = torch.zeros(channels)
            state[f"model.{index}.running_var"] = torch.ones(channels)
            state[f"model.{index}.num_batches_tracked"] = torch.tensor(0)
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return generator


def test_translate_with_an_official_generator_file(run_dir, capsys):
    """The authors' files know no load size: photos are translated at a shorter side of 256px,
    the size of their test script (which resizes to 256 x 256; we keep the aspect ratio)."""
    generator = pretrained_file("summer2winter_yosemite.pth")
    phone_photo("photos/phone.jpg", size=(600, 400))
    translate = ["--translate", "photos/phone.jpg", "--checkpoint", "summer2winter_yosemite.pth",
                 "--precision", "fp32"]
    printed = run_main([*translate, "--small-output"], capsys).out
    assert "at a shorter side of 256px at most" in printed
    assert "translated/phone_summer2winter_yosemite.png (256x384)" in printed
    written = TF.pil_to_tensor(Image.open("translated/phone_summer2winter_yosemite.png"))
    assert written.shape == (3, 384, 256)  # upright, as photo viewers show it
    photo = cyclegan.load_image("photos/phone.jpg")
    image = cyclegan.to_model_range(cyclegan.scale_down(photo, 256))
    with torch.no_grad():
        expected = cyclegan.translate_image(generator.eval(), image[None])[0]
    assert torch.equal(written, cyclegan.to_pixels(expected))
    printed = run_main([*translate, "--out", "full"], capsys).out  # at the photo's own size
    assert "full/phone_summer2winter_yosemite.png (400x600, translated at 256x384)" in printed
    written = TF.pil_to_tensor(Image.open("full/phone_summer2winter_yosemite.png"))
    maps = cyclegan.fit_colour_maps(image, expected)
    assert torch.equal(written, cyclegan.apply_colour_maps(maps, photo))
    error = fails_with(["--translate", "photos", "--checkpoint", "summer2winter_yosemite.pth",
                        "--direction", "YtoX"], capsys)
    assert "--direction does not apply" in error and error.count("\n") == 1
    # and our generator saved alone is a file of the same format
    torch.save(cyclegan.CycleGAN(4, 4, 1).G_XtoY.state_dict(), "mine.pth")
    run_main(["--translate", "photos", "--checkpoint", "mine.pth"], capsys)
    assert Image.open("translated/phone_mine.png").size == (400, 600)


def test_bad_checkpoints_and_generator_files_give_one_line_errors(run_dir, capsys):
    error = fails_with(["--data", "data", "--resume"], capsys)
    assert error.count("\n") == 1 and "no run of --data data in runs/" in error
    assert "train one with: python cyclegan.py --data data" in error and "--checkpoint" not in error
    write_image("photo.png")  # translating with no run says how else to name a model
    error = fails_with(["--data", "other", "--translate", "photo.png"], capsys)
    assert ("name the dataset it trained on with --data NAME or FOLDER, a model file with "
            "--checkpoint FILE, or train one with: python cyclegan.py --data other") in error
    torch.save(cyclegan.Discriminator(8).state_dict(), "discriminator.pth")
    torch.save({"weights": torch.zeros(3)}, "other.pth")
    open("text.pth", "w").write("<html>404 Not Found</html>")
    mixed = cyclegan.Generator(64, 2).state_dict()
    narrow = cyclegan.Generator(32, 2).state_dict()
    mixed.update({k: v for k, v in narrow.items() if "conv_block" in k})
    torch.save(mixed, "mixed.pth")
    pretrained_file("truncated.pth")
    data = open("truncated.pth", "rb").read()
    open("truncated.pth", "wb").write(data[: len(data) // 2])
    torch.save(torch.zeros(3), "tensor.pth")
    state = cyclegan.CycleGAN(4, 4, 1).state_dict()  # written before the official names
    old = {k.replace(".conv_block.", ".block."): v for k, v in state.items()}
    torch.save({"settings": {}, "model": old}, "old.pt")
    expected = {"discriminator.pth": "holds no generator (no model.1.weight); expected a "
                                     "cyclegan.py checkpoint, or a generator state_dict in the "
                                     "official naming\n",
                "other.pth": "other.pth holds no generator (no model.1.weight)",
                "old.pt": "holds no generator that fits (ngf 4, 0 blocks: Missing key(s)",
                "text.pth": "cannot read model file text.pth: not a PyTorch file, one cut "
                            "short, or one holding more than tensors; download or copy it again",
                "mixed.pth": "holds no generator that fits (ngf 64, 2 blocks: size mismatch "
                             "for model.10.conv_block.1.weight",
                "truncated.pth": "cannot read model file truncated.pth",
                "tensor.pth": "holds a Tensor, not a model file",
                "nowhere.pt": "no model file at nowhere.pt"}
    for name, message in expected.items():
        error = fails_with(["--translate", "photo.png", "--checkpoint", name], capsys)
        assert message in error and error.count("\n") == 1, (name, error)
    assert not os.path.exists("translated/photo_discriminator.png")
    error = fails_with(["--resume", "--out", "."], capsys)
    assert "no checkpoint at ./checkpoint.pt" in error
    os.replace("truncated.pth", "checkpoint.pt")
    error = fails_with(["--resume", "--out", "."], capsys)
    assert error.startswith("error: cannot read checkpoint ./checkpoint.pt: ")
    pretrained_file("checkpoint.pt")
    error = fails_with(["--resume", "--out", "."], capsys)
    assert "not a cyclegan.py training checkpoint" in error


# --- 15. Run folders and settings -------------------------------------------------------------

def test_new_runs_take_free_folders_and_resume_takes_the_newest(run_dir, capsys, monkeypatch):
    """Each new run claims its folder as it chooses the name (runs/data, runs/data2, ..., also
    when the second command decides before the first has written anything); --out on a run is
    refused; --resume and --translate take the newest checkpoint (by time, not by number). A
    folder held by a run (still empty: it decodes its data) is refused to a second with the same
    --out, and left where it is. A filesystem without locks trains unlocked, and says so."""
    with cyclegan.lock_run_folder(None, "data") as first:
        with cyclegan.lock_run_folder(None, "data") as second:
            assert [first, second] == ["runs/data", "runs/data2"]
    assert not os.path.exists("runs")  # a run stopped before it wrote anything leaves nothing
    for expected in ("runs/data", "runs/data2", "runs/data3"):
        printed = run_main([*TINY, "--max-iters", "1"], capsys).out
        assert f"\nnew run in {expected} with" in printed
    stamp = os.path.getmtime("runs/data/checkpoint.pt")
    error = fails_with([*TINY, "--max-iters", "1", "--out", "runs/data"], capsys)
    assert "runs/data/checkpoint.pt already exists: add --resume" in error
    assert os.path.getmtime("runs/data/checkpoint.pt") == stamp
    os.utime("runs/data/checkpoint.pt", (time.time() + 10, time.time() + 10))  # newest now
    printed = run_main(["--data", "data", "--resume", "--max-iters", "2"], capsys).out
    assert "\nresuming runs/data;" in printed
    assert torch.load("runs/data3/checkpoint.pt")["iteration"] == 1
    write_image("photo.jpg")
    printed = run_main(["--data", "data", "--translate", "photo.jpg"], capsys).out
    assert "translating with runs/data/checkpoint.pt at" in printed
    with cyclegan.lock_run_folder("runs/new", "data"):  # as a first run holds it (flock: per open)
        error = fails_with([*TINY, "--out", "runs/new"], capsys)
        assert error == ("error: runs/new is in use by another process that trains in it; wait "
                         "for it to end (or stop it), then resume\n")
        assert os.path.isdir("runs/new")

    def no_locks(descriptor, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(cyclegan.fcntl, "flock", no_locks)
    printed = run_main([*TINY, "--max-iters", "1", "--out", "runs/unlocked"], capsys).out
    assert ("note: runs/unlocked cannot be locked on its filesystem; start no second run in it\n"
            in printed)
    assert torch.load("runs/unlocked/checkpoint.pt")["iteration"] == 1


@slow
def test_a_run_folder_in_training_is_refused_to_another_process_until_it_ends(run_dir, capsys):
    """A --resume while the run trains (here: a resumed run) is refused in one line; once the
    training process is killed, the system has released its lock and the run resumes."""
    run_main([*TINY, "--max-iters", "2"], capsys)
    process = stalled_process("train_step", 120, ["--data", "data", "--resume", "--max-iters",
                                                  "800"], run_dir)
    error = fails_with(["--data", "data", "--resume", "--max-iters", "3"], capsys)
    assert error.startswith("error: runs/data is in use by another process")
    assert error.count("\n") == 1
    process.kill()
    process.wait(timeout=60)
    run_main(["--data", "data", "--resume", "--max-iters", "3"], capsys)
    assert torch.load("runs/data/checkpoint.pt")["iteration"] == 3


def test_the_demo_is_the_default_of_data_demo_and_runs_leave_no_settings_behind(run_dir, capsys):
    """A new demo run takes the demo's settings, under the flags typed; two runs in one process
    (a notebook) leave cuDNN's benchmark flag and the Ctrl-C handler as they found them."""
    torch.backends.cudnn.benchmark = False
    handler = signal.getsignal(signal.SIGINT)
    printed = run_main(["--data", "demo", "--max-iters", "2", "--epochs", "3"], capsys).out
    lines = ("\n" + printed).split("\nnew run in ")[1].splitlines()  # after any timing line
    assert lines[0] == "runs/demo with the demo's settings; typed: --data --max-iters --epochs"
    assert ("data demo, image-size 32, load-size 36, batch-size 1, epochs 3, decay-epochs 1, "
            "lr 0.001") in lines[1] and "ngf 16, ndf 16, n-blocks 2" in lines[1]
    run_main([*TINY, "--max-iters", "1", "--image-size", "24"], capsys)
    assert torch.backends.cudnn.benchmark is False and signal.getsignal(signal.SIGINT) is handler
    assert torch.load("runs/data/checkpoint.pt")["settings"]["load_size"] == 27


@pytest.mark.parametrize("flags, message", [
    (["--image-size", "30"], "--image-size 30: must be a multiple of 4"),
    (["--image-size", "16"], "at least 24"),
    (["--load-size", "20"], "--load-size 20 is smaller than --image-size"),
    (["--epochs", "0"], "--epochs 0: must be positive"),
    (["--batch-size", "-1"], "--batch-size -1: must be positive"),
    (["--pool-size", "-1"], "--pool-size -1: must be at least 0"),
    (["--lr", "0"], "--lr 0.0: must be positive"),
    (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
    (["--device", "tpu"],
     "--device tpu: not a device that torch can use on this machine; use auto"),
    (["--device", "cuda"], "--device cuda: not a device that torch can use on this machine"),
    # no prefixes: argparse would take --epoch 3 for --epochs 3
    (["--epoch", "3"], "unrecognized arguments: --epoch 3; see python cyclegan.py --help"),
    (["--checkpoint", "runs/data/checkpoint.pt"], "error: --checkpoint does not apply to "
                                                  "training (without --translate PATH); drop it\n"),
    (["--resume", "--direction", "YtoX"], "--direction does not apply to training"),
    (["--translate", "photo.jpg"], "error: --image-size does not apply to --translate; drop it\n"),
])
def test_impossible_settings_are_refused_before_any_work(run_dir, capsys, flags, message):
    if flags == ["--device", "cuda"] and torch.cuda.is_available():
        flags = ["--device", "cuda:99"]  # on a GPU machine, ask for one that is not there
        message = "--device cuda:99"
    error = fails_with([*TINY, *flags], capsys)
    assert message in error and error.count("\n") == 1
    assert not os.path.exists("runs") and not os.path.exists("translated")


# --- 16. Ctrl-C -------------------------------------------------------------------------------

@slow
def test_ctrl_c_saves_and_the_printed_command_resumes(run_dir):
    """From a shell: Ctrl-C saves and prints the command that resumes; the resumed run ends
    with the command that translates, which works as printed."""
    process = subprocess.Popen(
        [sys.executable, SCRIPT, *TINY, "--epochs",
         "50", "--decay-epochs", "0", "--log-every", "1"],
        cwd=run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if " it 3/" in line:
            process.send_signal(signal.SIGINT)
            break
    lines += process.stdout.readlines()
    assert process.wait(timeout=60) == 130, "".join(lines)  # what shells report for SIGINT
    text = "".join(lines)
    assert not any(line.startswith("done:") for line in lines)
    assert "\nstopping after this iteration; Ctrl-C again to stop at once\n" in text
    assert "\nstopped: " in text
    iteration = int(text.split("interrupted at iteration ")[1].split(";")[0])
    assert 3 <= iteration < 200
    checkpoint = str(run_dir / "runs/data/checkpoint.pt")
    assert torch.load(checkpoint)["iteration"] == iteration
    command = text.split("resume with: ")[1].splitlines()[0].strip()
    assert command == f"python {shlex.quote(SCRIPT)} --resume --out runs/data"
    result = command_line(shlex.split(command)[2:], run_dir)  # exactly as printed
    assert result.returncode == 0, result.stderr
    assert torch.load(str(run_dir / "runs/data/checkpoint.pt"))["iteration"] == 200
    lines = result.stdout.strip().splitlines()  # then the translation command, as printed
    assert re.fullmatch(r"done: \d+ iterations in [\d.]+ s \([\d.]+ s per iteration\)", lines[-3])
    assert lines[-2:] == ["translate photos with this model:", f"  python {shlex.quote(SCRIPT)} "
                          "--translate PHOTO_OR_FOLDER --checkpoint runs/data/checkpoint.pt"]
    command = shlex.split(lines[-1].replace("PHOTO_OR_FOLDER", "data/testA"))
    assert command_line(command[2:], run_dir).returncode == 0
    assert os.path.isfile(run_dir / "translated/0_XtoY.png")


@slow
def test_ctrl_c_or_a_kill_while_decoding_stops_at_once_and_leaves_no_run_folder(run_dir):
    """11 images to decode, each slowed down; Ctrl-C at the first: no other is decoded, one line
    says that nothing was saved, the exit status is 130, and runs/ is not there. Killed (-9)
    there, it leaves no empty folder either (the next run would have been runs/data2)."""
    process = stalled_process("load_image", 0.5, TINY, run_dir)
    process.kill()
    process.wait(timeout=60)
    assert not os.path.exists(run_dir / "runs")
    process = stalled_process("load_image", 0.5, TINY, run_dir)
    process.send_signal(signal.SIGINT)
    rest = process.stdout.read()
    assert process.wait(timeout=60) == 130, rest
    assert "STALLED" not in rest and "Traceback" not in rest
    assert rest.endswith("\ninterrupted; no checkpoint had been saved yet\n"), rest
    assert not os.path.exists(run_dir / "runs")


# --- 18. Command line and notebooks -----------------------------------------------------------

def test_help_and_readme_list_every_flag_and_ci_runs_the_readme_test_command():
    readme = open(os.path.join(HERE, "README.md")).read()
    ci = open(os.path.join(HERE, ".ci", "run")).read()
    command = readme.split("Run the tests")[1].split("\n\n")[1].strip()
    assert command.endswith("python -m pytest -q") and command in ci.splitlines()
    quick = readme.split("The quick tests")[1].split("\n\n")[1].split("\n")
    quick = [line.strip() for line in quick]
    assert quick == ["python -m pip install -q pytest", 'python -m pytest -q -m "not slow"']
    parser = cyclegan.build_arg_parser()
    flags = [option for action in parser._actions for option in action.option_strings
             if option.startswith("--") and option != "--help"]
    options_table = readme.split("## Options")[1].split("\n## ")[0]
    for flag in flags:
        assert f"`{flag}" in options_table, f"README's options table lacks {flag}"
    text = re.sub(r"\s+", " ", parser.format_help())
    for key, (default, _) in cyclegan.DEFAULT_SETTINGS.items():  # help shows the defaults
        if default is not None:
            assert f"(default {default})" in text, key


def test_in_a_notebook_or_under_torchrun_errors_print_one_line(run_dir, capsys, monkeypatch):
    monkeypatch.setattr(cyclegan, "in_notebook", lambda: True)
    assert cyclegan.main(["--data", "nowhere"]) is None
    assert capsys.readouterr().err.startswith("error: no dataset for --data nowhere")
    assert cyclegan.main(["--colour"]) is None
    error = capsys.readouterr().err
    assert error == "error: unrecognized arguments: --colour; see main(['--help'])\n"
    assert cyclegan.main(["--help"]) is None and "usage: cyclegan.py" in capsys.readouterr().out
    # torchrun (which sets WORLD_SIZE) would run --translate once per process: refused; the
    # translate command that a run under torchrun prints is a plain one
    monkeypatch.setattr(cyclegan, "in_notebook", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("RANK", "1")
    error = fails_with(["--translate", "photo.jpg"], capsys)
    assert error == ("error: (process 1) --translate runs in one process; start it with python "
                     "cyclegan.py, not torchrun\n")
    assert cyclegan.command_to_run(["--translate", "a"], one_process=True) == (
        "python cyclegan.py --translate a")


@slow
def test_pasted_into_a_jupyter_kernel(run_dir):
    """As a Colab user does it: the whole file in one cell, an error, a training, a training
    stopped with the kernel's interrupt, the printed main([...]) call that resumes it, and a
    translation."""
    if not importable("nbclient") or not importable("ipykernel"):  # under CI: a failure
        pytest.skip("nbclient and ipykernel are not installed (README's test command does it)")
    import nbformat
    from nbclient import NotebookClient
    write_image(str(run_dir / "photo.jpg"), size=(50, 38))
    tiny = json.dumps([*TINY])[1:-1]
    cells = [open(SCRIPT).read(),
             'main(["--data", "nowhere"])',
             f'main([{tiny}, "--max-iters", "300", "--log-every", "10", "--sample-every", "100"])',
             f'main([{tiny}, "--epochs", "2000", "--log-every", "1"])',
             None,  # the resume call that the interrupted cell printed
             'main(["--data", "data", "--translate", "photo.jpg"])']
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c or "") for c in cells])
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(run_dir)}})

    def interrupt_when_training():
        # What Colab's stop button does to a kernel whose interrupt_mode is "signal": SIGINT to
        # its process (the client's async interrupt cannot be called from this thread)
        csv_path = run_dir / "runs" / "data2" / "losses.csv"
        for _ in range(600):
            if csv_path.exists() and len(csv_path.read_text().splitlines()) > 3:
                assert client.km.kernel_spec.interrupt_mode == "signal"
                return os.kill(client.km.provisioner.process.pid, signal.SIGINT)
            time.sleep(0.1)
    outputs = []
    displays = []
    with client.setup_kernel():
        for index, cell in enumerate(notebook.cells):
            if index == 3:
                threading.Thread(target=interrupt_when_training, daemon=True).start()
            if index == 4:
                cell.source = outputs[3].split("resume with: ")[1].splitlines()[0].strip()
                cell.source = cell.source.replace("'--resume'", "'--resume', '--max-iters', '40'")
            client.execute_cell(cell, index)
            outputs.append("".join(o.get("text", "") for o in cell.outputs))
            displays.append([o["data"] for o in cell.outputs if o.output_type == "display_data"])
            assert not [o for o in cell.outputs if o.output_type == "error"], (index, cell.outputs)
            shown = [o["data"]["text/plain"] for o in cell.outputs if "data" in o]
            assert all("\n" not in text for text in shown), shown  # not ~150 layers of repr
    assert 'main(["--data", "summer2winter"])' in outputs[0] and "done:" not in outputs[0]
    assert outputs[1].startswith("error: no dataset for --data nowhere")
    assert outputs[1].count("\n") == 1
    # 300 iterations logged every 10 and a grid every 100: a few lines of text, one progress
    # line and two pictures (the newest grid, the loss curves), each updated in place
    lines = outputs[2].strip().splitlines()
    assert lines[-3].startswith("done: 300 iterations") and len(lines) <= 10, outputs[2]
    assert lines[-1] == ("  main(['--translate', 'PHOTO_OR_FOLDER', '--checkpoint', "
                         "'runs/data/checkpoint.pt'])")
    progress = [d["text/plain"] for d in displays[2] if "image/png" not in d]
    assert len(progress) == 1 and progress[0].startswith("epoch 75 it 300/300 |")
    pictures = [Image.open(io.BytesIO(base64.b64decode(d["image/png"])))
                for d in displays[2] if "image/png" in d]
    assert [picture.size for picture in pictures] == [
        Image.open(run_dir / "runs/data/samples/iter_0000300.png").size, (640, 540)]
    assert notebook.cells[4].source == (
        "main(['--resume', '--max-iters', '40', '--out', 'runs/data2'])")
    assert "resumed at iteration" in outputs[4]
    assert outputs[4].strip().splitlines()[-3].startswith("done:")
    state = torch.load(str(run_dir / "runs/data2/checkpoint.pt"))
    assert state["iteration"] == 40 and state["settings"]["load_size"] == 36
    assert "done: translated 1 image XtoY" in outputs[5]
    assert Image.open(run_dir / "translated" / "photo_XtoY.png").size == (50, 38)  # its own


# --- download_data.sh, against a server on 127.0.0.1 ------------------------------------------

def dataset_zip(name, counts=(3, 2, 1, 1), padding=0):
    """A dataset zip; `padding` bytes of stored zeros make it as large as a known archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for folder, count in zip(("trainA", "trainB", "testA", "testB"), counts):
            for i in range(count):
                image = io.BytesIO()
                Image.new("RGB", (8, 8), (i * 40, 90, 200)).save(image, "JPEG")
                archive.writestr(f"{name}/{folder}/{i}.jpg", image.getvalue())
        if padding:
            archive.writestr(f"{name}/padding.bin", b"\0" * padding)
    return buffer.getvalue()


def download(tmp_path, files, *args):
    """bash download_data.sh ARGS against a server on 127.0.0.1 of `files` ({name: bytes}, served
    as NAME.zip and NAME.pth; None: nothing listens) -> (the result, the requests served)."""
    served = tmp_path / "served"
    shutil.rmtree(served, ignore_errors=True)
    served.mkdir()
    for name, data in (files or {}).items():
        (served / f"{name}.zip").write_bytes(data)
        (served / f"{name}.pth").write_bytes(data)
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(args)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    environment = {**os.environ, "CYCLEGAN_DATA_URL": f"http://127.0.0.1:{server.server_port}",
                   "PYTHON": sys.executable}
    environment["CYCLEGAN_PRETRAINED_URL"] = environment["CYCLEGAN_DATA_URL"]
    if files is None:
        server.shutdown()
        server.server_close()
    result = subprocess.run(["bash", os.path.join(HERE, "download_data.sh"), *args], cwd=tmp_path,
                            env=environment, capture_output=True, text=True, timeout=120)
    if files is not None:
        server.shutdown()
        server.server_close()
    return result, len(requests)


def left_in(folder):
    return sorted(os.listdir(folder)) if os.path.exists(folder) else []


@slow
def test_a_dataset_downloads_once_and_a_failed_download_leaves_nothing(tmp_path):
    """A dataset without a published checksum (the mini sets, ae_photos) is checked with unzip -t
    only, and says so; the loader reads what it unpacked; a second run fetches nothing. Every
    failure (missing, not a zip, no server, wrong size, right size but wrong SHA-256, an unknown
    name) exits non-zero with its reason and leaves nothing in datasets/."""
    result, requests = download(tmp_path, {"mini": dataset_zip("mini")}, "mini")
    assert result.returncode == 0, result.stderr
    assert "no checksum is published for mini.zip: it is checked with unzip -t" in result.stdout
    assert "trainA: 3 images" in result.stdout and "testB: 1 images" in result.stdout
    assert left_in(tmp_path / "datasets") == ["mini"]
    args = tiny_args("--data", str(tmp_path / "datasets/mini"))
    assert cyclegan.load_dataset(args)[0].epoch_length == 3
    result, requests = download(tmp_path, {"mini": dataset_zip("mini")}, "mini")
    assert "already there, nothing to do" in result.stdout and requests == 0
    shutil.rmtree(tmp_path / "datasets")
    good = dataset_zip("mini")
    for files, args, message in [
            ({}, ["mini"], "download of"),
            ({"mini": good[:len(good) // 2]}, ["mini"], "not a valid zip"),
            ({"mini": bytes(range(256)) * 20}, ["mini"], "not a valid zip"),
            (None, ["mini"], "download of"),  # as with no network: nothing listens there
            ({"summer2winter_yosemite": good}, [], f"expected {SUMMER2WINTER_SIZE}"),
            ({"facades": zip_of_size("facades", 35_135_868)}, ["facades"], "expected 9a31ebf"),
            ({}, ["summer2autumn"], "unknown dataset 'summer2autumn'; valid names: apple2orange")]:
        result, _ = download(tmp_path, files, *args)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
        assert left_in(tmp_path / "datasets") == [], args


SUMMER2WINTER_SIZE = 132_640_856


def zip_of_size(name, size):
    """A valid dataset zip of exactly `size` bytes, but not the real one."""
    padding = size - len(dataset_zip(name, (1, 0, 0, 0)))
    for _ in range(3):  # the zip's own headers grow a little with the padding: adjust
        data = dataset_zip(name, (1, 0, 0, 0), padding)
        padding += size - len(data)
    assert len(data) == size
    return data


def test_the_script_and_cyclegan_know_the_same_datasets_and_every_published_checksum():
    """The script's table: a downloadable name, its size and its SHA-256 (as TensorFlow Datasets
    publishes them), for all but ae_photos and the mini sets; cyclegan.py has the same names."""
    script = open(os.path.join(HERE, "download_data.sh")).read()
    assert list(cyclegan.DOWNLOADABLE_DATASETS) == script.split('VALID="')[1].split('"')[0].split()
    words = script.split('CHECKSUMS="')[1].split('"')[0].split()
    table = {words[i]: (words[i + 1], words[i + 2]) for i in range(0, len(words), 3)}
    for size, checksum in table.values():
        assert size.isdigit() and re.fullmatch("[0-9a-f]{64}", checksum)
    assert set(cyclegan.DOWNLOADABLE_DATASETS) - set(table) == {"ae_photos", "mini", "mini_pix2pix",
                                                                "mini_colorization"}


@slow
def test_a_generator_downloads_once_and_a_bad_one_leaves_nothing(tmp_path, capsys, monkeypatch):
    """The authors' file, checked by loading it, works with --translate as README.md says; an
    error page, a truncated file, a discriminator, a missing file or an unknown name is refused
    with its reason, and nothing is kept."""
    pretrained_file(tmp_path / "source.pth")
    good = (tmp_path / "source.pth").read_bytes()
    result, _ = download(tmp_path, {"summer2winter_yosemite": good}, "pretrained",
                         "summer2winter_yosemite")
    assert result.returncode == 0, result.stderr
    assert "pretrained/summer2winter_yosemite.pth is ready" in result.stdout
    result, requests = download(tmp_path, {}, "pretrained", "summer2winter_yosemite")
    assert "already there, nothing to do" in result.stdout and requests == 0
    monkeypatch.chdir(tmp_path)
    write_image("photo.jpg")
    run_main(["--translate", "photo.jpg", "--checkpoint",
              "pretrained/summer2winter_yosemite.pth"], capsys)
    assert os.path.exists("translated/photo_summer2winter_yosemite.png")
    torch.save(cyclegan.Discriminator(8).state_dict(), "d.pth")
    for served, message in [(None, "download of"),
                            (b"<html><body>Service unavailable</body></html>", "not a generator's"),
                            (good[:len(good) // 2], "not a generator's"),
                            (open("d.pth", "rb").read(), "not a generator's")]:
        files = {} if served is None else {"horse2zebra": served}
        result, _ = download(tmp_path, files, "pretrained", "horse2zebra")
        last_line = result.stderr.strip().splitlines()[-1]  # (curl's progress meter comes first)
        assert message in last_line and "nothing was kept" in last_line, result.stderr
        assert result.returncode != 0 and left_in("pretrained") == ["summer2winter_yosemite.pth"]
    result, _ = download(tmp_path, {}, "pretrained", "summer2autumn")
    assert "unknown model 'summer2autumn'" in result.stderr and "style_vangogh" in result.stderr
