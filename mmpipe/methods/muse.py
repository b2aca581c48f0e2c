"""MUSE (Wu et al., "Multimodal Patient Representation Learning with Missing Modalities and
Labels", ICLR 2024; official code github.com/zzachw/MUSE, ``src/core/gnn.py`` and
``src/core/adni_model.py``).

A batch of patients is a bipartite graph: one node per patient, one node per modality, and
an edge between patient ``i`` and modality ``m`` only when ``m`` is present for ``i``, so a
missing modality is simply a missing edge (nothing is imputed). As in the official code:

- **Nodes**: patient nodes start as a vector of ones (``torch.ones(batch, hidden)``);
  modality nodes are learned embeddings (``MML.modality_nodes``, ``randn(M, hidden)``).
- **Edges**: the patient's encoded features of that modality, ``[hidden]``; each present
  pair gives one undirected edge, i.e. two directed messages (patient→modality and
  modality→patient) carrying the same features (``g_edge_attr = x[x_flag].repeat(2, 1)``).
- **Encoders** (vector features, the ADNI backbone): per modality ``FFNEncoder`` with
  ``ffn_layers=2``: Dropout → Linear(D_m, 128) → BatchNorm → ReLU → Dropout → Linear(128, 128),
  then a ``mapper`` Linear(128, 128); absent rows zeroed, Dropout(0.25) on the embedding.
- **EdgeSAGE** (``EdgeSAGEConv``, mean aggregation), ``gnn_layers=2``, hidden 128:
  message ``ReLU(W_m [h_j ‖ e_ij])``, update ``ReLU(W_a [mean_j m_j ‖ h_i])``; between layers
  Dropout on the node states and an edge update ``e_ij ← ReLU(W_e [h_i ‖ h_j ‖ e_ij])``.
- **Head**: Linear(128, 128) → ReLU → Dropout → Linear(128, C) on the patient node's state.
- **Training loss** (``MML.forward``): a second view of the graph by *edge dropping*
  (``MML.edgedrop``: each patient, with probability 0.5, keeps a uniformly drawn number
  ``k ∈ {1, …, n−1}`` of its ``n ≥ 2`` edges); both views go through the same GNN; a
  projection Linear(128, 128) → Tanh → L2-normalisation gives ``u`` and ``ũ``; with the
  fixed temperature 0.07 (``tau = 1/0.07``, not trained):

  - unsupervised contrastive: ``(CE(uũᵀ/τ, I) + CE(ũuᵀ/τ, I)) / 2`` (same patient, two
    views, positive; ``unsup_ce_loss``);
  - supervised contrastive: ``(2·BCE(uuᵀ/τ, Y) + BCE(uũᵀ/τ, Y) + BCE(ũuᵀ/τ, Y)) / 4`` with
    ``Y_ij = [y_i = y_j]`` and BCE with logits (``sup_ce_loss``; the official code's form);
  - cross-entropy of the head on the *full* (undropped) view;
  - total ``0.5·unsup + 0.5·sup + CE`` (official weights).

  Edge dropping exists only in :meth:`MUSE.loss` in training mode; :meth:`forward` never
  drops edges.

**Batch dependence and how we evaluate.** With mean aggregation a modality node's state
after the first layer is the mean of the messages of every patient in the graph that has
that modality, and at the second layer each patient reads those states: patients interact
only through the shared modality nodes, so a patient's prediction depends on who else is
in the graph. The official code evaluates batches of 256 test patients together
(``eval_epoch``), which makes a test prediction depend on the other test subjects and on
the batch order. Here ``eval_graph`` chooses the evaluation graph:

- ``"reference"`` (default): :meth:`MUSE.prepare` stores the (normalised) training split
  in buffers; in evaluation each subject joins the graph of all training patients as a
  *receive-only* node: its modality→patient edges exist (it reads the modality nodes and
  its edges are updated as usual) but its patient→modality edges do not, so the modality
  nodes are the mean over the training patients only. A subject's output is therefore a
  deterministic function of itself and the training set, the same whether it is scored
  alone or with any other subjects, and the modality nodes see a population mean as they
  do in training (a mean over a training batch) — the closest batch-independent reading of
  the official inference.
- ``"single"``: each subject is scored in a graph holding only itself (its own copy of
  the modality nodes); batch-independent but the modality nodes then average one patient,
  unlike in training.
- ``"batch"``: one graph over each evaluation batch, as the official inference builds
  it; batch-dependent, kept for comparison only. The batches are not the official ones:
  validation is one graph of the whole split, prediction graphs of 512 rows (the
  trainer's chunks), where the official code scores graphs of its ``batch_size`` (256).

Training always uses the official graph over the training batch.

Adapted to cached vector features: a modality of shape ``[*s]`` is flattened to
``[prod(s)]``; the ADNI FFN encoder is the official encoder for such inputs. The official
encoder runs BatchNorm over every row, absent ones included (zeros); here BatchNorm
statistics use the present rows only (a modality present in fewer than two rows of a
training batch is normalised with the running statistics), so an absent modality's values
cannot reach any output. Missing labels (MUSE trains on unlabelled patients through the
unsupervised term) are out of scope: every training subject of the benchmark is labelled,
so the supervised terms use the whole batch.

Trainer settings are the official ``run.py`` defaults (ADNI) of the code released with the
paper (commit ``951686a``, May 2024): Adam, lr 1e-4, weight decay 0, batch size 256, 100
epochs, shuffled batches without class balancing, no feature noise;
the official code trains all 100 epochs and keeps the checkpoint of the best validation
AUC (``--monitor auc_macro_ovo`` for ADNI), which ``patience = 100`` and ``monitor = "auc"``
reproduce (the trainer's AUC is the binary AUC, or the one-vs-rest macro average for more
classes, not the one-vs-one macro). The validation loss logged by the trainer (eval
mode) is the head's cross-entropy only: the contrastive terms need the dropped view, which
exists only in training. The official repository's later commit ``cdec2ac`` ("update
config version", March 2025) sets ``--batch_size 512`` and ``--lr 2e-4``, and its
evaluation batches follow ``batch_size``; ``batch_size: 512`` and ``lr: 2.0e-4`` in the
method's config run that version (evaluation here does not batch: ``eval_graph``).
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F
from torch_geometric.nn import MessagePassing

from mmpipe.methods.base import FusionMethod
from mmpipe.methods.blocks import Dropout, dropout, flat_dim, flat_zero_filled, keep_random

EVAL_GRAPHS = ("reference", "single", "batch")


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm whose batch statistics come from the rows in ``rows`` only.

    Training with fewer than two such rows (no variance to estimate) and evaluation use
    the running statistics. The parameters and buffers are those of ``nn.BatchNorm1d``.
    """

    def forward(self, h: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        idx = rows.nonzero(as_tuple=True)[0]
        if not self.training or idx.numel() < 2:
            return F.batch_norm(h, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        self.num_batches_tracked.add_(1)
        normed = F.batch_norm(h[idx], self.running_mean, self.running_var, self.weight,
                              self.bias, True, self.momentum, self.eps)
        return torch.zeros_like(h).index_copy(0, idx, normed)


class FFNEncoder(nn.Module):
    """Official ``FFNEncoder`` (``src/encoder/ffn_encoder.py``) plus the backbone's
    ``mapper`` (``adni_model.py``): Dropout → [Linear → BN → ReLU → Dropout] × (layers − 1)
    → Linear(h, h) → Linear(h, h)."""

    def __init__(self, d_in: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.input_dropout = Dropout(dropout)
        widths = [d_in] + [hidden] * (layers - 2)  # fc1, then the middle layers
        self.linears = nn.ModuleList(nn.Linear(w, hidden) for w in widths)
        self.norms = nn.ModuleList(MaskedBatchNorm1d(hidden) for _ in range(layers - 1))
        self.dropout = Dropout(dropout)
        self.out = nn.Linear(hidden, hidden)     # FFNEncoder.fc2
        self.mapper = nn.Linear(hidden, hidden)  # x*_mapper of the backbone

    def forward(self, v: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        h = self.input_dropout(v)
        for linear, norm in zip(self.linears, self.norms, strict=True):
            h = self.dropout(F.relu(norm(linear(h), rows)))
        return self.mapper(self.out(h))


class EdgeSAGEConv(MessagePassing):
    """GraphSAGE with edge features in the messages (official ``EdgeSAGEConv``).

    ``m_ij = ReLU(W_m [h_j ‖ e_ij])``, ``h_i' = ReLU(W_a [mean_j m_ij ‖ h_i])`` (optionally
    L2-normalised). A node without incoming edges aggregates zeros.
    """

    def __init__(self, channels: int, edge_channels: int, normalize: bool = False):
        super().__init__(aggr="mean")
        _remove_rendered_propagate(type(self))
        self.normalize = normalize
        self.message_lin = nn.Linear(channels + edge_channels, channels)
        self.update_lin = nn.Linear(2 * channels, channels)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor,
                edge_attr: torch.Tensor) -> torch.Tensor:
        return self.propagate(edge_index, x=x, edge_attr=edge_attr)

    def message(self, x_j: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        return F.relu(self.message_lin(torch.cat([x_j, edge_attr], dim=-1)))

    def update(self, aggr_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.update_lin(torch.cat([aggr_out, x], dim=-1)))
        return F.normalize(out, p=2, dim=-1) if self.normalize else out


def _remove_rendered_propagate(cls: type) -> None:
    """Delete the ``propagate`` module PyG rendered for ``cls`` into the temporary folder.

    At a class's first instance PyG (``torch_geometric.template.module_from_template``)
    writes its jinja-rendered ``propagate`` to a ``NamedTemporaryFile(delete=False)``,
    imports it and never removes it: every process that built a MUSE model left one
    ``mmpipe.methods.muse_EdgeSAGEConv_propagate_*.py`` in /tmp. The module is in memory
    from then on (``sys.modules``), so its file is not needed; only a file in the
    temporary folder is removed, once."""
    module = sys.modules.get(f"{cls.__module__}_{cls.__name__}_propagate")
    path = Path(getattr(module, "__file__", None) or "")
    if path.name and path.parent == Path(tempfile.gettempdir()):
        path.unlink(missing_ok=True)


class EdgeGNN(nn.Module):
    """Official ``GNNStack``: EdgeSAGE layers; between two layers Dropout on the nodes and
    ``e_ij ← ReLU(W_e [h_src ‖ h_dst ‖ e_ij])``."""

    def __init__(self, channels: int, layers: int, dropout: float, normalize: bool):
        super().__init__()
        self.dropout = dropout
        self.convs = nn.ModuleList(EdgeSAGEConv(channels, channels, normalize)
                                   for _ in range(layers))
        self.edge_updates = nn.ModuleList(
            nn.Sequential(nn.Linear(3 * channels, channels), nn.ReLU())
            for _ in range(layers - 1))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor,
                edge_attr: torch.Tensor) -> torch.Tensor:
        for layer, conv in enumerate(self.convs):
            x = conv(x, edge_index, edge_attr)
            if layer < len(self.edge_updates):
                x = dropout(x, self.dropout, self.training)
                src, dst = edge_index
                # index_select: indexing's backward scatter-adds in parallel, and one seed
                # gave other weights on every run with more than one torch thread
                edge_attr = self.edge_updates[layer](torch.cat(
                    [x.index_select(0, src), x.index_select(0, dst), edge_attr], -1))
        return x


@dataclass
class BipartiteGraph:
    """Directed edges of a patient–modality graph.

    Nodes ``0 … B−1`` are the patients; modality nodes follow (``B + m``, or ``B + i·M + m``
    with private copies). ``patient[e]``, ``modality[e]`` name the (patient, modality) pair
    whose features edge ``e`` carries.
    """

    edge_index: torch.Tensor  # [2, E]
    patient: torch.Tensor     # [E]
    modality: torch.Tensor    # [E]
    n_nodes: int


def build_graph(present: torch.Tensor, receive_only: torch.Tensor | None = None,
                private_modalities: bool = False) -> BipartiteGraph:
    """The bipartite graph of ``present`` [B, M]: one undirected edge per present pair.

    Each present (patient, modality) pair gives a patient→modality and a modality→patient
    edge (official order: all upward edges, then their flips); absent pairs give nothing.
    ``receive_only`` [B] patients keep only their modality→patient edges, so they read the
    modality nodes without contributing to them. ``private_modalities`` gives every patient
    its own copy of the modality nodes (disjoint one-patient graphs).
    """
    present = present.bool()
    n_pat, n_mod = present.shape
    rows, cols = present.nonzero(as_tuple=True)
    mod_node = n_pat + (rows * n_mod + cols if private_modalities else cols)
    up = (torch.ones_like(rows, dtype=torch.bool) if receive_only is None
          else ~receive_only.bool()[rows])
    edge_index = torch.cat([torch.stack([rows[up], mod_node[up]]),
                            torch.stack([mod_node, rows])], dim=1)
    n_nodes = n_pat + (n_pat * n_mod if private_modalities else n_mod)
    return BipartiteGraph(edge_index, torch.cat([rows[up], rows]), torch.cat([cols[up], cols]),
                          n_nodes)


def drop_edges(present: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """The augmented view's presence mask (official ``MML.edgedrop``, vectorised).

    Each patient with ``n ≥ 2`` edges is, with probability ``p``, cut down to a uniformly
    drawn number ``k ∈ {1, …, n−1}`` of them, chosen uniformly at random; the others keep
    all theirs. Uses the global torch RNG with shapes only, never the feature values.
    """
    present = present.bool()
    count = present.sum(1)
    drop = (torch.rand(count.shape, device=present.device) < p) & (count >= 2)
    keep_count = 1 + (torch.rand(count.shape, device=present.device)
                      * (count - 1).clamp_min(0)).floor().long()
    kept, _ = keep_random(present, keep_count)
    return torch.where(drop.unsqueeze(1), kept, present)


def unsupervised_contrastive(u: torch.Tensor, u_aug: torch.Tensor, scale: float) -> torch.Tensor:
    """Symmetric InfoNCE between the two views (official ``unsup_ce_loss``)."""
    sim = u @ u_aug.t() * scale
    target = torch.arange(len(u), device=u.device)
    return (F.cross_entropy(sim, target) + F.cross_entropy(sim.t(), target)) / 2


def supervised_contrastive(u: torch.Tensor, u_aug: torch.Tensor, y: torch.Tensor,
                           scale: float) -> torch.Tensor:
    """Same-label pairs as positives, BCE with logits (official ``sup_ce_loss``)."""
    target = (y.view(-1, 1) == y.view(1, -1)).to(u.dtype)
    within = F.binary_cross_entropy_with_logits(u @ u.t() * scale, target)
    across = u @ u_aug.t() * scale
    return (2 * within + F.binary_cross_entropy_with_logits(across, target)
            + F.binary_cross_entropy_with_logits(across.t(), target)) / 4


class MUSE(FusionMethod):
    name = "muse"
    permutation_invariant = True  # mean aggregation over modality nodes keyed by name
    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr",), "capacity": ("hidden",)}
    defaults: ClassVar[dict[str, Any]] = {
        "hidden": 128,            # run.py --embedding_size
        "ffn_layers": 2,          # run.py --ffn_layers (FFNEncoder depth)
        "gnn_layers": 2,          # run.py --gnn_layers
        "gnn_normalize": False,   # run.py --gnn_norm None: no L2 norm after EdgeSAGE
        "dropout": 0.25,          # run.py --dropout
        "temperature": 0.07,      # MML.tau = 1/0.07, fixed
        "edge_drop_p": 0.5,       # MML.edgedrop: a patient is left intact with prob. 0.5
        "unsup_weight": 0.5,      # MML.forward: 0.5 * unsup + 0.5 * sup + cls
        "sup_weight": 0.5,
        "eval_graph": "reference",  # reference | single | batch (official, batch-dependent)
        # trainer settings: official run.py defaults at 951686a (module docstring)
        "lr": 1e-4,
        "weight_decay": 0.0,
        "optimizer": "adam",
        "batch_size": 256,
        "max_epochs": 100,
        "patience": 100,          # no early stopping; best validation checkpoint kept
        "monitor": "auc",         # run.py --monitor auc_macro_ovo (ADNI)
        "sampler": "none",        # DataLoader(shuffle=True), no class balancing
        "noise_p": 0.0,
    }

    def __init__(self, modalities: list[str], shapes: dict[str, tuple[int, ...]], n_classes: int,
                 **hparams: Any):
        super().__init__(modalities, shapes, n_classes, **hparams)
        hp = self.hparams
        if hp["eval_graph"] not in EVAL_GRAPHS:
            raise ValueError(f"muse: eval_graph must be one of {EVAL_GRAPHS}, "
                             f"got {hp['eval_graph']!r}")
        if int(hp["ffn_layers"]) < 2:
            raise ValueError(f"muse: ffn_layers must be >= 2 (official FFNEncoder), "
                             f"got {hp['ffn_layers']}")
        if int(hp["gnn_layers"]) < 1:
            raise ValueError(f"muse: gnn_layers must be >= 1, got {hp['gnn_layers']}")
        if not 0.0 <= float(hp["edge_drop_p"]) <= 1.0:
            raise ValueError(f"muse: edge_drop_p must be in [0, 1], got {hp['edge_drop_p']}")
        if float(hp["temperature"]) <= 0:
            raise ValueError(f"muse: temperature must be > 0, got {hp['temperature']}")
        hidden, dropout = int(hp["hidden"]), float(hp["dropout"])
        self.hidden = hidden
        self.encoders = nn.ModuleDict({
            m: FFNEncoder(flat_dim(self.shapes[m]), hidden, int(hp["ffn_layers"]), dropout)
            for m in self.modalities})
        self.embedding_dropout = Dropout(dropout)
        self.modality_nodes = nn.Parameter(torch.randn(len(self.modalities), hidden))
        self.gnn = EdgeGNN(hidden, int(hp["gnn_layers"]), dropout, bool(hp["gnn_normalize"]))
        self.projection = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        self.classifier = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), Dropout(dropout),
                                        nn.Linear(hidden, self.n_classes))
        # the training split, for the "reference" evaluation graph (filled by prepare)
        width = sum(flat_dim(self.shapes[m]) for m in self.modalities)
        self.register_buffer("ref_x", torch.zeros(0, width))
        self.register_buffer("ref_present", torch.zeros(0, len(self.modalities), dtype=torch.bool))

    # -- data ---------------------------------------------------------------------------
    def prepare(self, x, present, y) -> None:
        flat = [flat_zero_filled(x[m], present[:, j]).to(self.ref_x)
                for j, m in enumerate(self.modalities)]
        self.ref_x = torch.cat(flat, dim=1).detach().clone()
        self.ref_present = present.bool().detach().clone().to(self.ref_present.device)

    def _reference_inputs(self) -> dict[str, torch.Tensor]:
        widths = [flat_dim(self.shapes[m]) for m in self.modalities]
        return dict(zip(self.modalities, self.ref_x.split(widths, dim=1), strict=True))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the reference buffers are as long as the training split: take the saved length
        for name in ("ref_x", "ref_present"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                current = getattr(self, name)
                setattr(self, name, current.new_zeros(saved.shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reorder_modalities(self, order: list[str]) -> None:
        """Relabel the modality axis; modality nodes and reference columns move with it."""
        idx = [self.modalities.index(m) for m in order]
        ref = self._reference_inputs()
        with torch.no_grad():
            self.modality_nodes.copy_(self.modality_nodes[idx])
        self.ref_x = torch.cat([ref[m] for m in order], dim=1)
        self.ref_present = self.ref_present[:, idx]
        self.modalities = list(order)

    # -- model --------------------------------------------------------------------------
    def encode(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Edge features [B, M, hidden]: encoded present modalities, zeros where absent.

        Absent rows are zeroed before the encoder (whose BatchNorm also skips them) and
        after it, so their values reach neither an edge nor a statistic.
        """
        present = present.bool()
        ref = self.modality_nodes
        embs = []
        for j, m in enumerate(self.modalities):
            rows = present[:, j]
            e = self.encoders[m](flat_zero_filled(x[m].to(ref.dtype), rows), rows)
            embs.append(torch.where(rows.unsqueeze(-1), e, 0.0))
        return self.embedding_dropout(torch.stack(embs, dim=1))

    def patient_states(self, emb: torch.Tensor, present: torch.Tensor,
                       receive_only: torch.Tensor | None = None,
                       private_modalities: bool = False) -> torch.Tensor:
        """Patient node states [B, hidden] after the GNN on the graph of ``present``."""
        n_pat = present.shape[0]
        graph = build_graph(present, receive_only, private_modalities)
        modality_nodes = (self.modality_nodes.repeat(n_pat, 1) if private_modalities
                          else self.modality_nodes)
        nodes = torch.cat([emb.new_ones(n_pat, self.hidden), modality_nodes.to(emb.dtype)])
        out = self.gnn(nodes, graph.edge_index, emb[graph.patient, graph.modality])
        return out[:n_pat]

    def _reference_states(self, x, present) -> torch.Tensor:
        n_ref = self.ref_present.shape[0]
        if n_ref == 0:
            raise RuntimeError("muse: eval_graph='reference' scores subjects against the "
                               "training patients' graph; call prepare() with the training "
                               "split first (the trainer does)")
        ref = self._reference_inputs()
        both = {m: torch.cat([ref[m].to(x[m].device),
                              x[m].reshape(len(x[m]), -1).to(ref[m].dtype)]) for m in x}
        both_present = torch.cat([self.ref_present.to(present.device), present])
        receive_only = torch.arange(len(both_present), device=present.device) >= n_ref
        emb = self.encode(both, both_present)
        return self.patient_states(emb, both_present, receive_only)[n_ref:]

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        present = present.bool()
        mode = self.hparams["eval_graph"]
        if self.training or mode == "batch":
            z = self.patient_states(self.encode(x, present), present)
        elif mode == "single":
            z = self.patient_states(self.encode(x, present), present, private_modalities=True)
        else:
            x = {m: x[m] for m in self.modalities}
            z = self._reference_states(x, present)
        return self.classifier(z)

    def loss_terms(self, x, present, y, class_weight=None
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The three training terms (``cls``, ``unsup``, ``sup``) and the head's logits
        on the full view, as in ``MML.forward``."""
        present = present.bool()
        emb = self.encode(x, present)
        z = self.patient_states(emb, present)
        z_aug = self.patient_states(emb, drop_edges(present, float(self.hparams["edge_drop_p"])))
        u = F.normalize(self.projection(z), dim=-1)
        u_aug = F.normalize(self.projection(z_aug), dim=-1)
        scale = 1.0 / float(self.hparams["temperature"])
        logits = self.classifier(z)
        terms = {"cls": F.cross_entropy(logits, y, weight=class_weight),
                 "unsup": unsupervised_contrastive(u, u_aug, scale),
                 "sup": supervised_contrastive(u, u_aug, y, scale)}
        return terms, logits

    def loss(self, x, present, y, class_weight=None):
        if not self.training:  # no dropped view outside training: the head's CE only
            return super().loss(x, present, y, class_weight)
        terms, logits = self.loss_terms(x, present, y, class_weight)
        total = (terms["cls"] + float(self.hparams["unsup_weight"]) * terms["unsup"]
                 + float(self.hparams["sup_weight"]) * terms["sup"])
        return total, logits

    def report_notes(self) -> list[str]:
        mode = self.hparams["eval_graph"]
        notes = {
            "reference": "MUSE evaluation: each subject joins the training patients' graph as "
                         "a receive-only node (modality nodes aggregate training patients "
                         "only), so a prediction does not depend on the other test subjects; "
                         "the official code scores test batches of 256 as one graph.",
            "single": "MUSE evaluation: each subject is scored in a graph holding only itself "
                      "(batch-independent; modality nodes average one patient, unlike in "
                      "training); the official code scores test batches of 256 as one graph.",
            "batch": "MUSE evaluation as in the official code, one graph per evaluation batch "
                     "(here the whole validation split, and 512 test subjects; the official "
                     "code's 256), so a subject's prediction depends on the other subjects "
                     "of its batch.",
        }
        return [notes[mode],
                "MUSE on cached vectors: official ADNI FFN encoders per modality, with "
                "BatchNorm statistics over present rows only; missing labels (the paper's "
                "unlabelled patients) are out of scope, every training subject is labelled."]
