"""The fine-tune half of ``bench_review_queue.py --finetune``: does the model learn from the
reviewed regions?

A fold's held-out images are split in two halves (even / odd positions). The oracle's
corrections at 10 % of each image's tissue on one half (``--ft-orders``: queue orders or
``mixed``, then random orders of the same tiles: the proof's random seeds) fine-tune the
fold's CAM classifier with the project's background fine-tuning
(``train.finetune.run_finetune``, what the Review widget runs; ``FinetuneParams`` defaults
but for ``--ft-*``), and the CAM-argmax mIoU of the
**other** half (images the fine-tune never saw) is measured before and after. Then the
halves swap, so every held-out image is scored once per order.
"""

from __future__ import annotations

import time

import numpy as np


def review(pred: np.ndarray, gt: np.ndarray, items: list, budget: float) -> tuple[np.ndarray, int]:
    """Copy the true mask into items, in order, until ``budget`` px have been reviewed."""
    out, done = pred.copy(), 0
    for it in items:
        if done >= budget:
            break
        r0, c0, h, w = it.box
        sub = out[r0:r0 + h, c0:c0 + w]
        sub[it.mask] = gt[r0:r0 + h, c0:c0 + w][it.mask]
        done += it.area_px
    return out, done


def reviewed_labels(gt: np.ndarray, items: list, budget: float) -> tuple[np.ndarray, int]:
    """255 everywhere but the reviewed items (their true labels): the corrections; and the
    number of reviewed pixels whose predicted class was wrong is counted by the caller."""
    return review(np.full(gt.shape, 255, np.uint8), gt, items, budget)


#: ``--ft-orders`` name of the mixed order: half the budget in the expected-gain queue's
#: order, the other half random spot checks (random order #0 of the other tiles)
MIXED = "mixed"


def mixed_order(first: list, second: list, budget: float, share: float = 0.5) -> list:
    """``first`` until ``share`` of ``budget`` px, then the tiles of ``second`` not taken."""
    out, done, taken = [], 0, set()
    for it in first:
        if done >= share * budget:
            break
        out.append(it)
        taken.add(it.box)
        done += it.area_px
    return out + [it for it in second if it.box not in taken]


def finetune_fold(fold: int, model, per_image: list, args, conf, orders: list,
                  ft_rows: list) -> None:
    """Append ``(row name, fold, confusion of the scored half)`` rows to ``ft_rows``.

    ``per_image``: ``(name, rgb, gt, pred, queues)`` of the fold's held-out images, as
    built by ``bench_review_queue.run_fold``; ``conf(pred, gt)`` the confusion matrix;
    ``orders``: the queue orders fine-tuned on (queue names or :data:`MIXED`), then
    ``args.ft_random`` random orders.
    """
    from wsss_napari.inference.multiscale import multiscale_cam
    from wsss_napari.params import CamParams, FinetuneParams
    from wsss_napari.train.finetune import run_finetune

    t0 = time.perf_counter()
    plain = CamParams(scales=tuple(args.scales), device="cpu", batch_size=32)
    params = FinetuneParams(steps=args.ft_steps, lr=args.ft_lr, crop_size=args.ft_crop,
                            batch_size=4, device="cpu", seed=fold)

    def score(m, images):
        c = np.zeros((4, 4), np.int64)
        for _, rgb, gt, _, _ in images:
            c += conf(multiscale_cam(m, rgb, plain).cams.argmax(0).astype(np.uint8), gt)
        return c

    orders = list(orders) + [f"random#{s}" for s in range(args.ft_random)]
    halves = (per_image[0::2], per_image[1::2])
    for taught, scored in (halves, halves[::-1]):
        ft_rows.append(("before fine-tune", fold, score(model, scored), 0, 0))
        for order in orders:
            data, wrong, done = [], 0, 0
            for _, rgb, gt, pred, queues in taught:
                budget = 0.1 * (gt != 3).sum()
                items = mixed_order(queues["expected gain"], queues["random#0"], budget) \
                    if order == MIXED else queues[order]
                lab, n = reviewed_labels(gt, items, budget)
                data.append((rgb, lab))
                wrong += int(((lab != 255) & (lab != pred)).sum())
                done += n
            res = run_finetune(model, data, params)
            name = "random" if order.startswith("random") else order
            ft_rows.append((f"after fine-tune ({name} order)", fold, score(res.model, scored),
                            wrong, done))
    print(f"fold {fold}: fine-tunes ({len(orders)} orders x 2 halves, {params.steps} steps) "
          f"{time.perf_counter() - t0:.0f}s", flush=True)


def report(ft_rows: list, miou) -> None:
    """Print the fine-tune table (mIoU of the scored halves, all folds pooled)."""
    print()
    print("| fine-tune on 10 % corrections of half the held-out images; scored on the other "
          "half | mIoU | gain | corrected pixels that were wrong |")
    print("|---|---|---|---|")
    names = list(dict.fromkeys(r[0] for r in ft_rows))
    base = miou(sum(r[2] for r in ft_rows if r[0] == names[0]))
    for name in names:
        sel = [r for r in ft_rows if r[0] == name]
        runs = len(sel) // max(1, len([r for r in ft_rows if r[0] == names[0]]))
        m = miou(sum(r[2] for r in sel)) if runs <= 1 else float(np.mean(
            [miou(sum(r[2] for r in sel[k::runs])) for k in range(runs)]))
        wrong, done = sum(r[3] for r in sel), sum(r[4] for r in sel)
        share = f"{100 * wrong / done:.0f} %" if done else "-"
        print(f"| {name} | {m:.3f} | {m - base:+.3f} | {share} |")
    for fold in sorted({r[1] for r in ft_rows}):
        sel = [r for r in ft_rows if r[1] == fold]
        cells = []
        for name in names:
            rs = [r for r in sel if r[0] == name]
            cells.append(f"{name} {miou(sum(r[2] for r in rs)):.3f}")
        print(f"  fold {fold}: " + ", ".join(cells))
