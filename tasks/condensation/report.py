"""The condensation report's plot: shares per label and group before/after, and where rows went."""

from __future__ import annotations

from pathlib import Path


def plot(report: dict, path: Path) -> None:
    """`path` (PNG): one panel per partition (labels, each attribute) with before/after shares,
    and one bar of the record ledger (kept, and dropped by reason)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before, after = report["before"], report["after"]
    panels = [("label", before["labels"], after["labels"])]
    panels += [(a, before["groups"][a], after["groups"].get(a, {})) for a in before["groups"]]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.6 * (len(panels) + 1), 3.6), squeeze=False)
    for ax, (name, b, a) in zip(axes[0], panels):
        keys = list(b)[:20]  # many labels (open answers): the first 20
        nb, na = max(1, sum(b.values())), max(1, sum(a.values()))
        xs = range(len(keys))
        ax.bar([x - 0.2 for x in xs], [b[k] / nb for k in keys], 0.4, label=f"before (n={before['n']})")
        ax.bar([x + 0.2 for x in xs], [a.get(k, 0) / na for k in keys], 0.4, label=f"after (n={after['n']})")
        ax.set_xticks(list(xs), keys, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{name}: share of records", fontsize=9)
    axes[0][0].legend(fontsize=7)
    ledger = report["ledger"]
    parts = {"kept": ledger["out"], **ledger["dropped"]}
    ax = axes[0][-1]
    ax.bar(list(parts), list(parts.values()), color=["tab:green"] + ["tab:gray"] * (len(parts) - 1))
    ax.set_title(f"{report['method']}: {ledger['in']} in (+{ledger['synthetic_in']} synthetic)", fontsize=9)
    ax.tick_params(axis="x", rotation=45, labelsize=7)
    div = report["diversity"]
    fig.suptitle(f"condense {report['method']} ratio {report['ratio']}: cover radius {div['cover_radius']:.3f}, "
                 f"mean NN distance {div['mean_nn_distance_before']:.3f} -> {div['mean_nn_distance_after']:.3f}",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
