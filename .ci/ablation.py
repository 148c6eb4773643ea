"""What each part of CycleGAN does on the demo (the paper's ablation, section 5.1.4), measured.

    python .ci/ablation.py [--seeds 0 1 2 3]

Trains `python cyclegan.py --data demo` once per seed with the full objective and with one part
left out at a time (through the flags that exist), reads each run's demo check line, and prints a
README table: the mean |error| of G(x) against the true winter scene and of F(y) against the true
summer scene, each as a share of the average target image's error (below 1: better than a
generator that ignores its input), mean and range over the seeds. Takes about 25 s per run on a
2-core CPU: 4 seeds x 4 variants, about 7 minutes. Run it on an idle machine, one run at a time.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = (("full objective", []),
            ("no cycle loss (GAN alone): --lambda-cycle 0", ["--lambda-cycle", "0"]),
            ("no identity loss: --lambda-identity 0", ["--lambda-identity", "0"]),
            ("no history pool: --pool-size 0", ["--pool-size", "0"]))
CHECK = re.compile(r"G\(x\) vs true y ([\d.]+), F\(y\) vs true x ([\d.]+); doing nothing "
                   r"([\d.]+), average target image ([\d.]+) / ([\d.]+)")


def demo_check(flags, seed, folder):
    """One demo run -> (G(x) error / average image's, F(y) error / average image's)."""
    command = [sys.executable, os.path.join(ROOT, "cyclegan.py"), "--data", "demo", "--seed",
               str(seed), "--out", folder, *flags]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    found = CHECK.search(result.stdout)
    to_y, to_x, _, average_y, average_x = (float(value) for value in found.groups())
    return to_y / average_y, to_x / average_x


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    seeds = parser.parse_args().seeds
    print("| variant | G(x) / average image | F(y) / average image |")
    print("| --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for number, (name, flags) in enumerate(VARIANTS):
            results = [demo_check(flags, seed, os.path.join(folder, f"{number}_{seed}"))
                       for seed in seeds]
            cells = []
            for direction in (0, 1):
                values = [result[direction] for result in results]
                cells.append(f"{statistics.fmean(values):.2f} ({min(values):.2f}-"
                             f"{max(values):.2f})")
            print(f"| {name} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
