"""``bptt export``: a run's weights for PyTorch (safetensors state dict) or as an ONNX graph."""

from __future__ import annotations

import argparse

from ..checkpoint import load_checkpoint
from ..data import registry as task_registry
from ..interop import export_onnx, save_torch_state
from ..rundir import check_output_file


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a trained model for PyTorch or ONNX",
        description="Write a checkpoint's model as a PyTorch state dict (safetensors under "
        "torch.nn.RNN/GRU/LSTM + nn.Linear names, the constructor arguments in its header; "
        "weights only) or as an ONNX graph of predict (the standard ONNX RNN/GRU/LSTM "
        "operator per layer; inputs x and, with --initial-state, h0; outputs y_hat, h_last).",
    )
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--format", choices=("onnx", "torch"), required=True, dest="fmt")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    p.add_argument(
        "--ids",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="onnx: x is (T, B) int64 token ids (default: yes for charlm runs, else dense)",
    )
    p.add_argument(
        "--initial-state", action="store_true", help="onnx: add the input h0 (else zeros)"
    )
    p.set_defaults(func=run_export)
    return p


def run_export(args: argparse.Namespace) -> int:
    out = check_output_file(args.out)  # never over a run's own files, never through a link
    ckpt = load_checkpoint(args.checkpoint)
    if args.fmt == "torch":
        if args.ids is not None or args.initial_state:
            raise ValueError("--ids and --initial-state apply to --format onnx")
        save_torch_state(ckpt.model, out)
    else:
        ids = bool(task_registry.get(ckpt.task).token_inputs) if args.ids is None else args.ids
        export_onnx(ckpt.model, out, ids=ids, initial_state=args.initial_state)
    print(f"{ckpt.model} (step {ckpt.step}) -> {out} ({args.fmt})")
    return 0
