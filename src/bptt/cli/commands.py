"""The ``bptt`` command: its parser and the subcommands train, sample, eval, predict and
gradcheck (inspect: :mod:`.inspect`, export: :mod:`.export`, sweep: :mod:`.sweep`, plan:
:mod:`.plan`)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..activations import ACTIVATIONS
from ..cells import CELLS
from ..checkpoint import load_checkpoint
from ..data import registry as task_registry
from ..data.text import CharCorpus
from ..gradcheck import gradcheck
from ..heads import HEADS
from ..model import build_model
from ..predict import format_csv, predict_csv, predict_npz, write_npz, write_text
from ..resources import MAX_LAYERS, check_memory, estimate_bytes
from ..rundir import check_output_file
from ..sample import sample_text
from ..training import (
    CharStreamSource,
    TrainConfig,
    TrainingDiverged,
    config_fields,
    evaluate_task,
    evaluate_text,
    make_task,
)
from ..training.distributed import WorkerLost
from ..training.distributed import train as run_training
from ..training.evaluation import locate_run_data
from .export import add_export_parser
from .inspect import add_inspect_parser
from .options_file import read_train_options
from .plan import add_plan_parser
from .sweep import add_sweep_parser
from .tune import add_tune_parser


class HelpFormatter(argparse.HelpFormatter):
    """Each option's default shown once: appended as ``(default: X)`` unless the help text
    already says what the default is; flags and options without a default get none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or "%(default)" in text:
            return text
        if isinstance(action, argparse.BooleanOptionalAction) and action.default is not None:
            return text + (" (default: on)" if action.default else " (default: off)")
        if action.default in (None, argparse.SUPPRESS) or action.nargs == 0:
            return text
        if action.default == "":
            return text + " (default: '')"
        return text + " (default: %(default)s)"


def _add_gradcheck(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "gradcheck",
        help="verify the hand-written BPTT gradients (finite differences, seed formula)",
        description="Build a random float64 model and batch, and report the largest relative "
        "error of each parameter's gradient against central finite differences and against "
        "the literal seed formula (any cell of one layer and one direction: the sum over lags of "
        "products of the cell's state Jacobians). Exits 1 if any error is above --tolerance.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--cell", choices=sorted(CELLS), default="elman", help="recurrent cell")
    p.add_argument("--layers", type=int, default=1, help="L")
    p.add_argument("--bidirectional", action="store_true", help="two directions per layer")
    p.add_argument("--input-size", type=int, default=5, help="I")
    p.add_argument("--hidden", type=int, default=8, help="H")
    p.add_argument("--output-size", type=int, default=4, help="O")
    p.add_argument("--seq-len", type=int, default=12, help="T")
    p.add_argument("--batch", type=int, default=3, help="B")
    p.add_argument(
        "--activation", choices=sorted(ACTIVATIONS), default="tanh", help="hidden activation f_h"
    )
    p.add_argument("--output", choices=sorted(HEADS), default="softmax", help="the head")
    p.add_argument("--ids", action="store_true", help="feed integer token ids instead of floats")
    p.add_argument(
        "--tolerance", type=float, default=1e-5, help="largest relative error that passes"
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the model and the batch")
    p.set_defaults(func=_run_gradcheck)


def _run_gradcheck(args: argparse.Namespace) -> int:
    for option in ("input_size", "hidden", "output_size", "seq_len", "batch", "layers"):
        _require(option, getattr(args, option), 1)
    _require("seed", args.seed, 0)
    if not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise ValueError(f"--tolerance must be a finite number > 0, got {args.tolerance}")
    if args.layers > MAX_LAYERS:
        raise ValueError(f"--layers must be <= {MAX_LAYERS}, got {args.layers}")
    depth = args.layers * (2 if args.bidirectional else 1)
    need = estimate_bytes(
        args.input_size, args.hidden, args.output_size, args.seq_len, args.batch, layers=depth
    )
    check_memory(
        2 * need,  # the model, its gradients and the finite-difference copies, in float64
        f"gradcheck of I={args.input_size}, H={args.hidden}, O={args.output_size}, "
        f"T={args.seq_len}, B={args.batch}, {depth} layer-direction(s)",
        "use a smaller --hidden, --layers, --seq-len or --batch",
    )
    model = build_model(
        input_size=args.input_size,
        hidden_size=args.hidden,
        output_size=args.output_size,
        cell=args.cell,
        num_layers=args.layers,
        bidirectional=args.bidirectional,
        hidden_activation=args.activation,
        output=args.output,
        seed=args.seed,
    )
    rng = np.random.default_rng(args.seed + 1)
    shape_tb = (args.seq_len, args.batch)
    x: np.ndarray
    y: np.ndarray
    if args.ids:
        x = rng.integers(0, args.input_size, size=shape_tb)
    else:
        x = rng.standard_normal((*shape_tb, args.input_size))
    if args.output == "softmax":
        y = rng.integers(0, args.output_size, size=shape_tb)
    elif args.output == "sigmoid":
        y = (rng.random((*shape_tb, args.output_size)) < 0.5).astype(np.float64)
    else:
        y = rng.standard_normal((*shape_tb, args.output_size))
    S = model.state_parts * args.hidden
    h0 = model.join_state([0.5 * rng.standard_normal((args.batch, S)) for _ in model.layers])
    print(model)
    print(f"T={args.seq_len} B={args.batch} inputs={'ids' if args.ids else 'dense'}")
    report = gradcheck(model, x, y, h0, tolerance=args.tolerance, seed=args.seed)
    print(report.format())
    return 0 if report.passed else 1


def _require(option: str, value: int, low: int) -> None:
    """Raise ValueError naming ``--option`` unless ``value >= low``."""
    if value < low:
        raise ValueError(f"--{option.replace('_', '-')} must be >= {low}, got {value}")


def _add_train(
    subparsers: argparse._SubParsersAction, defaults: dict[str, Any] | None = None
) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model (default: a character model on the built-in corpus)",
        description="Train an Elman RNN by explicit BPTT. With no options: a character model "
        "(H=256, T=50, B=32, Adam 2e-3, clip 5, 4000 steps) on the built-in corpus, "
        "Shakespeare's comedies, printing samples as it learns. Every option is a "
        "field of bptt.training.TrainConfig; the run writes config.json, metrics.jsonl, "
        "checkpoint.safetensors and loss.png into --out.",
        formatter_class=HelpFormatter,
    )
    for name, kind, default, _optional, meta in config_fields():
        flag = "--" + name.replace("_", "-")
        help_text = meta.get("help", "")
        if kind is bool:
            p.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        else:
            p.add_argument(
                flag,
                type=kind,
                default=default,
                choices=meta.get("choices"),
                metavar=None if meta.get("choices") else name.upper(),
                help=help_text,
            )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out up to --steps (same configuration)",
    )
    p.add_argument(
        "--config",
        metavar="FILE.toml",
        help="read options from a TOML file: TrainConfig fields at the top level or in a "
        "[base] table (a sweep spec's); options given here override the file's",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the bptt run in --out (its checkpoint, logs and best/) with a new one",
    )
    p.add_argument(
        "--log",
        choices=("tensorboard",),
        default=None,
        help="also write the run's scalars for TensorBoard into OUT/tb (needs tensorboardX)",
    )
    p.set_defaults(func=_run_train, config_cls=TrainConfig, **(defaults or {}))


def _run_train(args: argparse.Namespace) -> int:
    values = {name: getattr(args, name) for name, *_ in config_fields()}
    config = TrainConfig(**values)
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out, --overwrite replaces it: pass one")
    callbacks = []
    if getattr(args, "log", None) == "tensorboard" and config.out is not None:
        from ..training.tensorboard import TensorBoardLogger  # opens OUT/tb at its first event

        callbacks.append(TensorBoardLogger(Path(config.out) / "tb"))
    try:
        result = run_training(  # --workers N: on Ray Train; the CLI talks
            config,
            resume=args.resume,
            overwrite=args.overwrite,
            echo=print,
            cli=True,
            callbacks=callbacks,
        )
    except (TrainingDiverged, WorkerLost) as err:
        print(f"bptt train: error: {err}", file=sys.stderr)
        return 1
    if result.reason == "interrupted":
        return 130
    if result.reason == "terminated":
        return 143  # 128 + SIGTERM, as the shell reports a process ended by it
    return 0


def _add_sample(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sample",
        help="sample text from a trained character model",
        description="Print text drawn from a character model's checkpoint (a run directory, "
        "its best/ folder kept by --keep-best, or a checkpoint file). The same --seed gives "
        "the same text.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", metavar="DIR_OR_CHECKPOINT", help="RUN, RUN/best or a file")
    p.add_argument("--length", type=int, default=500, help="characters to draw")
    p.add_argument(
        "--temperature", type=float, default=0.8, help="divide the logits by this (0: greedy)"
    )
    p.add_argument("--top-k", type=int, default=0, help="draw among the k likeliest (0: all)")
    p.add_argument("--prime", default="", help="text to start from (printed first)")
    p.add_argument("--seed", type=int, default=0, help="seeds the draws")
    p.set_defaults(func=_run_sample)


def _run_sample(args: argparse.Namespace) -> int:
    _require("length", args.length, 0)
    _require("top_k", args.top_k, 0)
    _require("seed", args.seed, 0)
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise ValueError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.vocab is None:
        raise ValueError(
            f"{args.checkpoint!r} holds a model of task {ckpt.task!r}, without a vocabulary; "
            "sample needs a charlm checkpoint"
        )
    m = ckpt.model
    need = estimate_bytes(m.input_size, m.hidden_size, m.output_size, 1, 1, sample=args.length)
    check_memory(need, f"--length {args.length}", "draw fewer characters")
    print(
        sample_text(
            ckpt.model,
            ckpt.vocab,
            args.length,
            prime=args.prime,
            temperature=args.temperature,
            top_k=args.top_k,
            seed=args.seed,
        )
    )
    return 0


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint on held-out data",
        description="Evaluate a checkpoint on its run's validation data, or (charlm) on the "
        "whole of --text FILE: loss, bits per character, perplexity; tasks: their metric "
        "beside the memoryless baseline. RUN/best evaluates the weights kept by --keep-best.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", metavar="DIR_OR_CHECKPOINT", help="RUN, RUN/best or a file")
    p.add_argument("--text", default=None, help="charlm: evaluate on this UTF-8 file instead")
    p.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help="the run's own data file (--text, --csv or --data of training) where it lies now; "
        "its content must be the checkpoint's (default: the path in the run's configuration)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    try:
        config = TrainConfig.from_dict(ckpt.config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"the checkpoint's configuration is not valid: {err}") from None
    if args.text is not None and args.data is not None:
        raise ValueError("--text evaluates on another text, --data names the run's own: pass one")
    run_dir = ckpt.path.parent if ckpt.path is not None else Path(args.checkpoint)
    data_state = ckpt.data_state
    if run_dir.name == "best":
        run_dir = run_dir.parent
        if "source" not in data_state:  # best/ of an older bptt: the run's checkpoint has it
            try:
                data_state = load_checkpoint(run_dir).data_state
            except ValueError:
                pass
    if args.text is None:
        config = locate_run_data(config, data_state, run_dir, args.data)
    if task_registry.get(config.task).streams:
        if args.text is not None:
            ids = CharCorpus.from_file(args.text, ckpt.vocab).ids
            source = args.text
        else:
            stream = CharStreamSource(config, ckpt.vocab)
            if stream.fingerprint != data_state.get("source"):
                raise ValueError(
                    "the built-in corpus of this Python is not the text the checkpoint was "
                    "trained on (it differs across Python versions); pass --data FILE with the "
                    "run's text, or --text FILE to evaluate on another"
                )
            ids = stream.val_ids
            source = "validation split of " + (config.text or "the built-in corpus")
        metrics = evaluate_text(ckpt.model, ids, config.batch, config.seq_len)
    else:
        if args.text is not None:
            raise ValueError(f"--text applies to charlm checkpoints, not {config.task!r}")
        metrics = evaluate_task(
            ckpt.model, make_task(config), config.eval_size, config.batch, config.seed
        )
        source = task_registry.get(config.task).eval_source(config, metrics)
    metrics = {"step": ckpt.step, "task": config.task, "data": source} | metrics
    if args.json:
        print(json.dumps(metrics))
    else:
        for k, v in metrics.items():
            print(f"{k:>22}: {v:.6g}" if isinstance(v, float) else f"{k:>22}: {v}")
    return 0


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="forecasts of a regression run for new data (CSV or .npz)",
        description="Run a trained model over new data. --csv FILE: the file's rows as one "
        "sequence (a csv run reads its own columns and standardisation), printing each row "
        "with the forecast made at it. --data FILE.npz: X in the run's layout; writes Y_hat "
        "to --out and, if the file holds Y, prints the score against it.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", metavar="DIR_OR_CHECKPOINT", help="RUN, RUN/best or a file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", default=None, help="a CSV file with a header row")
    src.add_argument("--data", default=None, help="an .npz file with X (and optionally Y)")
    p.add_argument(
        "--out",
        default=None,
        help="write here (default: --csv prints to stdout; --data needs an .npz path)",
    )
    p.add_argument(
        "--batch-first",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--data: X is (N, T, ...) (default: the run's own --batch-first)",
    )
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    if args.out is not None:
        check_output_file(args.out)  # never over a run's own files, never through a link
    ckpt = load_checkpoint(args.checkpoint)
    if args.csv is not None:
        names, raw, pred = predict_csv(ckpt, args.csv)
        text = format_csv(names, raw, pred, int(ckpt.config.get("horizon", 1)))
        if args.out is None:
            sys.stdout.write(text)
        else:
            write_text(args.out, text)
            print(f"{len(raw)} forecasts -> {args.out}")
        return 0
    if args.out is None:
        raise ValueError("--data needs --out FILE.npz for the predictions")
    batch_first = args.batch_first
    if batch_first is None:
        batch_first = bool(ckpt.config.get("batch_first", False))
    y_hat, scores = predict_npz(ckpt, args.data, batch_first)
    write_npz(args.out, y_hat)
    print(f"Y_hat {y_hat.shape} -> {args.out}" + (f"; {json.dumps(scores)}" if scores else ""))
    return 0


def build_parser(train_defaults: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    """The ``bptt`` parser; ``train_defaults`` replace ``bptt train``'s defaults (its
    ``--config`` file)."""
    parser = argparse.ArgumentParser(
        prog="bptt",
        description="Train, evaluate and inspect recurrent networks (Elman, GRU, LSTM; deep, "
        "bidirectional) with explicit backpropagation through time.",
    )
    parser.add_argument("--version", action="version", version=f"bptt {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_train(subparsers, train_defaults)
    _add_sample(subparsers)
    _add_eval(subparsers)
    _add_predict(subparsers)
    _add_gradcheck(subparsers)
    add_inspect_parser(subparsers).formatter_class = HelpFormatter
    add_export_parser(subparsers).formatter_class = HelpFormatter
    add_sweep_parser(subparsers).formatter_class = HelpFormatter
    add_tune_parser(subparsers).formatter_class = HelpFormatter
    add_plan_parser(subparsers).formatter_class = HelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "config", None) is not None:  # the file's values become the defaults
            args = build_parser(read_train_options(args.config)).parse_args(argv)
        return int(args.func(args))
    except (ValueError, TypeError, OSError, ImportError) as err:
        print(f"bptt {args.command}: error: {err}", file=sys.stderr)
        return 2
    except MemoryError as err:  # beyond the up-front estimates (bptt.resources)
        print(
            f"bptt {args.command}: error: out of memory ({err or 'allocation failed'}); "
            "use smaller sizes",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"bptt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
