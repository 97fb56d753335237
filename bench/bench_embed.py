"""Benchmark: how fast is the CIFAR-10 Skinny ch=64 eFCN embedding compared with just writing
that many float32s (the memory-bandwidth floor)? Also times the per-epoch deviation and the
projection back to a CNN. Writes bench/embed.md.

Run from the repository root:  PYTHONPATH=workflow/scripts .venv/bin/python bench/bench_embed.py
"""

import gc
import platform
import time
from pathlib import Path

import torch

from needle.deviation import layer_deviations, project_to_cnn
from needle.embed import parameter_counts, to_efcn
from needle.models import skinny_cnn

REPEATS = 5


def best_time(make, repeats=REPEATS):
    """Best wall time of `make()` over a few runs; the result is dropped before the next run so
    every run allocates (and page-faults) its memory afresh, as a real embedding does."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        result = make()
        best = min(best, time.perf_counter() - start)
        del result
    return best


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    torch.manual_seed(0)
    cnn = skinny_cnn(3, 32, 10, 64)
    n = parameter_counts(cnn)["efcn"]
    embed_s = best_time(lambda: to_efcn(cnn))
    fill_s = best_time(lambda: torch.empty(n).fill_(1.0))
    zeros_s = best_time(lambda: torch.zeros(n))
    efcn = to_efcn(cnn)
    deviation_s = best_time(lambda: layer_deviations(efcn), repeats=3)
    project_s = best_time(lambda: project_to_cnn(efcn, cnn), repeats=3)
    floor = min(fill_s, zeros_s)
    rows = [
        ("CPU", cpu_model()),
        ("torch threads", str(torch.get_num_threads())),
        ("torch", torch.__version__),
        ("eFCN parameters (CIFAR-10 Skinny ch=64, padding folded)", f"{n:,}"),
        (f"to_efcn, best of {REPEATS}", f"{embed_s:.3f} s"),
        (f"write {n:,} float32 (torch.empty(n).fill_(1.0)), best of {REPEATS}", f"{fill_s:.3f} s"),
        (f"torch.zeros(n), best of {REPEATS}", f"{zeros_s:.3f} s"),
        ("embedding / bandwidth floor (faster of the two writes)", f"{embed_s / floor:.2f}x"),
        ("layer_deviations on the eFCN, best of 3", f"{deviation_s:.3f} s"),
        ("project_to_cnn on the eFCN, best of 3", f"{project_s:.3f} s"),
    ]
    for name, value in rows:
        print(f"{name}: {value}")
    table = "\n".join(["| quantity | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows])
    out = Path(__file__).with_name("embed.md")
    out.write_text(
        "# Embedding benchmark (bench/bench_embed.py)\n\n"
        "Measured on a shared machine; other jobs may have been running.\n\n" + table + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
