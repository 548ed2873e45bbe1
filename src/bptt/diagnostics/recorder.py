"""Keeping the per-lag gradient profile during training (``profile.json``)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..model import RNN
from ..validation import check_max_lag
from .lags import ROLE_KEYS, lag_contributions


def _to_json_list(a: np.ndarray) -> list[float | None]:
    """Floats for JSON; NaN and ±inf become null (strict JSON has no such numbers)."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(a, dtype=np.float64)]


def _from_json_list(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


class GradientProfileRecorder:
    """Keeps the per-lag gradient norms every ``every`` training steps.

    At each recorded step, :func:`lag_contributions` is run on the given batch and its
    :meth:`LagContributions.role_norms` are kept, so a user sees vanishing or exploding gradients
    develop over training. Each record costs O(L·T·B·H²) (see :func:`lag_contributions`); pass
    ``max_lag`` to bound it, the lags beyond it then appear as one remainder entry.

    Args:
        every: record when ``step % every == 0``.
        max_lag: passed to :func:`lag_contributions` (None: all lags).
        layer: the layer-direction whose lags are recorded, by name (``"l1"``,
            ``"l0_reverse"``, :func:`~.trace.layer_name`); None for a one-layer,
            one-direction model. The trainer takes the top layer's forward direction, as
            ``bptt inspect`` does.

    Attributes:
        steps: the recorded steps.
        losses: the batch loss at each recorded step.
        history: ``{"W", "V", "b_h", "total"}`` → one (L,) float64 array per record.
        labels: the lag labels of each record (``"0"``, …, ``"≥m+1"``).
    """

    FORMAT = "bptt-gradient-profile"
    VERSION = 1

    def __init__(self, every: int, max_lag: int | None = None, layer: str | None = None) -> None:
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        if layer is not None and not isinstance(layer, str):
            raise TypeError(f"layer must be a layer name such as 'l1' or None, got {layer!r}")
        self.every = int(every)
        self.max_lag = check_max_lag(max_lag)
        self.layer = layer
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.labels: list[list[str]] = []
        self.history: dict[str, list[np.ndarray]] = {
            name: [] for name in (*ROLE_KEYS.values(), "total")
        }

    def __len__(self) -> int:
        return len(self.steps)

    def maybe_record(
        self,
        step: int,
        model: RNN,
        x: object,
        y: object,
        h0: object = None,
        mask: object = None,
    ) -> bool:
        """Record the per-lag norms on this batch if ``step % every == 0``; say whether it did.

        Any model (:func:`~.lags.lag_contributions`; a deep or bidirectional one at
        :attr:`layer`); the norms are kept by role
        (:meth:`~.lags.LagContributions.role_norms`: ``W`` the recurrent matrices, ``V`` the
        input matrices, ``b_h`` all biases, e.g. the GRU's b and b_hn).
        """
        if step % self.every != 0:
            return False
        contrib = lag_contributions(model, x, y, h0, mask, max_lag=self.max_lag, layer=self.layer)
        for name, values in contrib.role_norms().items():
            self.history[name].append(values)
        self.steps.append(int(step))
        self.losses.append(contrib.loss)
        self.labels.append(contrib.labels)
        return True

    def matrix(self, name: str = "total") -> np.ndarray:
        """(n_records, L_max) norms of ``name``, NaN-padded where a record has fewer lags."""
        if name not in self.history:
            raise ValueError(f"name must be one of {sorted(self.history)}, got {name!r}")
        rows = self.history[name]
        width = max((len(r) for r in rows), default=0)
        out = np.full((len(rows), width), np.nan)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "version": self.VERSION,
            "every": self.every,
            "max_lag": self.max_lag,
            "layer": self.layer,
            "steps": list(self.steps),
            "losses": _to_json_list(np.array(self.losses)),
            "labels": [list(row) for row in self.labels],
            "norms": {
                name: [_to_json_list(row) for row in rows] for name, rows in self.history.items()
            },
        }

    def to_json(self) -> str:
        """The record as strict JSON (NaN and inf written as null)."""
        return json.dumps(self.to_dict(), allow_nan=False, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GradientProfileRecorder:
        """Rebuild a recorder from :meth:`to_dict` output.

        Raises:
            ValueError: not a gradient profile, or its lists disagree in length.
        """
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT:
            raise ValueError(f"not a {cls.FORMAT} record (missing or wrong 'format' field)")
        if data.get("version") != cls.VERSION:
            raise ValueError(
                f"gradient profile version {data.get('version')!r} is not supported "
                f"(expected {cls.VERSION})"
            )
        rec = cls(every=int(data["every"]), max_lag=data["max_lag"], layer=data.get("layer"))
        rec.steps = [int(s) for s in data["steps"]]
        rec.losses = [float(v) for v in _from_json_list(data["losses"])]
        rec.labels = [list(row) for row in data["labels"]]
        n = len(rec.steps)
        for name in rec.history:
            rows = data["norms"][name]
            if len(rows) != n:
                raise ValueError(
                    f"gradient profile has {n} steps but {len(rows)} rows of {name!r} norms"
                )
            rec.history[name] = [_from_json_list(row) for row in rows]
        if len(rec.losses) != n or len(rec.labels) != n:
            raise ValueError("gradient profile: steps, losses and labels differ in length")
        return rec

    @classmethod
    def from_json(cls, text: str) -> GradientProfileRecorder:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON atomically (temporary file in the same folder, then os.replace)."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GradientProfileRecorder:
        """Read :meth:`save` output.

        Raises:
            ValueError: naming the file, when it is not a readable gradient profile.
        """
        try:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except (KeyError, TypeError, ValueError, RecursionError) as err:
            raise ValueError(f"{str(path)!r} is not a readable gradient profile: {err}") from None
