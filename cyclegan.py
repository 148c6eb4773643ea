"""CycleGAN in one file: unpaired image-to-image translation, to read and to train with.

Zhu, Park, Isola, Efros (2017), "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", https://arxiv.org/abs/1703.10593

What is learned. Two sets of photos that are *not* paired, say Yosemite in summer (domain X) and in
winter (domain Y). CycleGAN trains two generators, G_XtoY ("G" in the paper) and G_YtoX ("F"), and
two discriminators: D_Y tells real winter photos from G_XtoY's fakes, D_X does the same for summer.
Fooling a discriminator alone would let G map every summer photo to *some* winter photo; the cycle
loss asks that translating there and back returns the input, F(G(x)) ~ x and G(F(y)) ~ y, so G has
to keep the content of x and change only its season.

The full objective, with least-squares adversarial losses (paper section 4, "LSGAN"):

    L_GAN(G, D_Y)  = E_y[(D_Y(y) - 1)^2] + E_x[D_Y(G(x))^2]                (D_Y minimises this)
    G minimises      E_x[(D_Y(G(x)) - 1)^2]                                (and F likewise)
    L_cyc(G, F)    = E_x[||F(G(x)) - x||_1] + E_y[||G(F(y)) - y||_1]       (paper, eq. 2)
    L_identity     = E_y[||G(y) - y||_1] + E_x[||F(x) - x||_1]             (paper, section 5.2)
    L(G, F, D_X, D_Y) = L_GAN(G, D_Y) + L_GAN(F, D_X)
                        + lambda_cycle * L_cyc + lambda_cycle * lambda_identity * L_identity

How to run it.
    bash download_data.sh summer2winter_yosemite       # 126 MB into datasets/
    python cyclegan.py --data summer2winter             # train (a GPU is found by itself)
    python cyclegan.py --data demo --image-size 32 --ngf 16 --ndf 16 --n-blocks 2 --epochs 1 \\
        --decay-epochs 1 --lr 5e-4                      # a toy task: learns in a minute on a CPU
    python cyclegan.py --translate photo.jpg --direction XtoY    # use a trained model
In Colab or Jupyter, paste this whole file into one cell and run it: it defines everything and
prints how to start; then call main(["--data", "summer2winter"]) from the next cell.
"""
import argparse
import csv
import math
import os
import signal
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn as nn
import torch.nn.functional as F_nn  # "F" is the paper's name for the Y->X generator
import torchvision.transforms.functional as TF
import torchvision.utils as vutils
from PIL import Image, ImageDraw

# --- 1. Settings ------------------------------------------------------------------------------
# Every default comes from the paper (section 4 and appendix 7) or its official PyTorch code. The
# command-line flags are the one place where they are set, each with a line of help.


def build_arg_parser():
    p = argparse.ArgumentParser(
        description="Train CycleGAN (Zhu et al. 2017) or translate images with a trained one.")
    a = p.add_argument
    # Data. The official code trains on 256px crops of images resized to 286px; the summer2winter
    # tutorials use 128px, and 143/128 keeps the official ratio. Random crops and horizontal flips
    # are the only augmentation.
    a("--data", default="summer2winter",
      help="'summer2winter' (datasets/summer2winter_yosemite), 'demo' (built in), or a folder path")
    a("--image-size", type=int, default=128, help="training crop size in pixels (multiple of 4)")
    a("--load-size", type=int, default=None,
      help="images are resized to this before the random crop (default: image-size * 143/128)")
    # Optimisation. Batch size 1 and Adam(2e-4, betas 0.5/0.999), as in the paper; the low beta1
    # (the default is 0.9) keeps the momentum short, which GANs need (Radford et al. 2015).
    # 100 epochs at the full rate, then 100 in which it falls linearly towards zero.
    a("--batch-size", type=int, default=1, help="images per step; the paper uses 1")
    a("--epochs", type=int, default=100, help="epochs at the constant learning rate")
    a("--decay-epochs", type=int, default=100, help="further epochs with the rate falling to zero")
    a("--max-iters", type=int, default=None, help="stop after this many iterations in total")
    a("--lr", type=float, default=2e-4, help="Adam learning rate (betas 0.5, 0.999)")
    # The objective's weights: lambda = 10 for the cycle loss, and 0.5 * lambda for the identity
    # loss, which the paper used for paintings<->photos. Whether its own summer2winter run used
    # it is not stated; the official code turns it on by default, and so do we.
    a("--lambda-cycle", type=float, default=10.0, help="weight of the cycle-consistency loss")
    a("--lambda-identity", type=float, default=0.5,
      help="identity loss weight, as a fraction of lambda-cycle (0 turns it off)")
    a("--pool-size", type=int, default=50, help="fakes remembered for the discriminators (0: none)")
    # Network sizes: 64 filters in the first layer of each network; 6 residual blocks for
    # 128px images (the paper uses 9 at 256px and above). Smaller values make quick CPU toys.
    a("--ngf", type=int, default=64, help="generator width: filters in its first layer")
    a("--ndf", type=int, default=64, help="discriminator width: filters in its first layer")
    a("--n-blocks", type=int, default=6, help="residual blocks in the generator (6 at 128px)")
    # Running: where results go, how often to report and save, and on what hardware.
    a("--seed", type=int, default=0, help="random seed: same seed, same run (on one device)")
    a("--out", default=None,
      help="run folder (default runs/<dataset>); with --translate, the output folder")
    a("--resume", action="store_true", help="continue the run saved in the run folder")
    a("--sample-every", type=int, default=200, help="write a sample grid every N iterations")
    a("--log-every", type=int, default=100, help="print progress and a losses.csv row every N")
    a("--checkpoint-every", type=int, default=1000,
      help="save checkpoint.pt every N iterations (and at every epoch end)")
    a("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    a("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
      help="auto: bf16 where the hardware has it, else fp16 on CUDA, else fp32")
    # Using a trained model instead of training one (section 8).
    a("--translate", nargs="+", metavar="PATH", help="translate these images or folders instead")
    a("--checkpoint", default=None, help="checkpoint for --translate (default: the run folder's)")
    a("--direction", default="XtoY", choices=["XtoY", "YtoX"],
      help="for --translate: XtoY (summer->winter) or YtoX")
    return p


class CycleGANError(Exception):
    """A problem the user can fix (bad flag, missing data, unreadable file): shown as one line."""


# These settings shape the networks and the training; a resumed run keeps the checkpoint's values.
RUN_SETTINGS = ("image_size", "load_size", "batch_size", "epochs", "decay_epochs", "lr",
                "lambda_cycle", "lambda_identity", "pool_size", "ngf", "ndf", "n_blocks", "seed")


def check_settings(args):
    """Reject impossible settings before any work starts, each with one line that says why."""
    if args.image_size % 4 or args.image_size < 24:
        raise CycleGANError(f"--image-size {args.image_size}: must be a multiple of 4 and at least "
                            "24 (the generator halves it twice, the discriminator needs 24)")
    if args.load_size is None:
        args.load_size = round(args.image_size * 143 / 128)
    if args.load_size < args.image_size:
        raise CycleGANError(f"--load-size {args.load_size} is smaller than --image-size "
                            f"{args.image_size}; the crop must fit inside the resized image")
    for flag in ("batch_size", "epochs", "ngf", "ndf", "sample_every", "log_every",
                 "checkpoint_every", "max_iters"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise CycleGANError(f"--{flag.replace('_', '-')} {value}: must be at least 1")
    for flag in ("decay_epochs", "pool_size", "n_blocks", "lambda_cycle", "lambda_identity"):
        if getattr(args, flag) < 0:
            raise CycleGANError(f"--{flag.replace('_', '-')} must not be negative")
    if not args.lr > 0:
        raise CycleGANError(f"--lr {args.lr}: must be positive")


# --- 2. Data ----------------------------------------------------------------------------------
# Two folders of unpaired images. Both are decoded once at start-up into uint8 tensors (the whole
# summer2winter set at 143px is ~135 MB), and each step crops and flips on tensors: no JPEG is
# decoded per step, and no DataLoader worker processes are needed, which keeps notebooks and
# Windows (where workers must pickle everything) out of trouble.

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")
# (train X, train Y, test X, test Y): the official layout, then Udacity's summer2winter layout.
LAYOUTS = (("trainA", "trainB", "testA", "testB"),
           ("summer", "winter", "test_summer", "test_winter"))
DATASET_ALIASES = {"summer2winter": "summer2winter_yosemite"}


def to_model_range(images):
    """uint8 pixels in [0, 255] -> floats in [-1, 1], the range of the generators' tanh output."""
    return images.float() / 127.5 - 1


def resolve_data_path(data):
    """'summer2winter' -> datasets/summer2winter_yosemite, as download_data.sh places it."""
    name = DATASET_ALIASES.get(data, data)
    if os.sep not in name and "/" not in name and not os.path.isdir(name):
        return os.path.join("datasets", name)
    return name


def list_images(folder):
    """All images below `folder` (Udacity's layout nests them one level deeper), sorted."""
    found = []
    for root, _, files in os.walk(folder):
        found += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def find_domain_folders(root, data_flag):
    """Returns the four folders (train X, train Y, test X, test Y) of a dataset in either layout."""
    for layout in LAYOUTS:
        folders = [os.path.join(root, name) for name in layout]
        if os.path.isdir(folders[0]) and os.path.isdir(folders[1]):
            return folders
    root = os.path.normpath(root)
    if os.path.dirname(root) == "datasets":  # a dataset name: it can be downloaded
        hint = f"to get it run: bash download_data.sh {os.path.basename(root)}"
    else:
        hint = "check the path"
    raise CycleGANError(
        f"no dataset for --data {data_flag}: looked in {root}/ for trainA/ trainB/ (testA/ testB/) "
        f"or summer/ winter/ (test_summer/ test_winter/); {hint}")


def load_image(path, load_size=None):
    """Any image file -> (3, load_size, load_size) uint8 tensor (no resize without a load_size),
    or an error that names the file."""
    # Photo collections hold more than RGB JPEGs: greyscale, RGBA, CMYK and palette images all
    # exist in the CycleGAN datasets, and every one must reach the network as 3 channels.
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so that a truncated file fails here, with its name
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                # 16-bit greyscale: PIL's convert("RGB") would clip it to white, so scale it down.
                img = img.convert("F")
                scale = 255.0 / 65535 if img.getextrema()[1] > 255 else 1.0
                img = img.point(lambda v: v * scale).convert("L")
            if img.mode in ("P", "PA", "LA"):
                img = img.convert("RGBA")  # the route PIL wants for palettes with transparency
            img = img.convert("RGB")
            if load_size:
                # Bicubic, as in the official code; smaller images are simply upscaled.
                img = img.resize((load_size, load_size), Image.BICUBIC)
            return TF.pil_to_tensor(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise CycleGANError(f"cannot read image {path}: {error}; delete or replace it") from None


def load_folder(folder, load_size, limit=None):
    """Decodes the images in `folder` once (in threads: PIL releases the GIL while decoding)."""
    paths = list_images(folder)[:limit]
    if not paths:
        raise CycleGANError(f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    # One preallocated uint8 tensor: 61 KB per image at 143px, a quarter of what fp32 would take.
    images = torch.empty(len(paths), 3, load_size, load_size, dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, image in enumerate(pool.map(lambda p: load_image(p, load_size), paths)):
            images[i] = image
            if (i + 1) % 500 == 0 or i + 1 == len(paths):
                print(f"\rdecoding {folder}: {i + 1}/{len(paths)}", end="", flush=True)
    print()
    return images


class UnpairedImages:
    """Both training domains in memory as uint8, and the random crop/flip that makes each batch.

    Pairing: an epoch walks domain X in a shuffled order and draws each Y at random, so x and y
    are never the same scene (they could not be: the photos are unpaired). Like the official code,
    an epoch has max(|X|, |Y|) images, wrapping around the smaller domain.
    """

    def __init__(self, images_X, images_Y, image_size, seed):
        self.images_X, self.images_Y = images_X, images_Y
        self.image_size, self.seed = image_size, seed
        # Crops and flips draw from a generator of their own, which the checkpoint saves: that
        # is what lets a resumed run see exactly the crops the uninterrupted run would have seen.
        self.augment_rng = torch.Generator().manual_seed(seed + 1)

    def __len__(self):
        return max(len(self.images_X), len(self.images_Y))

    def epoch_order(self, epoch):
        """-> (x_indices, y_indices), one pair per image of the epoch. The order is derived from
        (seed, epoch) alone, so a resumed run can rebuild the epoch it stopped in."""
        rng = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        x_indices = torch.randperm(len(self), generator=rng) % len(self.images_X)
        y_indices = torch.randint(len(self.images_Y), (len(self),), generator=rng)
        return x_indices, y_indices

    def crop_and_flip(self, image):
        # A random 128px window of the 143px image, mirrored half the time: the official code's
        # only augmentation, which gives a ~1,000-photo domain more variety to learn from.
        size, rng = self.image_size, self.augment_rng
        top, left = torch.randint(image.shape[-1] - size + 1, (2,), generator=rng).tolist()
        image = image[:, top:top + size, left:left + size]
        if torch.rand(1, generator=rng).item() < 0.5:
            image = image.flip(-1)
        return image

    def batch(self, x_indices, y_indices):
        """Cached uint8 (3, load, load) images -> a float batch (N, 3, size, size) in [-1, 1]."""
        x = torch.stack([self.crop_and_flip(self.images_X[i]) for i in x_indices.tolist()])
        y = torch.stack([self.crop_and_flip(self.images_Y[i]) for i in y_indices.tolist()])
        return to_model_range(x), to_model_range(y)


def center_crop(images, size):
    top = (images.shape[-1] - size) // 2
    return to_model_range(images[..., top:top + size, top:top + size])


# The demo dataset (--data demo): the same random landscape drawn in summer and in winter.
# Training sees the two seasons unpaired, like the real task, but evaluation can compare G(x)
# with the true winter twin of x, which no real unpaired dataset allows: that is how the tests
# check that CycleGAN learns. It needs no download and learns in minutes on a CPU. The scenes are
# drawn with a few tensor operations: a sky gradient, a sun, a wavy ridge of hills, and trees.
SEASON_COLOURS = {  # RGB in [0, 1]: sky top, sky bottom, ground, tree, sun
    "summer": ((0.25, 0.45, 0.85), (0.6, 0.8, 1.0), (0.3, 0.65, 0.2), (0.05, 0.35, 0.1),
               (1.0, 0.85, 0.2)),
    "winter": ((0.3, 0.38, 0.55), (0.62, 0.68, 0.78), (0.95, 0.95, 0.97), (0.15, 0.25, 0.25),
               (1.0, 0.97, 0.85)),
}


def render_demo_scene(scene, size, season):
    """One landscape (hills, sun, trees) chosen by the integer `scene`, as uint8 (3, size, size)."""
    rng = torch.Generator().manual_seed(scene)
    u = lambda low, high: low + (high - low) * torch.rand(1, generator=rng).item()  # noqa: E731
    sky_top, sky_bottom, ground, tree, sun = (torch.tensor(c).view(3, 1, 1)
                                              for c in SEASON_COLOURS[season])
    ys = torch.linspace(0, 1, size).view(size, 1).expand(size, size)
    xs = torch.linspace(0, 1, size).view(1, size).expand(size, size)
    image = sky_top + (sky_bottom - sky_top) * ys  # vertical sky gradient
    sun_x, sun_y, sun_r = u(0.1, 0.9), u(0.1, 0.35), u(0.06, 0.12)
    image = torch.where((xs - sun_x) ** 2 + (ys - sun_y) ** 2 < sun_r ** 2, sun, image)
    horizon = u(0.35, 0.75) + u(0.03, 0.15) * torch.sin(xs * u(4, 12) + u(0, 6.3))
    image = torch.where(ys > horizon, ground * (1 - 0.25 * (ys - horizon)), image)
    for _ in range(int(u(1, 4))):  # triangular trees standing on the ridge
        tree_x, width, height = u(0.05, 0.95), u(0.04, 0.08), u(0.15, 0.3)
        base = horizon[0, min(size - 1, int(tree_x * size))]
        inside = (ys < base + 0.03) & (ys > base - height) & \
                 ((xs - tree_x).abs() < width * (ys - base + height) / height)
        image = torch.where(inside, tree, image)
    return (image * 255).round().to(torch.uint8)


def demo_images(first_scene, count, size, season):
    return torch.stack([render_demo_scene(first_scene + i, size, season) for i in range(count)])


DEMO_TRAIN_SCENES = 200  # summer uses scenes 0..199, winter 200..399: no pair is ever shown
DEMO_TEST_FIRST = 10_000  # held-out scenes, drawn in both seasons for evaluation


def load_dataset(args):
    """-> (UnpairedImages for training, fixed test images X and Y for the sample grids).
    Train X/Y are the two domains' training folders; the test folders only feed the grids."""
    if args.data == "demo":
        images_X = demo_images(0, DEMO_TRAIN_SCENES, args.load_size, "summer")
        images_Y = demo_images(DEMO_TRAIN_SCENES, DEMO_TRAIN_SCENES, args.load_size, "winter")
        test_X = to_model_range(demo_images(DEMO_TEST_FIRST, 4, args.image_size, "summer"))
        test_Y = to_model_range(demo_images(DEMO_TEST_FIRST + 4, 4, args.image_size, "winter"))
    else:
        root = resolve_data_path(args.data)
        train_X, train_Y, test_X_dir, test_Y_dir = find_domain_folders(root, args.data)
        images_X = load_folder(train_X, args.load_size)
        images_Y = load_folder(train_Y, args.load_size)
        # Sample grids show the same few test images all run long (training images if no test set).
        pick = lambda folder, train: (load_folder(folder, args.load_size, limit=4)  # noqa: E731
                                      if list_images(folder) else train[:4])
        test_X = center_crop(pick(test_X_dir, images_X), args.image_size)
        test_Y = center_crop(pick(test_Y_dir, images_Y), args.image_size)
    return UnpairedImages(images_X, images_Y, args.image_size, args.seed), test_X, test_Y


# --- 3. Networks ------------------------------------------------------------------------------
# The generator is Johnson et al.'s (2016) ResNet: downsample, transform with residual blocks,
# upsample. Its layers in the paper's notation (appendix 7.2), at 128px with 6 blocks:
#     c7s1-64, d128, d256, R256 x 6, u128, u64, c7s1-3
# The discriminator is pix2pix's 70x70 PatchGAN: C64-C128-C256-C512, then a 1-channel conv.
# Two choices differ from some tutorials (Udacity's notebook among them):
# - Instance norm, not batch norm: with batch size 1 batch norm *is* instance norm at training
#   time but then uses running averages at test time; instance norm normalises each image by its
#   own statistics always, which suits style transfer, where contrast is per-image style.
# - Reflection padding, not zeros: zero padding lets the generator see the border and paint dark
#   frames around its outputs.


class ResidualBlock(nn.Module):
    """R256: two 3x3 convolutions whose output is *added* to the input, so each block only has to
    learn a change to the image features (easy to start near "change nothing")."""

    def __init__(self, channels):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels))

    def forward(self, x):
        return x + self.block(x)


class Generator(nn.Module):
    """(N, 3, H, W) image in [-1, 1] -> translated (N, 3, H, W) in [-1, 1]; H, W multiples of 4.

    Conv biases stay on, as in the official code, although the instance norm right after most
    convolutions subtracts the mean and so cancels them: keeping them keeps the official
    parameter count (7,837,699 with the defaults). The norms have no learned scale or shift."""

    def __init__(self, ngf=64, n_blocks=6):
        super().__init__()
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7),  # c7s1-64: (N, 64, H, W)
                  nn.InstanceNorm2d(ngf), nn.ReLU(inplace=True)]
        for mult in (1, 2):  # d128, d256: stride-2 convs, (N, 64, H, W) -> (N, 256, H/4, W/4)
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1),
                       nn.InstanceNorm2d(ngf * mult * 2), nn.ReLU(inplace=True)]
        layers += [ResidualBlock(ngf * 4) for _ in range(n_blocks)]  # R256 x 6, shape kept
        for mult in (4, 2):  # u128, u64: fractionally strided convs back to (N, 64, H, W)
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                          output_padding=1),
                       nn.InstanceNorm2d(ngf * mult // 2), nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]  # c7s1-3: (N, 3, H, W)
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class Discriminator(nn.Module):
    """70x70 PatchGAN: (N, 3, 128, 128) -> (N, 1, 14, 14), one real/fake score per overlapping
    70x70 patch rather than one per image. Judging texture locally needs fewer parameters
    (2,764,737) and works on any image size; the cycle loss looks after the global layout."""

    def __init__(self, ndf=64):
        super().__init__()
        layers = [nn.Conv2d(3, ndf, 4, stride=2, padding=1),  # C64, no norm: (N, 64, 64, 64)
                  nn.LeakyReLU(0.2, inplace=True)]
        channels = ndf
        for stride in (2, 2, 1):  # C128 (32x32), C256 (16x16), C512 with stride 1 (15x15)
            layers += [nn.Conv2d(channels, channels * 2, 4, stride=stride, padding=1),
                       nn.InstanceNorm2d(channels * 2), nn.LeakyReLU(0.2, inplace=True)]
            channels *= 2
        # No sigmoid: the least-squares loss wants raw scores. (N, 512, 15, 15) -> (N, 1, 14, 14)
        layers += [nn.Conv2d(channels, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def init_weights(module):
    """Weights ~ N(0, 0.02) and biases 0, as in the paper (section 4) and pix2pix before it."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)


class CycleGAN(nn.Module):
    """The four networks in one module, so one state_dict and one .to(device) cover them all.
    X is the first domain (summer), Y the second (winter); D_Y judges images *in* domain Y."""

    def __init__(self, ngf=64, ndf=64, n_blocks=6):
        super().__init__()
        self.G_XtoY = Generator(ngf, n_blocks)  # the paper's G
        self.G_YtoX = Generator(ngf, n_blocks)  # the paper's F
        self.D_X = Discriminator(ndf)
        self.D_Y = Discriminator(ndf)
        self.apply(init_weights)


# --- 4. Losses --------------------------------------------------------------------------------
# Least squares instead of the original GAN's log loss (LSGAN, Mao et al. 2017): a fake that is
# already classified correctly but far from the real data still gets a gradient, which the
# saturating log loss would not give, so training is steadier. The scores are cast to fp32 first,
# because a mean over many values is where low precision loses the most.


def real_mse_loss(d_out):
    # (D(x) - 1)^2: the discriminator's target for real images, and the generator's for its fakes
    return torch.mean((d_out.float() - 1) ** 2)


def fake_mse_loss(d_out):
    # D(G(x))^2: the discriminator's target for fake images is 0
    return torch.mean(d_out.float() ** 2)


def cycle_consistency_loss(real, reconstructed, lambda_weight):
    # lambda * ||F(G(x)) - x||_1 (paper eq. 2). L1, as in pix2pix: L2 blurs more.
    return lambda_weight * torch.mean(torch.abs(real.float() - reconstructed.float()))


def identity_loss(real, same, lambda_weight):
    # lambda * ||G(y) - y||_1: a winter photo given to the summer->winter generator should come
    # back unchanged. Without it the generators may shift the colours of whole images (the
    # paper's section 5.2 shows painting->photo turning daylight into sunset).
    return lambda_weight * torch.mean(torch.abs(real.float() - same.float()))


# --- 5. The history pool ----------------------------------------------------------------------
# The discriminators are shown fakes from a history of the last 50 generated images, not only the
# newest one (Shrivastava et al. 2017). A discriminator that only sees the current generator can
# chase it around, and the two oscillate; remembering older fakes damps that. Udacity's notebook
# skips the pool for brevity; we keep it because the paper (section 4) relies on it.


class ImagePool:
    """The last `pool_size` fakes of one domain, and its own random generator (both saved in the
    checkpoint, so that a resumed run draws the same old fakes)."""

    def __init__(self, pool_size, seed):
        self.pool_size = pool_size
        self.images = []  # each (1, 3, H, W), fp32, on the training device
        self.rng = torch.Generator().manual_seed(seed)

    def query(self, images):
        """Until the pool is full, return the new images and keep them. After that, each new
        image has a 1 in 2 chance to be swapped for a stored one, which it replaces."""
        if self.pool_size == 0:
            return images.detach()
        out = []
        for image in images.detach().float().split(1):
            if len(self.images) < self.pool_size:
                self.images.append(image)
                out.append(image)
            elif torch.rand(1, generator=self.rng).item() < 0.5:
                i = torch.randint(self.pool_size, (1,), generator=self.rng).item()
                out.append(self.images[i])
                self.images[i] = image
            else:
                out.append(image)
        return torch.cat(out)

    def state_dict(self):
        return {"images": [image.cpu() for image in self.images], "rng": self.rng.get_state()}

    def load_state_dict(self, state, device):
        self.images = [image.to(device) for image in state["images"]]
        self.rng.set_state(state["rng"])


# --- 6. One training step ---------------------------------------------------------------------
# One iteration, in the official code's order:
#   1. the generators take a step on the full objective, with the discriminators held fixed;
#   2. the discriminators take a step on real images and on fakes drawn from the history pool.
# Mixed precision: the networks can run under autocast in bf16 or fp16 (convolutions in 16 bits;
# weights, optimiser and losses stay fp32), 1.5x faster on this project's CPU, more on GPUs with
# tensor cores. fp16 has a narrow range, so its gradients are scaled up before backward and
# checked for overflow (the GradScaler); bf16 has fp32's range and needs no scaler.


class Precision:
    """How the networks compute: "fp32", or autocast to "bf16" or "fp16". Disabled (fp32), the
    autocast and the scaler are no-ops, so the training step has a single code path."""

    def __init__(self, name, device):
        self.name, self.device_type = name, device.type
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name)
        self.scaler = torch.amp.GradScaler("cuda" if device.type == "cuda" else "cpu",
                                           enabled=name == "fp16")

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype or torch.bfloat16,
                              enabled=self.dtype is not None)


def cpu_has_native_bf16():
    """True when the CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 is
    emulated and slower than fp32. Linux tells us in /proc/cpuinfo; elsewhere we assume not."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(requested, device_type, bf16_supported):
    """'auto' -> bf16 where the hardware has it; else fp16 (with a grad scaler) on CUDA; else fp32.
    A free Colab T4 has fp16 tensor cores but no bf16; Apple's MPS stays in fp32."""
    if requested != "auto":
        return requested
    if device_type == "cuda":
        return "bf16" if bf16_supported else "fp16"
    if device_type == "cpu" and bf16_supported:
        return "bf16"
    return "fp32"


def device_has_bf16(device):
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def precision_for(requested, device):
    """The Precision that --precision asks for on this device; training and translating share it."""
    return Precision(choose_precision(requested, device.type, device_has_bf16(device)), device)


LOSS_NAMES = ("D_X", "D_Y", "G_XtoY", "G_YtoX", "cycle_X", "cycle_Y", "idt_X", "idt_Y")


def generator_step(model, real_X, real_Y, opt_G, precision, args):
    """Updates both generators on the full objective, with the discriminators held fixed."""
    # Frozen, the discriminators still pass gradients through to the generators, but spend no
    # work on gradients for their own weights, which this step must not change anyway.
    model.D_X.requires_grad_(False)
    model.D_Y.requires_grad_(False)
    opt_G.zero_grad(set_to_none=True)
    with precision.autocast():
        fake_Y = model.G_XtoY(real_X)   # G(x)
        fake_X = model.G_YtoX(real_Y)   # F(y)
        # Each generator wants the other domain's discriminator to score its fakes as real (1).
        adv_XtoY = real_mse_loss(model.D_Y(fake_Y))
        adv_YtoX = real_mse_loss(model.D_X(fake_X))
        # L_cyc: there and back again should return the input (both directions, eq. 2).
        cycle_X = cycle_consistency_loss(real_X, model.G_YtoX(fake_Y), args.lambda_cycle)
        cycle_Y = cycle_consistency_loss(real_Y, model.G_XtoY(fake_X), args.lambda_cycle)
        if args.lambda_identity > 0:  # G(y) ~ y and F(x) ~ x, weighted 0.5 * lambda_cycle
            weight = args.lambda_cycle * args.lambda_identity
            idt_X = identity_loss(real_X, model.G_YtoX(real_X), weight)
            idt_Y = identity_loss(real_Y, model.G_XtoY(real_Y), weight)
        else:
            idt_X = idt_Y = torch.zeros((), device=real_X.device)
    # The total objective of eq. 3 (the weights are already inside the terms); one backward
    # pass sends its gradient into both generators.
    losses = torch.stack([adv_XtoY, adv_YtoX, cycle_X, cycle_Y, idt_X, idt_Y])
    precision.scaler.scale(losses.sum()).backward()
    precision.scaler.step(opt_G)
    model.D_X.requires_grad_(True)
    model.D_Y.requires_grad_(True)
    return fake_X, fake_Y, losses.detach()


def discriminator_step(model, real_X, real_Y, fake_X, fake_Y, pools, opt_D, precision):
    """Updates D_X and D_Y: real images towards 1, fakes from the history pool towards 0."""
    opt_D.zero_grad(set_to_none=True)
    # The pool returns detached images: this loss must not reach back into the generators.
    fake_X, fake_Y = pools[0].query(fake_X), pools[1].query(fake_Y)
    with precision.autocast():
        # Halved, as in the paper: it slows the discriminators relative to the generators.
        loss_D_X = 0.5 * (real_mse_loss(model.D_X(real_X)) + fake_mse_loss(model.D_X(fake_X)))
        loss_D_Y = 0.5 * (real_mse_loss(model.D_Y(real_Y)) + fake_mse_loss(model.D_Y(fake_Y)))
    precision.scaler.scale(loss_D_X + loss_D_Y).backward()
    precision.scaler.step(opt_D)
    precision.scaler.update()  # once per iteration: the next scale, from both steps' overflows
    return torch.stack([loss_D_X, loss_D_Y]).detach()


def train_step(model, real_X, real_Y, optimizers, pools, precision, args):
    """One iteration: generators first, then discriminators. Returns the LOSS_NAMES values."""
    fake_X, fake_Y, generator_losses = generator_step(model, real_X, real_Y, optimizers[0],
                                                      precision, args)
    discriminator_losses = discriminator_step(model, real_X, real_Y, fake_X, fake_Y, pools,
                                              optimizers[1], precision)
    return torch.cat([discriminator_losses, generator_losses])


# --- 7. The training loop ---------------------------------------------------------------------
# Adam (lr 2e-4, betas 0.5/0.999), one optimiser for both generators and one for both
# discriminators; 100 epochs at the full rate, then 100 epochs falling linearly towards zero.
# Everything that decides the future of a run lives in one checkpoint dict, so that --resume
# continues where it stopped, bit for bit on a CPU.


def choose_device(name):
    """'auto' takes the first of cuda, mps and cpu that this machine has."""
    count = {"cuda": torch.cuda.device_count(), "mps": int(torch.backends.mps.is_available()),
             "cpu": 1}
    if name == "auto":
        name = next(kind for kind in count if count[kind])
    kind, _, index = name.partition(":")
    if kind not in count or not (index or "0").isdigit():
        raise CycleGANError(f"--device {name}: unknown; use auto, cpu, cuda, cuda:N or mps")
    if int(index or 0) >= count[kind]:
        raise CycleGANError(f"--device {name}: this machine has no such device that torch can use")
    return torch.device(name)


def lr_factor(epoch, epochs, decay_epochs):
    """Multiplier of the base rate during `epoch` (from 0): 1 for the first `epochs`, then falling
    by 1/(decay_epochs + 1) per epoch, so the line would reach 0 the epoch after the last
    (the official code's rule)."""
    return 1.0 - max(0, epoch + 1 - epochs) / (decay_epochs + 1)


def default_run_folder(data):
    """runs/summer2winter_yosemite for --data summer2winter, runs/demo for the demo."""
    name = "demo" if data == "demo" else os.path.basename(os.path.normpath(resolve_data_path(data)))
    return os.path.join("runs", name)


def save_checkpoint(path, state):
    """Atomic save: a kill at any moment leaves either the old checkpoint or the new one whole."""
    # Write everything to a temporary file beside the checkpoint, force it onto the disk (fsync),
    # and only then rename it over the old one: a rename within one folder is atomic.
    temporary = path + ".tmp"
    with open(temporary, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def load_checkpoint(path):
    """checkpoint.pt -> its dict (on the CPU), or a one-line error naming the file."""
    if not os.path.isfile(path):
        raise CycleGANError(f"no checkpoint at {path}; train first, or pass --checkpoint FILE")
    try:
        # weights_only: a checkpoint from the internet cannot run code as it is loaded
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["settings"], state["model"]  # noqa: B018  (fails for files that are not ours)
        return state
    except Exception as error:  # torch raises many types for damaged files
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0]
        raise CycleGANError(f"cannot read checkpoint {path}: {reason[:150]} (a damaged file, or "
                            "not a cyclegan.py checkpoint)") from None


def apply_checkpoint_settings(args, settings, parser):
    """A resumed run continues with the settings it was started with. A flag given now that
    contradicts them is an error rather than something silently ignored."""
    for key in RUN_SETTINGS:
        given, saved = getattr(args, key), settings[key]
        if given != parser.get_default(key) and given != saved:
            raise CycleGANError(
                f"--{key.replace('_', '-')} {given} does not match the checkpoint's {saved}; "
                "drop the flag to resume, or start a new run with another --out")
        setattr(args, key, saved)


def save_sample_grid(model, test_X, test_Y, path, precision):
    """Rows: x, G(x), F(G(x)), y, F(y), G(F(y)) for fixed test images, labelled on the left.
    The same images every time, so that grids from different iterations can be compared: G(x)
    shows the translation, F(G(x)) how well the cycle brings x back."""
    with torch.no_grad(), precision.autocast():
        fake_Y = model.G_XtoY(test_X)
        fake_X = model.G_YtoX(test_Y)
        rows = [test_X, fake_Y, model.G_YtoX(fake_Y), test_Y, fake_X, model.G_XtoY(fake_X)]
    grid = vutils.make_grid(torch.cat(rows).float().cpu(), nrow=len(test_X), padding=2,
                            normalize=True, value_range=(-1, 1))
    picture = TF.to_pil_image(grid)
    labelled = Image.new("RGB", (picture.width + 64, picture.height), "white")
    labelled.paste(picture, (64, 0))
    draw, row_height = ImageDraw.Draw(labelled), picture.height / len(rows)
    for i, label in enumerate(["x", "G(x)", "F(G(x))", "y", "F(y)", "G(F(y))"]):
        draw.text((4, i * row_height + row_height / 2 - 5), label, fill="black")
    labelled.save(path)


def plot_losses(csv_path, png_path):
    """losses.csv -> losses.png, when matplotlib is installed (it is on Colab); else nothing."""
    try:
        # A bare Figure draws straight to a file: no pyplot, so a notebook's own plotting
        # backend is left as it was.
        from matplotlib.figure import Figure
    except ImportError:
        return
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    figure = Figure(figsize=(9, 4))
    ax = figure.subplots()
    for name in LOSS_NAMES:
        ax.plot([int(r["iteration"]) for r in rows], [float(r[name]) for r in rows], label=name)
    # Log scale: the weighted cycle losses start near 5, the adversarial ones below 1.
    ax.set(xlabel="iteration", ylabel="loss (weighted, as optimised)", yscale="log")
    ax.legend(ncol=4, fontsize="small")
    figure.savefig(png_path, dpi=80, bbox_inches="tight")


def peak_memory():
    """The most memory this process has held: GPU memory on CUDA, else the RAM (resident set)."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return f"{torch.cuda.max_memory_allocated() / 1e9:.2f} GB GPU"
    try:
        import resource  # Unix only
    except ImportError:
        return "unknown"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes (bytes on macOS)
    return f"{peak / (1e9 if sys.platform == 'darwin' else 1e6):.2f} GB RAM"


def build_training(args, device):
    """The four networks, one Adam for both generators and one for both discriminators, their
    learning-rate schedules, and the two history pools (fakes of X for D_X, of Y for D_Y)."""
    torch.manual_seed(args.seed)  # same seed, same initial weights
    model = CycleGAN(args.ngf, args.ndf, args.n_blocks).to(device)
    adam = lambda params: torch.optim.Adam(params, lr=args.lr, betas=(0.5, 0.999))  # noqa: E731
    optimizers = (adam([*model.G_XtoY.parameters(), *model.G_YtoX.parameters()]),
                  adam([*model.D_X.parameters(), *model.D_Y.parameters()]))
    schedule = lambda epoch: lr_factor(epoch, args.epochs, args.decay_epochs)  # noqa: E731
    schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, schedule) for opt in optimizers]
    pools = (ImagePool(args.pool_size, args.seed + 2), ImagePool(args.pool_size, args.seed + 3))
    return model, optimizers, schedulers, pools


class StopOnCtrlC:
    """Ctrl-C (or a notebook's stop button) only asks to stop: the iteration under way finishes,
    the run is saved, and the command to resume is printed. A second Ctrl-C stops at once."""

    def __enter__(self):
        self.requested = False
        try:
            self.previous_handler = signal.signal(signal.SIGINT, self.request)
        except ValueError:  # handlers can only be set from the main thread: leave Ctrl-C alone
            self.previous_handler = None
        return self

    def request(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt  # the checkpoint on disk stays whole: saves are atomic
        self.requested = True
        print("\nstopping after this iteration; Ctrl-C again to stop at once", flush=True)

    def __exit__(self, *exception):
        if self.previous_handler is not None:
            signal.signal(signal.SIGINT, self.previous_handler)


def train(args, parser):
    """Trains (or resumes) a run in the run folder. Returns the CycleGAN module."""
    device = choose_device(args.device)
    run_folder = args.out or default_run_folder(args.data)
    checkpoint_path = os.path.join(run_folder, "checkpoint.pt")
    checkpoint = None
    if args.resume:
        checkpoint = load_checkpoint(checkpoint_path)
        apply_checkpoint_settings(args, checkpoint["settings"], parser)
    elif os.path.exists(checkpoint_path):  # never overwrite someone's run by accident
        raise CycleGANError(f"{checkpoint_path} already exists: add --resume to continue that run, "
                            "or pass another --out for a new one")
    precision = precision_for(args.precision, device)
    print(f"device {device}, precision {precision.name}, run folder {run_folder}")
    # The inputs never change size, so cuDNN may time its kernels once and keep the fastest.
    torch.backends.cudnn.benchmark = True
    # The data is read before anything is written, so a bad dataset leaves no run folder behind.
    # On a GPU the uint8 images live there too: no copy from the host per step.
    data, test_X, test_Y = load_dataset(args)
    data.images_X, data.images_Y = data.images_X.to(device), data.images_Y.to(device)
    test_X, test_Y = test_X.to(device), test_Y.to(device)
    os.makedirs(os.path.join(run_folder, "samples"), exist_ok=True)

    model, optimizers, schedulers, pools = build_training(args, device)
    # Where the run stands: `batch_index` counts the batches done in the current epoch.
    epoch = batch_index = iteration = 0

    # The checkpoint holds everything that decides the rest of the run: the networks, Adam's
    # moments, the schedule, the pools' contents, the random generators, and the position in
    # the epoch (whose order is rebuilt from the seed). Restored, the run continues as if it had
    # never stopped: bit for bit on a CPU (a GPU's fastest kernels are not bitwise repeatable).
    stateful = {"model": model, "optimizer_G": optimizers[0], "optimizer_D": optimizers[1],
                "scheduler_G": schedulers[0], "scheduler_D": schedulers[1]}

    def checkpoint_state():
        return {**{name: part.state_dict() for name, part in stateful.items()},
                "settings": {**{k: getattr(args, k) for k in RUN_SETTINGS}, "data": args.data},
                "scaler": precision.scaler.state_dict(), "pools": [p.state_dict() for p in pools],
                "epoch": epoch, "batch_index": batch_index, "iteration": iteration,
                "rng": {"torch": torch.get_rng_state(), "augment": data.augment_rng.get_state()}}

    if checkpoint is not None:
        for name, part in stateful.items():
            part.load_state_dict(checkpoint[name])
        if checkpoint["scaler"] and precision.scaler.is_enabled():
            precision.scaler.load_state_dict(checkpoint["scaler"])
        for pool, state in zip(pools, checkpoint["pools"]):
            pool.load_state_dict(state, device)
        epoch, batch_index = checkpoint["epoch"], checkpoint["batch_index"]
        iteration = checkpoint["iteration"]
        torch.set_rng_state(checkpoint["rng"]["torch"])
        data.augment_rng.set_state(checkpoint["rng"]["augment"])
        print(f"resumed from {checkpoint_path} at iteration {iteration} (epoch {epoch + 1})")

    csv_path = os.path.join(run_folder, "losses.csv")
    if checkpoint is None:  # a resumed run appends to its losses.csv
        with open(csv_path, "w", newline="") as f:
            csv.writer(f).writerow(["iteration", "epoch", "lr", *LOSS_NAMES, "s_per_it"])
    batches_per_epoch = math.ceil(len(data) / args.batch_size)
    total_epochs = args.epochs + args.decay_epochs
    last_iteration = min(total_epochs * batches_per_epoch, args.max_iters or math.inf)
    print(f"{len(data.images_X)} images in X, {len(data.images_Y)} in Y: {batches_per_epoch} "
          f"iterations per epoch, {total_epochs} epochs, stopping at iteration {last_iteration}")

    # Loss values stay on the device and are summed there: reading one (.item()) would make the
    # CPU wait for the GPU at every step. They are read only to print them or before a save.
    loss_sum, losses_summed = torch.zeros(len(LOSS_NAMES), device=device), 0
    step_times, saved_at, start = [], iteration, time.perf_counter()

    def stop_if_not_finite():
        # A NaN would poison every later step: stop, and keep the last good checkpoint.
        if not torch.isfinite(loss_sum).all():
            raise CycleGANError(
                f"a loss became non-finite (NaN or inf) before iteration {iteration}; stopped "
                f"without saving, {checkpoint_path} keeps the last good state. Try a lower --lr "
                "or --precision fp32")

    def save():
        nonlocal saved_at
        stop_if_not_finite()
        save_checkpoint(checkpoint_path, checkpoint_state())
        saved_at = iteration

    # Epochs of batches until the schedule ends (or --max-iters); along the way, every so many
    # iterations: a progress line, a sample grid, a checkpoint. Every epoch end: a checkpoint.

    with StopOnCtrlC() as ctrl_c:
        while iteration < last_iteration and not ctrl_c.requested:
            x_order, y_order = data.epoch_order(epoch)
            while batch_index < batches_per_epoch and iteration < last_iteration:
                step_start = time.perf_counter()
                batch = slice(batch_index * args.batch_size, (batch_index + 1) * args.batch_size)
                real_X, real_Y = data.batch(x_order[batch], y_order[batch])
                loss_sum += train_step(model, real_X, real_Y, optimizers, pools, precision, args)
                losses_summed += 1
                batch_index, iteration = batch_index + 1, iteration + 1
                step_times.append(time.perf_counter() - step_start)
                if iteration % args.log_every == 0 or iteration == 1:
                    log_progress(csv_path, epoch, iteration, last_iteration,
                                 loss_sum / losses_summed, optimizers[0].param_groups[0]["lr"],
                                 step_times)
                    stop_if_not_finite()
                    loss_sum.zero_()
                    losses_summed = 0
                if iteration % args.sample_every == 0:
                    save_sample_grid(model, test_X, test_Y, os.path.join(
                        run_folder, "samples", f"iter_{iteration:07d}.png"), precision)
                if iteration % args.checkpoint_every == 0:
                    save()
                if ctrl_c.requested:
                    break
            if batch_index == batches_per_epoch:  # the epoch is complete: next learning rate
                for scheduler in schedulers:
                    scheduler.step()
                epoch, batch_index = epoch + 1, 0
                save()
        if saved_at != iteration:
            save()

    plot_losses(csv_path, os.path.join(run_folder, "losses.png"))
    if step_times:
        save_sample_grid(model, test_X, test_Y, os.path.join(run_folder, "samples", "last.png"),
                         precision)
    if args.data == "demo":
        print_demo_check(model, args.image_size, precision)
    if ctrl_c.requested:
        print(f"interrupted at iteration {iteration}, saved {checkpoint_path}; resume with:\n"
              f"  python cyclegan.py --data {args.data} --out {run_folder} --resume")
    # The first iterations are slower (memory allocation, kernel selection): the median after
    # them is the speed a long run will have.
    steady = step_times[5:] or step_times or [0.0]
    print(f"done: {len(step_times)} iterations in {time.perf_counter() - start:.1f} s, "
          f"{statistics.median(steady):.3f} s/it (median after the first 5), "
          f"peak memory {peak_memory()}")
    return model


def log_progress(csv_path, epoch, iteration, last_iteration, mean_losses, lr, step_times):
    """One progress line, and the same numbers as a row of losses.csv. The speed is the median of
    the last 50 iterations, which a slow sample or checkpoint save does not throw off."""
    losses = dict(zip(LOSS_NAMES, mean_losses.tolist()))
    seconds = statistics.median(step_times[-50:])
    eta = (last_iteration - iteration) * seconds
    eta_text = (f"{eta / 3600:.1f} h" if eta >= 3600 else
                f"{eta / 60:.0f} min" if eta >= 60 else f"{eta:.0f} s")
    print(f"epoch {epoch + 1} it {iteration}/{last_iteration} | "
          + " ".join(f"{name} {value:.3f}" for name, value in losses.items())
          + f" | {seconds:.3f} s/it, ETA {eta_text}", flush=True)
    with open(csv_path, "a", newline="") as f:
        csv.writer(f).writerow([iteration, epoch + 1, f"{lr:.6g}",
                                *(f"{value:.5f}" for value in losses.values()), f"{seconds:.4f}"])


# --- 8. Using the trained model ---------------------------------------------------------------
# The generators are fully convolutional, so a model trained on 128px crops translates photos of
# any size whose sides are multiples of 4: we pad other sizes by reflection and crop back.


def demo_translation_errors(model, size, precision, count=64):
    """Mean |G(x) - y| and |F(y) - x| (in [-1, 1] units) on held-out demo scenes whose other
    season we know, with two ways to cheat as baselines: returning the input unchanged, and
    returning the average image of the target season (right colours, no content)."""
    device = next(model.parameters()).device
    scenes = lambda first, season: to_model_range(  # noqa: E731
        demo_images(first, count, size, season).to(device))
    x, y = scenes(DEMO_TEST_FIRST + 100, "summer"), scenes(DEMO_TEST_FIRST + 100, "winter")
    mean_x = scenes(DEMO_TEST_FIRST + 200, "summer").mean(0)  # from other scenes
    mean_y = scenes(DEMO_TEST_FIRST + 200, "winter").mean(0)
    with torch.no_grad(), precision.autocast():
        fake_Y, fake_X = model.G_XtoY(x).float(), model.G_YtoX(y).float()
    error = lambda a, b: (a - b).abs().mean().item()  # noqa: E731
    return {"XtoY": error(fake_Y, y), "YtoX": error(fake_X, x), "identity": error(x, y),
            "average_XtoY": error(mean_y, y), "average_YtoX": error(mean_x, x)}


def print_demo_check(model, size, precision):
    errors = demo_translation_errors(model, size, precision)
    print("demo check, mean |error| on 64 held-out scenes: "
          f"G(x) vs true y {errors['XtoY']:.3f}, F(y) vs true x {errors['YtoX']:.3f}; "
          f"doing nothing {errors['identity']:.3f}, average target image "
          f"{errors['average_XtoY']:.3f} / {errors['average_YtoX']:.3f}")


def translate_batch(generator, images):
    """(N, 3, H, W) in [-1, 1], any H and W -> translated, same shape."""
    height, width = images.shape[-2:]
    padded = F_nn.pad(images, (0, -width % 4, 0, -height % 4), mode="reflect")
    return generator(padded)[..., :height, :width]


def translate(args):
    """--translate: each input image -> <out>/<stem>_XtoY.png (or _YtoX), at the input's size."""
    run_folder = default_run_folder(args.data)
    checkpoint_path = args.checkpoint or os.path.join(run_folder, "checkpoint.pt")
    checkpoint = load_checkpoint(checkpoint_path)
    settings, out_folder = checkpoint["settings"], args.out or "translated"
    paths = []
    for path in args.translate:  # files, and folders of images (searched recursively)
        if not os.path.exists(path):
            raise CycleGANError(f"--translate {path}: no such file or folder")
        paths += list_images(path) if os.path.isdir(path) else [path]
    if not paths:
        raise CycleGANError(f"--translate {' '.join(args.translate)}: no images found")
    stems = [os.path.splitext(os.path.basename(path))[0] for path in paths]
    if len(set(stems)) < len(stems):  # a.jpg and a.png would both become a_XtoY.png
        raise CycleGANError("two inputs have the same name apart from the extension or folder; "
                            "translate them into separate --out folders")
    device = choose_device(args.device)
    precision = precision_for(args.precision, device)
    model = CycleGAN(settings["ngf"], settings["ndf"], settings["n_blocks"])
    model.load_state_dict(checkpoint["model"])
    # eval() changes nothing for these networks (no dropout; instance norm keeps no running
    # statistics), but it states the intent.
    generator = getattr(model, "G_" + args.direction).to(device).eval()
    os.makedirs(out_folder, exist_ok=True)
    # Images are read as they are, with no resize; same-size images share a batch of up to 4.
    by_size = {}
    for path, stem in zip(paths, stems):
        try:
            with Image.open(path) as img:
                by_size.setdefault(img.size, []).append((path, stem))
        except OSError as error:
            raise CycleGANError(f"cannot read image {path}: {error}") from None
    for (width, height), group in by_size.items():
        for first in range(0, len(group), 4):
            chunk = group[first:first + 4]
            images = torch.stack([load_image(path) for path, _ in chunk])
            with torch.no_grad(), precision.autocast():
                out = translate_batch(generator, to_model_range(images.to(device)))
            for (path, stem), image in zip(chunk, out.float().cpu()):
                target = os.path.join(out_folder, f"{stem}_{args.direction}.png")
                TF.to_pil_image((image + 1) / 2).save(target)
                print(f"{path} -> {target}")
    print(f"done: translated {len(paths)} images {args.direction} with {checkpoint_path}")


# --- 9. Entry point ---------------------------------------------------------------------------
# From a shell, the file trains (or translates) at once. Pasted into a notebook cell, it only
# defines everything: a cell that silently starts hours of training is a trap, and the kernel's
# own command line (`-f kernel.json`) is not meant for us.


def in_notebook():
    """True inside a Jupyter kernel (Colab's included): it imports ipykernel before any cell."""
    return "ipykernel" in sys.modules or "google.colab" in sys.modules


def main(argv=None):
    """Command line: python cyclegan.py --data summer2winter. Notebook: main(["--data", "demo"])."""
    parser = build_arg_parser()
    if argv is None:
        argv = [] if in_notebook() else sys.argv[1:]  # a kernel's own arguments are not ours
    args = parser.parse_args(argv)
    try:
        if args.translate:
            return translate(args)
        check_settings(args)
        return train(args, parser)
    except CycleGANError as error:  # the user's to fix: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    if in_notebook():  # pasted into a Jupyter or Colab cell: define, but do not start hours of work
        print('cyclegan.py is loaded. Start training from the next cell, e.g. '
              'main(["--data", "summer2winter"]), or main(["--data", "demo"]) for the demo.')
    else:
        main()
