"""CycleGAN in one file: unpaired image-to-image translation, to read and to train with.

Zhu, Park, Isola, Efros (2017), "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", https://arxiv.org/abs/1703.10593

What is learned. Two sets of photos that are *not* paired, say Yosemite in summer (domain X) and in
winter (domain Y). CycleGAN trains two generators, G_XtoY ("G" in the paper) and G_YtoX ("F"), and
two discriminators: D_Y tells real winter photos from G_XtoY's fakes, D_X does the same for summer.
Fooling a discriminator alone would let G map every summer photo to *some* winter photo; the cycle
loss asks that translating there and back returns the input, F(G(x)) ~ x and G(F(y)) ~ y, so G has
to keep the content of x and change only its season.

The objective. Section 3 of the paper writes it with the log loss of the original GAN; section 4
replaces that with least squares (LSGAN), which is what we train. As least squares, eq. 1 is the
discriminator's objective, and each generator has a term of its own:
    L_GAN(G, D_Y) = E_y[(D_Y(y) - 1)^2] + E_x[D_Y(G(x))^2]   (eq. 1; D_Y minimises it, up to a 1/2)
    G minimises     E_x[(D_Y(G(x)) - 1)^2],  F minimises E_y[(D_X(F(y)) - 1)^2]
    L_cyc(G, F)   = E_x[||F(G(x)) - x||_1] + E_y[||G(F(y)) - y||_1]                      (eq. 2)
    L_identity    = E_y[||G(y) - y||_1] + E_x[||F(x) - x||_1]                      (section 5.2)
The generators minimise their two adversarial terms + lambda * L_cyc + 0.5 * lambda * L_identity
(eq. 3, lambda = 10; the identity weight is appendix 7.1's). Eq. 4's min over G, F and max over
D_X, D_Y is played, as in the official code, by two alternating steps in each iteration: the
generators' step, then the discriminators'. Each ||.||_1 is computed as a mean over pixels and
channels (as the official code's L1Loss does), and each expectation over a discriminator's output
is also a mean over its grid of patch scores (14 x 14 at 128px).

How to run it: README.md. `python cyclegan.py --data demo` learns a toy task in 13-30 s on 2 CPU
cores; in Colab or Jupyter, paste this file into one cell, then call main(["--data", "demo"]).
Sections 1-8 follow the paper; sections 9-18 are machinery that a student may skip.
"""
import argparse
import contextlib
import csv
import datetime
import errno
import glob
import math
import os
import re
import shlex
import shutil
import signal
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torchvision.transforms.functional as TF
import torchvision.utils as vutils
from PIL import Image, ImageDraw, ImageOps

try:
    import fcntl  # Linux and macOS: the lock on a run folder in training
except ImportError:  # Windows
    fcntl = None

# --- Settings ---------------------------------------------------------------------------------
# Every number a new run starts from, as (default, what it is), with where each default comes
# from. Each is also a flag (image_size is --image-size), and a flag you type overrides it.
DEFAULT_SETTINGS = {
    "data": ("summer2winter", "datasets/summer2winter_yosemite, demo (built in), or a folder"),
    # Ours: 128px crops of 143px images, the size of Udacity's summer2winter notebook. The
    # official code trains on 256px crops of 286px images with 9 residual blocks, 4x the pixels
    # of each step; README.md gives that command.
    "image_size": (128, "training crop size in pixels, a multiple of 4"),
    "load_size": (None, "images are resized to this before the random crop (default: 143/128 of "
                        "the crop size)"),
    # The paper, section 4: batch size 1, and a learning rate of 0.0002 kept for 100 epochs, then
    # decayed linearly to zero over 100 more.
    "batch_size": (1, "images per step"),
    "epochs": (100, "epochs at the full learning rate"),
    "decay_epochs": (100, "further epochs with the rate falling linearly, its last at "
                          "1/(decay_epochs + 1) of --lr"),
    "lr": (2e-4, "learning rate of Adam, betas (0.5, 0.999)"),
    # The paper, section 4: lambda = 10 "for all the experiments".
    "lambda_cycle": (10.0, "weight of the cycle-consistency loss"),
    # The official code's default for every task. The paper describes the identity loss for
    # painting -> photo (section 5.2, weight 0.5 lambda in appendix 7.1) and does not say whether
    # its summer2winter run used it; --lambda-identity 0 switches it off.
    "lambda_identity": (0.5, "identity loss weight, a fraction of lambda-cycle (0: off)"),
    # The paper, section 4: "an image buffer that stores the 50 previously created images".
    "pool_size": (50, "size of the history of fakes shown to the discriminators (0: none)"),
    # The paper, appendix 7.2: 64 filters in the first layer of each network (c7s1-64, C64), and
    # 6 residual blocks for 128px images (9 for 256px).
    "ngf": (64, "generator width: filters in its first layer"),
    "ndf": (64, "discriminator width: filters in its first layer"),
    "n_blocks": (6, "residual blocks in the generator"),
    # Ours.
    "seed": (0, "random seed: the same seed repeats a run bit for bit on a CPU at the same "
                "thread count (not on a GPU)"),
}
# --data demo: a toy task built in (the same drawn landscape in summer and in winter colours)
# that learns in 13-30 s on 2 CPU cores: 32px images, small networks, 400 iterations, and a 5x
# higher learning rate for the short schedule (our choices; the tests check that it learns).
DEMO_SETTINGS = {"image_size": 32, "ngf": 16, "ndf": 16, "n_blocks": 2, "epochs": 1,
                 "decay_epochs": 1, "lr": 1e-3, "log_every": 20, "sample_every": 100}


class CycleGANError(Exception):
    """A problem the user can fix (bad flag, missing data, unreadable file): shown as one line."""


# --- 1. Networks ------------------------------------------------------------------------------
# The generator is Johnson et al.'s (2016) network for style transfer (the paper, section 4): two
# stride-2 convolutions down, residual blocks at a quarter of the resolution, two fractionally
# strided convolutions back up. The discriminator is pix2pix's 70x70 PatchGAN. Appendix 7.2 writes
# both in a short notation, and the small functions below are named after it, so that the two
# constructors read as the appendix does:
#     generator (6 blocks):  c7s1-64, d128, d256, R256 x 6, u128, u64, c7s1-3
#     discriminator:         C64-C128-C256-C512, then a convolution to one channel
# Normalisation: instance norm (the paper, section 4, "similar to Johnson et al."), which
# normalises each channel of each image by its own mean and variance (Ulyanov et al. 2016, who
# introduced it for fast style transfer). Udacity's CycleGAN notebook uses batch norm on batches
# of 16 instead: it normalises over the batch, learns a scale and shift per channel (our instance
# norm learns neither, as in the official code), and uses running averages at test time. We
# follow the paper.
# Padding: appendix 7.2 says only that "reflection padding was used to reduce artifacts". As in the
# official code, the 7x7 convolutions and those in the residual blocks pad by reflection; the
# strided and transposed convolutions, and the whole discriminator, pad with zeros.
# Every layer sits in the official code's order in one nn.Sequential named `model`, so the
# parameter names are the official ones and the authors' trained generators load unchanged.

def c7s1_k(in_channels, k):
    """c7s1-k: a 7x7 Convolution-InstanceNorm-ReLU with k filters and stride 1. The reflection pad
    of 3 keeps height and width."""
    return [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, k, kernel_size=7),
            nn.InstanceNorm2d(k), nn.ReLU(inplace=True)]


def d_k(in_channels, k):
    """dk: a 3x3 Convolution-InstanceNorm-ReLU with k filters and stride 2: half the height and
    width."""
    return [nn.Conv2d(in_channels, k, kernel_size=3, stride=2, padding=1),
            nn.InstanceNorm2d(k), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    """Rk: two 3x3 convolutions whose output is *added* to the input, so each block learns a
    change to the features, and the input (and its gradient) passes every block unchanged (He et
    al. 2016). The change is not small at the start: the branch ends in an instance norm, which
    scales each channel to unit variance whatever the weights."""
    def __init__(self, k):
        super().__init__()
        self.conv_block = nn.Sequential(  # the official name, kept for the parameter names
            nn.ReflectionPad2d(1), nn.Conv2d(k, k, kernel_size=3), nn.InstanceNorm2d(k),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(k, k, kernel_size=3), nn.InstanceNorm2d(k),
        )

    def forward(self, x):
        return x + self.conv_block(x)


def R_k(k, count):
    """Rk x count: `count` residual blocks of k channels, each keeping the shape."""
    return [ResidualBlock(k) for _ in range(count)]


def u_k(in_channels, k):
    """uk: a 3x3 fractionally strided (transposed) Convolution-InstanceNorm-ReLU with k filters
    and stride 1/2: twice the height and width."""
    return [nn.ConvTranspose2d(in_channels, k, kernel_size=3, stride=2, padding=1,
                               output_padding=1),
            nn.InstanceNorm2d(k), nn.ReLU(inplace=True)]


def c7s1_3_output(in_channels):
    """The last c7s1-3, as the official code builds it: no norm, and a tanh instead of the ReLU,
    so that the output lies in [-1, 1] like the input images."""
    return [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, 3, kernel_size=7), nn.Tanh()]


def C_k(in_channels, k, stride=2, norm=True):
    """Ck: a 4x4 Convolution-InstanceNorm-LeakyReLU with k filters; the paper's slope 0.2."""
    layers = [nn.Conv2d(in_channels, k, kernel_size=4, stride=stride, padding=1)]
    if norm:
        layers.append(nn.InstanceNorm2d(k))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


class Generator(nn.Module):
    """(N, 3, H, W) image in [-1, 1] -> translated (N, 3, H, W) in [-1, 1]; H, W multiples of 4.
    The shapes below are for ngf = 64, which gives the appendix's numbers.

    Conv biases stay on, as in the official code, although the instance norm right after most
    convolutions subtracts the mean and so cancels them: keeping them keeps the official
    parameter count (7,837,699 with the defaults). The norms have no learned scale or shift.
    The transposed convolutions can cause the checkerboard pattern of early samples (Odena et
    al. 2016: the kernel overlaps some output pixels more than others); a resize-then-convolve
    layer would avoid it, but could not load the authors' weights."""
    def __init__(self, ngf=64, n_blocks=6):
        super().__init__()
        self.model = nn.Sequential(
            *c7s1_k(3, ngf),              # c7s1-64: (N, 3, H, W) -> (N, 64, H, W)
            *d_k(ngf, ngf * 2),           # d128: -> (N, 128, H/2, W/2)
            *d_k(ngf * 2, ngf * 4),       # d256: -> (N, 256, H/4, W/4)
            *R_k(ngf * 4, n_blocks),      # R256 x 6: shape kept
            *u_k(ngf * 4, ngf * 2),       # u128: -> (N, 128, H/2, W/2)
            *u_k(ngf * 2, ngf),           # u64: -> (N, 64, H, W)
            *c7s1_3_output(ngf),          # c7s1-3: -> (N, 3, H, W)
        )

    def forward(self, x):
        return self.model(x)


class Discriminator(nn.Module):
    """70x70 PatchGAN: (N, 3, 128, 128) -> (N, 1, 14, 14), one real/fake score per overlapping
    70x70 patch rather than one per image. A patch discriminator has fewer parameters (2,764,737)
    and works on any image size (the paper, section 4); the cycle loss looks after the layout.

    Where 70 comes from: one output score sees 4 pixels of the last layer's input (kernel 4);
    each layer going back widens that to stride * width + (kernel - stride): 4 -> 7 (C512,
    stride 1) -> 16 -> 34 -> 70 (C256, C128, C64, stride 2). So each score judges a 70x70 patch.
    The appendix gives every Ck stride 2; the official code gives C512 stride 1, and only that
    makes the 70 (with stride 2 the patch would be 94 pixels wide)."""
    def __init__(self, ndf=64):
        super().__init__()
        self.model = nn.Sequential(
            *C_k(3, ndf, norm=False),           # C64: (N, 3, 128, 128) -> (N, 64, 64, 64)
            *C_k(ndf, ndf * 2),                 # C128: -> (N, 128, 32, 32)
            *C_k(ndf * 2, ndf * 4),             # C256: -> (N, 256, 16, 16)
            *C_k(ndf * 4, ndf * 8, stride=1),   # C512: -> (N, 512, 15, 15)
            # The one-channel output, without a sigmoid: least squares wants raw scores.
            nn.Conv2d(ndf * 8, 1, kernel_size=4, padding=1),   # -> (N, 1, 14, 14)
        )
        # No norm on C64: the appendix says so without a reason. DCGAN (Radford et al. 2015),
        # which pix2pix builds on, found training unstable with the discriminator's input layer
        # normalised. The leaky ReLUs let negative activations pass some gradient.

    def forward(self, x):
        return self.model(x)


class CycleGAN(nn.Module):
    """The four networks in one module, so one state_dict and one .to(device) cover them all.
    X is the first domain (summer), Y the second (winter); D_Y judges images *in* domain Y."""
    def __init__(self, ngf=64, ndf=64, n_blocks=6):
        super().__init__()
        self.G_XtoY = Generator(ngf, n_blocks)  # the paper's G
        self.G_YtoX = Generator(ngf, n_blocks)  # the paper's F
        self.D_X = Discriminator(ndf)
        self.D_Y = Discriminator(ndf)
        # Weights from N(0, 0.02): appendix 7.1. Biases 0: the official code.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)

    def __repr__(self):
        # One line, so that a notebook cell ending in main([...]) does not print ~150 layers.
        # print(model.G_XtoY) shows a network layer by layer.
        return "CycleGAN(G_XtoY, G_YtoX: Generator; D_X, D_Y: Discriminator)"


# --- 2. Losses --------------------------------------------------------------------------------
# Least squares instead of eq. 1's log loss (LSGAN, Mao et al. 2017; the paper, section 4: "more
# stable during training and generates higher quality results"). Mao et al.'s reason: with the
# log loss, a fake that is already on the correct side of the decision boundary (the
# discriminator calls it real) gets almost no gradient, however far it still lies from the real
# data; least squares penalises its distance from the target score, and so keeps pulling it
# towards the real data. Each function receives a discriminator's grid of patch scores and returns
# the mean over it (and over the batch): the E[...] of the equations, computed in fp32 (under
# autocast on the CPU they would be bf16, whose 8-bit significand keeps ~2.4 decimal digits).

def real_mse_loss(d_out):
    # E[(D(.) - 1)^2]: the discriminator's target for real images, and each generator's for its
    # own fakes
    return torch.mean((d_out.float() - 1) ** 2)


def fake_mse_loss(d_out):
    # E[D(.)^2]: the discriminator's target for fake images is 0
    return torch.mean(d_out.float() ** 2)


# L_cyc's two halves (eq. 2), each ||.||_1 as a mean over pixels and channels. The paper gives no
# reason for the L1 norm; it reports (section 3.2) that replacing it with an adversarial loss
# between F(G(x)) and x did not improve results. Nor does it derive lambda = 10; its ablation
# (section 5.1.4) shows that removing the cycle loss substantially degrades the results, and on
# our demo a run with --lambda-cycle 0 ends worse than a generator that ignores its input
# (README.md, "Results").

def cycle_consistency_loss(real, reconstructed, weight):
    # weight * ||F(G(x)) - x||_1; the step passes lambda (--lambda-cycle)
    return weight * torch.mean(torch.abs(real.float() - reconstructed.float()))


def identity_loss(real, same, weight):
    # weight * ||G(y) - y||_1; the step passes 0.5 * lambda (--lambda-identity x --lambda-cycle).
    # A winter photo given to the summer->winter generator should come back unchanged. Without
    # it "the generator G and F are free to change the tint of input images" (section 5.2:
    # painted daytime became photographed sunset).
    return weight * torch.mean(torch.abs(real.float() - same.float()))


# --- 3. The history pool ----------------------------------------------------------------------
# "To reduce model oscillation", the discriminators are shown fakes from a history of generated
# images, not only the newest ones (the paper, section 4, after Shrivastava et al. 2017): a
# discriminator that only sees the current generator can chase it around. The pool holds 50
# fakes; once it is full, each new fake has a 1 in 2 chance to replace a random stored one, so a
# fake stays about 100 iterations on average, and the pool is a random sample of the last few
# hundred. Udacity's notebook has no pool; we keep it, as the paper does.

class ImagePool:
    """Up to `pool_size` earlier fakes of one domain (saved in the checkpoint, like the random
    state that decides which old fake comes back, so a resumed run draws the same ones)."""
    def __init__(self, pool_size):
        self.pool_size = pool_size
        self.images = []  # each (1, 3, H, W), fp32, on the training device

    def query(self, images):
        """Until the pool is full, return the new images and keep them. After that, each new
        image has a 1 in 2 chance to be swapped for a stored one, which it replaces: on average
        half of what a discriminator sees is the newest fake, half an older one."""
        out = []
        for image in images.detach().float().split(1):
            if len(self.images) < self.pool_size:
                self.images.append(image)
            elif self.pool_size > 0 and torch.rand(1).item() < 0.5:  # size 0 never swaps
                i = torch.randint(self.pool_size, (1,)).item()
                stored = self.images[i]
                self.images[i] = image
                image = stored
            out.append(image)
        return torch.cat(out)


# --- 4. One training step ---------------------------------------------------------------------
# One iteration, in the official code's order:
#   1. the generators take a step on their side of eq. 3 plus the identity term, with the
#      discriminators held fixed;
#   2. the discriminators take a step on real images and on fakes drawn from the history pool.
# Precision (section 11): precision.autocast() runs the networks in 16-bit floats where the
# hardware is fast at it. Read precision.scaler.scale(loss).backward() as loss.backward(), and
# scaler.step(opt) as opt.step(): they differ only in fp16, whose gradients the scaler guards.

# The keys of the dict that train_step returns, in the column order of losses.csv.
LOSS_NAMES = ("D_X", "D_Y", "adv_XtoY", "adv_YtoX", "cycle_X", "cycle_Y", "idt_X", "idt_Y")


def generator_step(model, real_X, real_Y, opt_G, precision, args):
    """Updates both generators. Returns the fakes, for the discriminator step, and the losses."""
    # Frozen, the discriminators still pass gradients through to the generators, but spend no
    # work on gradients for their own weights, which this step must not change.
    model.D_X.requires_grad_(False)
    model.D_Y.requires_grad_(False)
    opt_G.zero_grad(set_to_none=True)
    with precision.autocast():
        fake_Y = model.G_XtoY(real_X)   # G(x)
        fake_X = model.G_YtoX(real_Y)   # F(y)
        # Each generator wants the other domain's discriminator to score its fakes as real (1).
        adv_XtoY = real_mse_loss(model.D_Y(fake_Y))
        adv_YtoX = real_mse_loss(model.D_X(fake_X))
        # There and back again should return the input: F(G(x)) ~ x and G(F(y)) ~ y.
        cycle_X = cycle_consistency_loss(real_X, model.G_YtoX(fake_Y), args.lambda_cycle)
        cycle_Y = cycle_consistency_loss(real_Y, model.G_XtoY(fake_X), args.lambda_cycle)
        # A generator given an image of its own output domain should leave it alone:
        # F(x) ~ x and G(y) ~ y. --lambda-identity is a fraction of lambda: 0.5 * 10 = 5.
        identity_weight = args.lambda_identity * args.lambda_cycle
        if identity_weight > 0:
            idt_X = identity_loss(real_X, model.G_YtoX(real_X), identity_weight)
            idt_Y = identity_loss(real_Y, model.G_XtoY(real_Y), identity_weight)
        else:  # switched off: no work, and a 0 in the log
            idt_X = torch.zeros((), device=real_X.device)
            idt_Y = torch.zeros((), device=real_X.device)
    # The generators' side of eq. 3 plus the identity term, each term already weighted, in the
    # order of the sum below:
    #   E_x[(D_Y(G(x)) - 1)^2] + E_y[(D_X(F(y)) - 1)^2]        adv_XtoY + adv_YtoX
    #   + lambda * L_cyc(G, F)                                 cycle_X + cycle_Y
    #   + 0.5 * lambda * L_identity(G, F)                      idt_X + idt_Y
    # One backward pass reaches both generators.
    loss_G = adv_XtoY + adv_YtoX + cycle_X + cycle_Y + idt_X + idt_Y
    precision.scaler.scale(loss_G).backward()
    average_gradients(opt_G)  # under torchrun, over the processes (section 12); alone, nothing
    precision.scaler.step(opt_G)
    model.D_X.requires_grad_(True)
    model.D_Y.requires_grad_(True)
    losses = {"adv_XtoY": adv_XtoY, "adv_YtoX": adv_YtoX, "cycle_X": cycle_X, "cycle_Y": cycle_Y,
              "idt_X": idt_X, "idt_Y": idt_Y}
    return fake_X, fake_Y, {name: loss.detach() for name, loss in losses.items()}


def discriminator_step(model, real_X, real_Y, fake_X, fake_Y, pool_X, pool_Y, opt_D, precision):
    """Updates D_X and D_Y: real images towards 1, fakes from the history pools towards 0."""
    opt_D.zero_grad(set_to_none=True)
    # The pools return detached images: this loss must not reach back into the generators.
    fake_X = pool_X.query(fake_X)
    fake_Y = pool_Y.query(fake_Y)
    with precision.autocast():
        # Appendix 7.1 halves D's objective, which "slows down the rate at which D learns". With
        # Adam it does not: Adam is "invariant to diagonal rescaling of the gradients" (Kingma and
        # Ba 2015, abstract; up to its epsilon). We keep the 0.5 so that the logged D losses are
        # on the scale of the paper's and the official code's.
        loss_D_X = 0.5 * (real_mse_loss(model.D_X(real_X)) + fake_mse_loss(model.D_X(fake_X)))
        loss_D_Y = 0.5 * (real_mse_loss(model.D_Y(real_Y)) + fake_mse_loss(model.D_Y(fake_Y)))
    # D_X and D_Y share no weights: one backward pass of the sum gives each its own gradient.
    precision.scaler.scale(loss_D_X + loss_D_Y).backward()
    average_gradients(opt_D)
    precision.scaler.step(opt_D)
    return {"D_X": loss_D_X.detach(), "D_Y": loss_D_Y.detach()}


def train_step(model, real_X, real_Y, opt_G, opt_D, pool_X, pool_Y, precision, args):
    """One iteration: generators first, then discriminators. Returns the losses by name. They
    stay on the device: reading one (.item()) would make the CPU wait for the GPU."""
    fake_X, fake_Y, losses_G = generator_step(model, real_X, real_Y, opt_G, precision, args)
    losses_D = discriminator_step(model, real_X, real_Y, fake_X, fake_Y, pool_X, pool_Y, opt_D,
                                  precision)
    # Once per iteration: the next fp16 scale, from both steps' overflows.
    precision.scaler.update()
    return {**losses_D, **losses_G}


# --- 5. Data ----------------------------------------------------------------------------------
# Two folders of unpaired images, say datasets/summer2winter_yosemite/trainA (summer) and trainB
# (winter). Both are decoded once at start-up into uint8 tensors (the whole summer2winter set at
# 143px is ~135 MB), and each step crops and flips on tensors: no JPEG is decoded per step, and
# no DataLoader worker processes are needed, which keeps notebooks and Windows (where workers must
# pickle everything) out of trouble. --data demo draws its two domains instead of reading them.

def to_model_range(images):
    """uint8 pixels in [0, 255] -> floats in [-1, 1], the range of the generators' tanh output."""
    return images.float() / 127.5 - 1


def to_pixels(images):
    """The way back, for every image this program writes: floats in [-1, 1] -> uint8, each
    rounded to the nearest of the 256 values."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class UnpairedImages:
    """Both training domains in memory as uint8 (|X|, 3, load_size, load_size). An epoch, as in
    the official code: X in a shuffled order, a random image of Y for each (unpaired: never one
    scene's two seasons), and each image cropped at a random place (128px of 143px) and mirrored
    half the time, its only augmentation; max(|X|, |Y|) places, wrapping round a smaller X."""
    def __init__(self, images_X, images_Y, image_size):
        self.images_X = images_X
        self.images_Y = images_Y
        self.image_size = image_size
        self.epoch_length = max(len(images_X), len(images_Y))  # places per epoch

    def plan_epoch(self, rng):
        """Draws an epoch from the random stream `rng`: for each of its places, an image of X and
        one of Y, the top-left corner of each one's crop, and whether each is mirrored."""
        places = self.epoch_length
        corners = self.images_X.shape[-1] - self.image_size + 1  # crop positions per axis
        return {"x": torch.randperm(places, generator=rng) % len(self.images_X),
                "y": torch.randint(len(self.images_Y), (places,), generator=rng),
                "x_corner": torch.randint(corners, (places, 2), generator=rng),
                "y_corner": torch.randint(corners, (places, 2), generator=rng),
                "x_mirror": torch.rand(places, generator=rng) < 0.5,
                "y_mirror": torch.rand(places, generator=rng) < 0.5}

    def batch(self, plan, places, device):
        """The images at some places of an epoch's plan -> real_X, real_Y: floats
        (len(places), 3, size, size) in [-1, 1] on `device`."""
        x = self.crop(self.images_X, plan["x"][places], plan["x_corner"][places],
                      plan["x_mirror"][places])
        y = self.crop(self.images_Y, plan["y"][places], plan["y_corner"][places],
                      plan["y_mirror"][places])
        # uint8 travels to the GPU, 4x smaller than the floats it becomes there
        return to_model_range(x.to(device)), to_model_range(y.to(device))

    def crop(self, images, indices, corners, mirrors):
        """The planned image_size windows of some cached images, mirrored where planned."""
        crops = []
        for index, (top, left), mirror in zip(indices.tolist(), corners.tolist(), mirrors.tolist()):
            crop = images[index, :, top:top + self.image_size, left:left + self.image_size]
            crops.append(crop.flip(-1) if mirror else crop)
        return torch.stack(crops)


def load_dataset(args):
    """-> (UnpairedImages for training, 4 fixed test images of X and of Y for the sample grids)."""
    if args.data == "demo":
        return draw_demo_dataset(args)
    train_X, train_Y, test_X, test_Y = find_domain_folders(args.data)
    check_memory_for_images([train_X, train_Y], args.load_size)  # before any is decoded
    images_X = load_folder(train_X, args.load_size, crop_size=args.image_size)
    images_Y = load_folder(train_Y, args.load_size, crop_size=args.image_size)
    # The grids show the centre crops of 4 test images spread evenly by name (the first 4 may be
    # 4 crops of one photo), or of training images where there is no test folder.
    grid_X = load_folder(test_X if list_images(test_X) else train_X, args.load_size, 4)
    grid_Y = load_folder(test_Y if list_images(test_Y) else train_Y, args.load_size, 4)
    return (UnpairedImages(images_X, images_Y, args.image_size),
            to_model_range(TF.center_crop(grid_X, args.image_size)),
            to_model_range(TF.center_crop(grid_Y, args.image_size)))


# --- 6. The training loop ---------------------------------------------------------------------
# Adam, one optimiser for both generators and one for both discriminators, at lr 0.0002 (the
# paper, section 4) with betas (0.5, 0.999) (the official code; the paper does not give them).
# DCGAN (Radford et al. 2015) found that Adam's default beta1 of 0.9 made GAN training oscillate
# and that 0.5 steadied it. 100 epochs at the full rate, then 100 falling linearly "to zero" (the
# paper): in the official rule below, the last epoch's rate is 1/101 of the full one.

def learning_rate(epoch, args):
    """The rate during `epoch` (from 0): --lr for the first --epochs, then falling by
    1/(decay_epochs + 1) of it per epoch, so the line would reach 0 the epoch after the last (the
    official code's lambda_rule)."""
    return args.lr * (1.0 - max(0, epoch + 1 - args.epochs) / (args.decay_epochs + 1))


class Training:
    """Everything that training changes as it goes: the networks, the two optimisers, the two
    history pools and the iteration count. A checkpoint holds all of it (and the random state)."""
    def __init__(self, args, precision, device):
        torch.manual_seed(args.seed)  # same seed, same initial weights and pool draws
        self.model = CycleGAN(args.ngf, args.ndf, args.n_blocks).to(device)
        generators = [*self.model.G_XtoY.parameters(), *self.model.G_YtoX.parameters()]
        discriminators = [*self.model.D_X.parameters(), *self.model.D_Y.parameters()]
        self.opt_G = torch.optim.Adam(generators, lr=args.lr, betas=(0.5, 0.999))
        self.opt_D = torch.optim.Adam(discriminators, lr=args.lr, betas=(0.5, 0.999))
        self.pool_X = ImagePool(args.pool_size)  # fakes F(y), shown to D_X
        self.pool_Y = ImagePool(args.pool_size)  # fakes G(x), shown to D_Y
        self.precision = precision  # its gradient scaler has a state to save (in fp16)
        self.device = device
        self.iteration = 0  # iterations done


def train(args, dataset, precision, run_folder, checkpoint, introduction, stop, device):
    """Trains a new run in `run_folder` on `dataset` (load_dataset's) in `precision` (section
    11), or continues the one in `checkpoint`; returns the Training (the model ...). Every so many
    iterations: a progress line, a sample grid (rows x, G(x), F(G(x)), y, F(y), G(F(y)) of fixed
    test images) and a checkpoint (sections 12, 13 and 16 are its machinery)."""
    training = Training(args, precision, device)
    if args.compile:
        compile_networks(training.model)  # section 11
    seed_this_process(args.seed)  # under torchrun, each process's own history pool draws
    data, test_X, test_Y = dataset
    iterations_per_epoch = epoch_iterations(data, args, process_count())
    last = (args.epochs + args.decay_epochs) * iterations_per_epoch  # the schedule's end
    if args.max_iters is not None:
        last = min(last, args.max_iters)
    if checkpoint is not None:
        restore_training(training, checkpoint, data, args)
    announce_run(introduction, training, data, iterations_per_epoch, last, args)
    log = ProgressLog(run_folder, training, data, test_X, test_Y)
    # One iteration after another until the schedule ends (or --max-iters). The epoch and the
    # place in it follow from the iteration alone.
    while training.iteration < last and not stop.requested(training.iteration):
        epoch, index = divmod(training.iteration, iterations_per_epoch)
        # Set by hand, not by a torch LR scheduler: the rate follows from the epoch alone, so a
        # resumed run has no scheduler state to restore.
        for optimizer in (training.opt_G, training.opt_D):
            optimizer.param_groups[0]["lr"] = learning_rate(epoch, args)
        # Section 5's epochs, the same after a resume, shared among torchrun processes (section 13)
        real_X, real_Y = planned_batch(data, args, epoch, index, device)
        losses = train_step(training.model, real_X, real_Y, training.opt_G, training.opt_D,
                            training.pool_X, training.pool_Y, training.precision, args)
        training.iteration += 1
        log.add(losses)
        # A progress line, with a warning if the cycle does not bring the test images back
        # (section 13). A run's first iteration (new or resumed) logs too: it shows at once that
        # it works.
        if training.iteration % args.log_every == 0 or log.iterations == 1:
            log.write(training, epoch, last)
        # A sample grid and the loss curves
        if training.iteration % args.sample_every == 0 and first_process():
            log.sample(training, f"iter_{training.iteration:07d}")
        if training.iteration % args.checkpoint_every == 0:
            save_training(run_folder, training, args, log)
    finish_training(run_folder, training, args, log, stop)
    return training


# --- 7. Did it learn? A task whose answers are known -----------------------------------------
# An unpaired dataset has no right answers: nobody photographed each Yosemite view in both
# seasons (the paper shows its season results as pictures, figure 13). The demo task has them:
# --data demo draws random landscapes (section 17), each in summer and in winter colours.
# Training sees the seasons unpaired (summer draws scenes 0-199, winter 200-399); held-out scenes
# from 10,000 on are drawn in both seasons, which gives each G(x) its true answer y. Two
# baselines: doing nothing, G(x) = x; and the target season's median image (per pixel), the best
# answer that ignores the input: every error here is a mean absolute (L1) difference, which a
# constant minimises at the median (the average image's error is larger). The tests ask for less
# than 0.9 x the median's error in both directions. Without known answers, each progress line
# says how closely the cycle brings the test images back, against the same median image, and
# the run warns when it does not (section 13).
DEMO_TEST_FIRST = 10_000  # the first held-out scene


def demo_translation_errors(model, size, precision, count=64):
    """Mean |G(x) - y| and |F(y) - x| (in [-1, 1] units) on held-out demo scenes whose other
    season we know, and the two baselines: the input unchanged, and the target season's median
    image (of these scenes themselves: no constant answer does better on them)."""
    device = next(model.parameters()).device
    x = to_model_range(demo_images(DEMO_TEST_FIRST + 100, count, size, "summer")).to(device)
    y = to_model_range(demo_images(DEMO_TEST_FIRST + 100, count, size, "winter")).to(device)
    with torch.no_grad(), precision.autocast():
        fake_Y = model.G_XtoY(x).float()
        fake_X = model.G_YtoX(y).float()
    errors = {"XtoY": (fake_Y - y).abs().mean(),
              "YtoX": (fake_X - x).abs().mean(),
              "identity": (x - y).abs().mean(),
              "median_XtoY": (y.median(0).values - y).abs().mean(),
              "median_YtoX": (x.median(0).values - x).abs().mean()}
    return {name: error.item() for name, error in errors.items()}


# --- 8. Using the trained model ---------------------------------------------------------------
# The generators are fully convolutional: they translate images of any size whose sides are
# multiples of 4 (we pad other sizes by reflection and crop back). What they learned, though, are
# textures at the scale of their training images, so a larger photo is translated scaled down to
# that size, keeping its aspect ratio, and the translation is then carried back to the photo's
# own size as a colour transform (section 10). The generator comes from our checkpoint.pt (both
# directions: --direction picks one) or from a bare Generator file such as the authors'
# (section 14).

def translate_image(generator, image):
    """(N, 3, H, W) in [-1, 1], any H and W -> translated, same shape."""
    height, width = image.shape[-2:]
    padded = nn.functional.pad(image, (0, -width % 4, 0, -height % 4), mode="reflect")
    return generator(padded)[..., :height, :width]


def translate(typed):
    """--translate: each input image -> <out>/<stem>_<direction>.png at the photo's own size,
    translated at the size of the model's training images (or --translate-size). A photo that
    cannot be translated gets its own error line, and the others are translated."""
    generator, suffix, size = generator_for_translation(typed)  # which file, which size
    device = choose_device(typed.get("device", "auto"))
    precision = Precision(typed.get("precision", "auto"), device)
    # eval() changes nothing here (no dropout; instance norm keeps no running statistics), but
    # it states the intent.
    generator = generator.to(device).eval()
    out_folder = typed.get("out", "translated")
    inputs = gather_images(typed["translate"])
    failed = 0
    for image_path in inputs:  # one at a time: photos differ in size
        try:
            # Read, scaled down, run through translate_image and carried back (section 10)
            pixels, sizes = translate_file(generator, image_path, size, precision,
                                           typed.get("small_output", False))
        except CycleGANError as error:
            print(f"error: {error}", file=sys.stderr)  # the photo's own: the others go on
            failed += 1
            continue
        stem = os.path.splitext(os.path.basename(image_path))[0]
        # photo_XtoY.png, or if that name is taken the next free one (photo_XtoY2.png)
        target = save_new_png(pixels, os.path.join(out_folder, f"{stem}_{suffix}"))
        print(f"{image_path} -> {target} ({sizes})")
    count = f"{len(inputs)} image{'s' * (len(inputs) != 1)}"
    if failed:
        raise CycleGANError(f"{failed} of {count} could not be translated (the lines above); the "
                            f"other {len(inputs) - failed} are in {out_folder}/")
    print(f"done: translated {count} {suffix}")


# ==============================================================================================
# The machinery. What follows makes the program pleasant to use (image files, full-size
# translations, precision, several GPUs, checkpoints, run folders, Ctrl-C, the demo's drawings,
# the command line) but holds nothing of CycleGAN itself: a student may stop reading here.
# ==============================================================================================
# --- 9. Image files and dataset folders -------------------------------------------------------
# Reading datasets and photos, writing every file (atomically), and refusing work that would not
# fit in memory before it starts. The datasets are download_data.sh's (a test compares the lists).

DOWNLOADABLE_DATASETS = ("apple2orange", "summer2winter_yosemite", "horse2zebra", "monet2photo",
                         "cezanne2photo", "ukiyoe2photo", "vangogh2photo", "maps", "facades",
                         "iphone2dslr_flower", "ae_photos", "mini", "mini_pix2pix",
                         "mini_colorization")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")
# (train X, train Y, test X, test Y): the official layout, then Udacity's summer2winter layout.
LAYOUTS = (("trainA", "trainB", "testA", "testB"),
           ("summer", "winter", "test_summer", "test_winter"))


def resolve_data_path(data):
    """'summer2winter' -> datasets/summer2winter_yosemite, as download_data.sh places it."""
    name = {"summer2winter": "summer2winter_yosemite"}.get(data, data)
    is_path = "/" in name or os.sep in name or os.path.isdir(name)
    return name if is_path else os.path.join("datasets", name)


def list_images(folder):
    """All images below `folder` (Udacity's layout nests them one level deeper), sorted."""
    return sorted(os.path.join(root, name) for root, _, names in os.walk(folder)
                  for name in names if name.lower().endswith(IMAGE_EXTENSIONS))


def find_domain_folders(data):
    """-> the four folders (train X, train Y, test X, test Y) of a dataset in either layout."""
    root = os.path.normpath(resolve_data_path(data))
    for layout in LAYOUTS:
        folders = [os.path.join(root, name) for name in layout]
        if os.path.isdir(folders[0]) and os.path.isdir(folders[1]):
            return folders
    name = os.path.basename(root)
    hint = ("check the name or path (README.md, \"Your own dataset\")" if name not in
            DOWNLOADABLE_DATASETS else f"get it with: bash download_data.sh {name}")
    raise CycleGANError(f"no dataset for --data {data}: looked in {root}/ for trainA/ trainB/ "
                        f"(testA/ testB/) or summer/ winter/ (test_summer/ test_winter/); {hint}")


def load_image(path, load_size=None, with_alpha=False):
    """Any image file -> upright (3, H, W) uint8, resized to load_size x load_size if given;
    with_alpha: (the pixels, their (1, H, W) transparency or None)."""
    try:
        with Image.open(path) as img:
            # Phones store photos sideways and note the turn in an EXIF tag that every photo
            # viewer applies; so do we, or portraits would train and translate lying down.
            img = ImageOps.exif_transpose(img)  # this decodes too: a truncated file fails here
            alpha = None
            if with_alpha and (img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info):
                alpha = TF.pil_to_tensor(img.convert("RGBA"))[3:]
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                # 16-bit greyscale: convert("RGB") would clip it to white, so scale it down.
                scale = 255 / 65535 if img.getextrema()[1] > 255 else 1
                img = img.convert("F").point(lambda value: value * scale).convert("L")
            if img.mode in ("P", "PA", "LA"):
                img = img.convert("RGBA")  # the route PIL wants for palettes with transparency
            img = img.convert("RGB")  # CMYK, RGBA, greyscale ...
            if load_size:  # bicubic, as in the official code; smaller images are scaled up
                img = img.resize((load_size, load_size), Image.BICUBIC)
            pixels = TF.pil_to_tensor(img)
            return (pixels, alpha) if with_alpha else pixels
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise CycleGANError(f"cannot read image {path}: {error}; delete or replace it") from None


def scale_down(pixels, shorter_side):
    """(C, H, W) uint8 -> scaled down (bicubic, keeping the aspect ratio) to that shorter side."""
    height, width = pixels.shape[1:]
    if min(height, width) <= shorter_side:
        return pixels
    scale = shorter_side / min(height, width)
    new_size = (round(width * scale), round(height * scale))
    return TF.pil_to_tensor(TF.to_pil_image(pixels).resize(new_size, Image.BICUBIC))


def save_png(pixels, path, row_labels=()):
    """(3, H, W) uint8 -> a PNG file; row_labels name its rows in a strip on the left."""
    picture = TF.to_pil_image(pixels)
    if row_labels:
        labelled = Image.new("RGB", (50 + picture.width, picture.height), "white")
        labelled.paste(picture, (50, 0))
        draw = ImageDraw.Draw(labelled)
        row_height = picture.height / len(row_labels)
        for row, label in enumerate(row_labels):
            draw.text((3, row * row_height + row_height / 2 - 6), label, fill="black")
        picture = labelled
    write_file(path, lambda f: picture.save(f, format="PNG"))


class WriteFailed(CycleGANError):
    """A file could not be written (a full disk, a folder without permission)."""


def write_file(path, write):
    """Every file this program writes goes through here (its folder made if need be). write(f) fills
    a temporary file beside `path`, forced onto the disk (fsync), then renamed over `path` (atomic):
    a kill at any moment leaves the old file or the new one whole. Any failure leaves no temporary
    file; an OSError becomes WriteFailed, which says what to do."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(path + ".tmp")
        # torch.save wraps an OSError in a RuntimeError
        cause = error.__context__ if isinstance(error, RuntimeError) else error
        if not isinstance(cause, OSError):
            raise
        folder = os.path.dirname(path) or "."
        reason = cause.strerror or str(cause)
        advice = "make the folder writable"
        if cause.errno in (errno.ENOSPC, errno.EDQUOT):
            reason += f", {shutil.disk_usage(folder).free / 1e6:.1f} MB free in {folder}/"
            advice = "free some space"
        raise WriteFailed(f"cannot write {path} ({reason}); {advice}") from None


def load_folder(folder, load_size, limit=None, crop_size=0):
    """The images in `folder` (or `limit` of them, evenly spaced by name) -> (N, 3, load_size,
    load_size) uint8: 61 KB per image at 143px, a quarter of what fp32 would take. Those smaller
    than the crops are named: scaled up, they train the generators on blur."""
    paths = list_images(folder)
    if limit is not None and len(paths) > limit:
        paths = [paths[index * len(paths) // limit] for index in range(limit)]
    if not paths:
        raise CycleGANError(f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    print(f"decoding {len(paths)} images in {folder}", flush=True)
    images = torch.empty(len(paths), 3, load_size, load_size, dtype=torch.uint8)
    unreadable = []  # (path, error): all named in one error, not one bad file per attempt
    too_small = []
    for index, path in enumerate(paths):  # into place: the domain is never in memory twice
        try:
            images[index] = load_image(path, load_size)
            with Image.open(path) as image:  # its header: the size before scaling
                if min(image.size) < crop_size:
                    name = os.path.relpath(path, folder)
                    too_small.append(f"{name} {image.width}x{image.height}")
        except CycleGANError as error:
            unreadable.append((path, error))
    if too_small:
        print(f"note: {len(too_small)} of {len(paths)} images in {folder} are smaller than the "
              f"{crop_size}px crops and are scaled up to {load_size}px (blurred): "
              f"{', '.join(too_small[:3])}{' ...' if len(too_small) > 3 else ''}; replace them, "
              "or train with a smaller --image-size")
    if unreadable:
        message = (f"{len(unreadable)} of {len(paths)} images in {folder} cannot be read. The "
                   f"first: {unreadable[0][1]}")
        others = [path for path, _ in unreadable[1:]]
        if others:
            message += f". The others: {', '.join(others[:3])}"
        if len(others) > 3:
            message += f" and {len(others) - 3} more"
        raise CycleGANError(message)
    return images


MEMINFO = "/proc/meminfo"  # Linux: the whole machine's memory
# A container's (Docker, many hosted notebooks) is limited by its cgroup, often far below that.
# Per cgroup version (2, then 1): its limit, usage, and inactive page cache (which can be dropped).
CGROUP_MEMORY_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current",
     "/sys/fs/cgroup/memory.stat", "inactive_file"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
     "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file"))


def number_in_file(path, key=None):
    """The first number in a file, or the one after `key`; None if missing (or "max")."""
    try:
        with open(path) as f:
            words = f.read().split()
    except OSError:
        return None
    if key is not None:
        words = words[words.index(key) + 1:] if key in words else []
    return int(words[0]) if words and words[0].isdigit() else None


def available_memory(device=torch.device("cpu")):
    """Bytes that a new allocation can have: on a CUDA GPU its free memory plus what PyTorch's
    caching allocator holds unused; elsewhere the least of MemAvailable and each cgroup's limit
    minus its usage. None where nothing tells us (not Linux): the checks are then skipped."""
    if device.type == "cuda":
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + cached
    kilobytes = number_in_file(MEMINFO, "MemAvailable:")
    candidates = [] if kilobytes is None else [kilobytes * 1024]
    for limit_file, usage_file, stat_file, cache_key in CGROUP_MEMORY_FILES:
        limit = number_in_file(limit_file)
        usage = number_in_file(usage_file)
        if limit is not None and usage is not None:
            candidates.append(limit - usage + (number_in_file(stat_file, cache_key) or 0))
    return min(candidates, default=None)


def check_memory(needed, what, advice, device=torch.device("cpu"), share=1.0):
    """Refuses work beyond `share` of the available memory before it starts, not killed part-way."""
    available = available_memory(device)
    if available is not None and needed > share * available:
        portion = "" if share == 1 else f"{share:.0%} of "
        raise CycleGANError(f"{what}: about {needed / 1e9:.3g} GB of memory needed, more than "
                            f"{portion}the {available / 1e9:.3g} GB available on {device}; "
                            f"{advice}")


def check_memory_for_images(folders, load_size):
    """Refuses decoded images (one copy per torchrun process on the machine) beyond half of the
    available memory; the rest is for training (a 128px run with a 135 MB cache peaked at 1.6 GB:
    .ci/benchmark.py)."""
    count = sum(len(list_images(folder)) for folder in folders)
    copies = int(os.environ.get("LOCAL_WORLD_SIZE", 1))  # torchrun's processes on this machine
    per_process = f", in each of {copies} processes" if copies > 1 else ""
    check_memory(count * 3 * load_size ** 2 * copies,  # uint8: one byte per value
                 f"the training images ({count:,} at {load_size}px{per_process}) decoded",
                 "use a smaller --load-size, or fewer images", share=0.5)


def gather_images(paths):
    """--translate's files and folders (searched recursively) -> image files of different names."""
    inputs = []
    for given in paths:
        if not os.path.exists(given):
            raise CycleGANError(f"--translate {given}: no such file or folder")
        inputs += list_images(given) if os.path.isdir(given) else [given]
    if not inputs:
        raise CycleGANError(f"--translate: no images in {' '.join(paths)} (looked for "
                            f"{', '.join(IMAGE_EXTENSIONS)})")
    stems = [os.path.splitext(os.path.basename(path))[0] for path in inputs]
    if len(set(stems)) < len(stems):  # a.jpg and a.png would both become a_XtoY.png
        raise CycleGANError("two inputs have the same name apart from the extension or folder; "
                            "translate them into separate --out folders")
    return inputs


# --- 10. Full-size translations ---------------------------------------------------------------
# The translation of the scaled-down photo is carried to the photo's own size as a colour
# transform, not as pixels: in each 5x5 neighbourhood of the small pair (input p, translation q)
# the affine colour map q ~ A p + b (A 3x3) is fitted by least squares, with a small ridge eps so
# that flat patches get a plain shift of colour; each pixel takes the mean of the maps that cover
# it; the maps are scaled up bilinearly and applied to the photo's own pixels. This is the guided
# filter of He, Sun and Tang (2010/2013), fitted at low resolution as in He and Sun's "Fast Guided
# Filter" (2015). The radius and the ridge are our choices, checked by the tests on known answers.
GUIDE_RADIUS = 2  # the neighbourhoods are (2 * 2 + 1)^2 pixels of the small image
GUIDE_EPS = 1e-3  # the ridge, in the [-1, 1] units of the pixels, squared


def box_mean(images, radius):
    """(C, h, w) -> the mean of each (2 radius + 1)^2 window (fewer pixels at the borders)."""
    size = 2 * radius + 1
    return nn.functional.avg_pool2d(images[None], size, stride=1, padding=radius,
                                    count_include_pad=False)[0]


def fit_colour_maps(small_input, small_output, radius=GUIDE_RADIUS, eps=GUIDE_EPS):
    """(3, h, w) input and translation in [-1, 1] -> (12, h, w): for each pixel the 3x3 matrix A
    (row by row) and the shift b of its map q ~ A p + b, averaged over the windows that cover it."""
    p = small_input.float()
    q = small_output.float()
    height, width = p.shape[1:]
    mean_p = box_mean(p, radius)
    mean_q = box_mean(q, radius)
    # Per pixel: (h, w, 3, 3) covariances of the input's channels with each other, and of the
    # output's channels (rows) with the input's (columns).
    cov_pp = box_mean((p[:, None] * p[None]).flatten(0, 1), radius).view(3, 3, height, width)
    cov_qp = box_mean((q[:, None] * p[None]).flatten(0, 1), radius).view(3, 3, height, width)
    cov_pp = (cov_pp - mean_p[:, None] * mean_p[None]).permute(2, 3, 0, 1) + eps * torch.eye(3)
    cov_qp = (cov_qp - mean_q[:, None] * mean_p[None]).permute(2, 3, 0, 1)
    # Least squares: A cov_pp = cov_qp. cov_pp is symmetric, so A^T = solve(cov_pp, cov_qp^T).
    A = torch.linalg.solve(cov_pp, cov_qp.transpose(-1, -2)).transpose(-1, -2)
    A = A.permute(2, 3, 0, 1)  # (3, 3, h, w)
    b = mean_q - (A * mean_p[None]).sum(1)
    return box_mean(torch.cat([A.reshape(9, height, width), b]), radius)


def apply_colour_maps(maps, photo, strip_pixels=2 ** 20):
    """(12, h, w) maps, (3, H, W) uint8 photo -> its translation, (3, H, W) uint8. The maps are
    scaled up bilinearly, a strip of about strip_pixels (whole rows, at least one) at a time, so
    the working memory does not grow with the photo's height, nor with its width up to that."""
    height, width = photo.shape[1:]
    rows = max(1, strip_pixels // width)
    out = torch.empty_like(photo)
    xs = (torch.arange(width) + 0.5) / width * 2 - 1  # grid_sample's coordinates, -1 to 1
    for top in range(0, height, rows):
        ys = (torch.arange(top, min(top + rows, height)) + 0.5) / height * 2 - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None]  # (1, rows, W, 2)
        strip_maps = nn.functional.grid_sample(maps[None], grid, mode="bilinear",
                                               padding_mode="border", align_corners=False)[0]
        p = to_model_range(photo[:, top:top + rows])
        A = strip_maps[:9].view(3, 3, *p.shape[1:])
        out[:, top:top + rows] = to_pixels((A * p[None]).sum(1) + strip_maps[9:])
    return out


def translate_file(generator, image_path, size, precision, small_output):
    """One photo, scaled down to `size` -> its translation (uint8), carried back to the photo's
    size unless small_output, with the photo's transparency if any; and its sizes, for the
    printed line."""
    photo, alpha = load_image(image_path, with_alpha=True)
    small = photo if size == "original" else scale_down(photo, size)
    device = next(generator.parameters()).device
    height, width = small.shape[1:]
    if min(height, width) < SMALLEST_SIDE:
        raise CycleGANError(f"{image_path} is {width}x{height} pixels, too small to translate: "
                            f"the generator needs at least {SMALLEST_SIDE} on each side")
    per_pixel = max(TRANSLATION_BYTES_PER_PIXEL_PER_FILTER * generator.model[1].out_channels,
                    TRANSLATION_BYTES_PER_PIXEL_AT_LEAST)
    check_memory(per_pixel * height * width, f"translating {image_path} at {width}x{height}",
                 "use a smaller --translate-size" if size != "original" else
                 "drop --translate-size original, to translate it scaled down", device)
    image = to_model_range(small)
    with torch.no_grad(), precision.autocast():
        translated = translate_image(generator, image[None].to(device))[0].float().cpu()
    sizes = f"{width}x{height}"
    if small.shape == photo.shape or small_output:
        pixels = to_pixels(translated)
    else:
        pixels = apply_colour_maps(fit_colour_maps(image, translated), photo)
        sizes = f"{photo.shape[2]}x{photo.shape[1]}, translated at {sizes}"
    if alpha is not None:  # scaled as the photo was (the same shorter side), and kept
        pixels = torch.cat([pixels, scale_down(alpha, min(pixels.shape[1:]))])
    return pixels, sizes


# The smallest side the generator takes: the strided convolutions bring a side of 4 down to 1
# pixel, where instance norm has no spread to divide by; 5 is padded to 8
# (test_a_folder_is_translated_around_the_photos_that_cannot_be takes 5x5 and refuses 4x4).
SMALLEST_SIDE = 5
# The memory a generator needs per pixel, a bound on what `python .ci/benchmark.py
# --translation-memory` measured on the CPU: fp32 up to 13.1 bytes per pixel per filter (16, 32
# and 64 filters); bf16 456-618 MB per megapixel at any of those widths.
TRANSLATION_BYTES_PER_PIXEL_PER_FILTER = 14
TRANSLATION_BYTES_PER_PIXEL_AT_LEAST = 600


# --- 11. Hardware and precision ---------------------------------------------------------------
# Mixed precision: the networks can run under autocast in bf16 or fp16 (convolutions in 16 bits;
# weights, optimiser and losses stay fp32): 1.5x-1.8x faster than fp32 on most of our 2-core CPUs
# with bf16 instructions, 1.1x-1.5x slower on one Intel Xeon (.ci/benchmark.py's docstring): so
# there auto times both (run_precision).
# fp16's narrow range needs its gradients scaled up before backward and checked for overflow
# (the GradScaler); bf16 has fp32's range.
# On a GPU a batch-1 step is many small kernels, each launched by Python: on one H200 a step took
# about as long at 128px as at 256px, in every precision (.ci/benchmark.py's docstring), so the
# time went to launching, not to arithmetic. --compile fuses kernels (compile_networks).

def automatic_precision(device):
    """bf16 on CUDA GPUs of capability 8.0 on (Ampere) and on CPUs with bf16 instructions (listed
    in Linux's /proc/cpuinfo; elsewhere bf16 is emulated, slower than fp32); fp16 on older CUDA
    GPUs (Colab's T4 is 7.5); else fp32 (MPS included). Not is_bf16_supported(), which says True
    on a T4 because it counts emulation: cuDNN has no bf16 convolutions before 8.0."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:  # not Linux: assumed to have none
        flags = set()
    return "bf16" if device.type == "cpu" and {"avx512_bf16", "amx_bf16"} & flags else "fp32"


def compile_networks(model):
    """--compile: torch.compile traces each network's forward (and, through AOTAutograd, its
    backward) and generates fused kernels for it (TorchInductor: Triton on a GPU, C++ on a CPU),
    in place, so that the checkpoint keeps the plain parameter names. Fused kernels round
    differently: on our CPU with the tests' tiny networks in fp32, the first step's losses were
    eager's within 1.7e-5, three steps' within 1.3e-3 (test_compiled_networks_...); at 128px in
    bf16 its steps were 5% faster, after a first one of 102 s (.ci/benchmark.py's docstring). Its
    speed on a GPU is not yet measured (.ci/benchmark.py --device cuda compares)."""
    print("compiling the networks (torch.compile): the first iteration, check and sample grid "
          "take longer, once")
    for network in model.children():
        network.compile()


def run_precision(args, device, checkpoint):
    """The run's Precision. --precision auto where the CPU lists bf16 instructions is timed, once
    per run (the checkpoint keeps the choice, so that a resume continues exactly)."""
    precision = Precision(args.precision, device)
    if args.precision != "auto" or device.type != "cpu" or precision.name != "bf16":
        return precision
    if checkpoint is not None and checkpoint.get("precision") in ("fp32", "bf16"):
        return Precision(checkpoint["precision"], device)
    return Precision(from_first_process(timed_cpu_precision(args, device)), device)


def timed_cpu_precision(args, device, rounds=3):
    """fp32 or bf16, whichever trains the run's own networks faster here: `rounds` steps of each,
    alternating, on random images, each one's first left out (it sets up its kernels). Under
    torchrun every process times (they share the cores) and the first one's choice is taken."""
    trials = {name: Training(args, Precision(name, device), device) for name in ("fp32", "bf16")}
    real_X, real_Y = torch.rand(2, args.batch_size, 3, args.image_size, args.image_size) * 2 - 1
    seconds = {name: [] for name in trials}
    for _ in range(rounds):
        for name, trial in trials.items():
            start = time.perf_counter()
            train_step(trial.model, real_X, real_Y, trial.opt_G, trial.opt_D, trial.pool_X,
                       trial.pool_Y, trial.precision, args)
            seconds[name].append(time.perf_counter() - start)
    best = {name: min(times[1:]) for name, times in seconds.items()}
    choice = min(best, key=best.get)
    print(f"precision auto on this CPU: a step took {best['fp32']:.3f} s in fp32 and "
          f"{best['bf16']:.3f} s in bf16 (the best of {rounds - 1} each): {choice}")
    return choice


class Precision:
    """How the networks compute on `device`, as --precision asks (auto: automatic_precision)."""
    def __init__(self, name, device):
        self.name = automatic_precision(device) if name == "auto" else name
        self.device_type = device.type
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)
        self.scaler = torch.amp.GradScaler("cuda" if device.type == "cuda" else "cpu",
                                           enabled=self.name == "fp16")

    def autocast(self):
        # fp32 casts nothing, so it gets no autocast at all: an fp32 run is plain PyTorch.
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def choose_device(name):
    """'auto' takes the first of cuda, mps and cpu that this machine has."""
    available = {"cuda": torch.cuda.device_count(), "mps": int(torch.backends.mps.is_available()),
                 "cpu": 1}
    if name == "auto":
        name = next(kind for kind, count in available.items() if count > 0)
    kind, _, index = name.partition(":")
    index = index or "0"
    if kind not in available or not index.isdigit() or int(index) >= available[kind]:
        raise CycleGANError(f"--device {name}: not a device that torch can use on this machine; "
                            "use auto, cpu, cuda, cuda:N or mps")
    return torch.device(name)


CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"  # a container's CPU quota (cgroup v2)
THREADS_AT_START = torch.get_num_threads()  # torch's choice: a core's worth each


class FreeCores:
    """Training on a CPU takes as many threads as there are cores free for it, counted again at
    every progress line: the cores it may run on (its CPU affinity, a container's CPU quota) less
    those that other work kept busy since the last count. A step is thousands of operator calls,
    each split among the threads, which wait for each other: one thread that shares its core with
    another job stalls them all (.ci/benchmark.py --busy). Where OMP_NUM_THREADS is set (torchrun
    sets 1), or outside Linux, the count stays as it is: see follow_free_cores."""
    def __init__(self):
        self.cpus = os.sched_getaffinity(0)
        quota = number_in_file(CGROUP_CPU_MAX)  # "max 100000", or "QUOTA PERIOD" in microseconds
        period = number_in_file(CGROUP_CPU_MAX, str(quota))
        self.allowed = math.ceil(quota / period) if quota else len(self.cpus)
        self.last = self.ticks()

    def ticks(self):
        """Clock ticks since boot: (these CPUs' busy ones, all of theirs, this process's own)."""
        busy = 0
        total = 0
        with open("/proc/stat") as f:
            for line in f:
                name, *ticks = line.split()
                if re.fullmatch(r"cpu\d+", name) and int(name[3:]) in self.cpus:
                    ticks = [int(tick) for tick in ticks[:8]]  # user nice system idle iowait ...
                    total += sum(ticks)
                    busy += sum(ticks) - ticks[3] - ticks[4]
        return busy, total, sum(os.times()[:2]) * os.sysconf("SC_CLK_TCK")

    def follow(self):
        now = self.ticks()
        busy, total, own = [new - old for new, old in zip(now, self.last)]
        self.last = now
        others = len(self.cpus) * (busy - own) / max(total, 1)  # in cores
        # A core counts as taken once 3/4 of it is busy: on an idle machine torch.compile's
        # worker processes (not counted as ours) kept 0.6-0.7 busy (.ci/gpu_check.py --device
        # cpu); a busy loop keeps 1.0, a second demo 1 to 2.
        taken = int(others + 0.25)
        threads = max(1, min(THREADS_AT_START, self.allowed, len(self.cpus) - taken))
        if threads != torch.get_num_threads():
            print(f"CPU threads {torch.get_num_threads()} -> {threads}: {others:.1f} of "
                  f"{len(self.cpus)} cores busy with other work ({self.allowed} allowed); "
                  "OMP_NUM_THREADS=N fixes the count")
            torch.set_num_threads(threads)


def follow_free_cores(device):
    """-> a FreeCores to follow, or None (a GPU, OMP_NUM_THREADS set, not Linux)."""
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        if os.path.exists("/proc/stat") and hasattr(os, "sched_getaffinity"):
            return FreeCores()
    return None


# --- 12. Several GPUs or machines: torchrun ---------------------------------------------------
# `torchrun --standalone --nproc_per_node=N cyclegan.py ...` starts N copies of this program (one
# per GPU), each told its place in environment variables (RANK, LOCAL_RANK, WORLD_SIZE). Every
# process holds the same networks and trains on its own --batch-size images of the epoch's plan;
# the gradients are averaged over the processes before each optimiser step, so all take the same
# step and one iteration trains on N x batch-size images. Only the first process (rank 0) writes.
# Alone (python cyclegan.py, a notebook), each function below answers as one process would.

def process_rank():
    return dist.get_rank() if dist.is_initialized() else 0


def first_process():
    """True in the process that prints and writes files: the only one, or torchrun's rank 0."""
    return process_rank() == 0


def process_count():
    return dist.get_world_size() if dist.is_initialized() else 1


def start_torchrun_or_choose_device(device_name):
    """Under torchrun: joins the other processes (NCCL between CUDA GPUs, each process on
    cuda:LOCAL_RANK; gloo between CPU processes) -> this process's device. Alone: --device's."""
    if int(os.environ.get("WORLD_SIZE", 1)) == 1:
        return choose_device(device_name)
    local_rank = int(os.environ["LOCAL_RANK"])
    if device_name in ("auto", "cuda") and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise CycleGANError(f"torchrun started more processes on this machine than it has "
                                f"GPUs ({torch.cuda.device_count()}); lower --nproc_per_node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
        return device
    if device_name in ("auto", "cpu"):
        dist.init_process_group("gloo")
        return torch.device("cpu")
    raise CycleGANError(f"--device {device_name}: under torchrun each process takes its own GPU "
                        "(cuda:LOCAL_RANK); use --device auto, cuda or cpu")


def seed_this_process(seed):
    """Each process but the first draws its history pools from a random stream of its own."""
    if process_rank() > 0:
        torch.manual_seed(seed * 1_000_003 + process_rank())


def average_gradients(optimizer):
    """Under torchrun: each gradient of the optimiser's parameters -> its mean over the processes,
    in one all-reduce. Called before scaler.step, so that fp16's overflow check finds the same in
    all. (DistributedDataParallel averages during backward, but waits for gradients of every
    network it wraps, which a frozen discriminator does not get.)"""
    if not dist.is_initialized():
        return
    grads = [parameter.grad for group in optimizer.param_groups
             for parameter in group["params"] if parameter.grad is not None]
    means = mean_over_processes(torch.cat([grad.flatten() for grad in grads]))
    for grad, mean in zip(grads, means.split([grad.numel() for grad in grads])):
        grad.copy_(mean.view_as(grad))


def mean_over_processes(tensor):
    if not dist.is_initialized():
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)  # a sum, in place
    return total / process_count()


def every_process(value):
    """Every process's value, in rank order, on every process (under torchrun it waits for all)."""
    if not dist.is_initialized():
        return [value]
    values = [None] * process_count()
    dist.all_gather_object(values, value)
    return values


def from_first_process(value):
    """The first process's value, on every process: a broadcast, not a gather, for one large
    value (a checkpoint), which all_gather_object would pad and send from every process."""
    if not dist.is_initialized():
        return value
    values = [value]
    dist.broadcast_object_list(values, src=0)
    return values[0]


# --- 13. Starting and ending a run; checkpoints, exact resume, progress -----------------------
# One checkpoint dict holds everything that decides a run's future: the networks, Adam's moments,
# the pools, the random state, and the iteration (which gives the epoch's image order and the
# learning rate). Restored, the run continues bit for bit on a CPU at the same thread count (a
# GPU's fastest kernels are not bitwise repeatable, nor are sums split over another number of
# threads). A run saves every --checkpoint-every iterations and when it stops.

def planned_batch(data, args, epoch, iteration, device):
    """-> real_X, real_Y of the epoch's `iteration` (from 0). The epoch's plan (section 5) comes
    from a random stream of its own for each (seed, epoch < 100,003): a resumed run draws it again,
    and every torchrun process draws the same one and takes its own batch_size places (wrapping
    round: every batch full)."""
    plan = data.plan_epoch(torch.Generator().manual_seed(args.seed * 100_003 + epoch))
    first = (iteration * process_count() + process_rank()) * args.batch_size
    places = torch.arange(first, first + args.batch_size) % data.epoch_length
    return data.batch(plan, places, device)


def announce_run(introduction, training, data, iterations_per_epoch, last, args):
    print(introduction, end="")
    epoch = training.iteration // iterations_per_epoch
    if training.iteration > 0:
        print(f"resumed at iteration {training.iteration} (epoch {epoch + 1}), learning rate "
              f"{learning_rate(epoch, args):.6g}")
    if process_count() > 1:
        print(f"{process_count()} processes (torchrun), each on its own device, "
              f"{args.batch_size * process_count()} images per iteration")
    print(f"device {training.device}, precision {training.precision.name}; "
          f"{len(data.images_X)} images in X, {len(data.images_Y)} in Y, {iterations_per_epoch} "
          f"iterations per epoch, stopping at iteration {last}"
          + (": nothing to train" if training.iteration >= last else ""))


def finish_training(run_folder, training, args, log, stop):
    trained = log.iterations > 0
    if trained and training.iteration % args.checkpoint_every != 0:  # not saved just now
        save_training(run_folder, training, args, log)
    if trained and first_process():
        log.sample(training, "last")
    print(log.summary(finished=not stop.stopping))
    if stop.stopping:
        print(f"interrupted at iteration {training.iteration}; "
              + resume_advice(run_folder, args))


def resume_advice(run_folder, args):
    """The command that resumes, with this run's --max-iters (a resume does not inherit it)."""
    if run_folder is None or not os.path.isfile(os.path.join(run_folder, "checkpoint.pt")):
        return "no checkpoint had been saved yet"
    limit = [] if args is None or args.max_iters is None else ["--max-iters", str(args.max_iters)]
    return (f"{run_folder}/checkpoint.pt keeps the last saved state; resume with: "
            + command_to_run(["--resume", "--out", run_folder, *limit]))


def training_fault(error, args, device, run_folder):
    """A full disk or a device out of memory during training -> one line: what happened and the
    one way on. The loop saves only between iterations: a half-done iteration is never saved."""
    if isinstance(error, torch.OutOfMemoryError):  # a resume would ask for the same memory again
        return (f"out of memory on {device} with {args.image_size}px crops, "
                f"batch {args.batch_size}, {args.n_blocks} residual blocks, {args.ngf} filters; "
                "a run keeps its sizes when resumed, so start a new one with a smaller "
                "--batch-size, --image-size or --n-blocks")
    return f"{error}; {resume_advice(run_folder, args)}"


def checkpoint_parts(training):
    return {"model": training.model, "optimizer_G": training.opt_G,
            "optimizer_D": training.opt_D, "scaler": training.precision.scaler}


def save_training(run_folder, training, args, log):
    log.stop_if_not_finite(training, training.model.parameters())  # never over a good one
    own = {"rng": torch.get_rng_state(),
           "pool_X": [image.cpu() for image in training.pool_X.images],
           "pool_Y": [image.cpu() for image in training.pool_Y.images]}
    processes = every_process(own)
    if not first_process():
        return
    state = {name: part.state_dict() for name, part in checkpoint_parts(training).items()}
    state["iteration"] = training.iteration
    state["precision"] = training.precision.name
    state["settings"] = vars(args)
    state["processes"] = processes
    write_file(os.path.join(run_folder, "checkpoint.pt"), lambda f: torch.save(state, f))


def epoch_iterations(data, args, processes):
    """Each of `processes` takes --batch-size images an iteration."""
    return math.ceil(data.epoch_length / (args.batch_size * processes))


def restore_training(training, checkpoint, data, args):
    for name, part in checkpoint_parts(training).items():
        # Only fp16's scaler has a state (one switched off saves {}): another precision than the
        # saved one starts with a fresh scaler.
        if name != "scaler" or (part.is_enabled() and checkpoint["scaler"]):
            part.load_state_dict(checkpoint[name])
    training.iteration = checkpoint["iteration"]
    saved = checkpoint["processes"]
    if len(saved) != process_count():
        # The schedule goes on from the same epoch and place in it: an iteration of N processes
        # takes N x --batch-size images, so the count of iterations done changes with N.
        epoch, index = divmod(training.iteration, epoch_iterations(data, args, len(saved)))
        training.iteration = (epoch * epoch_iterations(data, args, process_count())
                              + math.ceil(index * len(saved) / process_count()))
        print(f"the checkpoint was saved by {len(saved)} processes and this run has "
              f"{process_count()}: their iteration {checkpoint['iteration']} is iteration "
              f"{training.iteration} here (the same epoch and place), the history pools start "
              "empty, and the random streams are dealt afresh")
        return
    own = saved[process_rank()]
    training.pool_X.images = [image.to(training.device) for image in own["pool_X"]]
    training.pool_Y.images = [image.to(training.device) for image in own["pool_Y"]]
    torch.set_rng_state(own["rng"])


def read_torch_file(path, what):
    """A .pt or .pth file -> its dict, or a one-line error that calls it `what`."""
    if not os.path.isfile(path):
        raise CycleGANError(f"no {what} at {path}")
    try:
        # weights_only: a file from the internet cannot run code as it is loaded
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types (its messages run to many lines)
        raise CycleGANError(f"cannot read {what} {path}: not a PyTorch file, one cut short, or "
                            "one holding more than tensors; download or copy it again, or check "
                            "the path") from None
    if not isinstance(state, dict):
        raise CycleGANError(f"{path} holds a {type(state).__name__}, not a {what}")
    return state


class ProgressLog:
    """Progress lines with the not-learning check, losses.csv, sample grids, and the closing
    line. The losses stay on the device until a line is written. Under torchrun the logged losses
    are the means over the processes, and the first process writes."""
    def __init__(self, run_folder, training, data, test_X, test_Y):
        self.run_folder = run_folder
        self.device = training.device
        self.test_X = test_X  # the sample grids' fixed test images, also the check's
        self.test_Y = test_Y
        # Section 7's baseline, each domain's median image, for the check at every line
        self.median_X = median_image(data.images_X, data.image_size)
        self.median_Y = median_image(data.images_Y, data.image_size)
        self.high_ratios = []  # (iteration, ratio) of the latest checks in a row above the limit
        self.warned = False
        self.loss_sums = 0  # each loss summed over the iterations since the last line
        self.since_line = 0
        self.iterations = 0  # since this log started
        self.shown = {}  # in a notebook: name -> the handle of an output updated in place
        self.free_cores = follow_free_cores(self.device)  # at each line, on a CPU (section 11)
        if self.device.type == "cuda":  # this run's own peak: a notebook may run several
            torch.cuda.reset_peak_memory_stats(self.device)
        # losses.csv's rows, the file rewritten whole with each new one. A resumed run logs
        # again what a run killed before its next save had logged: those rows are dropped.
        self.rows = [["iteration", "epoch", "lr", *LOSS_NAMES, "cycle_ratio", "s_per_it"]]
        if first_process() and os.path.exists(f"{run_folder}/losses.csv"):
            with open(f"{run_folder}/losses.csv") as f:
                rows = list(csv.reader(f))
            self.rows = rows[:1] + [row for row in rows[1:] if int(row[0]) <= training.iteration]
        self.started = time.perf_counter()
        self.line_time = self.started  # when the last line was written
        self.last_time = self.started  # when the last iteration ended

    def add(self, losses):
        self.loss_sums = self.loss_sums + torch.stack([losses[name] for name in LOSS_NAMES])
        self.since_line += 1
        self.iterations += 1
        self.last_time = time.perf_counter()

    def stop_if_not_finite(self, training, values):
        """A NaN would poison every later step: stop, keeping the last good checkpoint. Checked:
        the logged losses, and the weights before every save (a step can leave non-finite weights
        behind a finite loss)."""
        for value in values:
            if not torch.isfinite(value).all():
                raise CycleGANError(
                    f"the losses or weights became non-finite (NaN or inf) before iteration "
                    f"{training.iteration}; {self.run_folder}/checkpoint.pt keeps the last good "
                    "state. Try a lower --lr or --precision fp32")

    def show(self, name, content):
        """In a notebook: one output per name, updated in place (IPython is in every kernel)."""
        from IPython import display
        if name in self.shown:
            self.shown[name].update(content)
        else:
            self.shown[name] = display.display(content, display_id=True)

    def write(self, training, epoch, last_iteration):
        """A progress line and a losses.csv row: the mean losses and wall time per iteration since
        the last line (sample grids and saves included), the ETA from that time, and the check."""
        mean_losses = mean_over_processes(self.loss_sums / self.since_line)
        self.stop_if_not_finite(training, [mean_losses])
        seconds = (self.last_time - self.line_time) / self.since_line
        self.loss_sums = 0
        self.since_line = 0
        self.line_time = self.last_time
        if self.free_cores is not None:
            self.free_cores.follow()
        if not first_process():
            return
        ratio = self.check_cycle(training)
        means = mean_losses.tolist()
        shown = " ".join(f"{name} {mean:.3f}" for name, mean in zip(LOSS_NAMES, means))
        eta = datetime.timedelta(seconds=round((last_iteration - training.iteration) * seconds))
        speed = f"{seconds:.3f} s/it, ETA {eta}"
        if self.iterations == 1:  # slower than the rest (memory allocation, kernel choice)
            speed = f"{seconds:.3f} s for this iteration (no ETA yet)"
        line = (f"epoch {epoch + 1} it {training.iteration}/{last_iteration} | {shown} | "
                f"cycle_ratio {ratio:.2f} | {speed}")
        if in_notebook():
            from IPython.display import Pretty
            self.show("progress", Pretty(line))
        else:
            print(line, flush=True)
        self.rows.append([training.iteration, epoch + 1,
                          f"{training.opt_G.param_groups[0]['lr']:.6g}",
                          *(f"{mean:.5f}" for mean in means), f"{ratio:.3f}", f"{seconds:.4f}"])
        text = "".join(",".join(map(str, row)) + "\n" for row in self.rows)
        write_file(f"{self.run_folder}/losses.csv", lambda f: f.write(text.encode()))

    def sample(self, training, name):
        """samples/<name>.png and losses.png redrawn (both shown in a notebook)."""
        grid_path = f"{self.run_folder}/samples/{name}.png"
        save_sample_grid(training.model, self.test_X.to(self.device),
                         self.test_Y.to(self.device), training.precision, grid_path)
        curves_path = f"{self.run_folder}/losses.png"
        draw_loss_curves(self.rows[1:], curves_path)
        if in_notebook():
            from IPython.display import Image as Picture
            self.show("grid", Picture(filename=grid_path))
            if os.path.exists(curves_path):
                self.show("curves", Picture(filename=curves_path))

    def check_cycle(self, training):
        """The not-learning check (see CYCLE_WARNING_RATIO) -> the ratio it read; warns once."""
        x, _, back_X, y, _, back_Y = cycle_rows(training.model, self.test_X.to(self.device),
                                                self.test_Y.to(self.device), training.precision)
        ratio = max(cycle_error_ratio(x, back_X, self.median_X),
                    cycle_error_ratio(y, back_Y, self.median_Y))
        if training.iteration >= CYCLE_WARNING_FROM and ratio > CYCLE_WARNING_RATIO:
            self.high_ratios.append((training.iteration, ratio))
        else:
            self.high_ratios = []
        high = self.high_ratios
        if high and high[-1][0] - high[0][0] >= CYCLE_WARNING_SPAN and not self.warned:
            self.warned = True
            lowest = min(value for _, value in high)
            print(f"warning: at every progress line from iteration {high[0][0]} to {high[-1][0]} "
                  f"the cycle brought the test images back no closer than {lowest:.2f} times "
                  f"the error of their domain's median image (1.00: what generators ignoring "
                  f"their input reach); it may still learn, but look at the sample grids in "
                  f"{self.run_folder}/samples, and README.md, \"When it does not learn\"",
                  flush=True)
        return ratio

    def summary(self, finished=True):
        """`done: ...` (`stopped: ...` after Ctrl-C): iterations, wall time and their quotient."""
        if self.iterations == 0:
            return "done: no iterations to run"
        wall = self.last_time - self.started
        line = (f"{'done' if finished else 'stopped'}: {self.iterations} iteration"
                f"{'s' * (self.iterations != 1)} in {wall:.1f} s "
                f"({wall / self.iterations:.3f} s per iteration)")
        if self.device.type == "cuda":  # the most GPU memory this run has held
            peak = torch.cuda.max_memory_allocated(self.device)
            line += f", peak GPU memory {peak / 1e9:.2f} GB"
        return line


def cycle_rows(model, test_X, test_Y, precision):
    """-> the rows x, G(x), F(G(x)), y, F(y), G(F(y)) of the test images, in fp32."""
    with torch.no_grad(), precision.autocast():
        fake_Y = model.G_XtoY(test_X)
        fake_X = model.G_YtoX(test_Y)
        rows = [test_X, fake_Y, model.G_YtoX(fake_Y), test_Y, fake_X, model.G_XtoY(fake_X)]
    return [row.float() for row in rows]


def save_sample_grid(model, test_X, test_Y, precision, path):
    """The cycle rows of the same test images every time, labelled, as one PNG."""
    rows = cycle_rows(model, test_X, test_Y, precision)
    grid = vutils.make_grid(torch.cat(rows).cpu(), nrow=len(test_X), pad_value=-1)
    save_png(to_pixels(grid), path, ["x", "G(x)", "F(G(x))", "y", "F(y)", "G(F(y))"])


def median_image(images, size, at_most=1000):
    """uint8 images -> the per-pixel median of their centre crops (of at most 1,000 of them,
    evenly spaced, which bounds the copy that the median sorts) in [-1, 1]."""
    step = math.ceil(len(images) / at_most)
    return to_model_range(TF.center_crop(images[::step], size).median(0).values)


# The not-learning check. A generator that ignores its input, or keeps only its layout and loses
# what the way back needs, cannot bring x back through the cycle: F(G(x)) is then no closer to x
# than X's median image (section 7's baseline). So at each progress line, for each direction, the
# cycle's error on the grid's test images is divided by the median image's; the larger is the
# line's cycle_ratio (and losses.csv's). The run is warned (once; it goes on) when the ratio stays
# above CYCLE_WARNING_RATIO at every line over CYCLE_WARNING_SPAN iterations or more, counted from
# iteration CYCLE_WARNING_FROM. README.md, "When it does not learn", gives the margins that
# `python .ci/calibrate_warning.py` measured on real photos, on flat colours and on the demo.
CYCLE_WARNING_RATIO = 0.97
CYCLE_WARNING_SPAN = 100
CYCLE_WARNING_FROM = 100


def cycle_error_ratio(real, back, median):
    """mean |F(G(x)) - x| / mean |median x - x| over the test images."""
    baseline = (median.to(real.device) - real).abs().mean().clamp(min=1e-6)
    return ((back - real).abs().mean() / baseline).item()


# The loss curves: a panel per kind of term, each loss against the iteration. Adversarial losses
# hover (the two sides pull against each other); the cycle and identity fall. Each row is a mean
# over the iterations since the row before: a row of one iteration (a run's first, new or resumed)
# is left out where the others average more. The scale is set by the rows after the first tenth
# of the iterations, so that the large losses of the start run off the top, not flatten the rest.
LOSS_PANELS = (("discriminators", ("D_X", "D_Y")),
               ("adversarial terms of the generators", ("adv_XtoY", "adv_YtoX")),
               ("cycle and identity terms (weighted)", ("cycle_X", "cycle_Y", "idt_X", "idt_Y")))
CURVE_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))


def draw_loss_curves(rows, png_path, width=640, panel_height=180):
    """losses.csv's rows -> a PNG of the curves, drawn with Pillow; nothing until there are two."""
    iterations = [int(row[0]) for row in rows]
    spans = [now - before for before, now in zip([0] + iterations, iterations)]
    rows = [row for row, span in zip(rows, spans) if span > 1 or max(spans) == 1]
    if len(rows) < 2:
        return
    first = int(rows[0][0])
    last = int(rows[-1][0])
    left = 50
    right = width - 10

    def x_at(iteration):
        return left + (right - left) * (iteration - first) / (last - first)
    picture = Image.new("RGB", (width, panel_height * len(LOSS_PANELS)), "white")
    draw = ImageDraw.Draw(picture)
    for panel, (title, names) in enumerate(LOSS_PANELS):
        top = panel * panel_height + 20
        bottom = top + panel_height - 40
        columns = [[float(row[3 + LOSS_NAMES.index(name)]) for row in rows] for name in names]
        highest = max(value for column in columns for row, value in zip(rows, column)
                      if int(row[0]) >= first + (last - first) / 10) or 1.0
        draw.rectangle([left, top, right, bottom], outline=(200, 200, 200))
        for share in (0, 0.5, 1):  # the y axis: three values
            draw.text((3, bottom - (bottom - top) * share - 6), f"{highest * share:.2g}",
                      fill="black")
        draw.text((left, top - 16), title + ":", fill="black")
        label_x = left + 6 * len(title) + 12
        for name, column, colour in zip(names, columns, CURVE_COLOURS):
            draw.line([(x_at(int(row[0])), bottom - (bottom - top) * min(value / highest, 1))
                       for row, value in zip(rows, column)], fill=colour, width=2)
            draw.text((label_x, top - 16), name, fill=colour)
            label_x += 6 * len(name) + 12
    for share in (0, 0.25, 0.5, 0.75, 1):  # the x axis: five iterations
        iteration = round(first + (last - first) * share)
        draw.text((x_at(iteration) - 3 * len(str(iteration)), picture.height - 16), str(iteration),
                  fill="black")
    write_file(png_path, lambda f: picture.save(f, format="PNG"))


# --- 14. Generator files: ours and the authors' -----------------------------------------------
# A Generator's state_dict keys are the official ones (section 1): the authors' generators (bash
# download_data.sh pretrained NAME) load unchanged, and torch.save(model.G_XtoY.state_dict(), path)
# writes a file their loader reads. Their files also hold instance-norm running statistics that
# the network never uses (track_running_stats is off); like the official loader, we drop them.

def generator_for_translation(typed):
    """--translate's generator (--checkpoint FILE, or the newest run of --data), the suffix of the
    output names and the size to translate at; says which."""
    path = typed.get("checkpoint")
    if path is None:
        data = typed.get("data", DEFAULT_SETTINGS["data"][0])
        folder = latest_run_folder(data, ", a model file with --checkpoint FILE")
        path = os.path.join(folder, "checkpoint.pt")
    state = read_torch_file(path, "model file")
    direction = typed.get("direction")
    if "settings" in state:  # our checkpoint: both generators, --direction picks one
        suffix = direction or "XtoY"
        weights = {key.removeprefix(f"G_{suffix}."): value for key, value in state["model"].items()
                   if key.startswith(f"G_{suffix}.")}
        size = state["settings"].get("load_size")
    elif direction:
        raise CycleGANError(f"--direction does not apply to {path}: it holds one generator, "
                            "which translates one way only; drop the flag")
    else:  # a bare generator, such as the authors': outputs are named after the file, and it
        # translates at 256px, as the official test script does (which does not keep the aspect)
        suffix = os.path.splitext(os.path.basename(path))[0]
        weights = state
        size = 256
    generator = generator_from_state_dict(weights, path)
    size = typed.get("translate_size", size)
    at = "each photo's own size" if size == "original" else f"a shorter side of {size}px at most"
    print(f"translating with {path} at {at} (--translate-size sets it)")
    return generator, suffix, size


def generator_from_state_dict(state, path):
    """A state_dict in the official naming -> a Generator of the size its keys say."""
    weights = {key: value for key, value in state.items()
               if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    first = weights.get("model.1.weight")  # c7s1-64's kernels: (ngf, 3, 7, 7)
    expected = "expected a cyclegan.py checkpoint, or a generator state_dict in the official naming"
    if not (torch.is_tensor(first) and first.dim() == 4):
        raise CycleGANError(f"{path} holds no generator (no model.1.weight); {expected}")
    ngf = len(first)
    # Each residual block is one layer index N with keys model.N.conv_block.*
    n_blocks = len({key.split(".")[1] for key in weights if ".conv_block." in key})
    generator = Generator(ngf, n_blocks)
    try:
        generator.load_state_dict(weights)
    except RuntimeError as error:  # its first reason is the useful line
        reason = f"ngf {ngf}, {n_blocks} blocks: {str(error).splitlines()[1].strip()}"
        raise CycleGANError(f"{path} holds no generator that fits ({reason[:150]}); {expected}")
    return generator


# --- 15. Run folders and settings -------------------------------------------------------------
# A new run goes to the first free folder of runs/<dataset>, runs/<dataset>2, ..., so running a
# command twice never fails and never overwrites; --resume and --translate without a path take
# the dataset's newest run. A resumed run takes every setting from its checkpoint: a flag typed
# with --resume may change how it runs (--max-iters, --device ...), or extend the schedule, but
# one that contradicts what the run learns (sizes, losses, seed) is refused, not ignored. Settings
# of how a run is carried out, not what it learns, are apart: a resumed run may take new values.

RUNNING_SETTINGS = {
    "max_iters": (None, "stop after this many iterations in total"),
    "sample_every": (200, "write a sample grid every N iterations"),
    "log_every": (100, "print progress and a losses.csv row every N iterations"),
    "checkpoint_every": (1000, "save the checkpoint every N iterations (and when the run ends)"),
    "device": ("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"),
    "precision": ("auto", "auto: bf16 from Ampere GPUs, fp16 on older ones; on a CPU with bf16, "
                          "the faster of bf16 and fp32 (timed); else fp32"),
    "compile": (False, "fuse the networks' kernels with torch.compile; the first iteration and "
                       "sample grid take longer (default: not)"),
}


def flag(key):
    return "--" + key.replace("_", "-")


def run_name(data):
    """'summer2winter' -> summer2winter_yosemite; a folder path -> its last part; demo -> demo."""
    return os.path.basename(os.path.normpath(resolve_data_path(data)))


def latest_run_folder(data, or_else=""):
    """The newest of runs/<name>, runs/<name>2, ... that holds a checkpoint."""
    name = run_name(data)
    checkpoints = []
    for folder in os.listdir("runs") if os.path.isdir("runs") else []:
        path = f"runs/{folder}/checkpoint.pt"
        # runs/demo and runs/demo2 hold runs of demo; runs/demo_small holds another dataset's.
        if re.fullmatch(re.escape(name) + r"\d*", folder) and os.path.isfile(path):
            checkpoints.append(path)
    if not checkpoints:
        raise CycleGANError(f"no run of --data {data} in runs/ (looked for runs/{name}*/"
                            "checkpoint.pt); name the dataset it trained on with --data NAME or "
                            f"FOLDER{or_else}, or train one with: "
                            + command_to_run(["--data", data]))
    return os.path.dirname(max(checkpoints, key=os.path.getmtime))


def claim_free_name(base, extension, create):
    """Creates and returns the first free one of base + extension, base2 + extension, ...: create
    fails if the path exists, so two commands started together take two names."""
    number = 1
    while True:
        path = base + (str(number) if number > 1 else "") + extension
        try:
            create(path)
            return path
        except FileExistsError:
            number += 1


def save_new_png(pixels, base):
    """Writes the PNG whole under a name of this process's own, base.png.PID, then renames it to
    the first free one of base.png, base2.png, ... -> that name. Nothing is overwritten, and a
    kill leaves no half-written result: base.png.PID (or its .tmp), or for an instant (between
    claiming a name and the rename) that name empty."""
    staged = f"{base}.png.{os.getpid()}"
    save_png(pixels, staged)
    target = claim_free_name(base, ".png", lambda path: open(path, "x").close())  # "x": new only
    os.replace(staged, target)
    return target


@contextlib.contextmanager
def lock_run_folder(run_folder, data):
    """Makes the run folder (None: claims the first free runs/<data's name>N) and holds a lock on
    it while this process trains in it -> the folder. Refuses one that a live process holds (the
    same --out twice, a --resume while the run trains); the system releases the lock when the
    process ends, however it ends (no such locks on Windows)."""
    try:
        if run_folder is None:  # two runs started together take two names
            run_folder = claim_free_name(os.path.join("runs", run_name(data)), "", os.makedirs)
        os.makedirs(run_folder, exist_ok=True)
    except OSError as error:  # read-only, a file in the way, no permission ...
        raise CycleGANError(f"cannot make the run folder in {run_folder or 'runs'} "
                            f"({error.strerror or error}); choose another --out, or make the "
                            "folder writable") from None
    lock = None if fcntl is None else os.open(run_folder, os.O_RDONLY)
    try:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise CycleGANError(f"{run_folder} is in use by another process that trains in it; wait "
                            "for it to end (or stop it), then resume") from None
    except OSError:  # a filesystem without locks (some network mounts): the run goes unlocked
        print(f"note: {run_folder} cannot be locked on its filesystem; start no second run in it")
    # Now no other process writes here: a temporary file of ours (write_file's) was left by a run
    # killed while writing it. Only our names: --out may name a folder that holds the user's own.
    for ours in ("checkpoint.pt", "losses.csv", "losses.png", "samples/*.png"):
        for stale in glob.glob(f"{glob.escape(run_folder)}/{ours}.tmp"):
            os.remove(stale)
    try:
        yield run_folder
    finally:
        # A new run stopped before it wrote anything leaves no folder (removed while the lock is
        # still held; os.rmdir removes only an empty folder)
        with contextlib.suppress(OSError):
            os.rmdir(run_folder)
            if os.path.dirname(run_folder) == "runs":
                os.rmdir("runs")
        if lock is not None:
            os.close(lock)  # releases it


def prepare_run(typed):
    """Flags typed -> (the settings in force, run folder, checkpoint or None, a text saying where
    the settings came from). Each comes from the last of: the tables above, DEMO_SETTINGS (a new
    demo run), the checkpoint (a resumed run), the flags typed."""
    data = typed.get("data", DEFAULT_SETTINGS["data"][0])
    defaults = {key: value for key, (value, _) in {**DEFAULT_SETTINGS, **RUNNING_SETTINGS}.items()}
    run_folder = typed.get("out")
    checkpoint = None
    if typed.get("resume"):
        run_folder = run_folder or latest_run_folder(data)
        path = os.path.join(run_folder, "checkpoint.pt")
        checkpoint = read_torch_file(path, "checkpoint")
        if "settings" not in checkpoint:
            raise CycleGANError(f"{path} is not a cyclegan.py training checkpoint (a bare "
                                "generator file can be used with --translate, not resumed)")
        # --max-iters binds only the run that typed it: a trial's limit must not stop the next
        saved = {**defaults, **checkpoint["settings"], "max_iters": None}
        for key in DEFAULT_SETTINGS:
            fixed = key not in ("epochs", "decay_epochs")  # the schedule may change
            if fixed and key in typed and typed[key] != saved[key]:
                raise CycleGANError(f"{flag(key)} {typed[key]} does not match the checkpoint's "
                                    f"{saved[key]}; drop the flag to resume, or start a new run "
                                    "without --resume")
        in_force = {**saved, **typed}
        source = f"resuming {run_folder}"
        old, new = [f"{run['epochs']} + {run['decay_epochs']}" for run in (saved, in_force)]
        if old != new:
            source += f"; schedule changed from {old} to {new} epochs (constant + decaying)"
    else:  # a new run: train_from_flags names its folder in `source`, once it is claimed
        source = ""
        if run_folder and os.path.exists(os.path.join(run_folder, "checkpoint.pt")):
            raise CycleGANError(f"{run_folder}/checkpoint.pt already exists: add --resume to "
                                "continue that run, or leave out --out for a new folder")
        in_force = {**defaults, **(DEMO_SETTINGS if data == "demo" else {}), **typed}
        if in_force["load_size"] is None:
            in_force["load_size"] = round(in_force["image_size"] * 143 / 128)
    args = argparse.Namespace(**{key: in_force[key] for key in defaults})
    check_settings(args)
    typed_flags = " ".join(flag(key) for key in typed)
    listed = ", ".join(f"{flag(key)[2:]} {value}" for key, value in vars(args).items())
    introduction = f"{source}; typed: {typed_flags or 'nothing'}\n  {listed}\n"
    return args, run_folder, checkpoint, introduction


def check_settings(args):
    if args.image_size % 4 != 0 or args.image_size < 24:
        raise CycleGANError(f"--image-size {args.image_size}: must be a multiple of 4 and at least "
                            "24 (the generator halves it twice, the discriminator needs 24)")
    if args.load_size < args.image_size:
        raise CycleGANError(f"--load-size {args.load_size} is smaller than --image-size "
                            f"{args.image_size}; the crop must fit inside the resized image")
    for key in ("batch_size", "epochs", "lr", "ngf", "ndf", "sample_every", "log_every",
                "checkpoint_every", "max_iters"):
        if getattr(args, key) is not None and getattr(args, key) <= 0:
            raise CycleGANError(f"{flag(key)} {getattr(args, key)}: must be positive")
    for key in ("decay_epochs", "lambda_cycle", "lambda_identity", "pool_size", "n_blocks"):
        if getattr(args, key) < 0:
            raise CycleGANError(f"{flag(key)} {getattr(args, key)}: must be at least 0")


# --- 16. Ctrl-C -------------------------------------------------------------------------------
# Python turns Ctrl-C (and a notebook's stop button, which sends the same SIGINT) into a
# KeyboardInterrupt wherever the program is, perhaps half-way through an optimiser step. Once the
# loop runs, it is caught here and turned into a request that the loop honours after the
# iteration under way: the run is saved, and the command to resume is printed. Before the loop
# (decoding a dataset), or a second time, it stops at once, as a KeyboardInterrupt.

class StopOnCtrlC:
    def __enter__(self):
        self.looping = False  # the loop has asked requested(), and will ask again
        self.asked = False  # asked here, by Ctrl-C
        self.stopping = False  # agreed: the loop ends
        self.previous_handler = None
        with contextlib.suppress(ValueError):  # only the main thread may set handlers
            self.previous_handler = signal.signal(signal.SIGINT, self.on_ctrl_c)
        return self

    def requested(self, iteration):
        """Whether the loop should end now. Under torchrun every process must stop after the same
        iteration, whichever was asked (torchrun passes a terminal's Ctrl-C to each): at every
        10th iteration they all tell each other whether they were asked."""
        self.looping = True
        if process_count() > 1 and iteration % 10 != 0:
            return False
        self.stopping = any(every_process(self.asked))
        return self.stopping

    def on_ctrl_c(self, signum, frame):
        if self.asked or not self.looping:
            raise KeyboardInterrupt  # the checkpoint on disk stays whole: saves are atomic
        self.asked = True
        within = "within 10 iterations (torchrun)" if process_count() > 1 else "this iteration"
        print(f"\nstopping after {within}; Ctrl-C again to stop at once", flush=True)

    def __exit__(self, *exception):
        if self.previous_handler is not None:
            signal.signal(signal.SIGINT, self.previous_handler)


# --- 17. The demo's landscapes ----------------------------------------------------------------
# Section 7 explains the task. Each scene number seeds 7 random numbers that place a sun and
# shape a ridge of hills; the season only picks the colours.
SEASONS = {  # sky at the top, sky at the horizon, ground, sun: RGB in [0, 1]
    "summer": ((0.25, 0.45, 0.85), (0.6, 0.8, 1.0), (0.3, 0.65, 0.2), (1.0, 0.85, 0.2)),
    "winter": ((0.3, 0.38, 0.55), (0.62, 0.68, 0.78), (0.95, 0.95, 0.97), (1, 0.97, 0.85)),
}


def demo_images(first_scene, count, size, season):
    """Landscapes first_scene ... first_scene + count - 1 in one season: (count, 3, size, size)."""
    sky_top, sky_bottom, ground, sun = (torch.tensor(c).view(3, 1, 1) for c in SEASONS[season])
    ys = torch.linspace(0, 1, size).view(size, 1)  # 0 at the top
    xs = torch.linspace(0, 1, size).view(1, size)  # 0 at the left
    images = []
    for scene in range(first_scene, first_scene + count):
        # 7 numbers in [0, 1) make the scene: the sun's x, y and radius; the ridge's height,
        # the waves' amplitude, frequency and phase.
        u = torch.rand(7, generator=torch.Generator().manual_seed(scene)).tolist()
        image = sky_top + (sky_bottom - sky_top) * ys
        sun_x = 0.1 + 0.8 * u[0]
        sun_y = 0.1 + 0.25 * u[1]
        radius = 0.06 + 0.06 * u[2]
        image = torch.where((xs - sun_x) ** 2 + (ys - sun_y) ** 2 < radius ** 2, sun, image)
        waves = (0.03 + 0.12 * u[4]) * torch.sin(xs * (4 + 8 * u[5]) + 6.3 * u[6])
        ridge = 0.35 + 0.4 * u[3] + waves  # (1, size): where the ground starts in each column
        images.append(torch.where(ys > ridge, ground * (1 - 0.25 * (ys - ridge)), image))
    return (torch.stack(images) * 255).round().to(torch.uint8)


def draw_demo_dataset(args):
    """load_dataset for --data demo: summer draws scenes 0-199, winter 200-399, so the winter twin
    of a summer training image is never shown; the sample grids show held-out scenes."""
    images_X = demo_images(0, 200, args.load_size, "summer")
    images_Y = demo_images(200, 200, args.load_size, "winter")
    test_X = to_model_range(demo_images(DEMO_TEST_FIRST, 4, args.image_size, "summer"))
    test_Y = to_model_range(demo_images(DEMO_TEST_FIRST + 4, 4, args.image_size, "winter"))
    return UnpairedImages(images_X, images_Y, args.image_size), test_X, test_Y


# --- 18. Command line and notebooks -----------------------------------------------------------
# From a shell, the file trains (or translates) at once. Pasted into a notebook cell, it only
# defines everything (a cell that silently starts hours of training is a trap); main([...]) takes
# the flags, and a user error prints one line instead of raising SystemExit.

class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistyped flag is our usual one-line error, not a usage block and exit 2
    (which in a notebook would show a usage headed "ipykernel_launcher.py" and a traceback)."""
    def error(self, message):
        raise CycleGANError(f"{message}; see {command_to_run(['--help'])}")


def build_arg_parser():
    """Flags for every setting, without defaults: a flag absent from the result was not typed."""
    # allow_abbrev=False: argparse would otherwise take --epoch 3 for --epochs 3, silently.
    parser = ArgumentParser(prog="cyclegan.py", argument_default=argparse.SUPPRESS,
                            allow_abbrev=False,
                            description="Train CycleGAN (Zhu et al. 2017) or translate images.")
    for key, (default, meaning) in {**DEFAULT_SETTINGS, **RUNNING_SETTINGS}.items():
        if default is False:  # --compile and --no-compile (a resume may change it)
            parser.add_argument(flag(key), action=argparse.BooleanOptionalAction, help=meaning)
            continue
        kind = int if default is None else type(default)  # None: a number given or derived
        choices = ("auto", "fp32", "bf16", "fp16") if key == "precision" else None
        shown_default = "" if default is None else f" (default {default})"
        parser.add_argument(flag(key), type=kind, choices=choices, help=meaning + shown_default)
    parser.add_argument("--out", help="run folder (default: runs/<dataset>, runs/<dataset>2, "
                                      "...); with --translate, the output folder (translated)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the dataset's newest run, or the one in --out")
    parser.add_argument("--translate", nargs="+", metavar="PATH",
                        help="translate these images or folders of images instead of training")
    parser.add_argument("--checkpoint", help="for --translate: a checkpoint.pt, or a generator's "
                                             ".pth (default: the newest run's checkpoint)")
    parser.add_argument("--direction", choices=["XtoY", "YtoX"],
                        help="for --translate with a checkpoint.pt: XtoY (default) or YtoX")
    parser.add_argument("--translate-size", type=size_or_original, metavar="PIXELS",
                        help="for --translate: photos larger than this are translated at this "
                             "shorter side (default: a checkpoint's --load-size; 256 for the "
                             "authors' files); 'original': at each photo's own")
    parser.add_argument("--small-output", action="store_true",
                        help="for --translate: write the translation at the size it was made at, "
                             "not carried back to the photo's own size")
    return parser


# The flags for --translate only, and those that it takes besides them.
TRANSLATE_ONLY = ("translate", "checkpoint", "direction", "translate_size", "small_output")
TRANSLATE_TOO = ("out", "data", "device", "precision")


def size_or_original(text):
    if text == "original":
        return text
    if text.isdigit() and int(text) >= 8:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is neither a number of pixels (8 or more) nor "
                                     "'original'")


def in_notebook():
    """True inside a Jupyter kernel (Colab's included): it imports ipykernel before any cell."""
    return "ipykernel" in sys.modules or "google.colab" in sys.modules


def command_to_run(arguments, one_process=False):
    """The call of cyclegan.py with these arguments, here (one_process: never torchrun)."""
    if in_notebook():
        return f"main({arguments!r})"
    command = "python"
    if "TORCHELASTIC_RUN_ID" in os.environ and not one_process:
        machines = int(os.environ["WORLD_SIZE"]) // int(os.environ["LOCAL_WORLD_SIZE"])
        where = f"--nnodes={machines} --rdzv-endpoint=HOST:PORT" if machines > 1 else "--standalone"
        command = f"torchrun {where} --nproc_per_node={os.environ['LOCAL_WORLD_SIZE']}"
    # The script as it was started (python path/to/cyclegan.py), so that the command runs from
    # the same folder; "cyclegan.py" where it was imported (tests)
    started = os.path.basename(sys.argv[0]) == os.path.basename(__file__)
    return f"{command} {shlex.quote(sys.argv[0] if started else 'cyclegan.py')} " + shlex.join(
        arguments)


def train_from_flags(typed):
    """Training as the command line asks. Stopped by Ctrl-C, it exits with status 130 (as shells
    report SIGINT), so that `python cyclegan.py ... && next_step` does not go on."""
    device = start_torchrun_or_choose_device(typed.get("device", "auto"))
    # Under torchrun only the first process prints; it also decides the run folder, locks it and
    # reads the checkpoint, and the others take its word.
    output = sys.stdout if first_process() else open(os.devnull, "w")
    run_folder = None
    args = None
    training = None
    stopped = True  # unless the run ends on its own
    try:
        with contextlib.redirect_stdout(output), StopOnCtrlC() as stop:
            prepared = prepare_run(typed) if first_process() else None
            args, run_folder, checkpoint, introduction = from_first_process(prepared)
            # The data is read, and auto precision timed, before anything is written: a bad
            # dataset, or Ctrl-C or a kill while they take their time, leaves no run folder.
            dataset = load_dataset(args)
            precision = run_precision(args, device, checkpoint)
            locked = lock_run_folder(run_folder, args.data) if first_process() else None
            with locked or contextlib.nullcontext() as claimed:
                run_folder = from_first_process(claimed)
                if checkpoint is None:
                    kind = "the demo's" if args.data == "demo" else "the default"
                    introduction = f"new run in {run_folder} with {kind} settings{introduction}"
                try:
                    training = train(args, dataset, precision, run_folder, checkpoint,
                                     introduction, stop, device)
                except (WriteFailed, torch.OutOfMemoryError) as error:
                    raise CycleGANError(training_fault(error, args, device, run_folder)) from None
            stopped = stop.stopping
            if first_process() and not stopped:
                print_next_steps(training, args, run_folder)
    except KeyboardInterrupt:  # Ctrl-C before the loop, or a second one: stopped at once
        if first_process():
            print(f"\ninterrupted; {resume_advice(run_folder, args)}")
    finally:
        if dist.is_initialized():  # under torchrun: leave the other processes
            dist.destroy_process_group()
    if stopped and not in_notebook():
        raise SystemExit(130)
    return None if training is None else training.model


def print_next_steps(training, args, run_folder):
    """After a run: the demo's check (section 7), or how to translate with the model."""
    if args.data != "demo":
        print("translate photos with this model:\n  " + command_to_run(
            ["--translate", "PHOTO_OR_FOLDER", "--checkpoint", f"{run_folder}/checkpoint.pt"],
            one_process=True))
        return
    errors = demo_translation_errors(training.model, args.image_size, training.precision)
    print(f"demo check, mean |error| on 64 held-out scenes: G(x) vs true y {errors['XtoY']:.3f}, "
          f"F(y) vs true x {errors['YtoX']:.3f}; doing nothing {errors['identity']:.3f}, "
          f"median target image {errors['median_XtoY']:.3f} / {errors['median_YtoX']:.3f}")
    # held-out summer scenes to try --translate on (the demo's model knows no real photos)
    folder = os.path.join(run_folder, "held_out_summer")
    for number, scene in enumerate(demo_images(DEMO_TEST_FIRST + 200, 4, args.load_size, "summer")):
        save_png(scene, os.path.join(folder, f"scene_{number}.png"))
    print(f"held-out summer scenes in {folder}/; translate them to winter with:\n  "
          + command_to_run(["--data", "demo", "--translate", folder], one_process=True))


def main(argv=None):
    """Command line: python cyclegan.py --data summer2winter. Notebook: main(["--data", "demo"])."""
    if argv is None and in_notebook():  # the file pasted into a cell: do not start hours of work
        print('cyclegan.py is loaded. Start training from the next cell, e.g. '
              'main(["--data", "summer2winter"]), or main(["--data", "demo"]) for the demo.')
        return None
    cudnn_benchmark = torch.backends.cudnn.benchmark
    try:
        typed = vars(build_arg_parser().parse_args(argv))  # argv None: the command line's
        translating = "translate" in typed
        for key in typed:  # a flag that does nothing for what is asked is a mistake: say so
            if key not in TRANSLATE_TOO and (key in TRANSLATE_ONLY) != translating:
                doing = "--translate" if translating else "training (without --translate PATH)"
                raise CycleGANError(f"{flag(key)} does not apply to {doing}; drop it")
        if translating:
            if int(os.environ.get("WORLD_SIZE", 1)) > 1:
                raise CycleGANError("--translate runs in one process; start it with python "
                                    "cyclegan.py, not torchrun")
            return translate(typed)
        # cuDNN may time its kernels for each new input shape and keep the fastest: a run has
        # only a few shapes (the batches, a last partial batch, the sample grids).
        torch.backends.cudnn.benchmark = True
        return train_from_flags(typed)
    except CycleGANError as error:  # the user's to fix: one line, no traceback
        # Under torchrun each process prints its own, numbered (a bad flag fails in all of them)
        number = f"(process {os.environ['RANK']}) " if "TORCHELASTIC_RUN_ID" in os.environ else ""
        print(f"error: {number}{error}", file=sys.stderr)
        if not in_notebook():
            raise SystemExit(1) from None
    except SystemExit:  # after --help; a notebook must not be told to exit
        if not in_notebook():
            raise
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark  # leave the process as we found it


if __name__ == "__main__":
    main()
