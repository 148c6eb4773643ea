"""Speed benchmark (not a test: run it by hand, on an idle machine).

    python .ci/benchmark.py [--iters 30] [--image-size 128]      # the CPU: fp32 and auto
    python .ci/benchmark.py --device cuda                        # a GPU: see below
    python .ci/benchmark.py --compare-processes [--image-size 64]   # torchrun on 2 CPU cores
    python .ci/benchmark.py --translate-12mp                     # one 4000x3000 photo
    python .ci/benchmark.py --translation-memory                 # bytes per pixel per filter
    python .ci/benchmark.py --saved-memory [--image-size 256]    # what backward keeps
    python .ci/benchmark.py --busy --iters 200                   # beside other work

CPU: for fp32 and auto it runs the real command line on a folder of generated images, reads the
recent wall time per iteration from its last progress line and the process's peak RAM (resident
set, from the kernel), then times the bare step (train_step on tensors already in memory,
nothing else) in the same configuration, and prints the loop's overhead as the ratio of the two.

GPU (--device cuda): the same, with torch.cuda.synchronize() around each timed bare step, in
auto, bf16 (where the GPU has it: capability 8.0 on), fp16 and fp32, at 128px with 6 blocks and at
256px with 9 blocks (the official code's size), with each run's peak GPU memory from its `done:`
line, and each also with --compile (its loop against eager's, and its first iteration); on a
machine with 2 GPUs, also a 2-process torchrun run. On one H200 the whole command (--iters 30,
before --compile was added) took under 4 minutes.

--translate-12mp: one 4000x3000 JPEG translated with a paper-sized generator file (64 filters, 9
blocks, random weights; the authors' files learned at 256px) three ways: the default (translated
at 256x341, carried back to 4000x3000), --small-output (the same, written at 256x341: the
photo's decoding and the network, without the carrying back), and --translate-size original (the
generator at 4000x3000); each command's wall time and peak RAM (resident set, from the kernel).

--translation-memory: the memory that translating at a photo's own size takes, which
cyclegan.py's TRANSLATION_BYTES_PER_PIXEL_PER_FILTER estimates: a 1000x1000 photo translated with
--translate-size original by generator files of 16, 32 and 64 filters (9 blocks), in fp32 and
bf16; each command's peak RAM (resident set, from the kernel) less that of the same command on a
8x8 photo, per pixel and filter.

--saved-memory: the bytes of the tensors that autograd keeps for backward in one generator step
(the larger of the two steps: six generator passes and two discriminator passes), counted on
the CPU by saved_tensors_hooks (distinct storages), in fp32 and bf16, at --image-size with 6
blocks (128px) or 9 (256px). This is the activation memory of a step, not a GPU's peak, which
adds the weights, Adam's moments, the gradients, workspaces and the allocator's cache.

--compare-processes: the same global batch of 2 images, trained as 1 process of 2 threads at
--batch-size 2 and as 2 torchrun processes of 1 thread at batch 1; prints images per second.

Our measurements (2-core CPUs, torch 2.14.1, 128px, batch 1, the paper-sized networks; loop s/it
was the median step of an earlier version's log, or for "another machine" the recent wall time
per iteration, which is what the progress lines give now; these shared machines vary by up to
25% from hour to hour, and from machine to machine by more):

| machine | precision | loop s/it | bare step s/it | overhead | peak RAM |
| --- | --- | --- | --- | --- | --- |
| AVX512-BF16, run 1 | fp32 | 2.568 | 2.726 | 0.94x | 1.57 GB |
| AVX512-BF16, run 2 | fp32 | 2.747 | 2.516 | 1.09x | 1.57 GB |
| AVX512-BF16, run 1 | auto = bf16 | 1.717 | 1.726 | 0.99x | 1.58 GB |
| AVX512-BF16, run 2 | auto = bf16 | 1.526 | 1.592 | 0.96x | 1.58 GB |
| AVX512-BF16, another machine (12 iterations) | fp32 | 1.081 | 1.110 | 0.97x | 1.57 GB |
| AVX512-BF16, another machine (12 iterations) | auto = bf16 | 0.722 | 0.661 | 1.09x | 1.57 GB |
| AVX2 only (20 iterations) | fp32 | 2.948 | 2.975 | 0.99x | 1.57 GB |
| AVX2 only (20 iterations) | auto = fp32 | 2.890 | 2.869 | 1.01x | 1.58 GB |
| Intel Xeon, AVX512-BF16 (7 iterations) | fp32 | 2.584 | 2.342 | 1.10x | 1.57 GB |
| Intel Xeon, AVX512-BF16 (7 iterations) | auto = bf16 | 2.952 | 2.719 | 1.09x | 1.55 GB |

- bf16 was 1.50x-1.80x faster than fp32 where the CPU has bf16 instructions (1.64x on the means),
  except on the Intel Xeon (cpu family 6, model 207; avx512_bf16 listed, no amx flags in its
  VM), where it was slower: bare steps of 1.925 / 1.869 / 2.145 s in fp32 against 2.913 / 2.859
  / 2.926 s in bf16 (12 iterations each, alternating, 2026-12-06), so `auto` costs there.
- The loop's own per-step work is making the batch: the epoch's plan drawn again (step 18 keeps
  no plan between iterations), then a crop and flip of the uint8 cache. 0.21-0.38 ms per
  iteration at 128px with a summer2winter-sized cache (this script's "making a batch" line, and
  the same loop run by hand, on an Intel Xeon with AVX512-BF16; 0.13-0.15 ms with the plan kept),
  0.02% of a CPU step and at most 0.6% of the H200's 0.064 s step below.
- Left out: torch.compile made the bf16 step 5% faster (1.599 vs 1.684 s/it, 20 steps) but its
  first step took 102 s, and its checkpoints would need renamed keys. channels_last made fp32
  slower (2.539 -> 2.995 s/it) and bf16 no faster (1.713 -> 1.708 s/it). Neither was measured on
  a GPU.
- Peak RAM with a summer2winter-sized image cache (2,193 images at 143px, 134.5 MB of uint8), 8
  iterations: 1.58 GB (bf16) and 1.69-1.70 GB (fp32, AVX2 machine), from
  `/usr/bin/time -v python cyclegan.py --data s2w --max-iters 8` on a folder made with
  `make_dataset('s2w', n_x=1231, n_y=962, n_test=4)` from test_cyclegan.py.
- --busy --iters 200 on an AMD EPYC with AVX512-BF16 (2026-12-07), s/it: the count fixed at 2
  alone 0.042 / 0.047 / 0.036, beside a busy loop 0.184, two at once 0.203 and 0.198; passive
  wait 0.116 / 0.114 / 0.108, 0.125, 0.118 and 0.115; following the free cores 0.041 / 0.050 /
  0.048, 0.054, 0.051 and 0.050.
- --compare-processes at 128px, 12 iterations, on an AVX512-BF16 machine (bf16), with the
  gradients averaged in GradScaler.step (step 18): 1 process of 2 threads at batch 2 ran
  2.344 s/it (0.85 images/s), 2 torchrun processes of 1 thread at batch 1 2.533 s/it
  (0.79 images/s).
- --translate-12mp on an AVX512-BF16 machine (auto = bf16): the default 7.1 s, peak RAM 1.18 GB;
  --small-output 2.9 s, 1.18 GB (so carrying the translation back to 4000x3000 cost 4.2 s and
  no measurable memory); --translate-size original 100.0 s, 8.63 GB.
- --translation-memory on an AVX512-BF16 machine (MB above the 8x8 photo's peak, for 1
  megapixel): fp32 154 / 359 / 836 with 16 / 32 / 64 filters (9.6 / 11.2 / 13.1 bytes per pixel
  per filter); bf16 456 / 544 / 618 (28.5 / 17.0 / 9.7).
- --saved-memory --image-size 256 on an AMD EPYC with AVX512-BF16 (2026-12-07): the generator
  step saves 2.30 GB for backward in fp32 and 1.61 GB in bf16.
- One NVIDIA H200 (capability 9.0, driver 580.159.04, torch 2.11.0+cu130, 16 CPU threads),
  `python .ci/benchmark.py --device cuda --iters 30`, 2026-12-04 (s/it; peak GPU memory from the
  `done:` line):

  | size | precision | loop s/it | bare step s/it | overhead | peak GPU memory |
  | --- | --- | --- | --- | --- | --- |
  | 128px, 6 blocks | auto = bf16 | 0.0640 | 0.0745 | 0.86x | 0.57 GB |
  | 128px, 6 blocks | bf16 | 0.0750 | 0.0760 | 0.99x | 0.57 GB |
  | 128px, 6 blocks | fp16 | 0.0750 | 0.0738 | 1.02x | 0.57 GB |
  | 128px, 6 blocks | fp32 | 0.0930 | 0.0747 | 1.25x | 2.74 GB |
  | 256px, 9 blocks | auto = bf16 | 0.0870 | 0.0933 | 0.93x | 1.63 GB |
  | 256px, 9 blocks | bf16 | 0.0950 | 0.0834 | 1.14x | 1.63 GB |
  | 256px, 9 blocks | fp16 | 0.0930 | 0.0870 | 1.07x | 1.63 GB |
  | 256px, 9 blocks | fp32 | 0.0790 | 0.0847 | 0.93x | 10.98 GB |

  At batch 1 the step takes about the same time at 128px and 256px and in every precision: on
  this GPU it is bound by launching its kernels from Python, not by arithmetic, so 16-bit buys
  memory here, not speed. The 30-iteration runs are short (the recent mean covers 28 steps), so
  the loop/bare ratios scatter by about 15% around 1. The same session's `python cyclegan.py
  --data demo` on the H200: 400 iterations in 23.6 s, demo check G(x) 0.068, F(y) 0.065 against
  the average target image's 0.160 / 0.144 (that version's baseline; the median image's is
  0.121 / 0.101).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
import torch  # noqa: E402

import cyclegan  # noqa: E402
from test_cyclegan import make_dataset  # noqa: E402

SCRIPT = os.path.join(ROOT, "cyclegan.py")


def bare_step_seconds(precision_name, device, image_size, n_blocks, iters):
    """Median seconds of train_step (4 networks forward + backward, both Adam steps, the pools),
    waiting for the GPU to finish each one."""
    args, _, _, _ = cyclegan.prepare_run({"image_size": image_size, "n_blocks": n_blocks,
                                          "out": "unused"})
    precision = cyclegan.Precision(precision_name, device)
    torch.backends.cudnn.benchmark = True  # as cyclegan.main() sets it
    training = cyclegan.Training(args, precision, device)
    real_X = torch.rand(1, 3, image_size, image_size, device=device) * 2 - 1
    real_Y = torch.rand(1, 3, image_size, image_size, device=device) * 2 - 1
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        cyclegan.train_step(training.model, real_X, real_Y, training.opt_G, training.opt_D,
                            training.pool_X, training.pool_Y, precision, args)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[5:])


def batch_seconds(image_size, calls=200):
    """Mean seconds of planned_batch (the epoch's plan drawn again, then a crop and flip of the
    uint8 cache) with a summer2winter-sized cache: 1,231 and 962 images."""
    load_size = round(image_size * 143 / 128)
    data = cyclegan.UnpairedImages(torch.zeros(1231, 3, load_size, load_size, dtype=torch.uint8),
                                   torch.zeros(962, 3, load_size, load_size, dtype=torch.uint8),
                                   image_size)
    settings = argparse.Namespace(seed=0, batch_size=1)
    start = time.perf_counter()
    for iteration in range(calls):
        cyclegan.planned_batch(data, settings, 0, iteration, "cpu")
    return (time.perf_counter() - start) / calls


def busy_machine(iters, folder):
    """The demo (fp32, --max-iters ITERS) alone (3 times each, alternating), beside a busy loop
    that holds one core (another job), and beside a second demo started with it; before step 21
    (OMP_NUM_THREADS set to the core count: torch's default count, which cyclegan.py kept), with
    OpenMP's passive wait policy (a candidate: waiting threads sleep instead of spinning; set
    before torch starts, so here in the environment), and after (OMP_NUM_THREADS unset:
    cyclegan.py follows the free cores). Prints each run's s/it from its last progress line."""
    command = [sys.executable, SCRIPT, "--data", "demo", "--precision", "fp32", "--max-iters",
               str(iters), "--log-every", str(iters)]
    after = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    before = {**after, "OMP_NUM_THREADS": str(os.cpu_count())}
    settings = {"before": before, "passive": {**before, "OMP_WAIT_POLICY": "PASSIVE"},
                "after": after}

    def runs(label, count):
        processes = [subprocess.Popen([*command, "--out", f"{label}_{time.time()}_{n}"],
                                      cwd=folder, env=settings[label], stdout=subprocess.PIPE,
                                      text=True) for n in range(count)]
        outputs = [process.communicate()[0] for process in processes]
        return ", ".join(re.findall(r"([\d.]+ s/it), ETA", output)[-1] for output in outputs)
    for label in list(settings) * 3:
        print(f"{label}: alone {runs(label, 1)}", flush=True)
    for label in settings:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1)
        print(f"{label}: beside a busy loop {runs(label, 1)}", flush=True)
        hog.kill()
        print(f"{label}: two demos at once {runs(label, 2)}", flush=True)


def run_command(command, folder, environment=None, first=False):
    """Runs a training command -> (its last progress line's s/it, its `done:` line, peak RAM;
    first: the first iteration's seconds instead)."""
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(command, cwd=folder, stdout=output, text=True,
                                   env=environment)
        _, status, usage = os.wait4(process.pid, 0)  # usage: this run's resources
        assert os.waitstatus_to_exitcode(status) == 0, f"{command} failed"
        output.seek(0)
        lines = output.read().strip().splitlines()
    done = next(line for line in lines if line.startswith("done:"))
    progress = [line for line in lines if " s/it, ETA " in line]
    seconds = float(re.search(r"([\d.]+) s/it, ETA", progress[-1]).group(1))
    if first:
        line = next(line for line in lines if "s for this iteration" in line)
        return seconds, done, float(re.search(r"([\d.]+) s for this iteration", line).group(1))
    return seconds, done, usage.ru_maxrss / 1e6  # Linux counts it in KB


def benchmark(device_name, precisions, sizes, iters, folder, compiled=False):
    """The loop's s/it is that of the run's second half (the first half's progress line and its
    check come before it). compiled: each precision also with --compile, and its first iteration
    (which includes compiling the networks; the check at the first line compiles them once more,
    for no_grad, inside the first half)."""
    device = torch.device(device_name)
    for image_size, n_blocks in sizes:
        for flag in precisions:
            name = cyclegan.Precision(flag, device).name
            command = [sys.executable, SCRIPT, "--data", "data", "--image-size", str(image_size),
                       "--n-blocks", str(n_blocks), "--max-iters", str(iters), "--log-every",
                       str(iters // 2), "--precision", flag, "--out", f"run_{image_size}_{flag}",
                       "--device", device_name]
            loop, done, ram = run_command(command, folder)
            bare = bare_step_seconds(name, device, image_size, n_blocks, iters)
            print(f"{image_size}px, {n_blocks} blocks, --precision {flag} ({name}): loop "
                  f"{loop:.4f} s/it, bare step {bare:.4f} s/it, overhead {loop / bare:.3f}x; "
                  f"peak RAM {ram:.2f} GB\n    {done}", flush=True)
            if compiled:
                command[command.index("--out") + 1] += "_compiled"
                fast, done, first = run_command([*command, "--compile"], folder, first=True)
                print(f"    --compile: loop {fast:.4f} s/it ({loop / fast:.2f}x eager's), first "
                      f"iteration {first:.1f} s\n    {done}", flush=True)
        print(f"{image_size}px: making a batch (planned_batch, summer2winter-sized cache) "
              f"{batch_seconds(image_size) * 1e3:.3f} ms per iteration", flush=True)


def compare_processes(image_size, iters, folder):
    """The same 2 images per iteration: 1 process of 2 threads, or 2 processes of 1 thread."""
    common = ["--data", "data", "--image-size", str(image_size), "--max-iters", str(iters),
              "--log-every", str(iters), "--device", "cpu"]
    alone = [sys.executable, SCRIPT, *common, "--batch-size", "2", "--out", "alone"]
    seconds, done, _ = run_command(alone, folder, {**os.environ, "OMP_NUM_THREADS": "2"})
    print(f"1 process, 2 threads, batch 2: {seconds:.3f} s/it, {2 / seconds:.2f} images/s\n"
          f"    {done}", flush=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", SCRIPT, *common, "--batch-size", "1", "--out", "two"]
    seconds, done, _ = run_command(torchrun, folder, {**os.environ, "OMP_NUM_THREADS": "1"})
    print(f"2 processes (torchrun), 1 thread each, batch 1: {seconds:.3f} s/it, "
          f"{2 / seconds:.2f} images/s\n    {done}", flush=True)


def translate_12mp(folder):
    from PIL import Image
    generator = cyclegan.Generator(64, 9)
    torch.save(generator.state_dict(), os.path.join(folder, "g.pth"))
    torch.manual_seed(0)  # a smooth random picture with some fine noise, 4000 x 3000
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 30, 40), size=(3000, 4000),
                                             mode="bicubic")[0]
    pixels = ((smooth + 0.05 * torch.randn_like(smooth)).clamp(0, 1) * 255).to(torch.uint8)
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(os.path.join(folder, "photo.jpg"))
    for name, flags in (("default", []), ("--small-output", ["--small-output"]),
                        ("--translate-size original", ["--translate-size", "original"])):
        command = [sys.executable, SCRIPT, "--translate", "photo.jpg", "--checkpoint", "g.pth",
                   "--out", "out", *flags]
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        assert os.waitstatus_to_exitcode(status) == 0, f"{command} failed"
        line = [line for line in process.stdout.read().splitlines() if " -> " in line][0]
        print(f"{name}: {seconds:.1f} s, peak RAM {usage.ru_maxrss / 1e6:.2f} GB\n    {line}",
              flush=True)


def translation_memory(folder):
    from PIL import Image
    for side in (8, 1000):
        pixels = (torch.rand(side, side, 3) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(os.path.join(folder, f"photo{side}.png"))
    for filters in (16, 32, 64):
        torch.save(cyclegan.Generator(filters, 9).state_dict(), os.path.join(folder, "g.pth"))
        for precision in ("fp32", "bf16"):
            peaks = []
            for side in (8, 1000):
                command = [sys.executable, SCRIPT, "--translate", f"photo{side}.png",
                           "--checkpoint", "g.pth", "--out", f"out_{filters}_{precision}",
                           "--translate-size", "original", "--precision", precision,
                           "--device", "cpu"]
                process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL)
                _, status, usage = os.wait4(process.pid, 0)
                assert os.waitstatus_to_exitcode(status) == 0, f"{command} failed"
                peaks.append(usage.ru_maxrss * 1000)  # Linux counts it in KB
            per = (peaks[1] - peaks[0]) / (1000 * 1000 * filters)
            print(f"{filters} filters, {precision}: {(peaks[1] - peaks[0]) / 1e6:.0f} MB above "
                  f"the 8x8 photo's peak for 1 megapixel: {per:.1f} bytes per pixel per filter",
                  flush=True)


def saved_memory(image_size):
    n_blocks = 9 if image_size >= 256 else 6
    args, _, _, _ = cyclegan.prepare_run({"image_size": image_size, "n_blocks": n_blocks,
                                          "out": "unused"})
    device = torch.device("cpu")
    real_X = torch.rand(1, 3, image_size, image_size) * 2 - 1
    real_Y = torch.rand(1, 3, image_size, image_size) * 2 - 1
    for precision_name in ("fp32", "bf16"):
        precision = cyclegan.Precision(precision_name, device)
        training = cyclegan.Training(args, precision, device)
        storages = {}

        def keep(tensor):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            cyclegan.generator_step(training.model, real_X, real_Y, training.opt_G, precision,
                                    args)
        print(f"{image_size}px, {n_blocks} blocks, {precision_name}: the generator step saves "
              f"{sum(storages.values()) / 1e9:.2f} GB for backward ({len(storages)} tensors)",
              flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--compare-processes", action="store_true")
    parser.add_argument("--translate-12mp", action="store_true")
    parser.add_argument("--translation-memory", action="store_true")
    parser.add_argument("--saved-memory", action="store_true")
    parser.add_argument("--busy", action="store_true")
    options = parser.parse_args()
    if options.saved_memory:
        saved_memory(options.image_size)
        return
    with tempfile.TemporaryDirectory() as folder:
        if options.translate_12mp:
            translate_12mp(folder)
            return
        if options.translation_memory:
            translation_memory(folder)
            return
        if options.busy:
            busy_machine(options.iters, folder)
            return
        make_dataset(os.path.join(folder, "data"), n_x=20, n_y=20, n_test=4)
        if options.compare_processes:
            compare_processes(options.image_size, options.iters, folder)
        elif options.device == "cpu":
            benchmark("cpu", ["fp32", "auto"], [(options.image_size, 6)], options.iters, folder)
        else:
            precisions = ["auto", "fp16", "fp32"]
            if torch.cuda.get_device_capability()[0] >= 8:
                precisions.insert(1, "bf16")
            benchmark("cuda", precisions, [(128, 6), (256, 9)], options.iters, folder,
                      compiled=True)
            if torch.cuda.device_count() >= 2:
                command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", SCRIPT, "--data", "data", "--max-iters",
                           str(options.iters), "--log-every", str(options.iters), "--out", "two"]
                seconds, done, _ = run_command(command, folder)
                print(f"2 GPUs (torchrun), 128px, batch 1 each: {seconds:.4f} s/it, "
                      f"{2 / seconds:.1f} images/s\n    {done}")
            print(f"GPU: {torch.cuda.get_device_name()}, capability "
                  f"{torch.cuda.get_device_capability()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")


if __name__ == "__main__":
    main()
