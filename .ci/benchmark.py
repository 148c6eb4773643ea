"""Speed benchmark (not a test: run it by hand, on an idle machine).

    python .ci/benchmark.py [--iters 30] [--image-size 128]

For each precision it runs the real command line on a folder of generated images, reads its
`done:` line (the median step) and the process's peak RAM (resident set, from the kernel), then
times the bare step (train_step on tensors already in memory, nothing else) in the same
configuration, and prints the loop's overhead as the ratio of the two.

Our measurements (2-core CPUs, torch 2.14.1, 128px, batch 1, the paper-sized networks; s/it is the
median step; these shared machines vary by up to 25% from hour to hour):

| machine | precision | loop s/it | bare step s/it | overhead | peak RAM |
| --- | --- | --- | --- | --- | --- |
| AVX512-BF16, run 1 | fp32 | 2.568 | 2.726 | 0.94x | 1.57 GB |
| AVX512-BF16, run 2 | fp32 | 2.747 | 2.516 | 1.09x | 1.57 GB |
| AVX512-BF16, run 1 | auto = bf16 | 1.717 | 1.726 | 0.99x | 1.58 GB |
| AVX512-BF16, run 2 | auto = bf16 | 1.526 | 1.592 | 0.96x | 1.58 GB |
| AVX2 only (20 iterations) | fp32 | 2.948 | 2.975 | 0.99x | 1.57 GB |
| AVX2 only (20 iterations) | auto = fp32 | 2.890 | 2.869 | 1.01x | 1.58 GB |

- bf16 was 1.50x-1.80x faster than fp32 where the CPU has bf16 instructions (1.64x on the means).
- The loop's own per-step work is making the batch, a crop and flip of the uint8 cache: 0.15-0.24
  ms per call at 128px, under 0.01% of a step.
- Left out: torch.compile made the bf16 step 5% faster (1.599 vs 1.684 s/it, 20 steps) but its
  first step took 102 s, and its checkpoints would need renamed keys. channels_last made fp32
  slower (2.539 -> 2.995 s/it) and bf16 no faster (1.713 -> 1.708 s/it). Neither was measured on
  a GPU.
- Peak RAM with a summer2winter-sized image cache (2,193 images at 143px, 134.5 MB of uint8), 8
  iterations: 1.58 GB (bf16) and 1.69-1.70 GB (fp32, AVX2 machine), from
  `/usr/bin/time -v python cyclegan.py --data s2w --max-iters 8` on a folder made with
  `make_dataset('s2w', n_x=1231, n_y=962, n_test=4)` from test_cyclegan.py.
- No GPU figures: this project's machines have no GPU.
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


def bare_step_seconds(precision_name, image_size, iters):
    """Median seconds of train_step (4 networks forward + backward, both Adam steps, the pools)."""
    args, _, _, _ = cyclegan.prepare_run({"image_size": image_size, "out": "unused"})
    precision = cyclegan.Precision(precision_name, torch.device("cpu"))
    training = cyclegan.Training(args, precision, cyclegan.OneProcess(torch.device("cpu")))
    real_X = torch.rand(1, 3, image_size, image_size) * 2 - 1
    real_Y = torch.rand(1, 3, image_size, image_size) * 2 - 1
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        cyclegan.train_step(training.model, real_X, real_Y, training.opt_G, training.opt_D,
                            training.pool_X, training.pool_Y, precision, args)
        times.append(time.perf_counter() - start)
    return statistics.median(times[5:])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=128)
    options = parser.parse_args()
    default = cyclegan.automatic_precision(torch.device("cpu"))
    with tempfile.TemporaryDirectory() as folder:
        make_dataset(os.path.join(folder, "data"), n_x=20, n_y=20, n_test=4)
        for flag, name in (("fp32", "fp32"), ("auto", default)):
            command = [sys.executable, os.path.join(ROOT, "cyclegan.py"), "--data", "data",
                       "--image-size", str(options.image_size), "--max-iters", str(options.iters),
                       "--precision", flag, "--out", f"run_{flag}", "--device", "cpu"]
            with tempfile.TemporaryFile("w+") as output:
                process = subprocess.Popen(command, cwd=folder, stdout=output, text=True)
                _, status, usage = os.wait4(process.pid, 0)  # usage: this run's resources
                process.returncode = os.waitstatus_to_exitcode(status)
                assert process.returncode == 0, f"{command} failed"
                output.seek(0)
                done = output.read().strip().splitlines()[-1]
            done += f", peak RAM {usage.ru_maxrss / 1e6:.2f} GB"  # Linux counts it in KB
            loop = float(re.search(r"median step ([\d.]+) s", done).group(1))
            bare = bare_step_seconds(name, options.image_size, options.iters)
            print(f"--precision {flag} ({name}): {done}")
            print(f"    bare step {bare:.3f} s/it, loop overhead {loop / bare:.3f}x", flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")


if __name__ == "__main__":
    main()
