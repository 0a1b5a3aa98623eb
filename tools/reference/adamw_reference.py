"""AdamW with gradient-norm clipping over 20 steps, as torch.optim.AdamW and
torch.nn.utils.clip_grad_norm_ take them: the fixture test/fixtures/reference/adamw-clip.json
that test/ops/adamw-torch.test.ts checks our training step against (the adapter's AdamW kernel
with train()'s clipping coefficient).

Two parameters (a LoRA pair's shapes, [2, 8] and [8, 2]) start from seeded float32 values; each
step sets seeded gradients — large ones on some steps, so the global norm is clipped to 1, small
ones on others, so it is not — clips, and steps AdamW (lr 1e-2, betas (0.9, 0.999), eps 1e-5,
weight decay 0.01: the reference's settings with a larger lr, so 20 steps move the values).
Computed in float64; the parameters after every step are recorded.

  ~/.cache/diffuse/pyenv/bin/python tools/reference/adamw_reference.py > test/fixtures/reference/adamw-clip.json
"""

import json
import sys

import numpy as np
import torch


def main():
    rng = np.random.default_rng(7)
    shapes = {"lora_A": [2, 8], "lora_B": [8, 2]}
    initial = {k: rng.standard_normal(s).astype(np.float32) * 0.3 for k, s in shapes.items()}
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in initial.items()}
    settings = {"lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-5, "weight_decay": 0.01, "max_norm": 1.0}
    opt = torch.optim.AdamW(params.values(), lr=settings["lr"], betas=tuple(settings["betas"]), eps=settings["eps"], weight_decay=settings["weight_decay"])
    steps = []
    for step in range(1, 21):
        scale = 2.0 if step % 3 == 1 else 0.05
        grads = {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in shapes.items()}
        for k, p in params.items():
            p.grad = torch.tensor(grads[k], dtype=torch.float64)
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), settings["max_norm"])
        opt.step()
        steps.append(
            {
                "grads": {k: [float(x) for x in g.ravel()] for k, g in grads.items()},
                "gradNorm": float(norm),
                "params": {k: [float(x) for x in p.detach().ravel()] for k, p in params.items()},
            }
        )
    json.dump(
        {
            "made_by": "tools/reference/adamw_reference.py",
            "torch": torch.__version__,
            "settings": settings,
            "shapes": shapes,
            "initial": {k: [float(x) for x in v.ravel()] for k, v in initial.items()},
            "steps": steps,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
