"""The checks that need a GPU, which the test suite cannot make: CUDA autocast, the CUDA gradient
scaler, cuDNN and the device's memory, through the real command line. Not a test: run it by hand
on a machine with a CUDA GPU (about 5 minutes on one), and keep what it prints.

    python .ci/gpu_check.py                  # the checks, then .ci/benchmark.py --device cuda
    python .ci/gpu_check.py --no-benchmark   # the checks alone
    python .ci/gpu_check.py --device cpu --no-benchmark   # the same steps on the CPU (a dry run)

What it runs, each as `python cyclegan.py ...` in a folder of its own, printing the lines that
matter and whether each check held:
1. the demo (`--data demo`) in auto, fp16, fp32 and auto with --compile (torch.compile, which the
   suite checks on the CPU only): its `device ..., precision ...` line, its
   `done:` line (time, peak GPU memory) and its demo check, which must be below 0.9 x the median
   image's error in both directions (the bar of the test suite);
2. a Ctrl-C: a demo run sent SIGINT after iteration 50, which must exit with 130 and print a
   resume command, and that command run as printed, which must end the run (`done:`);
3. a translation with the resumed run's model, of its held-out scenes;
4. `python .ci/benchmark.py --device cuda` (each precision, 128px and 256px, eager and
   --compile).
"""
import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "cyclegan.py")
CHECK = re.compile(r"G\(x\) vs true y ([\d.]+), F\(y\) vs true x ([\d.]+); doing nothing "
                   r"[\d.]+, median target image ([\d.]+) / ([\d.]+)")


def run(flags, folder):
    """python cyclegan.py FLAGS in `folder` -> (exit status, what it printed)."""
    result = subprocess.run([sys.executable, SCRIPT, *flags], cwd=folder, capture_output=True,
                            text=True, timeout=600)
    return result.returncode, result.stdout + result.stderr


def show(title, printed, held):
    print(f"== {title}: {'held' if held else 'FAILED'}", flush=True)
    for line in printed.splitlines():
        if line.startswith(("device ", "done:", "stopped:", "demo check", "interrupted", "error",
                            "warning", "resumed", "Traceback", "compiling")) or " -> " in line:
            print("   " + line, flush=True)


def demo_check_holds(printed):
    found = CHECK.search(printed)
    if found is None:
        return False
    to_y, to_x, median_y, median_x = (float(value) for value in found.groups())
    return to_y < 0.9 * median_y and to_x < 0.9 * median_x


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-benchmark", action="store_true")
    options = parser.parse_args()
    device = ["--device", options.device]
    failed = 0
    with tempfile.TemporaryDirectory() as folder:
        for precision, extra in (("auto", []), ("fp16", []), ("fp32", []),
                                 ("auto", ["--compile"])):
            status, printed = run(["--data", "demo", *device, "--precision", precision, *extra,
                                   "--out", f"demo_{precision}{len(extra)}"], folder)
            held = status == 0 and demo_check_holds(printed)
            show(f"the demo in {precision} {' '.join(extra)}", printed, held)
            failed += not held
        process = subprocess.Popen([sys.executable, SCRIPT, "--data", "demo", *device,
                                    "--log-every", "1", "--out", "stopped"], cwd=folder,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in process.stdout:
            lines.append(line)
            if " it 50/" in line:
                process.send_signal(signal.SIGINT)
                break
        lines += process.stdout.readlines()
        printed = "".join(lines)
        commands = re.findall(r"resume with: (.*)", printed)
        held = process.wait(timeout=120) == 130 and len(commands) == 1
        show("Ctrl-C after iteration 50", printed, held)
        failed += not held
        if commands:
            status, printed = run(shlex.split(commands[0])[2:], folder)
            held = status == 0 and "done:" in printed and demo_check_holds(printed)
            show(f"resumed as printed ({commands[0]})", printed, held)
            failed += not held
            status, printed = run(["--data", "demo", "--translate", "stopped/held_out_summer",
                                   "--checkpoint", "stopped/checkpoint.pt", *device], folder)
            held = status == 0 and "translated 4 images" in printed
            show("a translation with the resumed model", printed, held)
            failed += not held
    if not options.no_benchmark:
        subprocess.run([sys.executable, os.path.join(ROOT, ".ci", "benchmark.py"), "--device",
                        options.device], check=False)
    print(f"gpu_check: {failed} check{'s' * (failed != 1)} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
