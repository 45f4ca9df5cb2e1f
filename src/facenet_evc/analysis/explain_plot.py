"""The figure of one explained video (:mod:`.explain`): a record in, a PNG out.

Layout, top to bottom: title and configuration; a strip of frames (when the video file was
found); the generated caption beside the references, and the K retrieved captions with their
S/P/O triplets and most attended emotion words; the self-refinement weights alpha per S/P/O
(paper Fig. 7, bars) beside theta and g per triplet; the emotion distribution per triplet
over the lexicon categories (paper Fig. 8, curves) beside the gates B_f / B_e (histograms of
their d values, means marked). A panel whose module is off is replaced by a grey note.
Everything drawn is read from the record, so the PNG shows exactly the JSON's numbers.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Mapping

import numpy as np

PART_NAMES = ("S", "P", "O")
PART_COLORS = ("#4C72B0", "#DD8452", "#55A868")
THETA_COLOR, G_COLOR = "#8172B3", "#C44E52"
NOTE_COLOR = "#666666"
FONT = 9


def _triplet_colors(k: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(k)]


def _clip(s: str, n: int) -> str:
    s = s.strip()
    return s if len(s) <= n else s[: n - 1] + "…"


def _spo(item: Mapping[str, Any], n: int = 18) -> str:
    parts = [item.get(p) for p in ("subject", "predicate", "object")]
    if all(p is None for p in parts):
        return ""
    return " / ".join(_clip(p, n) if p else "–" for p in parts)


def _note(ax: Any, title: str, lines: list[str]) -> None:
    ax.set_axis_off()
    ax.set_title(title, fontsize=FONT + 1, loc="left", color=NOTE_COLOR)
    ax.text(0.5, 0.5, "\n".join(textwrap.fill(s, 70) for s in lines), ha="center", va="center", fontsize=FONT,
            color=NOTE_COLOR, transform=ax.transAxes,
            bbox={"boxstyle": "round,pad=0.6", "facecolor": "#f2f2f2", "edgecolor": "#cccccc"})


class _Lines:
    """Writes lines top-down into an axes at a fixed pitch in points (text panels)."""

    def __init__(self, ax: Any, height_in: float, size: float = FONT) -> None:
        self.ax, self.size = ax, size
        self.step = size * 1.45 / 72 / height_in  # axes fraction per line
        self.y = 1.0 - self.step
        ax.set_axis_off()

    def add(self, text: str, x: float = 0.0, **kw: Any) -> None:
        self.ax.text(x, self.y, text, fontsize=kw.pop("size", self.size), va="baseline", ha="left",
                     transform=self.ax.transAxes, **kw)
        self.y -= self.step

    def skip(self, n: float = 0.5) -> None:
        self.y -= n * self.step


def _caption_lines(rec: Mapping[str, Any], width: int) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = [("Generated caption (beam search, "
                                             f"{rec.get('decoding', {}).get('num_beams', '?')} beams)",
                                             {"weight": "bold"})]
    for line in textwrap.wrap(f"“{rec['caption']}”", width) or ["“”"]:
        out.append(("  " + line, {"color": "#1a1a8c", "size": FONT + 1}))
    ew = rec.get("emotion_words")
    if ew is not None:
        counts: dict[str, int] = {}
        cats: dict[str, str] = {}
        for w in ew["caption"]:
            counts[w["word"]] = counts.get(w["word"], 0) + 1
            cats[w["word"]] = "/".join(w["categories"])
        words = ", ".join(f"{w}{f' ×{n}' if n > 1 else ''} ({cats[w]})" for w, n in counts.items()) or "none"
        for line in textwrap.wrap(f"emotion words: {words}", width):
            out.append(("  " + line, {"color": NOTE_COLOR}))
    out.append(("", {}))
    refs = rec.get("references")
    if refs is None:
        out.append(("References: not given (--references)", {"weight": "bold", "color": NOTE_COLOR}))
    else:
        out.append((f"References ({len(refs)})", {"weight": "bold"}))
        for i, r in enumerate(refs, start=1):
            for j, line in enumerate(textwrap.wrap(r, width - 5) or [""]):
                out.append(((f"  {i}. " if j == 0 else "     ") + line, {}))
    return out


def _retrieved_lines(rec: Mapping[str, Any], colors: list[Any], width: int) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = [("Retrieved captions → triplets (S / P / O)", {"weight": "bold"})]
    emo = rec.get("emotion")
    for k, item in enumerate(rec["retrieved"]):
        head = f"T{item['rank']}  cos {item['similarity']:.3f}"
        if rec.get("theta") is not None:
            head += f"   θ {rec['theta'][k]:.3f}"
        if rec.get("g") is not None:
            head += f"   g {rec['g'][k]:.3f}"
        spo = _spo(item, 24)
        out.append((head + (f"   ({spo})" if spo else ""), {"weight": "bold", "color": colors[k]}))
        for line in textwrap.wrap(f"“{item['caption']}”", width - 4):
            out.append(("    " + line, {}))
        if emo is not None:
            words = ", ".join(f"{w['word']} {w['weight']:.3f}" for w in emo["top_words"][k])
            for line in textwrap.wrap(f"top emotion words: {words}", width - 4):
                out.append(("    " + line, {"color": NOTE_COLOR}))
    return out


def _plot_alpha(ax: Any, rec: Mapping[str, Any]) -> None:
    alpha = np.asarray(rec["alpha"], dtype=float)  # (K, 3)
    K = alpha.shape[0]
    pitch = 4  # 3 bars and a gap per triplet
    ys, labels = [], []
    for k in range(K):
        item = rec["retrieved"][k]
        for c in range(3):
            y = k * pitch + c
            word = item.get(("subject", "predicate", "object")[c])
            ax.barh(y, alpha[k, c], color=PART_COLORS[c], height=0.8,
                    label=f"{PART_NAMES[c]} ({('subject', 'predicate', 'object')[c]})" if k == 0 else None)
            ax.text(alpha[k, c], y, f" {alpha[k, c]:.4f}", va="center", ha="left", fontsize=FONT - 1)
            ys.append(y)
            labels.append(f"T{k + 1} {PART_NAMES[c]}: {_clip(word, 16) if word else '–'}")
    ax.set_yticks(ys, labels, fontsize=FONT - 1)
    for tick, y in zip(ax.get_yticklabels(), ys):
        tick.set_color(_triplet_colors(K)[y // pitch])
    ax.invert_yaxis()
    ax.set_xlim(0, max(alpha.max() * 1.6, 0.6))  # room for the value labels and the legend
    ax.axvline(1 / 3, color=NOTE_COLOR, lw=0.8, ls="--")
    ax.set_xlabel("α (rows sum to 1; dashed: uniform 1/3)", fontsize=FONT)
    spread = float(alpha.max() - alpha.min())
    title = "Self-refinement α per S/P/O (eq. 12)"
    if spread < 0.01:
        title += f": near uniform, spread {spread:.1e}"
    ax.set_title(title, fontsize=FONT + 1, loc="left")
    ax.legend(fontsize=FONT - 1, loc="lower right", framealpha=0.9)
    ax.tick_params(axis="x", labelsize=FONT - 1)


def _plot_weights(ax: Any, rec: Mapping[str, Any]) -> None:
    series = [(n, rec[key], col) for n, key, col in (("θ cross-refinement (eq. 15)", "theta", THETA_COLOR),
                                                     ("g router (eq. 26)", "g", G_COLOR)) if rec.get(key) is not None]
    K = len(rec["retrieved"])
    x = np.arange(K)
    w = 0.8 / len(series)
    top = 0.0
    for i, (name, vals, col) in enumerate(series):
        vals = np.asarray(vals, dtype=float)
        pos = x - 0.4 + w * (i + 0.5)
        ax.bar(pos, vals, width=w * 0.95, color=col, label=name)
        for p, v in zip(pos, vals):
            ax.text(p, v, f"{v:.3f}", ha="center", va="bottom", fontsize=FONT - 1)
        top = max(top, float(vals.max()))
    ax.axhline(1 / K, color=NOTE_COLOR, lw=0.8, ls="--")
    ax.set_xticks(x, [f"T{k + 1}\ncos {it['similarity']:.3f}" for k, it in enumerate(rec["retrieved"])],
                  fontsize=FONT - 1)
    for tick, col in zip(ax.get_xticklabels(), _triplet_colors(K)):
        tick.set_color(col)
    ax.set_ylim(0, top * 1.3)
    ax.set_ylabel(f"weight (sums to 1 over K; dashed: 1/K = {1 / K:.3f})", fontsize=FONT)
    names = " and ".join(("θ", "g")[i] for i, key in enumerate(("theta", "g")) if rec.get(key) is not None)
    ax.set_title(f"Triplet weights {names}", fontsize=FONT + 1, loc="left")
    ax.legend(fontsize=FONT - 1, loc="upper right", framealpha=0.9)
    ax.tick_params(axis="y", labelsize=FONT - 1)


def _category_rotation(n: int) -> int:
    return 0 if n <= 12 else (45 if n <= 20 else 90)


def _category_label_in(cats: list[str]) -> float:
    """Height in inches of the category tick labels of the emotion panel."""
    rot = _category_rotation(len(cats))
    longest = max((len(c) for c in cats), default=1) * (FONT - 1) * 0.6 / 72
    return 0.22 if rot == 0 else (0.1 + longest * (0.71 if rot == 45 else 1.0))


def _plot_emotion(ax: Any, rec: Mapping[str, Any], colors: list[Any]) -> None:
    emo = rec["emotion"]
    cats = rec["categories"]
    dist = np.asarray(emo["distribution"], dtype=float)  # (K, C)
    x = np.arange(len(cats))
    for k in range(dist.shape[0]):
        best = cats[int(dist[k].argmax())]
        ax.plot(x, dist[k], marker="o", ms=3.5, lw=1.4, color=colors[k],
                label=f"T{k + 1} {_spo(rec['retrieved'][k], 16)} (max: {best})")
    if emo.get("classifier") is not None:
        cls = np.asarray(emo["classifier"], dtype=float)
        ax.plot(x, cls, ls="--", lw=1.2, color="black", label=f"classifier, eq. 31 (max: {cats[int(cls.argmax())]})")
    rot = _category_rotation(len(cats))
    ax.set_xticks(x, cats, rotation=rot, ha="right" if rot else "center", fontsize=FONT - 1)
    ax.set_xlim(-0.5, len(cats) - 0.5)
    ax.set_ylim(0, None)
    ax.set_ylabel("probability", fontsize=FONT)
    ax.set_title("Emotion distribution per triplet: PVEA attention over the lexicon E_0 (eq. 19), per category (lift over uniform)",
                 fontsize=FONT + 1, loc="left")
    ax.grid(axis="y", alpha=0.3)
    height_in = ax.get_position().height * ax.figure.get_figheight()
    below = (_category_label_in(cats) + 0.05) / height_in  # the legend goes under the tick labels
    ax.legend(fontsize=FONT - 1, loc="upper left", bbox_to_anchor=(0.0, -below), ncol=3, frameon=False)
    ax.tick_params(axis="y", labelsize=FONT - 1)


def _plot_gates(ax: Any, rec: Mapping[str, Any]) -> None:
    gates = rec["gates"]
    for name, key, col in (("B_f factual", "b_f", "#4C72B0"), ("B_e emotional", "b_e", "#C44E52")):
        g = gates.get(key)
        if g is None:
            continue
        edges = np.asarray(g["histogram"]["edges"])
        counts = np.asarray(g["histogram"]["counts"])
        ax.stairs(counts, edges, fill=True, alpha=0.35, color=col)
        ax.stairs(counts, edges, color=col, lw=1.2,
                  label=f"{name}: mean {g['mean']:+.3f}, sd {g['std']:.3f}, {100 * g['fraction_positive']:.0f}% > 0")
        ax.axvline(g["mean"], color=col, lw=1.5, ls="--")
    ax.set_xlim(-1, 1)
    ax.set_xlabel(f"gate value (tanh, one per feature; d = {len(gates['b_f']['values'])}; dashed: mean)",
                  fontsize=FONT)
    ax.set_ylabel("features", fontsize=FONT)
    ax.set_title("Bias gates B_f, B_e (eq. 24-25)", fontsize=FONT + 1, loc="left")
    ax.legend(fontsize=FONT - 1.5, loc="upper left", framealpha=0.9)
    ax.tick_params(labelsize=FONT - 1)
    top = max(np.max(gates[k]["histogram"]["counts"]) for k in ("b_f", "b_e") if gates.get(k) is not None)
    ax.set_ylim(0, top * 1.45)  # room for the legend above the bars


def plot_explanation(rec: Mapping[str, Any], out_png: str | Path, frames: np.ndarray | None = None,
                     dpi: int = 110) -> None:
    """Draw the record of :func:`~facenet_evc.analysis.explain.video_record` (plus its captions) to ``out_png``.

    ``frames`` (n, H, W, 3) uint8 are shown as a strip when given. Panels are placed in inches
    (not a grid), so text blocks of any length and long tick labels never overlap a neighbour.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    retrieval = bool(rec["config"]["use_retrieval"])
    K = len(rec["retrieved"])
    colors = _triplet_colors(K)
    W = 16.0  # figure width, inches
    line_in = FONT * 1.45 / 72
    cap_lines = _caption_lines(rec, 92)
    ret_lines = _retrieved_lines(rec, colors, 92) if retrieval else []
    omitted = rec.get("omitted") or []
    n_notes = len(omitted) + len(rec.get("notes") or [])
    emo_legend_rows = -(-(K + 1) // 3)  # legend below the emotion curves, 3 columns

    # (kind, gap above, height) in inches, top to bottom
    rows: list[tuple[str, float, float]] = [("title", 0.15, (3 + n_notes) * line_in * 1.1)]
    if frames is not None:
        rows.append(("frames", 0.35, 1.6))
    rows.append(("text", 0.2, (max(len(cap_lines), len(ret_lines)) + 0.5) * line_in))
    if retrieval:
        rows.append(("weights", 0.45, max(2.8, 0.19 * 4 * K + 0.6)))
        rows.append(("emotion", 1.05, 3.0))
    bottom = 0.3 + (_category_label_in(rec["categories"]) + emo_legend_rows * 0.2 + 0.1 if retrieval else 0.0)
    H = sum(g + h for _, g, h in rows) + bottom
    fig = plt.figure(figsize=(W, H))

    def axes(x0: float, top: float, w: float, h: float) -> Any:
        return fig.add_axes((x0 / W, (H - top - h) / H, w / W, h / H))

    y = 0.0
    for kind, gap, h in rows:
        y += gap
        if kind == "title":
            ax = axes(0.4, y, W - 0.7, h)
            lines = _Lines(ax, h, FONT + 1)
            cfg = rec["config"]
            lines.add(f"Video {rec['video_id']}  —  FACE-net, step {rec.get('step')}  ({rec.get('checkpoint', '')})",
                      size=FONT + 4, weight="bold")
            flags = "  ".join(f"{n} {'on' if cfg[k] else 'off'}" for n, k in (
                ("RE", "use_retrieval"), ("FC", "use_fcue"), ("SR", "self_refine"), ("CR", "cross_refine"),
                ("EA", "use_pvea"), ("BA", "use_dbar")))
            lines.add(f"{flags}   order {cfg['order']}   K {cfg['k']}   N {cfg['n_frames']}   decoder {cfg['decoder']}",
                      color=NOTE_COLOR)
            for s in omitted:
                lines.add(f"omitted: {s}", color="#a33", size=FONT)
            for s in rec.get("notes") or []:
                lines.add(f"note: {s}", color="#a33", size=FONT)
        elif kind == "frames":
            n, fh, fw, _ = frames.shape
            sep = max(2, fw // 16)
            strip = np.full((fh, n * fw + (n - 1) * sep, 3), 255, dtype=np.uint8)
            for j in range(n):
                strip[:, j * (fw + sep): j * (fw + sep) + fw] = frames[j]
            ax = axes(0.4, y, W - 0.7, h)
            ax.imshow(strip, interpolation="nearest" if fh < 128 else "antialiased")
            ax.set_anchor("W")
            ax.set_axis_off()
            ax.set_title(f"{n} frames sampled uniformly from {Path(rec.get('video_file', '')).name}",
                         fontsize=FONT, loc="left", color=NOTE_COLOR)
        elif kind == "text":
            for x0, content in ((0.4, cap_lines), (W / 2 + 0.2, ret_lines)):
                ax = axes(x0, y, W / 2 - 0.6, h)
                lines = _Lines(ax, h)
                for s, kw in content:
                    lines.add(s, **kw)
        elif kind == "weights":
            ax = axes(2.0, y, 5.6, h)
            if rec.get("alpha") is not None:
                _plot_alpha(ax, rec)
            else:
                _note(ax, "Self-refinement α (eq. 12)", [s for s in omitted if s.startswith(("FC", "SR"))])
            ax = axes(9.0, y, W - 9.3, h)
            if rec.get("theta") is not None or rec.get("g") is not None:
                _plot_weights(ax, rec)
            else:
                _note(ax, "Triplet weights θ, g (eq. 15, 26)", [s for s in omitted if s.startswith(("FC", "CR", "BA"))])
        elif kind == "emotion":
            ax = axes(0.8, y, 9.0, h)
            if rec.get("emotion") is not None:
                _plot_emotion(ax, rec, colors)
            else:
                _note(ax, "Emotion distribution per triplet (eq. 19)", [s for s in omitted if s.startswith("EA")])
            ax = axes(11.0, y, W - 11.3, h)
            if rec.get("gates") is not None:
                _plot_gates(ax, rec)
            else:
                _note(ax, "Bias gates B_f, B_e (eq. 24-25)", [s for s in omitted if s.startswith("BA")])
        y += h
    fig.savefig(out_png, dpi=dpi, format="png")
    plt.close(fig)
