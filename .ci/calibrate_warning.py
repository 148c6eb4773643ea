"""Calibrates the not-learning warning (cyclegan.py, CYCLE_WARNING_RATIO) on real photos, and
prints its margins. Not a test: run it by hand, on an idle machine.

    apt-get download mate-backgrounds && dpkg -x mate-backgrounds_*.deb mate
    python .ci/calibrate_warning.py mate/usr/share/backgrounds/mate/nature [--tasks ...]

Each task is a folder dataset made from the photos (Debian's mate-backgrounds has 12 nature
photos): X holds random square crops, Y other random crops passed through a fixed filter, both
at 72px for 64px training crops, with the default networks, as a new user would try it. The
test images are crops of their own, so each has its true answer: the same crop through the
filter. For each task the script trains `cyclegan.py` with a sample grid every 50 iterations and
prints, at each grid, the larger of the two cycle error ratios that the warning reads (F(G(x))'s
error on the grid's test images as a share of X's average image's error, and the same for y),
and at the end G(x)'s mean |error| against the true answers on 64 test crops, beside doing nothing
(G(x) = x) and the average target image. A task whose G(x) ends closer to the true answers than
doing nothing has learned something; one that ends at or above the average image has not. The
demo (seeds 0-7, a grid every 25 of its 400 iterations) runs last, with the same figures.

Takes about 20 minutes on a 2-core CPU with bf16 (four tasks of 480 iterations at about 0.47 s
each, then the demo). What it printed on one (2026-12-04, AVX512-BF16, so bf16; the larger of the
two ratios at each grid: every 50 iterations from 50 to 450, and the run's end at 480):

    cast:    1.26 1.14 1.13 1.09 1.09 1.03 1.09 1.04 1.05 1.03
    cartoon: 1.28 1.14 1.12 1.09 1.09 1.03 1.07 1.03 1.06 1.09
    grade:   1.83 1.34 1.22 1.28 1.23 1.02 1.07 1.21 1.24 1.10
    blur:    1.24 1.10 1.11 1.09 1.08 1.02 1.07 1.02 1.03 1.07
    demo, seeds 0-7 (every 25, 25 to 400): up to 1.32 at iterations 25-75, at most 0.93 from 100

and G(x) against the true answers (doing nothing; the average target image), in /255: cast 48.0
(25.7; 52.0), cartoon 56.9 (40.5; 61.7), grade 44.4 (23.6; 42.2), blur 60.9 (4.6; 57.7). None of
the four learned: each G(x) ended farther from the true answers than doing nothing, and near or
beyond the average target image.

The same tasks on crops of one photo alone (a folder holding only GreenMeadow.jpg, `--tasks cast
blur --demo-seeds`; that run recorded grids from iteration 100 only, every 50 to 450, then 480):

    cast:    1.17 0.99 0.80 0.82 0.73 0.83 0.67 0.74 0.82   G(x) 14.7 (24.4; 21.8)
    blur:    1.19 1.01 0.82 0.82 0.81 0.89 0.83 0.73 0.70   G(x) 11.8 (7.6; 17.9)

Both learned: the cast's G(x) ended closer to the true answers than doing nothing, the blur's
closer than the average target image, and both cycles came back (below 1 from iteration 150 or
200 on). The crops of all twelve photos differ far more in colour than those of one photo; we
have not measured whether that is why the tasks on them failed.
"""
import argparse
import contextlib
import csv
import io
import os
import random
import sys
import tempfile

from PIL import Image, ImageFilter, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

import cyclegan  # noqa: E402


def warm_cast(image):
    """R x 1.10 + 30, G + 8, B x 0.75 - 10 (the warm cast of issue 32)."""
    red, green, blue = image.split()
    return Image.merge("RGB", (red.point(lambda v: v * 1.10 + 30), green.point(lambda v: v + 8),
                               blue.point(lambda v: v * 0.75 - 10)))


def winter_grade(image):
    """A cold, washed-out colour grade: each channel through its own curve."""
    red, green, blue = image.split()
    return Image.merge("RGB", (red.point(lambda v: 40 + 0.6 * v),
                               green.point(lambda v: 50 + 0.7 * v),
                               blue.point(lambda v: 255 * (v / 255) ** 0.6)))


def cartoon(image):
    """Median 5, posterized to 2 bits, black edges."""
    flat = ImageOps.posterize(image.filter(ImageFilter.MedianFilter(5)), 2)
    edges = ImageOps.grayscale(image).filter(ImageFilter.FIND_EDGES).point(
        lambda v: 255 if v > 40 else 0)
    return Image.composite(Image.new("RGB", image.size), flat, edges)


def blur(image):
    return image.filter(ImageFilter.GaussianBlur(1.5))


# name -> (the filter, crops per training domain, the schedule's epochs (constant, decaying))
TASKS = {"cast": (warm_cast, 160, (3, 3)), "cartoon": (cartoon, 160, (3, 3)),
         "grade": (winter_grade, 400, (2, 3)), "blur": (blur, 160, (3, 3))}


def random_crop(photo, rng, load_size):
    """A square of a random side (a fifth to half of the photo's height) -> load_size px."""
    side = rng.randint(photo.height // 5, photo.height // 2)
    left = rng.randint(0, photo.width - side)
    top = rng.randint(0, photo.height - side)
    return photo.crop((left, top, left + side, top + side)).resize((load_size, load_size),
                                                                   Image.BICUBIC)


def make_task(photos, task_filter, count, folder, rng, load_size):
    """trainA (crops), trainB (other crops, filtered), testA (4 crops) and testB (4 filtered);
    -> 64 more test crops and their true answers, as uint8 tensors."""
    for name, number, filtered in (("trainA", count, False), ("trainB", count, True),
                                   ("testA", 4, False), ("testB", 4, True)):
        os.makedirs(os.path.join(folder, name))
        for index in range(number):
            crop = random_crop(rng.choice(photos), rng, load_size)
            (task_filter(crop) if filtered else crop).save(f"{folder}/{name}/{index:04d}.png")
    crops = [random_crop(rng.choice(photos), rng, load_size) for _ in range(64)]
    to_tensor = cyclegan.TF.pil_to_tensor
    x = torch.stack([to_tensor(crop) for crop in crops])
    y = torch.stack([to_tensor(task_filter(crop)) for crop in crops])
    return x, y


def flat_colours(folder, rng, count=40):
    """Each image one flat colour (36px): X random colours, Y random colours warm-cast. Instance
    norm leaves a generator nothing to see in a flat image, so it must ignore its input."""
    def flat():
        return Image.new("RGB", (36, 36), tuple(rng.randrange(256) for _ in range(3)))
    for name, number, filtered in (("trainA", count, False), ("trainB", count, True),
                                   ("testA", 4, False), ("testB", 4, True)):
        os.makedirs(os.path.join(folder, name))
        for index in range(number):
            image = flat()
            (warm_cast(image) if filtered else image).save(f"{folder}/{name}/{index:04d}.png")


def recorded_run(flags):
    """cyclegan.main(flags) -> ([(iteration, cycle_ratio) of every losses.csv row], model,
    the warning line or None)."""
    out = flags[flags.index("--out") + 1]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        model = cyclegan.main(flags)
    with open(os.path.join(out, "losses.csv")) as f:
        rows = list(csv.DictReader(f))
    warning = [line for line in printed.getvalue().splitlines() if line.startswith("warning:")]
    history = [(int(row["iteration"]), float(row["cycle_ratio"])) for row in rows]
    return history, model, (warning or [None])[0]


def known_answer_errors(model, x, y, size):
    """Mean |G(x) - true y| on the test crops, doing nothing's, and the median target's."""
    x = cyclegan.to_model_range(cyclegan.TF.center_crop(x, size))
    y = cyclegan.to_model_range(cyclegan.TF.center_crop(y, size))
    with torch.no_grad():
        fake = model.G_XtoY(x)
    return [(value * 127.5).item() for value in ((fake - y).abs().mean(), (x - y).abs().mean(),
                                                 (y.median(0).values - y).abs().mean())]


def closest_streak(history, every):
    """The rule read at lines every `every` iterations -> the lowest ratio of the first run of
    lines above the limit that spans CYCLE_WARNING_SPAN (the warning's margin: this less the
    limit), or, where none does, the highest ratio that some such span of lines stays above
    (the margin to a warning: the limit less this)."""
    lines = [(i, r) for i, r in history if i % every == 0 and i >= cyclegan.CYCLE_WARNING_FROM]
    closest = 0.0
    for first, (start, _) in enumerate(lines):
        span = [r for i, r in lines[first:] if i - start <= cyclegan.CYCLE_WARNING_SPAN]
        if lines[-1][0] - start >= cyclegan.CYCLE_WARNING_SPAN:
            if min(span) > cyclegan.CYCLE_WARNING_RATIO:
                return f"warns at {start + cyclegan.CYCLE_WARNING_SPAN}, lowest {min(span):.2f}"
            closest = max(closest, min(span))
    return f"no warning, closest {closest:.2f}"


def show(name, history, warning, errors=None):
    ratios = " ".join(f"{iteration}:{ratio:.2f}" for iteration, ratio in history)
    print(f"{name}: cycle_ratio at each row: {ratios}", flush=True)
    print(f"{name}: warning: {'none' if warning is None else warning[:60]}", flush=True)
    every = history[1][0]
    print(f"{name}: the rule at lines every {every}: {closest_streak(history, every)}; every 100: "
          f"{closest_streak(history, 100)}", flush=True)
    if errors:
        print(f"{name}: G(x) vs true y {errors[0]:.1f}/255, doing nothing {errors[1]:.1f}, "
              f"median target {errors[2]:.1f}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("photos")
    parser.add_argument("--tasks", nargs="*", default=["cast", "cartoon", "grade", "blur"])
    parser.add_argument("--one-photo", default="GreenMeadow.jpg",
                        help="the photo of the one-photo tasks (cast, blur); '' for none")
    parser.add_argument("--size-128", default="cast", help="a task also run at 128px; '' for none")
    parser.add_argument("--max-iters", type=int, default=480)
    parser.add_argument("--demo-seeds", type=int, nargs="*", default=list(range(8)))
    parser.add_argument("--no-flat", action="store_true")
    options = parser.parse_args()
    names = sorted(os.listdir(options.photos))
    photos = {name: Image.open(os.path.join(options.photos, name)).convert("RGB")
              for name in names}
    runs = [(name, list(photos.values()), 64) for name in options.tasks]
    if options.one_photo:
        runs += [(name, [photos[options.one_photo]], 64) for name in ("cast", "blur")]
    if options.size_128:
        runs.append((options.size_128, list(photos.values()), 128))
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        if not options.no_flat:
            flat_colours("flat", random.Random(0))
            history, _, warning = recorded_run(
                ["--data", "flat", "--image-size", "32", "--ngf", "16", "--ndf", "16",
                 "--n-blocks", "2", "--lr", "1e-3", "--epochs", "5", "--decay-epochs", "5",
                 "--log-every", "25", "--out", "run_flat"])
            show("flat colours (40 + 40, 32px, 400 iterations)", history, warning)
        for number, (name, chosen, size) in enumerate(runs):
            task_filter, count, (epochs, decay) = TASKS[name]
            load = round(size * 72 / 64)
            data = f"data_{number}"
            x, y = make_task(chosen, task_filter, count, data, random.Random(0), load)
            flags = ["--data", data, "--image-size", str(size), "--epochs", str(epochs),
                     "--decay-epochs", str(decay), "--log-every", "25",
                     "--max-iters", str(options.max_iters), "--out", f"run_{number}"]
            history, model, warning = recorded_run(flags)
            label = (f"{name} at {size}px on {len(chosen)} photo{'s' * (len(chosen) > 1)} "
                     f"({count} + {count} crops, {(epochs + decay) * count} iterations in the "
                     f"schedule)")
            show(label, history, warning, known_answer_errors(model.cpu(), x, y, size))
        for seed in options.demo_seeds:
            history, model, warning = recorded_run(["--data", "demo", "--seed", str(seed),
                                                    "--out", f"demo_{seed}"])
            errors = cyclegan.demo_translation_errors(
                model, 32, cyclegan.Precision("auto", torch.device("cpu")))
            show(f"demo, seed {seed}", history, warning)
            print(f"demo, seed {seed}: G(x) {errors['XtoY'] / errors['median_XtoY']:.2f}x, "
                  f"F(y) {errors['YtoX'] / errors['median_YtoX']:.2f}x the median image's error "
                  f"({errors['XtoY']:.3f} / {errors['YtoX']:.3f})", flush=True)


if __name__ == "__main__":
    main()
