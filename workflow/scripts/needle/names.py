"""The names every part of needle shares: arms, datasets, models, table columns, metrics, figures.

Torch-free and dependency-free, so that the Snakemake rules, the library and the tests import the
same lists: a new arm, column or figure is added here once and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- arms: one trained network per (seed, arm[, relax time]) --------------------------------------
CNN = "cnn"  # the CNN itself, trained from init; its checkpoints are the relax times
FCN = "fcn"  # the standard FCN: the eFCN's layer shapes, freshly initialised
EFCN = "efcn"  # the CNN checkpoint at t_w embedded as a dense net, then trained
ELCN = "elcn"  # the CNN checkpoint at t_w embedded as a locally connected net, then trained
CNN_CONTINUED = "cnn_continued"  # control: the CNN checkpoint at t_w trained on as a CNN

EMBEDDED_ARMS = (EFCN, ELCN)  # start from an embedding of the CNN checkpoint at t_w
RELAX_ARMS = (EFCN, ELCN, CNN_CONTINUED)  # start from the CNN checkpoint at t_w
DENSE_ARMS = (FCN, EFCN, ELCN)  # conv-derived layers: deviation and projection are logged
ARMS = (CNN, FCN, *RELAX_ARMS)
ARM_LABELS = {
    CNN: "CNN",
    FCN: "standard FCN",
    EFCN: "eFCN",
    ELCN: "eLCN",
    CNN_CONTINUED: "CNN continued (control)",
}


# -- datasets and models ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetFacts:
    label: str  # for messages and figures
    in_channels: int
    image_size: int  # images as shipped are image_size x image_size
    num_classes: int
    train_images: int
    test_images: int


DATASETS = {
    "fashion-mnist": DatasetFacts("Fashion-MNIST", 1, 28, 10, 60000, 10000),
    "cifar10": DatasetFacts("CIFAR-10", 3, 32, 10, 50000, 10000),
    "cifar100": DatasetFacts("CIFAR-100", 3, 32, 100, 50000, 10000),
}
MODELS = ("skinny", "alexnet")
PRECISIONS = ("fp32", "tf32", "bf16")
SPLITS = ("train", "validation", "test")

# -- per-run metrics table: one CSV per run, one row per epoch -----------------------------------------
EPOCH_COLUMNS = ("epoch", "epochs_since_relax")  # total epochs since CNN init; epochs of this run
SPLIT_METRICS = tuple(f"{split}_{what}" for split in SPLITS for what in ("loss", "accuracy"))
DIVERGED = "diverged"  # 0, or the code of the reason (DIVERGENCE_REASONS) from that epoch on
RUN_COLUMNS = (*EPOCH_COLUMNS, *SPLIT_METRICS, DIVERGED)
# Dense arms add these columns (needle.deviation's probe):
PROBE_METRICS = ("distance_from_start", "projected_test_loss", "projected_test_accuracy")
# ... and one column "<metric>/<layer>" per conv-derived layer and for all of them pooled:
LAYER_METRICS = (
    "deviation",  # ||W - P(W)|| / ||W||
    "deviation_nonlocal",  # ||W outside the locality blocks|| / ||W||
    "deviation_nonsharing",  # ||W in the blocks - P(W)|| / ||W||
    "displacement_offsubspace",  # ||D - P(D)|| / ||D||, D = W - W at the run's start
)
POOLED_LAYER = "all"

DIVERGENCE_REASONS = {
    1: "non-finite loss",
    2: "train loss above its limit (divergence.loss_factor x its start)",
    3: "train accuracy at chance for the run's last divergence.chance_epochs epochs",
    4: "started from a diverged CNN checkpoint",
}

# -- tables of an experiment (results/<experiment>/*.csv) ----------------------------------------------
RUN_KEYS = ("experiment", "seed", "arm", "relax_time")  # relax_time is empty for cnn and fcn
TIDY_COLUMNS = (
    "experiment",
    "dataset",
    "model",
    "seed",
    "arm",
    "relax_time",
    "epoch",
    "epochs_since_relax",
    "metric",
    "layer",
    "value",
)
LANDSCAPE_PATH_KINDS = ("embedding_to_final", "final_to_fcn", "final_to_final")
LANDSCAPE_COLUMNS = (
    "experiment",
    "seed",
    "path_kind",
    "start_arm",
    "start_relax_time",
    "end_arm",
    "end_relax_time",
    "diverged",  # 1 when either end of the path is a diverged run
    "alpha",
    "split",
    "loss",
    "accuracy",
)
EMBEDDING_COLUMNS = (
    "experiment",
    "seed",
    "arm",
    "relax_time",
    "images",
    "max_abs_logit",
    "max_abs_logit_difference_fp32",
    "max_abs_logit_difference_fp64",
    "cnn_parameters",
    "embedded_parameters",
)
PARAMETER_COLUMNS = ("experiment", "dataset", "model", "width", "network", "parameters")
NETWORKS = (CNN, ELCN, EFCN, FCN)  # rows of the parameter-count table

# -- figures (results/<experiment>/figures/<name>.png) --------------------------------------------------
FIGURES = (
    "accuracy_vs_relax_time",
    "learning_curves",
    "deviation",
    "landscape",
    "projection_probe",
)


# -- core: the standard FCN's init (needle.embed.standard_fcn, config key fcn_init_fan_in) ----------
FCN_FAN_INS = ("real", "padded")  # fan-in of its Dense2d init: input pixels, or zero-padded input

# -- stats: per-run outcomes, claims and arm summaries (needle.tables, needle.summary) -------------
# runs.csv: one row per run, its readout already computed (the contract's runs.csv).
OUTCOME_COLUMNS = (
    "experiment",
    "dataset",
    "model",
    "seed",
    "arm",
    "relax_time",  # empty for cnn and fcn
    "num_classes",
    "last_epoch",
    "diverged",  # 0 or 1
    "divergence_reason",  # DIVERGENCE_REASONS text, empty when the run did not diverge
    "readout_epochs",  # k: the readout is the mean over the run's last k epochs after its start
    "test_accuracy",  # readout mean
    "test_loss",  # readout mean
    "validation_accuracy",  # readout mean (NaN without a validation split)
    "final_test_accuracy",  # last logged epoch
    "start_test_accuracy",  # epoch 0 of the run (for a relax arm: the CNN's own at t_w)
    "projected_test_accuracy",  # readout mean; dense arms only
    *LAYER_METRICS,  # last logged epoch, pooled layer POOLED_LAYER; dense arms only
    "deviation_max_layer",  # last logged epoch, largest deviation of one conv-derived layer
    "deviation_max_layer_name",
)
# arms.csv: one row per (arm, relax time); means over the runs that did not diverge.
ARM_SUMMARY_COLUMNS = (
    "experiment",
    "arm",
    "relax_time",
    "n",  # runs in the means
    "n_diverged",  # runs left out of the means (and counted against the arm in verdicts)
    "n_missing",  # configured runs absent from runs.csv
    "test_accuracy",
    "test_accuracy_low",
    "test_accuracy_high",
    "validation_accuracy",
    "validation_accuracy_low",
    "validation_accuracy_high",
    "confidence",
    "selected_on_validation",  # True on the headline relax time of each relax arm
)
# summary.csv: one row per (claim, comparison, relax time).
CLAIMS = ("1", "2", "3", "4", "5", "elcn_vs_efcn", "6")  # ids as in the paper notes
SUMMARY_COLUMNS = (
    "experiment",
    "claim",
    "statement",
    "comparison",  # "<first arm> - <second arm>", or what claims 1 and 6 measure
    "relax_time",
    "measure",
    "n",  # paired seeds (diverged runs included, at their worst value)
    "n_diverged",  # diverged runs among them
    "n_missing",  # configured runs without a partner or absent, listed in missing_runs
    "missing_runs",
    "first_mean",  # each arm's mean over its runs that did not diverge
    "second_mean",
    "mean_difference",
    "ci_low",
    "ci_high",
    "confidence",
    "verdict",  # of this row's interval
    "adjusted_confidence",  # Bonferroni over the claim's relax times
    "adjusted_ci_low",
    "adjusted_ci_high",
    "claim_rule",
    "claim_verdict",  # holds / fails / undecided / not tested, the same on every row of a claim
    "pooled_deviation",  # claim 3: the eFCN's pooled deviation beside the per-layer measure
    "displacement_offsubspace",  # claim 3: share of the eFCN's displacement off the subspace
    "exactness_fp64",  # claim 1: largest |logit difference| / max(1, max |logit|), fp64
    "exactness_fp32",  # claim 1: the same in fp32 (reported, not decided on)
    "exactness_tolerance",  # claim 1: fp64 tolerance
    "note",  # why a claim is not tested, or what limits its verdict
)


# -- train: the columns of one run's metrics CSV, in order ---------------------------------------------
def run_columns(conv_layers: tuple[str, ...] = ()) -> tuple[str, ...]:
    """RUN_COLUMNS; for a dense arm (its conv-derived layers given, e.g. ("conv1", "conv2")) then
    PROBE_METRICS and "<metric>/<layer>" for every LAYER_METRICS and layer, the pooled one last."""
    if not conv_layers:
        return RUN_COLUMNS
    layers = (*conv_layers, POOLED_LAYER)
    return (
        *RUN_COLUMNS,
        *PROBE_METRICS,
        *(f"{metric}/{layer}" for metric in LAYER_METRICS for layer in layers),
    )
