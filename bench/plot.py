"""busbw against message size, one line per library, from pycomm.bench --json files.

    python bench/plot.py OUT.png RUN.json [RUN.json ...] [--title TEXT] [--link GBPS]

Each JSON file is the rows one invocation wrote (`--json PATH`); rows of the
same library in several files are drawn as separate lines labelled with the
file's name. --link draws the link rate as a dashed line. Needs matplotlib
(pip install matplotlib).
"""
import argparse
import json
import os


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("runs", nargs="+")
    p.add_argument("--title", default="")
    p.add_argument("--link", type=float, help="link rate in GB/s, drawn for reference")
    p.add_argument("--metric", choices=("busbw", "algbw"), default="busbw")
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for path in args.runs:
        with open(path) as f:
            rows = json.load(f)
        tag = os.path.splitext(os.path.basename(path))[0]
        for lib in dict.fromkeys(r["library"] for r in rows):
            mine = sorted((r for r in rows if r["library"] == lib), key=lambda r: r["bytes"])
            label = lib if len(args.runs) == 1 else f"{lib} ({tag})"
            ax.plot([r["bytes"] for r in mine], [r[f"{args.metric}_GBps"] for r in mine], "o-", label=label)
    if args.link:
        ax.axhline(args.link, linestyle="--", color="gray", label=f"link {args.link:g} GB/s")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel(f"{args.metric} (GB/s)")
    ax.set_title(args.title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
