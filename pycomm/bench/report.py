"""The nccl-tests style table (one row per size, compared libraries side by side) and JSON."""
import json

# (title, unit, width) of the primary library's columns; compared libraries get COMPARE_COLS.
PRIMARY_COLS = [("size", "(B)", 12), ("count", "(elements)", 12), ("type", "", 9), ("redop", "", 6),
                ("time", "(us)", 9), ("algbw", "(GB/s)", 7), ("busbw", "(GB/s)", 7), ("#wrong", "", 7),
                ("p99", "(us)", 9)]
# A lossy (compressed) library adds its error: largest and RMS, relative to the reference's RMS.
ERROR_COLS = [("maxerr", "(%)", 8), ("rmserr", "(%)", 8)]
COMPARE_COLS = [("time", "(us)", 9), ("busbw", "(GB/s)", 7), ("ratio", "(x)", 7)]
SEP = " |"


def fmt_time(us):
    # nccl-tests' precision: more digits for shorter times.
    return f"{us:.0f}" if us >= 10000 else f"{us:.1f}" if us >= 100 else f"{us:.2f}"


def fmt_wrong(wrong):
    return "N/A" if wrong is None else str(wrong)


def _line(cells, cols):
    return "".join(f" {c:>{w - 1}}" for c, (_, _, w) in zip(cells, cols))  # a space even when a cell overflows


def _blank(cols):
    return " " * sum(w for _, _, w in cols)


def table(rows, primary, others=()):
    """Lines of the table: `primary`'s columns, then time, busbw and ratio
    (primary's busbw / theirs, i.e. its speedup) for each library in `others`."""
    by_lib = {}
    for r in rows:
        by_lib.setdefault(r["library"], {})[r["bytes"]] = r
    mine = by_lib.get(primary, {})
    others = [o for o in others if o in by_lib]
    primary_cols = PRIMARY_COLS + (ERROR_COLS if any("rms_err" in r for r in mine.values()) else [])

    def label(lib, cols):
        return f"{lib:^{sum(w for _, _, w in cols)}}"

    groups = [label(primary, primary_cols)] if mine else []
    groups += [label(o, COMPARE_COLS) for o in others]
    titles = [_line([t for t, _, _ in primary_cols], primary_cols)]
    units = [_line([u for _, u, _ in primary_cols], primary_cols)]
    for _ in others:
        titles.append(_line([t for t, _, _ in COMPARE_COLS], COMPARE_COLS))
        units.append(_line([u for _, u, _ in COMPARE_COLS], COMPARE_COLS))
    lines = [("#" + SEP.join(groups)[1:]).rstrip(), "#" + SEP.join(titles)[1:], "#" + SEP.join(units)[1:]]

    sizes = sorted({b for lib in [primary, *others] for b in by_lib.get(lib, {})})
    for size in sizes:
        r = mine.get(size)
        cells = [_line([r["bytes"], r["count"], r["dtype"], r["redop"], fmt_time(r["time_us"]),
                        f"{r['algbw_GBps']:.2f}", f"{r['busbw_GBps']:.2f}", fmt_wrong(r["wrong"]),
                        fmt_time(r["p99_us"])]
                       + ([f"{100 * r['max_err']:.3f}", f"{100 * r['rms_err']:.3f}"]
                          if len(primary_cols) > len(PRIMARY_COLS) else []), primary_cols)
                 if r else _blank(primary_cols)]
        for o in others:
            x = by_lib[o].get(size)
            if x is None:
                cells.append(_line(["-", "-", "-"], COMPARE_COLS))
                continue
            ratio = f"{x['time_us'] / r['time_us']:.2f}" if r else "-"  # = busbw ratio
            cells.append(_line([fmt_time(x["time_us"]), f"{x['busbw_GBps']:.2f}", ratio], COMPARE_COLS))
        lines.append(SEP.join(cells))
    return lines


def merge_rounds(rows):
    """One row per (library, size) from the rows of several rounds: the round
    whose time is the median (the lower one for an even count), its every
    column from that one measurement, plus `rounds_us` (each round's time, in
    order); `wrong` is the most any round had."""
    groups = {}
    for r in rows:
        groups.setdefault((r["library"], r["bytes"]), []).append(r)
    merged = []
    for rs in groups.values():
        if len(rs) == 1:
            merged.append(rs[0])
            continue
        pick = dict(sorted(rs, key=lambda r: r["time_us"])[(len(rs) - 1) // 2])
        pick["rounds_us"] = [r["time_us"] for r in sorted(rs, key=lambda r: r["round"])]
        wrongs = [r["wrong"] for r in rs if r["wrong"] is not None]
        pick["wrong"] = max(wrongs) if wrongs else None
        if any(r.get("identical") is False for r in rs):
            pick["identical"] = False
        merged.append(pick)
    return merged


def round_ratios(rows, primary, others):
    """'# ratio by round, 16777216 B: mpi 1.02 0.97 1.10 (median 1.02)': for the
    largest size, the primary library's speedup over each other library
    round by round, each from measurements seconds apart."""
    times = {}
    for r in rows:
        times.setdefault(r["bytes"], {}).setdefault(r["library"], {})[r["round"]] = r["time_us"]
    if not times:
        return []
    size = max(times)
    mine = times[size].get(primary, {})
    parts = []
    for o in others:
        theirs = times[size].get(o, {})
        ratios = [theirs[k] / mine[k] for k in sorted(mine) if k in theirs]
        if ratios:
            med = sorted(ratios)[(len(ratios) - 1) // 2]
            parts.append(f"{o} {' '.join(f'{x:.2f}' for x in ratios)} (median {med:.2f})")
    return [f"# ratio by round, {size} B: " + "; ".join(parts)] if parts else []


def versions(rows, libraries):
    """'pycomm 0.1.0 over shm, ...': what each library was and what carried its bytes."""
    seen = {}
    for r in rows:
        seen.setdefault(r["library"], f"{r['library']} {r['version']} over {r['transport']}")
    return ", ".join(seen[lib] for lib in libraries if lib in seen)


def summary(rows, libraries, checked):
    """nccl-tests' closing lines, per library."""
    lines = []
    present = [lib for lib in libraries if any(r["library"] == lib for r in rows)]
    if checked:
        parts = []
        for lib in present:
            wrong = sum(r["wrong"] or 0 for r in rows if r["library"] == lib)
            parts.append(f"{lib} {wrong} {'OK' if wrong == 0 else 'FAILED'}")
        lines.append("# Out of bounds values : " + ", ".join(parts))
    parts = []
    for lib in present:
        bw = [r["busbw_GBps"] for r in rows if r["library"] == lib]
        parts.append(f"{lib} {sum(bw) / len(bw):.3f}")
    lines.append("# Avg bus bandwidth    : " + ", ".join(parts) + " GB/s")
    return lines


def write_json(path, rows):
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)
        f.write("\n")
