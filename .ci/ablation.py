"""What each part of CycleGAN does on the demo, measured: README.md's "Results" comes from here.

    python .ci/ablation.py [--seeds 0 1 2 3]

Trains `python cyclegan.py --data demo` once per seed with the full objective and with one part
left out at a time (through the flags that exist), reads each run's demo check line, and prints a
README table: the mean |error| of G(x) against the true winter scene and of F(y) against the true
summer scene, each as a share of the median target image's error (below 1: better than a
generator that ignores its input), mean and range over the seeds. First, for each seed's full
objective run, its demo check line as printed and what its losses.csv shows: the weighted cycle
terms in the first and last rows, and the range of the discriminators' losses and of the
adversarial terms after iteration 100. Takes about 25 s per run on a 2-core CPU: 4 seeds x 4
variants, about 7 minutes. Run it on an idle machine, one run at a time.
"""
import csv
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
                   r"([\d.]+), median target image ([\d.]+) / ([\d.]+)")


def demo_check(flags, seed, folder):
    """One demo run -> (G(x) error / median image's, F(y) error / median image's, its demo
    check line)."""
    command = [sys.executable, os.path.join(ROOT, "cyclegan.py"), "--data", "demo", "--seed",
               str(seed), "--out", folder, *flags]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    found = CHECK.search(result.stdout)
    to_y, to_x, _, median_y, median_x = (float(value) for value in found.groups())
    line = next(line for line in result.stdout.splitlines() if line.startswith("demo check"))
    return to_y / median_y, to_x / median_x, line


def loss_summary(folder):
    """What losses.csv shows: the cycle terms at the first and last rows, and the ranges of the
    D losses and adversarial terms after iteration 100."""
    with open(os.path.join(folder, "losses.csv")) as f:
        rows = list(csv.DictReader(f))
    later = [row for row in rows if int(row["iteration"]) > 100]

    def span(names):
        values = [float(row[name]) for row in later for name in names]
        return f"{min(values):.2f}-{max(values):.2f}"
    return (f"cycle_X / cycle_Y {float(rows[0]['cycle_X']):.2f} / {float(rows[0]['cycle_Y']):.2f} "
            f"at iteration {rows[0]['iteration']}, {float(rows[-1]['cycle_X']):.2f} / "
            f"{float(rows[-1]['cycle_Y']):.2f} at {rows[-1]['iteration']}; after iteration 100: "
            f"D_X, D_Y {span(['D_X', 'D_Y'])}, adv_XtoY, adv_YtoX {span(['adv_XtoY', 'adv_YtoX'])}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    seeds = parser.parse_args().seeds
    with tempfile.TemporaryDirectory() as folder:
        table = []
        for number, (name, flags) in enumerate(VARIANTS):
            results = []
            for seed in seeds:
                run_folder = os.path.join(folder, f"{number}_{seed}")
                results.append(demo_check(flags, seed, run_folder))
                if number == 0:
                    print(f"seed {seed}: {results[-1][2]}\n  {loss_summary(run_folder)}",
                          flush=True)
            cells = []
            for direction in (0, 1):
                values = [result[direction] for result in results]
                cells.append(f"{statistics.fmean(values):.2f} ({min(values):.2f}-"
                             f"{max(values):.2f})")
            table.append(f"| {name} | {cells[0]} | {cells[1]} |")
    print("| variant | G(x) / median image | F(y) / median image |")
    print("| --- | --- | --- |")
    print("\n".join(table))


if __name__ == "__main__":
    main()
