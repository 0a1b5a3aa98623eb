"""GEM loss and gradient by the GEM authors' formula, in PyTorch: the fixture
test/fixtures/reference/gem-loss.json that test/reference/gem-fixture.test.ts checks our fused
log-prob kernel against.

The formula is the one of Li et al. (ICLR 2025) as their code writes it (liziniu/GEM,
SFTTrainer.gem_loss): for each position with logits z and label y,

    w_v = 1 (h = linear)  or  sigmoid(0.01 (z_v - z_y)) (h = logsigmoid),  held constant
    q   = softmax(z / beta),                                               held constant
    loss = -sum_v q_v w_v (log_softmax(z)_y - log_softmax(z)_v),  averaged over positions.

Here the positions are trie edges: edge e asks for token y_e after hidden row parent(e), with
logits z = hidden[parent(e)] @ head^T. Everything is float64 autograd; the inputs are float32
values (so our float32 kernel sees exactly them). Cross-entropy (torch's own
F.cross_entropy) rides along as a control.

  ~/.cache/diffuse/pyenv/bin/python tools/reference/gem_reference.py > test/fixtures/reference/gem-loss.json
"""

import json
import sys

import numpy as np
import torch
import torch.nn.functional as F


def gem_loss(logits, labels, beta, h):
    with torch.no_grad():
        on_labels = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
        diff = logits - on_labels.unsqueeze(-1)
        if h == "linear":
            weights = torch.ones_like(diff)
        elif h == "logsigmoid":
            weights = torch.sigmoid(0.01 * diff)
        else:
            raise ValueError(h)
        q = torch.softmax(logits / beta, dim=-1)
    logp = F.log_softmax(logits, dim=-1)
    label_logp = torch.gather(logp, -1, labels.unsqueeze(-1))
    per_position = -torch.sum(q * weights * (label_logp - logp), dim=-1)
    return per_position


def problem(seed, rows, dim, vocab, parents, kids):
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((rows, dim)).astype(np.float32)
    head = (rng.standard_normal((vocab, dim)) * 2.5 / np.sqrt(dim)).astype(np.float32)
    parent_rows = rng.permutation(rows)[:parents].astype(np.int64)
    edge_parent, edge_token = [], []
    for p in range(parents):
        for t in rng.choice(vocab, size=kids[p], replace=False):
            edge_parent.append(p)
            edge_token.append(int(t))
    return {
        "rows": rows,
        "dim": dim,
        "vocab": vocab,
        "hidden": [float(x) for x in hidden.ravel()],
        "head": [float(x) for x in head.ravel()],
        "parentRows": [int(x) for x in parent_rows],
        "edgeParent": edge_parent,
        "edgeToken": edge_token,
        "edgeWeight": [1.0 / len(edge_token)] * len(edge_token),
    }


def result(p, objective):
    hidden = np.array(p["hidden"], dtype=np.float32).reshape(p["rows"], p["dim"])
    head = np.array(p["head"], dtype=np.float32).reshape(p["vocab"], p["dim"])
    parent_rows = torch.tensor(p["parentRows"])
    edge_parent, edge_token = p["edgeParent"], p["edgeToken"]
    H = torch.tensor(hidden, dtype=torch.float64, requires_grad=True)
    W = torch.tensor(head, dtype=torch.float64)
    logits = H[parent_rows[torch.tensor(edge_parent)]] @ W.T
    labels = torch.tensor(edge_token)
    if objective["kind"] == "ce":
        per_edge = F.cross_entropy(logits, labels, reduction="none")
    else:
        per_edge = gem_loss(logits, labels, objective["beta"], objective["h"])
    loss = per_edge.mean()
    loss.backward()
    return {
        "objective": objective,
        "edgeLoss": [float(x) for x in per_edge.detach()],
        "loss": float(loss.detach()),
        "dhidden": [float(x) for x in H.grad.ravel()],
    }


def main():
    p = problem(100, rows=6, dim=12, vocab=200, parents=4, kids=[3, 1, 4, 2])
    objectives = [
        {"kind": "ce"},
        {"kind": "gem", "beta": 0.7, "h": "linear"},
        {"kind": "gem", "beta": 0.7, "h": "logsigmoid"},
        {"kind": "gem", "beta": 0.3, "h": "logsigmoid"},
        {"kind": "gem", "beta": 1.5, "h": "linear"},
    ]
    cases = [result(p, o) for o in objectives]
    json.dump(
        {
            "made_by": "tools/reference/gem_reference.py",
            "torch": torch.__version__,
            "formula": "liziniu/GEM SFTTrainer.gem_loss (mean over positions); ce: torch.nn.functional.cross_entropy",
            "problem": p,
            "cases": cases,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
