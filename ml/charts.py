"""Server-rendered SVG geometry for the Model page (numbers in, shapes out; no JavaScript)."""

from __future__ import annotations

from ml.explain import feature_label

W, H, PAD = 320, 240, 34


def reliability(model_points: list[dict], oracle_points: list[dict] | None = None) -> dict:
    """Predicted vs observed churn rate per risk decile, on a unit square with the diagonal."""
    span_w, span_h = W - 2 * PAD, H - 2 * PAD

    def xy(p):
        return round(PAD + p["predicted"] * span_w, 1), round(H - PAD - p["observed"] * span_h, 1)

    def series(points):
        pts = [(*xy(p), p["n"], p["predicted"], p["observed"]) for p in points or []]
        return {"points": pts, "path": " ".join(f"{x},{y}" for x, y, *_ in pts)}

    ticks = [{"v": f"{t:.0%}", "x": round(PAD + t * span_w, 1), "y": round(H - PAD - t * span_h, 1)}
             for t in (0, 0.25, 0.5, 0.75, 1.0)]  # fmt: skip
    return {
        "w": W, "h": H, "pad": PAD, "x0": PAD, "y0": H - PAD, "x1": W - PAD, "y1": PAD, "iw": span_w, "ih": span_h,
        "model": series(model_points), "oracle": series(oracle_points), "ticks": ticks,
    }  # fmt: skip


def histogram(counts: list[int]) -> dict:
    """Bars for risk bands of equal width over 0-100%."""
    n = len(counts) or 1
    top = max(counts or [0]) or 1
    span_w, span_h = W - 2 * PAD, H - 2 * PAD
    bw = span_w / n
    bars = []
    for i, c in enumerate(counts):
        h = span_h * c / top
        bars.append({
            "x": round(PAD + i * bw + 1, 1), "y": round(H - PAD - h, 1), "w": round(bw - 2, 1), "h": round(h, 1),
            "n": c, "label": f"{i * 100 // n}-{(i + 1) * 100 // n}%", "high": (i + 0.5) / n >= 0.5,
        })  # fmt: skip
    ticks = [{"v": f"{t:.0%}", "x": round(PAD + t * span_w, 1)} for t in (0, 0.25, 0.5, 0.75, 1.0)]
    return {
        "w": W,
        "h": H,
        "pad": PAD,
        "y0": H - PAD,
        "x1": W - PAD,
        "bars": bars,
        "ticks": ticks,
        "top": top,
    }


def importance(rows: list[dict], limit: int = 12) -> dict:
    rows = rows[:limit]
    top = max((r["mean_abs_shap"] for r in rows), default=0) or 1
    label_w, bar_w, row_h = 190, 230, 20
    bars = [
        {"y": i * row_h, "w": round(bar_w * r["mean_abs_shap"] / top, 1), "feature": feature_label(r["feature"]),
         "value": r["mean_abs_shap"], "ty": i * row_h + 14}
        for i, r in enumerate(rows)
    ]  # fmt: skip
    return {"w": label_w + bar_w + 60, "h": row_h * len(rows) + 4, "label_w": label_w, "bars": bars}


def confusion(conf: dict | None) -> dict | None:
    if not conf:
        return None
    labels = {"7d": "~7 days", "30d": "~30 days", "90d": "~90 days", "later": "> 90 days"}
    matrix = conf["matrix"]
    top = max((max(r) for r in matrix), default=1) or 1
    rows = []
    for name, r in zip(conf["labels"], matrix, strict=True):
        total = sum(r) or 1
        rows.append({
            "label": labels.get(name, name),
            "cells": [{"n": v, "share": v / total, "alpha": round(0.08 + 0.8 * (v / total), 2)} for v in r],
            "total": sum(r),
        })  # fmt: skip
    return {"labels": [labels.get(n, n) for n in conf["labels"]], "rows": rows, "top": top}
