"""Training loss against step, one line per configuration, from
`bench/fsdp_step.py --loss-json` files.

    python bench/plot_loss.py OUT.png LOSS.json [LOSS.json ...] [--title TEXT] [--from-step K]

Above, the losses; below, each configuration's loss relative to the first
one of its file (float32), in percent, where int8's differences show.
Needs matplotlib (pip install matplotlib).
"""
import argparse
import json
import os


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("runs", nargs="+")
    p.add_argument("--title", default="")
    p.add_argument("--from-step", type=int, default=1, help="the first step drawn (1-based)")
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=(2, 1))
    several = len(args.runs) > 1
    for path in args.runs:
        with open(path) as f:
            curves = json.load(f)["curves"]
        base = None
        tag = f" ({os.path.splitext(os.path.basename(path))[0]})" if several else ""
        for name, losses in curves.items():
            steps = list(range(args.from_step, len(losses) + 1))
            shown = losses[args.from_step - 1:]
            line, = top.plot(steps, shown, label=name + tag, linewidth=1.2)
            if base is None:
                base = shown
                continue
            bottom.plot(steps, [100 * (a - b) / b for a, b in zip(shown, base)], color=line.get_color(),
                        linewidth=1.2)
    top.set_ylabel("loss (mean of the ranks)")
    top.grid(True, alpha=0.3)
    top.legend()
    bottom.axhline(0, color="gray", linewidth=0.8)
    bottom.set_ylabel("vs float32 (%)")
    bottom.set_xlabel("step")
    bottom.grid(True, alpha=0.3)
    if args.title:
        top.set_title(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
