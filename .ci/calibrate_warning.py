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


def random_crop(photo, rng, load_size=72):
    """A square of a random side (a fifth to half of the photo's height) -> load_size px."""
    side = rng.randint(photo.height // 5, photo.height // 2)
    left = rng.randint(0, photo.width - side)
    top = rng.randint(0, photo.height - side)
    return photo.crop((left, top, left + side, top + side)).resize((load_size, load_size),
                                                                   Image.BICUBIC)


def make_task(photos, task_filter, count, folder, rng):
    """trainA (crops), trainB (other crops, filtered), testA (4 crops) and testB (4 filtered);
    -> 64 more test crops and their true answers, as uint8 tensors."""
    for name, number, filtered in (("trainA", count, False), ("trainB", count, True),
                                   ("testA", 4, False), ("testB", 4, True)):
        os.makedirs(os.path.join(folder, name))
        for index in range(number):
            crop = random_crop(rng.choice(photos), rng)
            (task_filter(crop) if filtered else crop).save(f"{folder}/{name}/{index:04d}.png")
    crops = [random_crop(rng.choice(photos), rng) for _ in range(64)]
    to_tensor = cyclegan.TF.pil_to_tensor
    x = torch.stack([to_tensor(crop) for crop in crops])
    y = torch.stack([to_tensor(task_filter(crop)) for crop in crops])
    return x, y


def recorded_run(flags):
    """cyclegan.main(flags), recording the larger of each check's two ratios -> ([ratio], model)."""
    ratios = []
    real = cyclegan.cycle_error_ratio

    def recording(images, back, average):
        ratios.append(real(images, back, average))
        return ratios[-1]
    saved = (cyclegan.CYCLE_WARNING_FROM, cyclegan.CYCLE_WARNING_CHECKS)
    cyclegan.cycle_error_ratio = recording
    cyclegan.CYCLE_WARNING_FROM = 0  # every grid's ratio, also those the warning does not count,
    cyclegan.CYCLE_WARNING_CHECKS = 10 ** 9  # and no warning, after which the checks would end
    try:
        model = cyclegan.main(flags)
    finally:
        cyclegan.cycle_error_ratio = real
        cyclegan.CYCLE_WARNING_FROM = saved[0]
        cyclegan.CYCLE_WARNING_CHECKS = saved[1]
    return [max(ratios[i], ratios[i + 1]) for i in range(0, len(ratios), 2)], model


def known_answer_errors(model, x, y, size=64):
    """Mean |G(x) - true y| on the test crops, doing nothing's, and the average target's."""
    x = cyclegan.to_model_range(cyclegan.TF.center_crop(x, size))
    y = cyclegan.to_model_range(cyclegan.TF.center_crop(y, size))
    with torch.no_grad():
        fake = model.G_XtoY(x)
    return [(value * 127.5).item() for value in ((fake - y).abs().mean(), (x - y).abs().mean(),
                                                 (y.mean(0) - y).abs().mean())]


def show(name, every, history, errors=None):
    ratios = " ".join(f"{ratio:.2f}" for ratio in history)
    print(f"{name}: ratio at each grid (every {every}): {ratios}", flush=True)
    if errors:
        print(f"{name}: G(x) vs true y {errors[0]:.1f}/255, doing nothing {errors[1]:.1f}, "
              f"average target {errors[2]:.1f}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("photos")
    parser.add_argument("--tasks", nargs="*", default=["cast", "cartoon", "grade", "blur"])
    parser.add_argument("--max-iters", type=int, default=480)
    parser.add_argument("--demo-seeds", type=int, nargs="*", default=list(range(8)))
    options = parser.parse_args()
    photos = [Image.open(os.path.join(options.photos, name)).convert("RGB")
              for name in sorted(os.listdir(options.photos))]
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        for name in options.tasks:
            task_filter, count, (epochs, decay) = TASKS[name]
            x, y = make_task(photos, task_filter, count, f"data_{name}", random.Random(0))
            flags = ["--data", f"data_{name}", "--image-size", "64", "--epochs", str(epochs),
                     "--decay-epochs", str(decay), "--sample-every", "50", "--log-every", "100",
                     "--max-iters", str(options.max_iters)]
            history, model = recorded_run(flags)
            show(f"{name} ({count} + {count} crops, {(epochs + decay) * count} iterations in the "
                 f"schedule)", 50, history, known_answer_errors(model.cpu(), x, y))
        for seed in options.demo_seeds:
            history, _ = recorded_run(["--data", "demo", "--seed", str(seed), "--sample-every",
                                       "25", "--out", f"demo_{seed}"])
            show(f"demo, seed {seed}", 25, history)


if __name__ == "__main__":
    main()
