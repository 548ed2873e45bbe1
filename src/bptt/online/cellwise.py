"""The online algorithms on any cell and depth, through the cell protocol.

A unidirectional model of L layers carries one state per layer, s^l_t (B, S_l), with

    s^l_t = F_l(x^l_t, s^l_{t-1}; θ_l)        x^0_t = x_t,   x^l_t = out(s^{l-1}_t) = h^{l-1}_t

so the influence of layer j's parameters θ_j and initial state s^j_0 on layer l's state,
M^{l,j}_t = ∂s^l_t/∂(θ_j, s^j_0) (zero for j > l), obeys (with the weights fixed)

    M^{l,j}_t = J^l_t M^{l,j}_{t-1} + K^l_t out(M^{l-1,j}_t) + [j = l] Ī^l_t
    J^l_t = ∂s^l_t/∂s^l_{t-1}  (``state_jacobian``)      K^l_t = ∂s^l_t/∂x^l_t  (``input_jacobian``)
    Ī^l_t = ∂s^l_t/∂θ_l        (``param_jacobian``)      M^{l,l}_0 = [0 | 1] (the s_0 columns)

— a lower layer's influence reaches the upper layers through their input Jacobians within the
same step. With c_t = ∂L_t/∂h^{L-1}_t = dz_t U, the top layer's h rows give every gradient:
dθ_j,t = Σ_b c_tb out(M^{L-1,j}_tb)[θ_j columns], dL_t/ds^j_0 = c_t out(M^{L-1,j}_t)[s_0 columns].

Every cell quantity comes from the cell protocol (:class:`bptt.cells.Cell`); nothing here knows
a cell's equations. The columns of layer l's influence are those of layers 0..l laid end to
end, [θ_0 | s^0_0 | θ_1 | s^1_0 | …] (θ_j flattened in the cell's ``param_shapes`` order), so
layer l's influence is a prefix of layer l+1's columns.

- :class:`CellRTRL`: M exactly, dense, (B, S_l, N_l) per layer.
- :class:`CellSnAp`: M on SnAp-n's pattern (Menick et al. 2021), stored only there (sparse,
  ``n = 1`` is SnAp-1) or :class:`CellDenseSnAp`, RTRL's dense buffer masked after each step.
- :class:`CellUORO`: M ≈ ã b̃ᵀ over the stacked state (Tallec & Ollivier 2018).
- :class:`CellKFRTRL`: M ≈ u ⊗ A for one layer whose Ī is a Kronecker product (Elman, LSTM).

These classes are what ``bptt.online.make`` builds for every model but the one-layer Elman one,
whose closed forms (:mod:`bptt.online.rtrl` etc.) are the fast path (``fast=False`` picks these
on an Elman model too; the tests compare the two). ``run`` here is :meth:`step` repeated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cells import ParamJacobian, StepArgs
from ..model import RNN
from ..params import Gradients
from .base import OnlineAlgorithm, StateDict


@dataclass(frozen=True)
class Columns:
    """The influence's column layout: layer j's θ_j at ``[param[j], param[j] + P_j)``, its s_0
    at ``[state[j], state[j] + S_j)``; layer l holds the first ``width[l]`` columns."""

    param: tuple[int, ...]
    sizes: tuple[int, ...]  # P_j
    state: tuple[int, ...]
    states: tuple[int, ...]  # S_j
    width: tuple[int, ...]  # N_l

    @classmethod
    def of(cls, model: RNN) -> Columns:
        param, sizes, state, states, width = [], [], [], [], []
        offset = 0
        for layer in model.layers:
            shapes = layer.cell.param_shapes().values()
            P = sum(int(np.prod(shape)) for shape in shapes)
            S = layer.cell.state_size
            param.append(offset)
            sizes.append(P)
            state.append(offset + P)
            states.append(S)
            offset += P + S
            width.append(offset)
        return cls(tuple(param), tuple(sizes), tuple(state), tuple(states), tuple(width))


@dataclass(frozen=True)
class LayerStep:
    """One layer's step: its parameters (local names) and operating point."""

    params: dict[str, np.ndarray]
    at: StepArgs


def check_cells(model: RNN, what: str) -> None:
    """Refuse a model the cell-protocol algorithms cannot run (bidirectional)."""
    model.require_unidirectional(f"online {what}")


class CellAlgorithm(OnlineAlgorithm):
    """The step every cell-protocol algorithm shares: the layers' forward one step, the head,
    and the gradients assembled from the algorithm's estimate of c_t·out(M^{L-1}_t).

    ``self.h`` is the stacked state (L, B, S) (``state_dict()["h"]``).
    """

    needs_elman = False

    def __init__(self, model: RNN, batch: int, seed: int = 0) -> None:
        if isinstance(model, RNN):
            check_cells(model, self.name)
        super().__init__(model, batch, seed)
        self.cols = Columns.of(model)
        self.h = np.stack(model.split_state(None, self.batch))  # (L, B, S)

    # -- the shared step ---------------------------------------------------------------------

    def reset(self, h0: object = None) -> None:
        """Start every stream at h_0 (the model's layout; zeros when None), zero influence."""
        self.t = 0
        self.h = np.stack(self.model.split_state(h0, self.batch))  # (L, B, S)
        self._reset_traces()

    def _run(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Gradients]:
        """:meth:`step` T times (no hoisting on the generic path)."""
        return self._run_steps(x, y, mask)

    def _forward(self, x: np.ndarray) -> list[LayerStep]:
        """Every layer one step from ``self.h``; advances ``self.h``."""
        params = self.model.params
        steps = []
        layer_in = x
        new = np.empty_like(self.h)
        for index, layer in enumerate(self.model.layers):
            p = layer.take(params)
            s = layer.cell.step(p, layer_in, self.h[index])  # (B, S)
            steps.append(LayerStep(p, StepArgs(x=layer_in, s_prev=self.h[index], s=s)))
            new[index] = s
            layer_in = layer.cell.output(s)  # (B, H)
        self.h = new
        return steps

    def _step(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[float, Gradients]:
        model = self.model
        weight = mask / model.dtype.type(self.batch)  # (B,)
        steps = self._forward(x)
        self._advance(steps)
        top = model.layers[-1].cell.output(steps[-1].at.s)  # (B, H)
        U = model.params["U"]
        z = top @ U.T
        z += model.params["b_y"]
        loss, dz = model.head.loss_and_dz(z[None], y[None], weight[None])
        dz = dz[0]  # (B, O)
        c = dz @ U  # (B, H): ∂L_t/∂h^{L-1}_t
        theta, s0 = self._estimate(c)
        return loss, self._named_all(dz.T @ top, dz.sum(axis=0), theta, s0)

    def _named_all(
        self, dU: np.ndarray, db_y: np.ndarray, theta: np.ndarray, s0: list[np.ndarray]
    ) -> Gradients:
        """Gradients under the model's names from θ's flat estimate (Σ_j P_j,) laid out as
        [θ_0 | θ_1 | …] and dL/ds^j_0 (B, S_j) per layer."""
        arrays: dict[str, np.ndarray] = {"U": dU, "b_y": db_y}
        start = 0
        for layer in self.model.layers:
            for local, shape in layer.cell.param_shapes().items():
                size = int(np.prod(shape))
                arrays[layer.names[local]] = theta[start : start + size].reshape(shape).copy()
                start += size
        ordered = {name: arrays[name] for name in self.model.param_shapes()}
        return Gradients.from_backward(ordered, self.model.join_state(s0))

    def _theta_size(self) -> int:
        return sum(self.cols.sizes)

    # -- what each algorithm supplies ------------------------------------------------------

    def _advance(self, steps: list[LayerStep]) -> None:
        """Carry the influence estimate from t−1 to t."""
        raise NotImplementedError

    def _estimate(self, c: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """(dθ_t flat (Σ P_j,), [dL_t/ds^j_0 (B, S_j)]) from c_t (B, H)."""
        raise NotImplementedError

    # unused Elman hooks of the base class
    def _propagate(self, fprime: np.ndarray, hhat: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    def _theta_grad(self, c: np.ndarray, dz: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _split_dense(self, cm: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """(θ's sum over streams, s_0 parts) from cm (B, N) = c_t out(M^{L-1}_t) per stream."""
        cols = self.cols
        theta = np.concatenate(
            [cm[:, a : a + P].sum(axis=0) for a, P in zip(cols.param, cols.sizes, strict=True)]
        )
        s0 = [cm[:, a : a + S].copy() for a, S in zip(cols.state, cols.states, strict=True)]
        return theta, s0


def _add_immediate(target: np.ndarray, jac: ParamJacobian, offset: int) -> None:
    """target (B, S, N) += Ī placed at columns [offset, offset + P)."""
    R, P = jac.rows.shape
    cols = offset + np.broadcast_to(np.arange(P), (R, P))
    target[:, jac.rows, cols] += jac.values  # (row, column) pairs are distinct


class CellRTRL(CellAlgorithm):
    """M^{l}_t = J^l M^l_{t-1} + K^l out(M^{l-1}_t) + Ī^l: exact RTRL on any cell and depth.

    Carries M^l (B, S_l, N_l) per layer (``state_dict()["M0"]``, …); per step and stream
    Σ_l S_l²·N_l + S_l·H·N_{l-1} multiply-adds for the products, plus forming J (S_l
    Jacobian-vector products through the cell) and K.
    """

    name = "rtrl"

    def __init__(self, model: RNN, batch: int, seed: int = 0) -> None:
        super().__init__(model, batch, seed)
        self._reset_traces()

    def _reset_traces(self) -> None:
        cols, B, dt = self.cols, self.batch, self.model.dtype
        self.M = []
        for l, S in enumerate(cols.states):
            M = np.zeros((B, S, cols.width[l]), dtype=dt)  # (B, S_l, N_l)
            M[:, np.arange(S), cols.state[l] + np.arange(S)] = 1.0  # ∂s^l_0/∂s^l_0 = 1
            self.M.append(M)

    def _traces(self) -> StateDict:
        return {f"M{l}": M for l, M in enumerate(self.M)}

    def _load_traces(self, arrays: StateDict) -> None:
        for l in range(len(self.M)):
            self.M[l] = np.array(arrays[f"M{l}"], dtype=self.model.dtype)

    def _carried(self) -> list[np.ndarray]:
        return [self.h, *self.M]

    def _mask(self, layer: int, M: np.ndarray) -> None:
        """Hook: SnAp's pattern (RTRL keeps everything)."""

    def _advance(self, steps: list[LayerStep]) -> None:
        cols = self.cols
        new: list[np.ndarray] = []
        for l, (layer, st) in enumerate(zip(self.model.layers, steps, strict=True)):
            cell = layer.cell
            J = cell.state_jacobian(st.params, st.at)  # (B, S, S)
            M = np.matmul(J, self.M[l])  # (B, S, N_l)
            if l > 0:
                K = cell.input_jacobian(st.params, st.at)  # (B, S, H)
                below = new[l - 1][:, : self.H, :]  # (B, H, N_{l-1}): out(M^{l-1}_t)
                M[:, :, : cols.width[l - 1]] += np.matmul(K, below)
            _add_immediate(M, cell.param_jacobian(st.params, st.at), cols.param[l])
            self._mask(l, M)
            new.append(M)
        self.M = new

    def _estimate(self, c: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        cm = np.einsum("bk,bkn->bn", c, self.M[-1][:, : self.H, :])  # (B, N)
        return self._split_dense(cm)


# -- SnAp ----------------------------------------------------------------------------------------


def _structural_params(model: RNN, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random weights with the model's structural zeros (W's mask) and no others."""
    params = {
        name: rng.uniform(-1.0, 1.0, size=shape).astype(model.dtype)
        for name, shape in model.param_shapes().items()
    }
    if model.w_mask is not None:
        roles, H = model.param_roles(), model.hidden_size
        for name, shape in model.param_shapes().items():
            if roles[name] == "recurrent" and shape == (H, H):
                params[name] *= model.w_mask
    return params


PROBE_BATCH = 4
"""Operating points :func:`snap_patterns` pushes through the cell at once."""


def snap_patterns(model: RNN, n: int, probes: int = 32, seed: int = 0) -> list[np.ndarray]:
    """SnAp-n's pattern per layer, (S_l, N_l) bools: the entries of M^l reached from the
    immediate Jacobian's pattern in at most n − 1 steps of the recursion (s_0's entry j starts
    on its own unit's entries, as if it were a parameter of that unit: h_j, and c_j beside it
    for the LSTM), within-step propagation through the layers above included:

        P_1 = Ī's pattern (+ s_0's units), closed under K^l out(·) upward
        P_{m+1}^l = P_m^l ∪ J^l P_m^l ∪ K^l out(P_{m+1}^{l-1}) ∪ P_1^l

    Ī's pattern is the one the cell declares (``param_jacobian(...).rows``: a gate row's unit,
    for the LSTM both h_r and c_r); for a cell with the dense default (every row declared) the
    units some probe reaches, each with all of its state entries (the reset-before GRU's z and
    n rows reach their own unit, its r rows every unit). Ī's, J's and K's structure is read
    off the cell protocol at ``probes`` random operating points with random weights (W's mask
    kept), an entry being structural if it is nonzero at any (a ReLU unit is off at a point
    with probability ½). n = 1 is SnAp-1;
    a large enough n gives RTRL's full pattern.
    """
    rng = np.random.default_rng(seed)
    cols = Columns.of(model)
    H = model.hidden_size
    L = len(model.layers)
    imm = [np.zeros((S, cols.width[l]), dtype=bool) for l, S in enumerate(cols.states)]
    jpat = [np.zeros((S, S), dtype=bool) for S in cols.states]
    kpat = [np.zeros((S, H), dtype=bool) for S in cols.states]
    params = _structural_params(model, rng)
    for first in range(0, probes, PROBE_BATCH):  # a few probes at a time: J is formed for each
        rows_now = min(PROBE_BATCH, probes - first)
        layer_in = rng.uniform(-1.0, 1.0, size=(rows_now, model.input_size)).astype(model.dtype)
        for l, layer in enumerate(model.layers):
            cell = layer.cell
            p = layer.take(params)
            s_prev = rng.uniform(-0.9, 0.9, size=(rows_now, cell.state_size)).astype(model.dtype)
            at = StepArgs(x=layer_in, s_prev=s_prev, s=cell.step(p, layer_in, s_prev))
            immediate = cell.param_jacobian(p, at)
            rows = immediate.rows  # (R, P)
            R, P = rows.shape
            S = cell.state_size
            columns = cols.param[l] + np.broadcast_to(np.arange(P), (R, P))
            if R < S:  # the cell declares each parameter's units (all their state entries)
                imm[l][rows, columns] = True
            else:  # the dense default: the units some probe reaches, every entry of each
                nonzero = np.zeros((S, P), dtype=bool)  # (S, P) in state order
                nonzero[rows, np.broadcast_to(np.arange(P), (R, P))] = (immediate.values != 0).any(
                    axis=0
                )
                # entry part·H + j is unit j's (LSTM: h_j, c_j): reached if any part is
                units = nonzero.reshape(S // H, H, P).any(axis=0)  # (H, P)
                imm[l][:, cols.param[l] : cols.param[l] + P] |= np.tile(units, (S // H, 1))
            S = cell.state_size
            unit = np.arange(S) % H  # s_0's entry j starts on its unit's entries (LSTM: c_j too)
            imm[l][:, cols.state[l] : cols.state[l] + S] = unit[:, None] == unit[None, :]
            jpat[l] |= (cell.state_jacobian(p, at) != 0).any(axis=0)
            if l > 0:
                kpat[l] |= (cell.input_jacobian(p, at) != 0).any(axis=0)
            layer_in = cell.output(at.s)

    def reach(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a.astype(np.int64) @ b.astype(np.int64)) > 0

    def upward(pat: list[np.ndarray]) -> None:
        for l in range(1, L):
            w = cols.width[l - 1]
            pat[l][:, :w] |= reach(kpat[l], pat[l - 1][:H])

    pat = [a.copy() for a in imm]
    upward(pat)
    for _ in range(n - 1):
        nxt = [pat[l] | reach(jpat[l], pat[l]) | imm[l] for l in range(L)]
        upward(nxt)
        pat = nxt
    return pat


class CellDenseSnAp(CellRTRL):
    """M_t = P_n ⊙ (J M_{t-1} + K out(M^{l-1}_t) + Ī): SnAp-n in RTRL's dense buffer, masked
    after each step (= RTRL when the pattern is full)."""

    name = "snap-n"

    def __init__(self, model: RNN, batch: int, seed: int = 0, n: int = 2) -> None:
        self.n = _check_snap_n(n, 1)
        self.name = f"snap-{self.n}"
        super().__init__(model, batch, seed)
        self.patterns = snap_patterns(model, self.n)

    def _mask(self, layer: int, M: np.ndarray) -> None:
        M *= self.patterns[layer]


def _check_snap_n(n: object, least: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < least:
        raise ValueError(f"SnAp-n takes an int n >= {least}, got {n!r}")
    return int(n)


@dataclass(frozen=True)
class _Group:
    """Columns of one layer's pattern that share their rows: stored as a (|rows|, |cols|) block
    at ``[start, start + |rows|·|cols|)`` of the layer's flat storage."""

    rows: np.ndarray  # (r,)
    cols: np.ndarray  # (c,)
    start: int
    below: np.ndarray  # positions in cols of the lower layers' columns
    below_cols: np.ndarray  # those columns
    top_rows: np.ndarray  # positions in rows of the h rows (< H)


@dataclass(frozen=True)
class _Places:
    """Flat positions in a layer's sparse storage: Ī's entries (R, P) and s_0's identity (S,)."""

    immediate: np.ndarray
    identity: np.ndarray


class CellSnAp(CellAlgorithm):
    """SnAp-n with sparse storage: layer l keeps only M^l's entries on its pattern P_n (see
    :func:`snap_patterns`), (B, nnz_l) (``state_dict()["M0"]``, …).

    Columns whose pattern rows are the same set R form a block, updated as
    M_t[R, C] = J[R, R] M_{t-1}[R, C] + (K out(M^{l-1}_t))[R, C] + Ī[R, C] — every read of a
    block stays in it, since the pattern is closed under J's. SnAp-1 (n = 1) on a gated cell
    keeps, for each parameter, its influence on the unit it drives (and the LSTM's cell state
    beside it): Menick et al.'s SnAp-1. Per step and stream Σ_blocks |R|²·|C| multiply-adds plus
    forming J and the Ī values; a stacked model also densifies the lower layer's h rows.
    """

    name = "snap-n"

    def __init__(self, model: RNN, batch: int, seed: int = 0, n: int = 1) -> None:
        self.n = _check_snap_n(n, 1)
        self.name = f"snap-{self.n}"
        super().__init__(model, batch, seed)
        self.patterns = snap_patterns(model, self.n)
        self._layouts = [self._layout(l, pat) for l, pat in enumerate(self.patterns)]
        self._reset_traces()

    def _layout(self, l: int, pattern: np.ndarray) -> tuple[list[_Group], _Places, int]:
        """Blocks, the flat positions of Ī's entries and of s_0's identity, and nnz."""
        H = self.H
        below_width = self.cols.width[l - 1] if l > 0 else 0
        keys: dict[bytes, list[int]] = {}
        for col in range(pattern.shape[1]):
            keys.setdefault(np.packbits(pattern[:, col]).tobytes(), []).append(col)
        where = np.full(pattern.shape, -1, dtype=np.int64)
        groups = []
        start = 0
        for col_list in keys.values():
            cols = np.array(col_list, dtype=np.int64)
            rows = np.nonzero(pattern[:, cols[0]])[0]
            if rows.size == 0:
                continue
            r, c = rows.size, cols.size
            where[np.ix_(rows, cols)] = start + np.arange(r * c).reshape(r, c)
            below = np.nonzero(cols < below_width)[0]
            groups.append(_Group(rows, cols, start, below, cols[below], np.nonzero(rows < H)[0]))
            start += r * c
        cell = self.model.layers[l].cell
        jac_rows = cell.param_jacobian(*self._probe(l)).rows  # (R, P): fixed by the cell
        R, P = jac_rows.shape
        S = self.cols.states[l]
        places = _Places(
            immediate=where[jac_rows, self.cols.param[l] + np.broadcast_to(np.arange(P), (R, P))],
            identity=where[np.arange(S), self.cols.state[l] + np.arange(S)],
        )
        return groups, places, start

    def _probe(self, l: int) -> tuple[dict[str, np.ndarray], StepArgs]:
        """An operating point of layer l (zeros) to read its Ī's row layout."""
        cell = self.model.layers[l].cell
        p = self.model.layers[l].take(self.model.params)
        x = np.zeros((1, cell.input_size), dtype=self.model.dtype)
        s = np.zeros((1, cell.state_size), dtype=self.model.dtype)
        return p, StepArgs(x=x, s_prev=s, s=cell.step(p, x, s))

    def _reset_traces(self) -> None:
        B, dt = self.batch, self.model.dtype
        self.M = []
        for _, places, nnz in self._layouts:
            M = np.zeros((B, nnz), dtype=dt)  # (B, nnz_l)
            M[:, places.identity] = 1.0  # s_0's identity
            self.M.append(M)

    def _traces(self) -> StateDict:
        return {f"M{l}": M for l, M in enumerate(self.M)}

    def _load_traces(self, arrays: StateDict) -> None:
        for l in range(len(self.M)):
            self.M[l] = np.array(arrays[f"M{l}"], dtype=self.model.dtype)

    def _carried(self) -> list[np.ndarray]:
        return [self.h, *self.M]

    @staticmethod
    def _block(flat: np.ndarray, g: _Group) -> np.ndarray:
        r, c = g.rows.size, g.cols.size
        return flat[:, g.start : g.start + r * c].reshape(-1, r, c)

    def _h_rows(self, l: int, flat: np.ndarray) -> np.ndarray:
        """out(M^l) densified: (B, H, N_l)."""
        H = self.H
        dense = np.zeros((self.batch, H, self.cols.width[l]), dtype=flat.dtype)
        for g in self._layouts[l][0]:
            if g.top_rows.size:
                rows = g.rows[g.top_rows]
                dense[:, rows[:, None], g.cols[None, :]] = self._block(flat, g)[:, g.top_rows]
        return dense

    def _advance(self, steps: list[LayerStep]) -> None:
        new: list[np.ndarray] = []
        below_h: np.ndarray | None = None
        for l, (layer, st) in enumerate(zip(self.model.layers, steps, strict=True)):
            cell = layer.cell
            groups, places, _ = self._layouts[l]
            J = cell.state_jacobian(st.params, st.at)  # (B, S, S)
            K = cell.input_jacobian(st.params, st.at) if l > 0 else None  # (B, S, H)
            old, flat = self.M[l], np.empty_like(self.M[l])
            for g in groups:
                block = np.matmul(J[:, g.rows[:, None], g.rows[None, :]], self._block(old, g))
                if K is not None and g.below.size:
                    assert below_h is not None
                    block[:, :, g.below] += np.matmul(K[:, g.rows, :], below_h[:, :, g.below_cols])
                self._block(flat, g)[...] = block
            jac = cell.param_jacobian(st.params, st.at)
            flat[:, places.immediate] += jac.values  # every entry of Ī lies on the pattern
            new.append(flat)
            if l + 1 < len(self.model.layers):
                below_h = self._h_rows(l, flat)
        self.M = new

    def _estimate(self, c: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        l = len(self.model.layers) - 1
        cm = np.zeros((self.batch, self.cols.width[l]), dtype=c.dtype)  # (B, N)
        flat = self.M[l]
        for g in self._layouts[l][0]:
            if g.top_rows.size:
                block = self._block(flat, g)[:, g.top_rows]  # (B, r_h, c)
                cm[:, g.cols] = np.einsum("bk,bkc->bc", c[:, g.rows[g.top_rows]], block)
        return self._split_dense(cm)


# -- UORO ----------------------------------------------------------------------------------------


def _norms(a: np.ndarray) -> np.ndarray:
    flat = a.reshape(a.shape[0], -1)
    return np.sqrt(np.einsum("bi,bi->b", flat, flat))


class CellUORO(CellAlgorithm):
    """UORO on the stacked state s = [s^0; …; s^{L-1}]: M ≈ ã b̃ᵀ with ã (B, Σ S_l) and b̃
    (B, Σ P_l), the step F being every layer's step (a lower layer reaches the upper ones
    within it):

        ν ~ {±1}^{Σ S_l}     ρ₀ = √(‖b̃‖ / ‖J ã‖)     ρ₁ = √(‖νᵀ ∂F/∂θ‖ / ‖ν‖)
        ã_t = ρ₀ J ã_{t-1} + ρ₁ ν          b̃_t = b̃_{t-1} / ρ₀ + νᵀ ∂F/∂θ / ρ₁

    J ã is one forward tangent through the stack (``jvp_state``, ``jvp_input``); νᵀ ∂F/∂θ one
    reverse sweep (Ī's columns, ``vjp_input``). dL_t/dh_0 is returned as zeros (as for the
    Elman UORO). Unbiased; O(B·(cost of a step + Σ P_l)) per step.
    """

    name = "uoro"

    def __init__(self, model: RNN, batch: int, seed: int = 0, eps: float = 1e-7) -> None:
        super().__init__(model, batch, seed)
        if not float(eps) > 0.0:
            raise ValueError(f"uoro eps must be > 0, got {eps!r}")
        self.eps = float(eps)
        self._reset_traces()

    def _reset_traces(self) -> None:
        dt = self.model.dtype
        self.a = np.zeros((self.batch, sum(self.cols.states)), dtype=dt)  # (B, Σ S): ã
        self.b = np.zeros((self.batch, self._theta_size()), dtype=dt)  # (B, Σ P): b̃

    def _traces(self) -> StateDict:
        return {"a": self.a, "b": self.b}

    def _signs(self, shape: tuple[int, ...]) -> np.ndarray:
        signs = np.where(self.rng.random(shape) < 0.5, -1.0, 1.0)
        return signs.astype(self.model.dtype, copy=False)

    def _advance(self, steps: list[LayerStep]) -> None:
        cols, H = self.cols, self.H
        layers = self.model.layers
        nu = self._signs(self.a.shape)  # (B, Σ S)
        starts = np.concatenate([[0], np.cumsum(cols.states)])
        part = [slice(int(starts[l]), int(starts[l + 1])) for l in range(len(layers))]
        # J ã: a forward tangent through the stack
        ja = np.empty_like(self.a)
        for l, (layer, st) in enumerate(zip(layers, steps, strict=True)):
            v = layer.cell.jvp_state(st.params, st.at, np.ascontiguousarray(self.a[:, part[l]]))
            if l > 0:
                v = v + layer.cell.jvp_input(st.params, st.at, ja[:, part[l - 1]][:, :H])
            ja[:, part[l]] = v
        # νᵀ ∂F/∂θ: a reverse sweep through the stack
        nu_i = np.empty_like(self.b)  # (B, Σ P)
        u = nu[:, part[-1]].copy()
        theta_start = np.concatenate([[0], np.cumsum(cols.sizes)])
        for l in range(len(layers) - 1, -1, -1):
            cell, st = layers[l].cell, steps[l]
            jac = cell.param_jacobian(st.params, st.at)
            vals = np.einsum("bip,bip->bp", u[:, jac.rows], jac.values)  # (B, P_l)
            nu_i[:, int(theta_start[l]) : int(theta_start[l + 1])] = vals
            if l > 0:
                below = nu[:, part[l - 1]].copy()
                below[:, :H] += cell.vjp_input(st.params, st.at, u)
                u = below
        eps = self.eps
        rho0 = np.sqrt((_norms(self.b) + eps) / (_norms(ja) + eps))  # (B,)
        rho1 = np.sqrt((_norms(nu_i) + eps) / (_norms(nu) + eps))  # (B,)
        self.a = rho0[:, None] * ja + rho1[:, None] * nu
        self.b = self.b / rho0[:, None] + nu_i / rho1[:, None]

    def _estimate(self, c: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        top = sum(self.cols.states[:-1])
        scale = np.einsum("bk,bk->b", c, self.a[:, top : top + self.H])  # (B,): c_t·ã^{top}
        theta = scale @ self.b  # (Σ P,)
        return theta, [np.zeros((self.batch, S), dtype=c.dtype) for S in self.cols.states]


# -- KF-RTRL ---------------------------------------------------------------------------------------


def kronecker_reason(model: RNN) -> str | None:
    """Why KF-RTRL does not apply to ``model`` (None when it does): one layer whose parameters
    are [V | W | b] (G × Q) acting on one ĥ_t = [x_t; h_{t-1}; 1], so Ī_t = ĥ_t ⊗ D_t."""
    if model.num_layers != 1 or model.bidirectional:
        return (
            "KF-RTRL (Mujika et al. 2018) factors one layer's influence as u ⊗ A, u over that "
            f"layer's ĥ_t = [x_t; h_(t-1); 1]; this model has {model.num_layers} layers"
            + (", bidirectional" if model.bidirectional else "")
        )
    cell = model.layers[0].cell
    shapes = list(cell.param_shapes().values())
    I, H = cell.input_size, cell.hidden_size
    G = shapes[0][0] if shapes else 0
    if not cell.kronecker_immediate or shapes != [(G, I), (G, H), (G,)]:
        return (
            f"KF-RTRL needs the immediate Jacobian to be one Kronecker product ĥ_t ⊗ D_t over "
            f"parameters [V | W | b]; the {cell.name} cell's parameters "
            f"{dict(cell.param_shapes())} do not read one ĥ_t (a GRU's reset gate multiplies "
            "W_hn h_(t-1) + b_hn, or h_(t-1) before W_n, so its Ī is a sum of two Kronecker "
            "products)"
        )
    return None


class CellKFRTRL(CellAlgorithm):
    """KF-RTRL on one layer whose Ī_t = ĥ_t ⊗ D_t (D_t = ∂s_t/∂(pre-activations) (S, G), read
    off Ī's bias columns): M ≈ u ⊗ A, u (B, Q), A (B, S, G), as the Elman form with J_t and
    D_t from the cell protocol:

        p₁ = √(‖J A‖ / ‖u‖)          p₂ = √(‖D‖ / ‖ĥ‖)
        u_t = c₁p₁u + c₂p₂ĥ          A_t = (c₁/p₁) J A + (c₂/p₂) D
        dΘ_t[g, q] = Σ_b (c_tb A_tb)_g u_tb,q         (h rows of A; dL/dh_0 returned as zeros)
    """

    name = "kf-rtrl"

    def __init__(self, model: RNN, batch: int, seed: int = 0, eps: float = 1e-7) -> None:
        reason = kronecker_reason(model)
        if reason is not None:
            raise ValueError(f"online kf-rtrl: {reason}; use rtrl, snap-n or uoro")
        super().__init__(model, batch, seed)
        if not float(eps) > 0.0:
            raise ValueError(f"kf-rtrl eps must be > 0, got {eps!r}")
        self.eps = float(eps)
        cell = model.layers[0].cell
        self.G = next(iter(cell.param_shapes().values()))[0]
        self._reset_traces()

    def _reset_traces(self) -> None:
        dt, B = self.model.dtype, self.batch
        S = self.model.layers[0].cell.state_size
        self.u = np.zeros((B, self.Q), dtype=dt)  # (B, Q)
        self.A = np.zeros((B, S, self.G), dtype=dt)  # (B, S, G)

    def _traces(self) -> StateDict:
        return {"u": self.u, "A": self.A}

    def _signs(self, shape: tuple[int, ...]) -> np.ndarray:
        signs = np.where(self.rng.random(shape) < 0.5, -1.0, 1.0)
        return signs.astype(self.model.dtype, copy=False)

    def _advance(self, steps: list[LayerStep]) -> None:
        (st,) = steps
        cell = self.model.layers[0].cell
        I, H, G = self.I, self.H, self.G
        signs = self._signs((2, self.batch))
        c1, c2 = signs[0], signs[1]
        jac = cell.param_jacobian(st.params, st.at)
        bias = np.arange(G * (I + H), G * (I + H + 1))  # b's columns: Ī there is D_t itself
        D = np.zeros((self.batch, cell.state_size, G), dtype=self.model.dtype)  # (B, S, G)
        D[:, jac.rows[:, bias], np.arange(G)] = jac.values[:, :, bias]
        hhat = np.empty((self.batch, self.Q), dtype=self.model.dtype)  # [x; h_{t-1}; 1]
        if st.at.x.ndim == 1:
            hhat[:, :I] = 0.0
            hhat[self._streams, st.at.x] = 1.0
        else:
            hhat[:, :I] = st.at.x
        hhat[:, I : I + H] = st.at.s_prev[:, :H]
        hhat[:, I + H] = 1.0
        ja = np.matmul(cell.state_jacobian(st.params, st.at), self.A)  # (B, S, G)
        eps = self.eps
        p1 = np.sqrt((_norms(ja) + eps) / (_norms(self.u) + eps))
        p2 = np.sqrt((_norms(D) + eps) / (_norms(hhat) + eps))
        self.u = (c1 * p1)[:, None] * self.u + (c2 * p2)[:, None] * hhat
        self.A = (c1 / p1)[:, None, None] * ja + (c2 / p2)[:, None, None] * D

    def _estimate(self, c: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        I, H = self.I, self.H
        ca = np.einsum("bk,bkg->bg", c, self.A[:, :H, :])  # (B, G)
        theta = ca.T @ self.u  # (G, Q) = [V | W | b]
        flat = np.concatenate(
            [theta[:, :I].reshape(-1), theta[:, I : I + H].reshape(-1), theta[:, I + H]]
        )
        S = self.model.layers[0].cell.state_size
        return flat, [np.zeros((self.batch, S), dtype=c.dtype)]


def rflo_reason(model: RNN) -> str:
    """Why RFLO does not run on ``model`` (it runs on one Elman layer only)."""
    return (
        "RFLO (Murray 2019) is defined for one leaky Elman layer: it replaces the state "
        "Jacobian by the leak (1 − α)·1 and feeds the output error back to that layer through "
        "a fixed random matrix; a gated cell's state Jacobian is no leak (its gates carry "
        "their own dynamics) and a stacked model's lower layers receive no feedback in its "
        f"definition (got cell={model.cell!r}, num_layers={model.num_layers}); use snap-1, "
        "its gated-cell analogue (Menick et al. 2021), or uoro"
    )
