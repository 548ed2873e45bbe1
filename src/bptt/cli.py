"""The ``bptt`` command."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import numpy as np

from .activations import ACTIVATIONS
from .export_cli import add_export_parser
from .heads import HEADS
from .inspect_cli import add_inspect_parser
from .model import ElmanRNN
from .resources import check_memory, estimate_bytes
from .sweep import add_sweep_parser


def _add_gradcheck(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "gradcheck",
        help="verify the hand-written BPTT gradients (finite differences, seed formula)",
        description="Build a random float64 model and batch, and report the largest relative "
        "error of each parameter's gradient against central finite differences and against "
        "the literal seed formula. Exits 1 if any error is above --tolerance.",
    )
    p.add_argument("--input-size", type=int, default=5, help="I (default: %(default)s)")
    p.add_argument("--hidden", type=int, default=8, help="H (default: %(default)s)")
    p.add_argument("--output-size", type=int, default=4, help="O (default: %(default)s)")
    p.add_argument("--seq-len", type=int, default=12, help="T (default: %(default)s)")
    p.add_argument("--batch", type=int, default=3, help="B (default: %(default)s)")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh")
    p.add_argument("--output", choices=sorted(HEADS), default="softmax")
    p.add_argument("--ids", action="store_true", help="feed integer token ids instead of floats")
    p.add_argument("--tolerance", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_gradcheck)


def _run_gradcheck(args: argparse.Namespace) -> int:
    from .gradcheck import gradcheck

    for option in ("input_size", "hidden", "output_size", "seq_len", "batch"):
        _require(option, getattr(args, option), 1)
    _require("seed", args.seed, 0)
    if not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise ValueError(f"--tolerance must be a finite number > 0, got {args.tolerance}")
    model = ElmanRNN(
        args.input_size,
        args.hidden,
        args.output_size,
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
    h0 = 0.5 * rng.standard_normal((args.batch, args.hidden))
    print(model)
    print(f"T={args.seq_len} B={args.batch} inputs={'ids' if args.ids else 'dense'}")
    report = gradcheck(model, x, y, h0, tolerance=args.tolerance, seed=args.seed)
    print(report.format())
    return 0 if report.passed else 1


def _require(option: str, value: int, low: int) -> None:
    """Raise ValueError naming ``--option`` unless ``value >= low``."""
    if value < low:
        raise ValueError(f"--{option.replace('_', '-')} must be >= {low}, got {value}")


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    from .train import TrainConfig, config_fields

    p = subparsers.add_parser(
        "train",
        help="train a model (default: a character model on the built-in corpus)",
        description="Train an Elman RNN by explicit BPTT. With no options: a character model "
        "(H=256, T=50, B=32, Adam 2e-3, clip 5, 4000 steps) on the built-in corpus, the Python "
        "standard library's own source, printing samples as it learns. Every option is a "
        "field of bptt.train.TrainConfig; the run writes config.json, metrics.jsonl, "
        "checkpoint.safetensors and loss.png into --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    p.set_defaults(func=_run_train, config_cls=TrainConfig)


def _run_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, Trainer, TrainingDiverged, config_fields

    values = {name: getattr(args, name) for name, *_ in config_fields()}
    config = TrainConfig(**values)
    trainer = Trainer(config, resume=args.resume)
    try:
        result = trainer.train()
    except TrainingDiverged as err:
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
        description="Print text drawn from a character model's checkpoint (a run directory or "
        "a checkpoint file). The same --seed gives the same text.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="DIR_OR_CHECKPOINT")
    p.add_argument("--length", type=int, default=500, help="characters to draw")
    p.add_argument(
        "--temperature", type=float, default=0.8, help="divide the logits by this (0: greedy)"
    )
    p.add_argument("--top-k", type=int, default=0, help="draw among the k likeliest (0: all)")
    p.add_argument("--prime", default="", help="text to start from (printed first)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_sample)


def _run_sample(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .sample import sample_text

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
        "beside the memoryless baseline.",
    )
    p.add_argument("checkpoint", metavar="DIR_OR_CHECKPOINT")
    p.add_argument("--text", default=None, help="charlm: evaluate on this UTF-8 file instead")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    import json

    from .checkpoint import load_checkpoint
    from .train import TextData, TrainConfig, evaluate_task, evaluate_text, make_task

    ckpt = load_checkpoint(args.checkpoint)
    config = TrainConfig.from_dict(ckpt.config)
    if config.task == "charlm":
        if args.text is not None:
            from .data.text import CharCorpus

            ids = CharCorpus.from_file(args.text, ckpt.vocab).ids
            source = args.text
        else:
            ids = TextData(config, ckpt.vocab).val_ids
            source = "validation split of " + (config.text or "the built-in corpus")
        metrics = evaluate_text(ckpt.model, ids, config.batch, config.seq_len)
    else:
        if args.text is not None:
            raise ValueError(f"--text applies to charlm checkpoints, not {config.task!r}")
        metrics = evaluate_task(
            ckpt.model, make_task(config), config.eval_size, config.batch, config.seed
        )
        source = f"{config.eval_size} validation sequences of {config.task}"
    metrics = {"step": ckpt.step, "task": config.task, "data": source} | metrics
    if args.json:
        print(json.dumps(metrics))
    else:
        for k, v in metrics.items():
            print(f"{k:>22}: {v:.6g}" if isinstance(v, float) else f"{k:>22}: {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bptt",
        description="Train and inspect Elman RNNs with explicit backpropagation through time.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_train(subparsers)
    _add_sample(subparsers)
    _add_eval(subparsers)
    _add_gradcheck(subparsers)
    add_inspect_parser(subparsers)
    add_export_parser(subparsers)
    add_sweep_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, TypeError, OSError, ImportError) as err:
        print(f"bptt {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bptt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
