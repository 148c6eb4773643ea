"""What cyclegan.py promises, as tests. Run: python -m pytest -q  (about 1.5-2 minutes on 2 CPU cores).

Small networks (--ngf 4 --n-blocks 1) and 32px images keep the training tests fast; the shapes and
parameter counts are checked at the paper's sizes.
"""
import http.server
import importlib.util
import io
import os
import signal
import subprocess
import sys
import threading
import zipfile
import zlib

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

import cyclegan

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = ["--image-size", "32", "--ngf", "4", "--ndf", "4", "--n-blocks", "1"]


# --- helpers ----------------------------------------------------------------------------------

def write_image(path, mode="RGB", size=(40, 36), value=None, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    gen = torch.Generator().manual_seed(zlib.crc32(str(path).encode()))  # same pixels every run
    if mode == "I;16":
        image = Image.new("I;16", size, 40000 if value is None else value)
    else:
        rgb = (torch.rand(size[1], size[0], 3, generator=gen) * 255).to(torch.uint8).numpy()
        image = Image.fromarray(rgb, "RGB").convert(mode)
    if mode == "P" and value == "transparent":
        image.info["transparency"] = 0
    image.save(path, fmt)
    return path


def make_dataset(root, layout="official", n_x=3, n_y=4, n_test=2):
    """A small folder dataset in one of the two layouts, images of mixed kinds."""
    names = {"official": ("trainA", "trainB", "testA", "testB"),
             "udacity": ("summer/summer", "winter/winter", "test_summer/x", "test_winter/x")}[layout]
    modes = ["RGB", "L", "RGBA", "P"]
    for folder, count in zip(names, (n_x, n_y, n_test, n_test)):
        for i in range(count):
            extension = ".jpg" if i % 2 == 0 and modes[i % 4] in ("RGB", "L") else ".png"
            write_image(os.path.join(root, folder, f"{i}{extension}"), modes[i % 4],
                        size=(40 + i, 36))
    return str(root)


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


def tiny_args(**overrides):
    args = cyclegan.build_arg_parser().parse_args(TINY)
    for key, value in overrides.items():
        setattr(args, key, value)
    cyclegan.check_settings(args)
    return args


# --- networks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size, patches", [(128, 14), (256, 30)])
def test_networks_shapes_at_paper_sizes(size, patches):
    torch.manual_seed(0)
    with torch.no_grad():
        image = torch.rand(1, 3, size, size) * 2 - 1
        assert cyclegan.Generator()(image).shape == (1, 3, size, size)
        assert cyclegan.Discriminator()(image).shape == (1, 1, patches, patches)


def test_parameter_counts_match_official_code():
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(cyclegan.Generator()) == 7_837_699
    assert count(cyclegan.Discriminator()) == 2_764_737


def test_generator_output_stays_in_tanh_range():
    torch.manual_seed(0)
    out = cyclegan.Generator(ngf=8, n_blocks=1)(torch.randn(2, 3, 32, 32) * 10)
    assert out.min() >= -1 and out.max() <= 1 and out.std() > 0


def test_weights_are_initialised_from_normal_0_002():
    torch.manual_seed(0)
    model = cyclegan.CycleGAN()
    weights = torch.cat([m.weight.flatten() for m in model.modules()
                         if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))])
    biases = torch.cat([m.bias for m in model.modules() if hasattr(m, "bias") and m.bias is not None])
    assert abs(weights.mean().item()) < 1e-4
    assert abs(weights.std().item() - 0.02) < 1e-4
    assert torch.count_nonzero(biases) == 0


# --- losses and pool --------------------------------------------------------------------------

def test_losses_on_hand_made_values():
    scores = torch.tensor([0.0, 1.0, 2.0, 0.5])
    assert cyclegan.real_mse_loss(scores).item() == pytest.approx((1 + 0 + 1 + 0.25) / 4)
    assert cyclegan.fake_mse_loss(scores).item() == pytest.approx((0 + 1 + 4 + 0.25) / 4)
    real = torch.tensor([[0.0, 1.0], [-1.0, 0.5]])
    reconstructed = torch.tensor([[0.5, 1.0], [1.0, 0.0]])
    assert cyclegan.cycle_consistency_loss(real, reconstructed, 10).item() == pytest.approx(
        10 * (0.5 + 0 + 2 + 0.5) / 4)
    assert cyclegan.identity_loss(real, reconstructed, 5).item() == pytest.approx(5 * 3 / 4)
    # the losses are computed in fp32 even for bf16 inputs
    assert cyclegan.real_mse_loss(scores.bfloat16()).dtype == torch.float32


def test_image_pool_fills_to_its_size_then_swaps_and_never_grows():
    pool = cyclegan.ImagePool(50, seed=0)
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
    assert torch.equal(cyclegan.ImagePool(0, seed=0).query(image), image)  # size 0: no pool


# --- training step and schedule ---------------------------------------------------------------

def make_step_objects(precision_name="fp32"):
    args = tiny_args(lr=1e-3)
    model, optimizers, _, pools = cyclegan.build_training(args, torch.device("cpu"))
    precision = cyclegan.Precision(precision_name, torch.device("cpu"))
    real_X, real_Y = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    return args, model, optimizers, pools, precision, real_X, real_Y


def snapshot(net):
    return [p.detach().clone() for p in net.parameters()]


def changed(net, before):
    return all(not torch.equal(p, q) for p, q in zip(net.parameters(), before))


def test_generator_update_leaves_discriminators_untouched():
    args, model, optimizers, pools, precision, real_X, real_Y = make_step_objects()
    before = {name: snapshot(getattr(model, name)) for name in ("G_XtoY", "G_YtoX", "D_X", "D_Y")}
    cyclegan.generator_step(model, real_X, real_Y, optimizers[0], precision, args)
    assert changed(model.G_XtoY, before["G_XtoY"]) and changed(model.G_YtoX, before["G_YtoX"])
    for name in ("D_X", "D_Y"):
        net = getattr(model, name)
        assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before[name]))
        assert all(p.grad is None for p in net.parameters())  # no gradient leaks into them
        assert all(p.requires_grad for p in net.parameters())  # unfrozen again afterwards


@pytest.mark.parametrize("precision_name", ["fp32", "bf16", "fp16"])
def test_training_step_updates_all_four_networks(precision_name):
    args, model, optimizers, pools, precision, real_X, real_Y = make_step_objects(precision_name)
    before = {name: snapshot(getattr(model, name)) for name in ("G_XtoY", "G_YtoX", "D_X", "D_Y")}
    # fp16's scaler starts at 2^16 and skips steps whose gradients overflow while it finds its
    # level, so give every precision a few steps.
    for _ in range(8):
        losses = cyclegan.train_step(model, real_X, real_Y, optimizers, pools, precision, args)
    assert losses.shape == (len(cyclegan.LOSS_NAMES),) and losses.dtype == torch.float32
    assert torch.isfinite(losses).all() and (losses > 0).all()
    for name, params in before.items():
        assert changed(getattr(model, name), params), name
    assert precision.scaler.is_enabled() == (precision_name == "fp16")
    if precision_name == "fp16":
        assert 1 < precision.scaler.get_scale() < 2**16  # the gradient scaler really took part
    assert len(pools[0].images) == len(pools[1].images) == 8


@pytest.mark.parametrize("requested, device, bf16, expected", [
    ("auto", "cuda", True, "bf16"), ("auto", "cuda", False, "fp16"),
    ("auto", "cpu", True, "bf16"), ("auto", "cpu", False, "fp32"), ("auto", "mps", True, "fp32"),
    ("fp32", "cuda", True, "fp32"), ("fp16", "cpu", False, "fp16")])
def test_automatic_precision_follows_the_hardware(requested, device, bf16, expected):
    assert cyclegan.choose_precision(requested, device, bf16) == expected


def test_learning_rate_is_constant_then_falls_linearly_to_zero():
    factors = [cyclegan.lr_factor(epoch, epochs=100, decay_epochs=100) for epoch in range(200)]
    assert factors[:100] == [1.0] * 100
    steps = [a - b for a, b in zip(factors[99:], factors[100:])]
    assert all(step == pytest.approx(1 / 101) for step in steps)
    assert factors[-1] == pytest.approx(1 / 101)  # the next epoch would be 0
    assert cyclegan.lr_factor(200, 100, 100) == pytest.approx(0)


def test_training_run_applies_the_schedule(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "data", n_x=2, n_y=2)
    run_main(["--data", "data", *TINY, "--epochs", "2", "--decay-epochs", "2", "--lr", "0.001"],
             capsys)
    state = cyclegan.load_checkpoint("runs/data/checkpoint.pt")
    assert state["epoch"] == 4 and state["iteration"] == 8
    learning_rates = [float(line.split(",")[2]) for line in open("runs/data/losses.csv")
                      .read().splitlines()[1:]]
    assert learning_rates[0] == pytest.approx(0.001)
    assert state["optimizer_G"]["param_groups"][0]["lr"] == pytest.approx(0)


# --- data -------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["official", "udacity"])
def test_loader_reads_mixed_images_in_both_layouts(tmp_path, layout):
    root = make_dataset(tmp_path / "data", layout, n_x=4, n_y=3)
    args = tiny_args(data=root)
    data, test_X, test_Y = cyclegan.load_dataset(args)
    assert data.images_X.shape == (4, 3, 36, 36) and data.images_X.dtype == torch.uint8
    assert data.images_Y.shape == (3, 3, 36, 36)
    assert test_X.shape == test_Y.shape == (2, 3, 32, 32)
    assert len(data) == 4  # max(|X|, |Y|)
    x_order, y_order = data.epoch_order(0)
    assert sorted(x_order.tolist()) == [0, 1, 2, 3] and all(0 <= i < 3 for i in y_order)
    assert not torch.equal(data.epoch_order(1)[0], x_order) or not torch.equal(
        data.epoch_order(2)[0], x_order)  # a new order each epoch
    x, y = data.batch(x_order[:2], y_order[:2])
    assert x.shape == y.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.1


def test_batches_come_from_the_decoded_cache_without_reading_files(tmp_path, monkeypatch):
    data, _, _ = cyclegan.load_dataset(tiny_args(data=make_dataset(tmp_path / "data")))
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("decoded an image per step"))
    x, y = data.batch(*[order[:1] for order in data.epoch_order(0)])
    crop = (x[0] + 1) * 127.5  # the crop is one of the cached pixels' windows
    cached = data.images_X.float()
    windows = [cached[i, :, t:t + 32, l:l + 32] for i in range(3) for t in range(5) for l in range(5)]
    assert any(torch.allclose(crop, w, atol=1e-3) or torch.allclose(crop, w.flip(-1), atol=1e-3)
               for w in windows)


def test_unusual_image_kinds_load_as_rgb(tmp_path):
    cases = {"grey16.png": ("I;16", 65535, (255, 255, 255)),
             "grey16_half.png": ("I;16", 32896, (128, 128, 128)),
             "cmyk.jpg": ("CMYK", None, None), "palette_alpha.png": ("P", "transparent", None),
             "rgba.png": ("RGBA", None, None), "grey.png": ("L", None, None),
             "tiny.png": ("RGB", None, None)}
    for name, (mode, value, _) in cases.items():
        size = (7, 5) if name == "tiny.png" else (40, 36)
        write_image(str(tmp_path / name), mode, size=size, value=value)
    for name, (_, _, expected) in cases.items():
        image = cyclegan.load_image(str(tmp_path / name), 36)
        assert image.shape == (3, 36, 36) and image.dtype == torch.uint8, name
        if expected:
            assert tuple(image[:, 10, 10].tolist()) == expected, name


def test_demo_renders_the_same_scene_in_both_seasons():
    summer = cyclegan.render_demo_scene(7, 32, "summer")
    winter = cyclegan.render_demo_scene(7, 32, "winter")
    assert summer.shape == winter.shape == (3, 32, 32)
    ground_colour = torch.tensor([0.95, 0.95, 0.97]) * 255
    # the bottom row is ground in both; the same pixels are green in summer and snow in winter
    assert (summer[1, -1].float() > summer[0, -1].float() + 30).all()
    assert (winter[:, -1].float().mean(1) > ground_colour * 0.7).all()
    assert not torch.equal(cyclegan.render_demo_scene(8, 32, "summer"), summer)
    assert torch.equal(cyclegan.render_demo_scene(7, 32, "summer"), summer)  # deterministic


# --- the command line and its outputs ---------------------------------------------------------

def test_two_iteration_command_line_run_writes_its_outputs(tmp_path):
    make_dataset(tmp_path / "data")
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "cyclegan.py"), "--data", "data", *TINY,
         "--max-iters", "2", "--sample-every", "1", "--log-every", "1", "--device", "cpu"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("done: 2 iterations in ") and " s/it " in lines[-1]
    assert "peak memory" in lines[-1]
    run = tmp_path / "runs" / "data"
    state = cyclegan.load_checkpoint(str(run / "checkpoint.pt"))
    assert state["iteration"] == 2 and state["settings"]["image_size"] == 32
    rows = (run / "losses.csv").read_text().splitlines()
    assert rows[0].split(",")[:4] == ["iteration", "epoch", "lr", "D_X"] and len(rows) == 3
    assert all(float(v) > 0 for v in rows[2].split(",")[3:])
    grid = Image.open(run / "samples" / "iter_0000002.png")
    # 6 rows (x, G(x), F(G(x)), y, F(y), G(F(y))) of 2 test images, plus the label column
    assert grid.size == (64 + 2 + 2 * 34, 2 + 6 * 34)
    if importable("matplotlib"):
        assert Image.open(run / "losses.png").size[0] > 500


def importable(name):
    """Is an optional package installed? (Found, not imported: importing ipykernel here would
    make cyclegan.in_notebook() true in this process.) Under CI it must be."""
    found = importlib.util.find_spec(name) is not None
    assert found or os.environ.get("CI") != "true", f"CI must install {name} (README's test command)"
    return found


def test_help_documents_every_flag():
    text = cyclegan.build_arg_parser().format_help()
    for flag in ("--data", "--image-size", "--load-size", "--batch-size", "--epochs",
                 "--decay-epochs", "--max-iters", "--lr", "--lambda-cycle", "--lambda-identity",
                 "--pool-size", "--seed", "--out", "--resume", "--sample-every", "--device",
                 "--checkpoint-every", "--precision", "--translate", "--checkpoint", "--direction"):
        assert flag in text


# --- never lose a run -------------------------------------------------------------------------

def test_resume_continues_exactly(tmp_path, capsys, monkeypatch):
    """K iterations straight == stop mid-epoch, or at an epoch's end, and resume to K."""
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "data", n_x=3, n_y=4)  # 4 iterations per epoch
    common = ["--data", "data", *TINY, "--epochs", "2", "--decay-epochs", "1", "--pool-size", "2",
              "--checkpoint-every", "3"]
    run_main([*common, "--out", "straight", "--max-iters", "7"], capsys)
    straight = cyclegan.load_checkpoint("straight/checkpoint.pt")
    assert straight["iteration"] == 7 and straight["epoch"] == 1 and straight["batch_index"] == 3
    for stop in (2, 4):
        out = f"stopped_at_{stop}"
        run_main([*common, "--out", out, "--max-iters", str(stop)], capsys)
        assert cyclegan.load_checkpoint(f"{out}/checkpoint.pt")["iteration"] == stop
        printed = run_main([*common, "--out", out, "--max-iters", "7", "--resume"], capsys).out
        assert f"at iteration {stop}" in printed
        resumed = cyclegan.load_checkpoint(f"{out}/checkpoint.pt")
        for key in ("model", "optimizer_G", "optimizer_D", "scheduler_G", "scheduler_D", "pools",
                    "rng", "epoch", "iteration"):
            assert tensors_equal(straight[key], resumed[key]), (stop, key)


def test_checkpoint_survives_sigkill_while_saving(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "data")
    run_main(["--data", "data", *TINY, "--max-iters", "1"], capsys)
    before = cyclegan.load_checkpoint("runs/data/checkpoint.pt")
    slow_saver = f"""
import io, sys, time, torch
sys.path.insert(0, {HERE!r})
import cyclegan
real_save = torch.save
def slow_save(obj, f):  # writes half the checkpoint, then hangs until killed
    buffer = io.BytesIO(); real_save(obj, buffer); data = buffer.getvalue()
    f.write(data[:len(data) // 2]); f.flush(); print("HALF-WRITTEN", flush=True); time.sleep(120)
    f.write(data[len(data) // 2:])
torch.save = slow_save
cyclegan.main(["--data", "data", *{TINY!r}, "--max-iters", "3", "--resume"])
"""
    process = subprocess.Popen([sys.executable, "-c", slow_saver], cwd=tmp_path,
                               stdout=subprocess.PIPE, text=True)
    for line in process.stdout:
        if "HALF-WRITTEN" in line:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert os.path.getsize("runs/data/checkpoint.pt.tmp") > 0  # the half-written one
    after = cyclegan.load_checkpoint("runs/data/checkpoint.pt")  # the previous one, whole
    assert tensors_equal(before["model"], after["model"]) and after["iteration"] == 1
    run_main(["--data", "data", *TINY, "--max-iters", "2", "--resume"], capsys)
    assert cyclegan.load_checkpoint("runs/data/checkpoint.pt")["iteration"] == 2


def test_ctrl_c_saves_and_prints_how_to_resume(tmp_path):
    make_dataset(tmp_path / "data")
    process = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "cyclegan.py"), "--data", "data", *TINY,
         "--log-every", "1", "--sample-every", "1000"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if " it 3/" in line:
            process.send_signal(signal.SIGINT)
            break
    lines += process.stdout.readlines()
    assert process.wait(timeout=60) == 0, "".join(lines)
    text = "".join(lines)
    assert "resume with:" in text and "--out runs/data --resume" in text
    assert lines[-1].startswith("done:")
    iteration = int(text.split("interrupted at iteration ")[1].split(",")[0])
    assert cyclegan.load_checkpoint(str(tmp_path / "runs/data/checkpoint.pt"))["iteration"] == iteration


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "data")
    run_main(["--data", "data", *TINY, "--max-iters", "2"], capsys)
    good = cyclegan.load_checkpoint("runs/data/checkpoint.pt")
    real_cycle_loss = cyclegan.cycle_consistency_loss
    monkeypatch.setattr(cyclegan, "cycle_consistency_loss",
                        lambda *a: real_cycle_loss(*a) * float("nan"))
    error = fails_with(["--data", "data", *TINY, "--max-iters", "6", "--resume"], capsys)
    assert "non-finite" in error and "runs/data/checkpoint.pt keeps the last good state" in error
    kept = cyclegan.load_checkpoint("runs/data/checkpoint.pt")
    assert kept["iteration"] == 2 and tensors_equal(kept["model"], good["model"])


def test_refuses_to_overwrite_an_existing_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "data")
    run_main(["--data", "data", *TINY, "--max-iters", "1"], capsys)
    stamp = os.path.getmtime("runs/data/checkpoint.pt")
    error = fails_with(["--data", "data", *TINY, "--max-iters", "1"], capsys)
    assert "runs/data/checkpoint.pt already exists: add --resume" in error
    assert os.path.getmtime("runs/data/checkpoint.pt") == stamp


def test_bad_checkpoints_give_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "data")
    run_main(["--data", "data", *TINY, "--max-iters", "1"], capsys)
    error = fails_with(["--data", "data", *TINY[:2], "--ngf", "8", "--ndf", "4", "--n-blocks",
                        "1", "--resume"], capsys)
    assert error.count("\n") == 1 and "--ngf 8 does not match the checkpoint's 4" in error
    data = open("runs/data/checkpoint.pt", "rb").read()
    open("runs/data/checkpoint.pt", "wb").write(data[: len(data) // 3])
    error = fails_with(["--data", "data", *TINY, "--resume"], capsys)
    assert error.startswith("error: cannot read checkpoint runs/data/checkpoint.pt: ")
    assert error.count("\n") == 1
    error = fails_with(["--data", "data", *TINY, "--resume", "--out", "elsewhere"], capsys)
    assert "no checkpoint at elsewhere/checkpoint.pt" in error


# --- bad input --------------------------------------------------------------------------------

def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    error = fails_with(["--data", "summer2winter"], capsys)
    assert "datasets/summer2winter_yosemite/" in error and "trainA/ trainB/" in error
    assert "summer/ winter/" in error
    assert "bash download_data.sh summer2winter_yosemite" in error
    assert not os.path.exists("runs")  # nothing written
    error = fails_with(["--data", "my/photos"], capsys)
    assert "looked in my/photos/" in error and "check the path" in error


def test_empty_domain_folder_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "data")
    for f in os.listdir("data/trainB"):
        os.remove(os.path.join("data/trainB", f))
    (tmp_path / "data/trainB/notes.txt").write_text("not an image")
    error = fails_with(["--data", "data", *TINY], capsys)
    assert "no images in data/trainB" in error and not os.path.exists("runs")


def test_truncated_image_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "data")
    write_image("data/trainA/big.jpg", size=(200, 200))
    data = open("data/trainA/big.jpg", "rb").read()
    open("data/trainA/big.jpg", "wb").write(data[: len(data) // 2])
    error = fails_with(["--data", "data", *TINY], capsys)
    assert error.startswith("error: cannot read image data/trainA/big.jpg: ")
    assert error.count("\n") == 1


@pytest.mark.parametrize("flags, message", [
    (["--image-size", "30"], "--image-size 30: must be a multiple of 4"),
    (["--image-size", "16"], "at least 24"),
    (["--load-size", "20"], "--load-size 20 is smaller than --image-size"),
    (["--epochs", "0"], "--epochs 0: must be at least 1"),
    (["--batch-size", "-1"], "--batch-size -1: must be at least 1"),
    (["--lr", "0"], "--lr 0.0: must be positive"),
    (["--device", "tpu"], "--device tpu: unknown"),
    (["--device", "cuda"], "--device cuda: this machine has no such device"),
])
def test_impossible_settings_are_refused_before_any_work(tmp_path, capsys, monkeypatch, flags,
                                                         message):
    if flags == ["--device", "cuda"] and torch.cuda.is_available():
        flags = ["--device", "cuda:99"]  # on a GPU machine, ask for one that is not there
        message = "--device cuda:99"
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "data")
    error = fails_with(["--data", "data", *TINY, *flags], capsys)
    assert message in error and error.count("\n") == 1
    assert not os.path.exists("runs")


# --- download_data.sh, against a server on 127.0.0.1 -----------------------------------------

SUMMER2WINTER_SIZE = 132_640_856


class ZipServer:
    """Serves {name: bytes} as /NAME.zip; a name in `cut_short` announces its full length but
    sends only half, like a dropped connection. Counts the requests."""

    def __init__(self, files, cut_short=()):
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                name = self.path.strip("/").removesuffix(".zip")
                if name not in files:
                    self.send_error(404)
                    return
                body = files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if name in cut_short else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        if self.httpd.socket.fileno() != -1:
            self.httpd.shutdown()
            self.httpd.server_close()


def dataset_zip(name, counts=(3, 2, 1, 1)):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for folder, count in zip(("trainA", "trainB", "testA", "testB"), counts):
            for i in range(count):
                image = io.BytesIO()
                Image.new("RGB", (8, 8), (i * 40, 90, 200)).save(image, "JPEG")
                archive.writestr(f"{name}/{folder}/{i}.jpg", image.getvalue())
    return buffer.getvalue()


def run_download(tmp_path, server, *args):
    environment = {**os.environ, "CYCLEGAN_DATA_URL": server.url}
    return subprocess.run(["bash", os.path.join(HERE, "download_data.sh"), *args], cwd=tmp_path,
                          env=environment, capture_output=True, text=True, timeout=120)


def leftovers(tmp_path):
    """Everything in datasets/ apart from complete datasets: temporary folders, zips."""
    folder = tmp_path / "datasets"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def zip_server():
    servers = []

    def start(files, cut_short=()):
        servers.append(ZipServer(files, cut_short))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def test_download_succeeds_then_second_run_does_nothing(tmp_path, zip_server):
    server = zip_server({"horse2zebra": dataset_zip("horse2zebra")})
    result = run_download(tmp_path, server, "horse2zebra")
    assert result.returncode == 0, result.stderr
    assert "trainA: 3 images" in result.stdout and "testB: 1 images" in result.stdout
    assert sorted(os.listdir(tmp_path / "datasets/horse2zebra/trainA")) == ["0.jpg", "1.jpg", "2.jpg"]
    assert leftovers(tmp_path) == ["horse2zebra"]
    args = tiny_args(data=str(tmp_path / "datasets/horse2zebra"))
    assert len(cyclegan.load_dataset(args)[0]) == 3  # the loader reads what the script unpacked
    again = run_download(tmp_path, server, "horse2zebra")
    assert again.returncode == 0 and "already there, nothing to do" in again.stdout
    assert server.requests == 1


@pytest.mark.parametrize("case, message", [
    ("missing", "download of"), ("cut_short", "download of"), ("half_zip", "not a valid zip"),
    ("corrupt", "not a valid zip"), ("no_server", "download of")])
def test_failed_downloads_leave_nothing_behind(tmp_path, zip_server, case, message):
    good = dataset_zip("apple2orange")
    files = {"cut_short": good, "half_zip": good[: len(good) // 2],
             "corrupt": bytes(range(256)) * 20}
    server = zip_server({"apple2orange": files[case]} if case in files else {},
                        cut_short=("apple2orange",) if case == "cut_short" else ())
    if case == "no_server":  # as with no network: nothing listens there any more
        server.close()
    result = run_download(tmp_path, server, "apple2orange")
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert leftovers(tmp_path) == []


def test_summer2winter_must_match_its_size_and_checksum(tmp_path, zip_server):
    wrong_size = dataset_zip("summer2winter_yosemite")
    server = zip_server({"summer2winter_yosemite": wrong_size})
    result = run_download(tmp_path, server, "summer2winter")  # the short name works too
    assert result.returncode != 0 and f"expected {SUMMER2WINTER_SIZE}" in result.stderr
    assert leftovers(tmp_path) == []
    # a valid zip of exactly the right size, but not the real one: the SHA-256 catches it
    right_size = padded_zip("summer2winter_yosemite", SUMMER2WINTER_SIZE)
    server = zip_server({"summer2winter_yosemite": right_size})
    result = run_download(tmp_path, server)  # and it is the default
    assert result.returncode != 0 and "SHA-256" in result.stderr and "expected 167fe17" in result.stderr
    assert leftovers(tmp_path) == []


def padded_zip(name, target):
    """A valid dataset zip of exactly `target` bytes (a stored file of zeros fills it up)."""
    padding = target - 400
    for _ in range(3):  # the zip's own headers take a few hundred bytes: adjust and write again
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(f"{name}/trainA/0.jpg", b"not really an image")
            archive.writestr(f"{name}/padding.bin", b"\0" * padding)
        padding += target - len(buffer.getvalue())
    assert len(buffer.getvalue()) == target
    return buffer.getvalue()


def test_unknown_dataset_lists_the_valid_names(tmp_path, zip_server):
    result = run_download(tmp_path, zip_server({}), "summer2autumn")
    assert result.returncode != 0
    assert "unknown dataset 'summer2autumn'" in result.stderr and "horse2zebra" in result.stderr
    assert leftovers(tmp_path) == []


# --- it learns, and what it learned can be used -----------------------------------------------

# A short run on the demo landscapes: 400 iterations at 32px with small networks. The learning
# rate is raised from 2e-4 to 5e-4 because the run is 400 iterations long, not 246,000.
DEMO_RUN = ["--data", "demo", "--image-size", "32", "--ngf", "16", "--ndf", "16", "--n-blocks", "2",
            "--epochs", "1", "--decay-epochs", "1", "--lr", "5e-4", "--sample-every", "1000"]


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_cyclegan_learns_the_demo_translation(tmp_path, capsys, monkeypatch, precision):
    """G(x) must come close to the true winter twin of x, which no unpaired image showed it.
    Doing nothing scores ~0.64; a run that ignores the content (for example without the cycle
    loss, --lambda-cycle 0) scores ~0.26-0.31, failing the 0.35 x identity bar below."""
    monkeypatch.chdir(tmp_path)
    model = cyclegan.main([*DEMO_RUN, "--precision", precision])
    printed = capsys.readouterr().out
    chosen = "bf16" if precision == "auto" and cyclegan.cpu_has_native_bf16() else "fp32"
    assert f"precision {chosen}" in printed
    errors = cyclegan.demo_translation_errors(model, 32, cyclegan.Precision(chosen, torch.device("cpu")))
    print(precision, errors)
    assert errors["identity"] > 0.6
    assert errors["XtoY"] < 0.35 * errors["identity"], errors
    assert errors["YtoX"] < 0.35 * errors["identity"], errors


def test_translate_keeps_each_image_size(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "data")
    run_main(["--data", "data", *TINY, "--max-iters", "1"], capsys)
    write_image("photos/odd.jpg", size=(301, 217))
    write_image("photos/more/a.png", "RGBA", size=(64, 48))
    write_image("photos/more/b.png", "L", size=(64, 48))
    printed = run_main(["--data", "data", "--translate", "photos/odd.jpg", "photos/more",
                        "--direction", "YtoX", "--out", "translated"], capsys).out
    assert "done: translated 3 images YtoX with runs/data/checkpoint.pt" in printed
    assert Image.open("translated/odd_YtoX.png").size == (301, 217)
    assert Image.open("translated/a_YtoX.png").size == (64, 48)
    assert Image.open("translated/b_YtoX.png").mode == "RGB"
    # the output is the generator's, not a copy of the input
    state = cyclegan.load_checkpoint("runs/data/checkpoint.pt")
    model = cyclegan.CycleGAN(4, 4, 1)
    model.load_state_dict(state["model"])
    image = cyclegan.load_image("photos/more/a.png").float()[None] / 127.5 - 1
    with torch.no_grad(), cyclegan.precision_for("auto", torch.device("cpu")).autocast():
        expected = (cyclegan.translate_batch(model.G_YtoX, image).float()[0] + 1) * 127.5
    written = TF.pil_to_tensor(Image.open("translated/a_YtoX.png"))
    assert (written.float() - expected).abs().max() <= 1.01
    error = fails_with(["--translate", "photos", "--checkpoint", "nowhere.pt"], capsys)
    assert "no checkpoint at nowhere.pt" in error
    write_image("photos/a.jpg")  # a second "a": a_YtoX.png would be written twice
    error = fails_with(["--data", "data", "--translate", "photos"], capsys)
    assert "two inputs have the same name" in error


def test_pasted_into_a_jupyter_kernel(tmp_path):
    """As a Colab user does it: the whole file in one cell, then training and translating."""
    if not importable("nbclient") or not importable("ipykernel"):
        pytest.skip("nbclient and ipykernel are not installed (CI installs them)")
    import nbformat
    from nbclient import NotebookClient
    source = open(os.path.join(HERE, "cyclegan.py")).read()
    write_image(str(tmp_path / "photo.jpg"), size=(50, 38))
    cells = [source,
             'model = main(["--data", "demo", "--image-size", "32", "--ngf", "4", "--ndf", "4", '
             '"--n-blocks", "1", "--max-iters", "3"])',
             'main(["--data", "demo", "--translate", "photo.jpg"])']
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = ["".join(o.get("text", "") for o in cell.outputs) for cell in notebook.cells]
    assert 'main(["--data", "summer2winter"])' in outputs[0] and "done:" not in outputs[0]
    assert outputs[1].strip().splitlines()[-1].startswith("done: 3 iterations")
    assert "translated 1 images XtoY" in outputs[2]
    assert Image.open(tmp_path / "translated" / "photo_XtoY.png").size == (50, 38)


def test_ci_runs_the_readme_test_command():
    readme = open(os.path.join(HERE, "README.md")).read()
    ci = open(os.path.join(HERE, ".ci", "run")).read()
    command = readme.split("Run the tests")[1].split("\n\n")[1].strip()
    assert command.endswith("python -m pytest -q") and command in ci.splitlines()
