"""Benchmark: how close does one training epoch get to its matrix-product roofline, and how much
faster is it than a loop written the way the authors' code trains?

For each case (a network and a dataset shape) this times, in ONE run on the same machine and
interleaved round by round so that all three see the same background load:

(a) project    one whole epoch through the project's own code: `needle.training.Trainer` with the
               extras the stage uses (`needle.deviation.DenseProbe` for a relax run: deviation,
               projection and projected test accuracy, distance travelled), i.e. the shuffled
               order, every SGD step, the test evaluation and the metrics row. The run's epoch-0
               row (full train-set evaluation + probe, once per run) is timed separately.
(b) roofline   the bare products of the same shapes, batch and number of steps, as torch.addmm/mm
               (dense layers) or F.conv2d / torch.nn.grad.conv2d_* (conv layers) into preallocated
               outputs. "Training products" = for every layer the forward product and the
               weight-gradient product, and the input-gradient product for every layer EXCEPT the
               first (its input is data, which needs no gradient; autograd skips it too). The
               variant "all products" adds the first layer's input gradient. Nothing else (bias,
               ReLU, pooling, loss, optimiser, evaluation) is counted, so efficiency = (b)/(a) <= 1
               measures everything the project spends around the products.
(c) authors'   a loop written the way the authors' code trains: a torchvision-style Dataset of
               uint8 images turned into PIL images with per-sample ToTensor + Normalize, a
               DataLoader (batch 250, no shuffle, main process), `gc.collect()` every step, the
               loader re-listed (`list(loader)`) every 40 steps as their main.py does, SGD with
               zero_grad/backward/step, and a test evaluation through a loader of the same kind
               (batch 1000). Same network object as (a). speed-up = (c)/(a).

Cases: Fashion-MNIST-shaped Skinny ch=32 eFCN relax epoch and its CNN epoch (CPU and CUDA); on
CUDA also a CIFAR-10-shaped Skinny ch=64 eFCN (~74M parameters) and CNN, with the projected time
of the paper's full protocol (CNN 100 epochs + 18 relax runs x 100 epochs at 50,000 images).
The end-to-end `snakemake --cores 2` row is a placeholder: it is too slow to repeat here.

Run from the repository root:
    PYTHONPATH=workflow/scripts .venv/bin/python bench/bench_training.py            # CPU, writes bench/training.md
    PYTHONPATH=workflow/scripts python bench/bench_training.py --device cuda --out bench/out
"""

from __future__ import annotations

import argparse
import gc
import io
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if "needle" not in sys.modules:  # run as a plain script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
import torch
import torch.nn as nn
import torch.nn.functional as F
from bench_embed import cpu_model

import needle  # noqa: F401  (first, as in the stage scripts: it sets the allocator up before torch loads)
from needle import embed, models
from needle.deviation import DenseProbe
from needle.embed import Dense2d
from needle.evaluation import evaluate
from needle.resume import ResumeState
from needle.training import TrainConfig, Trainer

FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)
CIFAR_MEAN, CIFAR_STD = (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)


# -- machine -----------------------------------------------------------------------------------------
def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def transparent_huge_pages() -> str:
    try:
        return Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        return "unknown"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, function) -> float:
    sync(device)
    start = time.perf_counter()
    function()
    sync(device)
    return time.perf_counter() - start


# -- data --------------------------------------------------------------------------------------------
class Data:
    """The fields of needle.data.Data that Trainer and DenseProbe read (no validation split)."""

    def __init__(self, train_x, train_y, test_x, test_y, num_classes, name):
        self.train_x, self.train_y, self.test_x, self.test_y = train_x, train_y, test_x, test_y
        self.validation_x, self.validation_y = train_x[:0], train_y[:0]
        self.in_channels, self.image_size = train_x.shape[1], train_x.shape[2]
        self.num_classes, self.name = num_classes, name


def make_data(name: str, shape, num_classes, train_size, test_size, device, data_dir, mean, std):
    """Real Fashion-MNIST when prepared under data_dir, else random uint8 images of the real shape.
    Returns the float tensors the project trains on and the uint8 images the authors' loop reads."""
    source = "random uint8 images of the real shape"
    if name == "fashion-mnist":
        try:
            from needle import data as datasets

            real = datasets.load_dataset(
                name, data_dir, train_size=train_size, test_size=test_size, device="cpu"
            )
            std_t = torch.tensor(std).view(1, -1, 1, 1)
            mean_t = torch.tensor(mean).view(1, -1, 1, 1)
            to_u8 = lambda x: (x * std_t + mean_t).mul(255).round().clamp(0, 255).to(torch.uint8)  # noqa: E731
            train_u8, test_u8 = to_u8(real.train_x), to_u8(real.test_x)
            train_y, test_y = real.train_y, real.test_y
            source = f"real Fashion-MNIST from {data_dir}"
        except Exception as error:
            print(f"[bench] Fashion-MNIST not loaded ({error}); using random data", file=sys.stderr)
            train_u8 = None
    else:
        train_u8 = None
    if train_u8 is None:
        generator = torch.Generator().manual_seed(0)
        train_u8 = torch.randint(
            0, 256, (train_size, *shape), generator=generator, dtype=torch.uint8
        )
        test_u8 = torch.randint(0, 256, (test_size, *shape), generator=generator, dtype=torch.uint8)
        train_y = torch.randint(0, num_classes, (train_size,), generator=generator)
        test_y = torch.randint(0, num_classes, (test_size,), generator=generator)

    def normalise(u8):
        m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        s = torch.tensor(std, device=device).view(1, -1, 1, 1)
        return u8.to(device).float().div_(255).sub_(m).div_(s)

    data = Data(
        normalise(train_u8),
        train_y.to(device),
        normalise(test_u8),
        test_y.to(device),
        num_classes,
        name,
    )
    return data, (train_u8, train_y, test_u8, test_y), source


# -- (a) the project's own epoch -------------------------------------------------------------------------
class ProjectEpoch:
    """One epoch of Trainer.run's loop (train pass + metrics row with the stage's extras)."""

    def __init__(self, net, data, config, *, cnn_template=None):
        self.probe = (
            DenseProbe(net, cnn_template, data, config.eval_batch_size, config.precision)
            if cnn_template is not None
            else None
        )
        self.state_dir = tempfile.TemporaryDirectory(prefix="needle-bench-")
        self.trainer = Trainer(
            net,
            data,
            config,
            name="bench",
            probe=self.probe,
            resume=ResumeState.claim(self.state_dir.name, "bench", log=io.StringIO()),
            log=io.StringIO(),
        )
        self.data, self.config, self.net = data, config, net
        self.epoch, self.rows = 0, []

    def epoch_zero(self, device) -> float:
        """What run() does once before training: the full train-set evaluation and the first row."""

        def work():
            loss, accuracy = evaluate(
                self.net, self.data.train_x, self.data.train_y, self.config.eval_batch_size
            )
            self.trainer._row(0, loss, accuracy)

        return timed(device, work)

    def run_epoch(self, device) -> dict:
        self.epoch += 1
        parts = {}
        sync(device)
        start = time.perf_counter()
        loss, accuracy = self.trainer._train_epoch(self.epoch)
        sync(device)
        parts["train"] = time.perf_counter() - start
        test_start = time.perf_counter()
        evaluate(self.net, self.data.test_x, self.data.test_y, self.config.eval_batch_size)
        sync(device)
        parts["test eval"] = time.perf_counter() - test_start
        if self.probe is not None:
            parts["probe"] = timed(device, lambda: self.probe(self.net))
        # The row the run would write is exactly test eval + probe (timed above part by part).
        # Then the resume state, which the stage rewrites atomically after every epoch.
        self.rows.append({"epoch": self.epoch, "train_loss": loss, "train_accuracy": accuracy})
        resume, optimizer = self.trainer.resume, self.trainer.optimizer
        parts["state"] = timed(device, lambda: resume.save(self.rows, self.net, optimizer))
        parts["epoch"] = (
            parts["train"] + parts["test eval"] + parts.get("probe", 0.0) + parts["state"]
        )
        if not math.isfinite(loss):
            raise RuntimeError("the benchmark run diverged; lower lr")
        return parts


# -- (b) the roofline --------------------------------------------------------------------------------------
class DenseRoofline:
    """Bare addmm/mm of every dense layer (Dense2d and Linear) of `net`, into preallocated buffers."""

    def __init__(self, net, batch, device):
        self.layers = []
        for module in net.modules():
            if isinstance(module, (Dense2d, nn.Linear)):
                rows, cols = module.weight.shape
                self.layers.append(
                    dict(
                        w=torch.randn(rows, cols, device=device) * 0.01,
                        b=torch.zeros(rows, device=device),
                        x=torch.randn(batch, cols, device=device),
                        g=torch.randn(batch, rows, device=device),
                        out=torch.empty(batch, rows, device=device),
                        gw=torch.empty(rows, cols, device=device),
                        gx=torch.empty(batch, cols, device=device),
                    )
                )
        self.flops_per_step = sum(2 * batch * layer["w"].numel() for layer in self.layers)

    def run(self, steps: int, first_input_grad: bool) -> None:
        for _ in range(steps):
            for index, layer in enumerate(self.layers):
                torch.addmm(layer["b"], layer["x"], layer["w"].t(), out=layer["out"])
                torch.mm(layer["g"].t(), layer["x"], out=layer["gw"])
                if index > 0 or first_input_grad:
                    torch.mm(layer["g"], layer["w"], out=layer["gx"])


class ConvRoofline:
    """Bare F.conv2d forward and torch.nn.grad.conv2d_weight / conv2d_input of every conv, plus the
    head's addmm/mm, for the CNN's shapes."""

    def __init__(self, cnn, batch, device):
        shapes = models.trace_shapes(cnn, cnn.input_shape)
        self.convs, self.dense = [], []
        for (_name, module), in_shape, out_shape in zip(cnn.named_children(), shapes, shapes[1:]):
            if isinstance(module, nn.Conv2d):
                self.convs.append(
                    dict(
                        w=torch.randn_like(module.weight, device=device),
                        b=torch.zeros(module.out_channels, device=device),
                        x=torch.randn(batch, *in_shape, device=device),
                        g=torch.randn(batch, *out_shape, device=device),
                        stride=module.stride,
                        padding=module.padding,
                    )
                )
            elif isinstance(module, nn.Linear):
                rows, cols = module.weight.shape
                self.dense.append(
                    dict(
                        w=torch.randn(rows, cols, device=device),
                        b=torch.zeros(rows, device=device),
                        x=torch.randn(batch, cols, device=device),
                        g=torch.randn(batch, rows, device=device),
                    )
                )

    def run(self, steps: int, first_input_grad: bool) -> None:
        grad = torch.nn.grad
        for _ in range(steps):
            for index, c in enumerate(self.convs):
                F.conv2d(c["x"], c["w"], c["b"], c["stride"], c["padding"])
                grad.conv2d_weight(c["x"], c["w"].shape, c["g"], c["stride"], c["padding"])
                if index > 0 or first_input_grad:
                    grad.conv2d_input(c["x"].shape, c["w"], c["g"], c["stride"], c["padding"])
            for d in self.dense:
                torch.addmm(d["b"], d["x"], d["w"].t())
                torch.mm(d["g"].t(), d["x"])
                torch.mm(d["g"], d["w"])


# -- (c) the authors' way ------------------------------------------------------------------------------------
class AuthorsEpoch:
    """A torchvision-style per-sample pipeline and training loop (see the module docstring)."""

    def __init__(self, net, raw, batch, eval_batch, lr, mean, std, device):
        from PIL import Image
        from torch.utils.data import DataLoader, Dataset
        from torchvision import transforms

        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])

        class ImageDataset(Dataset):  # what torchvision.datasets.FashionMNIST / CIFAR10 do per item
            def __init__(self, images, labels):
                # uint8 HWC (or HW) numpy images, as the torchvision datasets hold them
                array = images.permute(0, 2, 3, 1).numpy()
                self.images = array[..., 0] if array.shape[-1] == 1 else array
                self.labels = labels.tolist()

            def __len__(self):
                return len(self.labels)

            def __getitem__(self, index):
                mode = "L" if self.images.ndim == 3 else None
                return transform(Image.fromarray(self.images[index], mode=mode)), self.labels[index]

        train_u8, train_y, test_u8, test_y = raw
        self.train_loader = DataLoader(
            ImageDataset(train_u8, train_y), batch_size=batch, shuffle=False
        )
        self.test_loader = DataLoader(
            ImageDataset(test_u8, test_y), batch_size=eval_batch, shuffle=False
        )
        self.net, self.device = net, device
        self.optimizer = torch.optim.SGD(net.parameters(), lr=lr)

    def run_epoch(self) -> None:
        net, device = self.net, self.device
        net.train()
        steps = len(self.train_loader)
        batches = []
        for step in range(steps):
            if step % 40 == 0:
                batches = list(
                    self.train_loader
                )  # their main.py re-lists the loader every 40 steps
            inputs, labels = batches[step % len(batches)]
            inputs, labels = inputs.to(device), labels.to(device)
            self.optimizer.zero_grad()
            loss = F.cross_entropy(net(inputs), labels)
            loss.backward()
            self.optimizer.step()
            loss.item()  # per-step host sync for the running loss, as their logging does
            gc.collect()
        net.eval()
        with torch.no_grad():
            for inputs, labels in self.test_loader:
                inputs, labels = inputs.to(device), labels.to(device)
                logits = net(inputs)
                F.cross_entropy(logits, labels).item()
                (logits.argmax(1) == labels).sum().item()
        net.train()


# -- one case ---------------------------------------------------------------------------------------------------
def bench_case(
    label, cnn, data, raw, *, arm, device, rounds, lr, batch, eval_batch, mean, std, authors=True
):
    """Times (a), (b) both variants and (c) for `cnn` trained as `arm` ("cnn" or "efcn")."""
    config = TrainConfig(
        epochs=1, lr=lr, batch_size=batch, eval_batch_size=eval_batch, shuffle=True, seed=0
    )
    torch.manual_seed(0)
    if arm == "efcn":
        net = embed.to_efcn(cnn).to(device)
        project = ProjectEpoch(net, data, config, cnn_template=cnn)
        roofline = DenseRoofline(net, batch, device)
    else:
        net = cnn
        project = ProjectEpoch(net, data, config)
        roofline = ConvRoofline(cnn, batch, device)
    steps = math.ceil(len(data.train_x) / batch)
    authors_net = (
        embed.to_efcn(cnn).to(device)
        if arm == "efcn"
        else models.build_cnn(
            "skinny", data.in_channels, data.image_size, data.num_classes, cnn.conv1.out_channels
        ).to(device)
    )
    author_loop = (
        AuthorsEpoch(authors_net, raw, batch, eval_batch, lr, mean, std, device)
        if authors
        else None
    )
    parameters = sum(p.numel() for p in net.parameters())

    # warm-up (allocator, BLAS, cudnn autotuning, first-touch of the weights), then interleaved rounds
    roofline.run(2, first_input_grad=False)
    epoch_zero = project.epoch_zero(device)
    project.run_epoch(device)
    times = {"project": [], "roofline": [], "roofline_all": [], "authors": [], "parts": []}
    for round_index in range(rounds):
        # The roofline brackets the project's epoch (before and after, averaged), so that a drift
        # of the background load during the round hits both sides of the ratio alike.
        before = timed(device, lambda: roofline.run(steps, first_input_grad=False))
        before_all = timed(device, lambda: roofline.run(steps, first_input_grad=True))
        parts = project.run_epoch(device)
        after_all = timed(device, lambda: roofline.run(steps, first_input_grad=True))
        after = timed(device, lambda: roofline.run(steps, first_input_grad=False))
        times["project"].append(parts["epoch"])
        times["parts"].append(parts)
        times["roofline"].append((before + after) / 2)
        times["roofline_all"].append((before_all + after_all) / 2)
        if author_loop is not None:
            times["authors"].append(timed(device, author_loop.run_epoch))
        print(
            f"[bench] {label} round {round_index + 1}/{rounds}: project {parts['epoch']:.2f} s "
            f"({', '.join(f'{k} {v:.2f}' for k, v in parts.items() if k != 'epoch')}), roofline "
            f"{times['roofline'][-1]:.2f} s, all-products {times['roofline_all'][-1]:.2f} s"
            + (f", authors' {times['authors'][-1]:.2f} s" if times["authors"] else "")
            + f"; load {load_average()}",
            file=sys.stderr,
        )
    # Ratios within a round compare timings taken under the same background load.
    ratios = {
        "efficiency": [r / a for r, a in zip(times["roofline"], times["project"])],
        "efficiency_all": [r / a for r, a in zip(times["roofline_all"], times["project"])],
    }
    if times["authors"]:
        ratios["speed-up"] = [c / a for c, a in zip(times["authors"], times["project"])]
    best = {key: min(values) for key, values in times.items() if values and key != "parts"}
    median_parts = sorted(times["parts"], key=lambda p: p["epoch"])[len(times["parts"]) // 2]
    return dict(
        label=label,
        parameters=parameters,
        steps=steps,
        epoch_zero=epoch_zero,
        best=best,
        median={k: statistics.median(v) for k, v in times.items() if v and k != "parts"},
        parts=median_parts,
        ratios={k: statistics.median(v) for k, v in ratios.items()},
        all_ratios=ratios,
        flops=getattr(roofline, "flops_per_step", None),
    )


def fmt(seconds):
    return "-" if seconds is None else f"{seconds:.2f}"


def write_report(results, machine, out_dir: Path, projections):
    lines = [
        "# Training benchmark (bench/bench_training.py)",
        "",
        "Epoch = one pass over the training subset at batch 250, the per-epoch test evaluation and "
        "metrics row (for a relax run: deviation, projection and the projected CNN's test accuracy), "
        "and the resume state written after it. Roofline = the bare training matrix products "
        "(forward + weight gradient for every layer, input gradient for every layer except the "
        'first), timed right before and right after each project epoch and averaged. "All '
        "products\" (forward + both backward products for every layer, the issue's literal "
        "definition) also counts the first layer's input gradient, which training never needs, so "
        "the efficiency against it is the looser figure. Efficiency = roofline / project "
        "epoch and speed-up = authors'-style / project, per round (a round's timings share its "
        "background load): median over the rounds, and the range. Times: median (best).",
        "",
        "| case | parameters | steps | project epoch s | of which train / test eval / probe / state s "
        "(median round) | epoch-0 row s | roofline s | efficiency median (range) | all-products "
        "roofline s | efficiency vs all products | authors'-style s | speed-up median (range) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b, m, p = r["best"], r["median"], r["parts"]
        efficiency, authors = r["all_ratios"]["efficiency"], b.get("authors")
        speed_up = r["all_ratios"].get("speed-up")
        lines.append(
            f"| {r['label']} | {r['parameters']:,} | {r['steps']} | {m['project']:.2f} ({b['project']:.2f}) "
            f"| {p['train']:.2f} / {p['test eval']:.2f} / {fmt(p.get('probe'))} / {p['state']:.2f} "
            f"| {r['epoch_zero']:.2f} | {m['roofline']:.2f} ({b['roofline']:.2f}) "
            f"| **{r['ratios']['efficiency']:.0%}** ({min(efficiency):.0%}-{max(efficiency):.0%}) "
            f"| {m['roofline_all']:.2f} ({b['roofline_all']:.2f}) | {r['ratios']['efficiency_all']:.0%} "
            f"({min(r['all_ratios']['efficiency_all']):.0%}-{max(r['all_ratios']['efficiency_all']):.0%}) "
            f"| {fmt(m.get('authors'))} ({fmt(authors)}) | "
            + (
                f"{r['ratios']['speed-up']:.1f}x ({min(speed_up):.1f}x-{max(speed_up):.1f}x)"
                if speed_up
                else "-"
            )
            + " |"
        )
    lines.append(
        "| default workflow end to end (`snakemake --cores 2`, config.yaml, fresh clone) | - | - | see README "
        "| - | - | - | - | - | - | - | - |"
    )
    lines += ["", "## Machine", ""] + [f"- {k}: {v}" for k, v in machine.items()]
    if projections:
        lines += ["", "## Projected full paper protocol", ""] + [
            f"- {line}" for line in projections
        ]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "training.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--out", default=str(Path(__file__).parent), help="folder for training.md")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved timing rounds (the median is reported)"
    )
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--data-dir", default="resources/data")
    parser.add_argument("--no-authors", action="store_true", help="skip the authors'-style loop")
    args = parser.parse_args(argv)

    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    torch.set_num_threads(args.threads)
    load_before = load_average()
    results, projections = [], []
    lr, batch, eval_batch = 0.02, 250, 1000

    cases = [("fashion-mnist", (1, 28, 28), 10, 32, FMNIST_MEAN, FMNIST_STD)]
    if device.type == "cuda":
        cases.append(("cifar10", (3, 32, 32), 10, 64, CIFAR_MEAN, CIFAR_STD))
    for name, shape, classes, width, mean, std in cases:
        data, raw, source = make_data(
            name, shape, classes, args.train_size, args.test_size, device, args.data_dir, mean, std
        )
        tag = f"{name} {shape[0]}x{shape[1]}x{shape[2]} Skinny ch={width}"
        per_arm = {}
        for arm in ("efcn", "cnn"):
            torch.manual_seed(0)
            cnn = models.skinny_cnn(shape[0], shape[1], classes, width).to(device)
            result = bench_case(
                f"{tag} {'eFCN relax' if arm == 'efcn' else 'CNN'} ({source})",
                cnn,
                data,
                raw,
                arm=arm,
                device=device,
                rounds=args.rounds,
                lr=lr,
                batch=batch,
                eval_batch=eval_batch,
                mean=mean,
                std=std,
                authors=not args.no_authors,
            )
            results.append(result)
            per_arm[arm] = result
        # Full paper protocol: 50,000 training and 10,000 test images; CNN 100 epochs, 18 relax
        # runs x 100 epochs. Train time scales with the training set, evaluation with the test set.
        scale_train, scale_test = 50000 / args.train_size, 10000 / args.test_size

        def epoch_at_full_scale(r, scale_train=scale_train, scale_test=scale_test):
            p = r["parts"]
            # the probe is mostly the projected CNN's test evaluation: scaled with the test set (an upper bound)
            return (
                p["train"] * scale_train
                + (p["test eval"] + p.get("probe", 0.0)) * scale_test
                + p["state"]
            )

        cnn_s, relax_s = epoch_at_full_scale(per_arm["cnn"]), epoch_at_full_scale(per_arm["efcn"])
        total = 100 * cnn_s + 18 * 100 * relax_s
        projections.append(
            f"{tag} on {device.type}: CNN epoch {cnn_s:.2f} s, eFCN relax epoch {relax_s:.2f} s "
            f"at 50,000/10,000 images -> CNN 100 epochs + 18 relax runs x 100 epochs = "
            f"{total:.0f} s ({total / 3600:.2f} h)"
        )

    machine = {
        "CPU": f"{cpu_model()} ({os.cpu_count()} logical cores visible)",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "torch threads": torch.get_num_threads(),
        "huge pages for large CPU tensors (THP_MEM_ALLOC_ENABLE, set by needle)": os.environ.get(
            "THP_MEM_ALLOC_ENABLE"
        ),
        "kernel THP mode": transparent_huge_pages(),
        "load average before / after (1, 5, 15 min)": f"{load_before} / {load_average()}",
        "rounds": args.rounds,
        "train / test images": f"{args.train_size} / {args.test_size}",
    }
    write_report(results, machine, Path(args.out), projections)


if __name__ == "__main__":
    main()
