"""``bptt inspect``: gradient-flow diagnostics of a model on a sample batch.

    bptt inspect [DIR_OR_CHECKPOINT] [--out DIR] [model and batch options]

Without a path, a freshly initialised model is built from the options (weights by
:mod:`bptt.init`); with one, the model is loaded through :func:`bptt.checkpoint.load_checkpoint`,
the sample batch is a validation batch of the run's own task (its ``config`` as a
:class:`bptt.training.TrainConfig`: :func:`bptt.training.make_task`, or the run's text for
charlm) unless ``--task`` says otherwise, and ``DIR/profile.json`` (written by the trainer when
profiling is on) is drawn as a heat map. Writes ``inspect.json`` and PNG figures into
``--out`` and prints a summary; the report itself is :mod:`bptt.diagnostics.report`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..activations import ACTIVATIONS
from ..atomic import atomic_write_text
from ..cells import CELLS
from ..checkpoint import load_checkpoint
from ..data.tasks import AddingTask, SequenceTask
from ..data.text import CharVocab
from ..diagnostics.plots import require_matplotlib
from ..diagnostics.recorder import GradientProfileRecorder
from ..diagnostics.report import (
    FIGURES,
    inspect_model,
    random_batch,
    report_dict,
    run_batch,
    summary_lines,
    task_batch,
    write_figures,
)
from ..heads import HEADS
from ..init import INITS, initialise
from ..model import RNN, build_model, param_shapes_for
from ..resources import MAX_LAYERS, check_memory, estimate_bytes
from ..rundir import check_dir_name, claim_output_dir
from ..training import TrainConfig
from ..training.evaluation import locate_run_data

FRESH_BATCHES = ("adding", "random")
"""``--task``: the sample batch when not the run's own: the adding task, or random data."""
DEFAULT_SEQ_LEN, DEFAULT_BATCH = 50, 16


# -- models ------------------------------------------------------------------------------


def fresh_task(args: argparse.Namespace) -> SequenceTask | None:
    """The ``--task`` whose batch a fresh model is inspected on (its sizes and head fix the
    model's), or None for random inputs and targets."""
    if args.task != "adding":
        return None
    return AddingTask(DEFAULT_SEQ_LEN if args.seq_len is None else args.seq_len)


def fresh_model(args: argparse.Namespace) -> RNN:
    """The model the options describe, with a task's own sizes and head (``--task adding``:
    I = 2, O = 1, identity); weights drawn by :func:`bptt.init.init_params`
    (``--recurrent-init``, seed ``--seed``)."""
    task = fresh_task(args)
    if task is not None:
        for option, value, needed in (
            ("--input-size", args.input_size, task.input_size),
            ("--output-size", args.output_size, task.output_size),
            ("--output", args.output, task.output),
        ):
            if value is not None and value != needed:
                raise ValueError(f"--task {args.task} needs {option} {needed}, got {value}")
        sizes = (task.input_size, args.hidden, task.output_size)
        output = task.output
    else:
        sizes = (
            8 if args.input_size is None else args.input_size,
            args.hidden,
            4 if args.output_size is None else args.output_size,
        )
        output = args.output or "softmax"
    if args.spectral_radius is not None and not args.spectral_radius > 0:
        raise ValueError(f"--spectral-radius must be > 0, got {args.spectral_radius}")
    model = build_model(
        input_size=sizes[0],
        hidden_size=sizes[1],
        output_size=sizes[2],
        cell=args.cell,
        hidden_activation=args.activation,
        output=output,
        num_layers=args.layers,
        bidirectional=args.bidirectional,
        seed=args.seed,
        dtype=np.float64,
    )
    return initialise(
        model, args.recurrent_init, seed=args.seed, spectral_radius=args.spectral_radius
    )


@dataclass(frozen=True)
class LoadedRun:
    """A checkpoint's model, its training configuration (None if it has none) and vocabulary."""

    model: RNN
    config: TrainConfig | None
    vocab: CharVocab | None


def load_run(path: Path) -> LoadedRun:
    """:func:`bptt.checkpoint.load_checkpoint` of ``path``, its ``.config`` as a
    :class:`bptt.training.TrainConfig`.

    Raises:
        ValueError: ``path`` does not exist.
    """
    if not path.exists():
        raise ValueError(f"DIR_OR_CHECKPOINT {path} does not exist")
    ckpt = load_checkpoint(path)
    config = None
    if ckpt.config:  # written by the trainer; a bare save_checkpoint may carry none
        config = TrainConfig.from_dict(dict(ckpt.config))
        if ckpt.path is not None:  # read only the data file whose content the checkpoint has
            folder = ckpt.path.parent
            folder = folder.parent if folder.name == "best" else folder
            config = locate_run_data(config, ckpt.data_state, folder)
    return LoadedRun(model=ckpt.model, config=config, vocab=ckpt.vocab)


def find_profile(path: Path | None, explicit: Path | None) -> Path | None:
    """``--profile``, else ``DIR/profile.json`` (or beside a checkpoint file) when present."""
    if explicit is not None:
        if not explicit.is_file():
            raise ValueError(f"--profile {explicit} is not a file")
        return explicit
    if path is None:
        return None
    folder = path if path.is_dir() else path.parent
    candidate = folder / "profile.json"
    return candidate if candidate.is_file() else None


# -- the command -------------------------------------------------------------------------


def _check_memory(
    shapes: dict[str, tuple[int, ...]], seq_len: int, batch: int, max_lag: int | None
) -> None:
    """Refuse sizes whose diagnostics would not fit in memory (:mod:`bptt.resources`).

    ``shapes``: the model's parameter shapes (:func:`bptt.model.param_shapes_for` before the
    model is built). Besides the sweep's working set, the per-lag parts of every layer's
    parameters are kept (lags × the layers' parameters) and the Jacobian report holds a few
    (B, S, S) products.
    """
    n_out = shapes["U"][0]
    layer_shapes = {n: s for n, s in shapes.items() if n not in ("U", "b_y")}
    n_layers = sum(1 for n in layer_shapes if n == "W" or n.startswith("W_l"))
    hidden = next(s for n, s in layer_shapes.items() if n == "W" or n.startswith("W_l"))[1]
    n_in = next(iter(layer_shapes.values()))[1]  # the first layer's V: (·, I)
    state = 2 * hidden  # the widest state: the LSTM's [h ‖ c]
    lags = seq_len if max_lag is None else min(max_lag, seq_len - 1) + 2
    per_lag = sum(int(np.prod(s)) for s in layer_shapes.values())
    need = estimate_bytes(n_in, hidden, n_out, seq_len, batch, layers=n_layers)
    need += 8 * (lags * per_lag + 4 * batch * state * state + 3 * seq_len * batch * state)
    check_memory(
        need,
        f"inspecting I={n_in}, H={hidden}, O={n_out}, {n_layers} layer-direction(s) "
        f"({per_lag:,} parameters, kept for each of {lags} lags) on T={seq_len}, B={batch}",
        "use a smaller --hidden, --seq-len, --batch or --max-lag",
    )


def run_inspect(args: argparse.Namespace) -> int:
    """Build or load the model, run the diagnostics, write JSON and figures, print a summary."""
    path = None if args.path is None else Path(args.path)
    out = check_dir_name(args.out)  # an empty --out would write into the current directory
    if args.max_lag is not None and args.max_lag < 0:
        raise ValueError(f"--max-lag must be >= 0, got {args.max_lag}")
    for option, value in (
        ("--seq-len", args.seq_len),
        ("--batch", args.batch),
        ("--input-size", args.input_size),
        ("--output-size", args.output_size),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be >= 1, got {value}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if not args.no_plots:
        try:
            require_matplotlib()
        except ImportError as err:
            print(f"bptt inspect: error: {err} (or pass --no-plots)", file=sys.stderr)
            return 2
    seq_len = DEFAULT_SEQ_LEN if args.seq_len is None else args.seq_len
    batch_size = DEFAULT_BATCH if args.batch is None else args.batch
    if path is None:
        task_for_sizes = fresh_task(args)
        n_in = task_for_sizes.input_size if task_for_sizes else (args.input_size or 8)
        n_out = task_for_sizes.output_size if task_for_sizes else (args.output_size or 4)
        if not 1 <= args.layers <= MAX_LAYERS:  # bounded before any shape is built
            raise ValueError(f"--layers must lie in [1, {MAX_LAYERS}], got {args.layers}")
        structure = dict(
            input_size=n_in,
            hidden_size=args.hidden,
            output_size=n_out,
            cell=args.cell,
            num_layers=args.layers,
            bidirectional=args.bidirectional,
            hidden_activation=args.activation,
        )
        _check_memory(param_shapes_for(**structure), seq_len, batch_size, args.max_lag)
        model = fresh_model(args)
        source = f"fresh initialisation (seed {args.seed}, W {args.recurrent_init}" + (
            f", spectral radius {args.spectral_radius})" if args.spectral_radius else ")"
        )
        config, vocab = None, None
    else:
        run = load_run(path)
        model, config, vocab = run.model, run.config, run.vocab
        source = f"checkpoint {path}"
        T = seq_len if args.seq_len is not None or config is None else config.seq_len
        _check_memory(model.param_shapes(), T, batch_size, args.max_lag)
    rng = np.random.default_rng(args.seed + 1)
    task = "random" if args.task is None else args.task
    if args.task is None and config is not None:
        task = config.task
        batch = run_batch(model, config, vocab, args.seq_len, batch_size, args.seed)
        source += f" (validation batch of the run's task {config.task})"
    elif args.task == "adding":
        data = AddingTask(seq_len)
        wanted = (data.input_size, data.output_size, data.output)
        if (model.input_size, model.output_size, model.output) != wanted:
            raise ValueError(
                f"--task adding needs a model with input_size {data.input_size}, output_size "
                f"{data.output_size} and the {data.output} head, got {model!r}"
            )
        batch = task_batch(data, batch_size, rng, model.dtype)
    else:
        batch = random_batch(model, seq_len, batch_size, rng, args.ids)
    profile_path = find_profile(path, None if args.profile is None else Path(args.profile))
    profile = None if profile_path is None else GradientProfileRecorder.load(profile_path)
    # any cell, depth and direction; a bar on stderr (a terminal only) once it takes > 2 s
    ins = inspect_model(
        model, batch, task, source, args.max_lag, profile, progress=sys.stderr.isatty()
    )
    report: dict[str, Any] = report_dict(ins)
    lines = summary_lines(ins)
    if report["profile"] is not None:
        report["profile"]["path"] = str(profile_path)
    claim_output_dir(out, ("inspect.json", *FIGURES.values()))  # before anything is written
    json_path = atomic_write_text(
        out / "inspect.json", json.dumps(report, indent=1, allow_nan=False, ensure_ascii=False)
    )
    for line in lines:
        print(line)
    written = [json_path]
    if not args.no_plots:
        written += write_figures(ins, out)
    print("wrote: " + ", ".join(str(p) for p in written))
    return 0


def add_inspect_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``bptt inspect`` on the ``bptt`` command's subparsers."""
    p = subparsers.add_parser(
        "inspect",
        help="gradient-flow diagnostics: per-lag BPTT contributions, Jacobians, truncation",
        description="Take BPTT apart on a sample batch, for any cell, depth and direction: the "
        "part of each layer's parameter gradients that flows over each lag, and for the top "
        "layer dL/dh_t per step, state-Jacobian-product norms against lag (for the Elman cell "
        "with the spectrum of W and the Pascanu et al. (2013) condition), and the bias of "
        "truncated BPTT for every truncation length. Without DIR_OR_CHECKPOINT, a freshly "
        "initialised model is built from the model options; with it, the batch is a "
        "validation batch of the run's own task unless --task is given. Writes inspect.json "
        "and PNG figures (needs matplotlib: pip install 'bptt[plot]') into --out.",
    )
    p.add_argument(
        "path",
        nargs="?",
        metavar="DIR_OR_CHECKPOINT",
        help="a run folder or checkpoint to load; its profile.json is drawn as a heat map",
    )
    p.add_argument("--out", default="bptt-inspect", help="output folder (default: %(default)s)")
    p.add_argument(
        "--max-lag", type=int, default=None, help="lags kept apart, the rest summed (default: all)"
    )
    p.add_argument("--profile", default=None, help="a profile.json to draw (default: DIR's)")
    p.add_argument("--no-plots", action="store_true", help="only the summary and the JSON")
    g = p.add_argument_group("sample batch")
    g.add_argument(
        "--task",
        choices=FRESH_BATCHES,
        default=None,
        help="adding or random inputs and targets (default: the run's own task, validation "
        "split, with DIR_OR_CHECKPOINT; random for a fresh model)",
    )
    g.add_argument(
        "--seq-len", type=int, default=None, help=f"T (default: the run's, else {DEFAULT_SEQ_LEN})"
    )
    g.add_argument("--batch", type=int, default=None, help=f"B (default: {DEFAULT_BATCH})")
    g.add_argument("--ids", action="store_true", help="random task: integer token ids")
    g.add_argument("--seed", type=int, default=0, help="model and batch seed (default: 0)")
    m = p.add_argument_group("fresh model (no DIR_OR_CHECKPOINT)")
    m.add_argument(
        "--input-size", type=int, default=None, help="I (default: 8 for the random task)"
    )
    m.add_argument("--hidden", type=int, default=32, help="H (default: %(default)s)")
    m.add_argument("--layers", type=int, default=1, help="L, stacked layers")
    m.add_argument(
        "--bidirectional", action="store_true", help="a forward and a reverse cell per layer"
    )
    m.add_argument(
        "--output-size", type=int, default=None, help="O (default: 4 for the random task)"
    )
    m.add_argument("--cell", choices=sorted(CELLS), default="elman", help="recurrent cell")
    m.add_argument(
        "--activation", choices=sorted(ACTIVATIONS), default="tanh", help="hidden activation"
    )
    m.add_argument("--output", choices=sorted(HEADS), default=None, help="head (default: softmax)")
    m.add_argument(
        "--recurrent-init",
        "--init",
        dest="recurrent_init",
        choices=INITS,
        default="uniform",
        help="weights drawn by bptt.init, as bptt train --init: PyTorch's uniform, glorot, "
        "orthogonal W, or identity (IRNN: W = I, b = 0, U, V ~ N(0, 0.001²))",
    )
    m.add_argument(
        "--spectral-radius",
        type=float,
        default=None,
        help="rescale W to this spectral radius (default: as drawn)",
    )
    p.set_defaults(func=run_inspect)
    return p
