"""Gap closure and plots against reference lines taken from an earlier ``meta_rl.py`` run.

``meta_rl.py`` trains and meta-tests every line it names, the DR line included. When only
an adapting line's acting rule changed (e.g. the grip search's settings) and its runs were
retrained bit for bit, the DR line's runs and results are unchanged, and training them
again only costs hours. This script takes the new ``results.json`` (written with
``--dr`` set to the oracle line, so its closure cells are empty) and the DR line of an
earlier ``results.json`` of the same seeds, and writes ``closure.md`` (success and return
at every k, closure against that DR line) and ``success_vs_k_<split>.png`` beside the new
results (or in ``--out``). The file names the source of each line.

``--oracle-from`` takes the oracle line from a third ``results.json`` as well, for an
oracle reference trained with other settings than the adapting line (any policy given the
privileged task parameters is an oracle); without it the oracle line is one of RESULTS.

Usage::

    python benchmarks/reference_lines.py NEW/results.json --dr-from OLD/results.json \\
        --dr sac-grip-dr:squeeze_guard=true --oracle sac-grip:act_with=oracle,squeeze_guard=true \\
        [--oracle-from ORACLE/results.json]

Without ``--dr-from`` the DR line is RESULTS' own (for an oracle from another file only).
``--splits`` keeps some of RESULTS' splits (a reference file may lack ``val``);
``--other-seeds`` accepts references trained with other seeds than RESULTS' lines (one
new seed against three reference seeds, say) and names both sets in each split's table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from meta_rl import _plot  # noqa: E402


def _seeds(line: dict) -> list[str]:
    """The training seeds of a line's runs (``.../NAME-sN``), as their folder suffixes."""
    return sorted(Path(r).name.rsplit("-", 1)[-1] for r in line["runs"])


def main(argv: list[str] | None = None) -> int:
    from metagrasp.policies.evaluate import gap_closure, reference_level

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="results.json of the new meta_rl.py run")
    p.add_argument("--dr-from", type=Path, help="earlier results.json (default: RESULTS)")
    p.add_argument("--dr", required=True, help="the DR line's name in --dr-from")
    p.add_argument(
        "--oracle", required=True, help="the oracle line's name in RESULTS (or --oracle-from)"
    )
    p.add_argument("--oracle-from", type=Path, help="results.json holding the oracle line")
    p.add_argument("--out", type=Path, help="folder for closure.md and plots (default: RESULTS')")
    p.add_argument("--splits", nargs="+", help="only these splits of RESULTS (default: all)")
    p.add_argument(
        "--other-seeds",
        action="store_true",
        help="allow reference lines trained with other seeds than RESULTS' lines (each "
        "split's table then names both sets); without it such a pairing is an error",
    )
    args = p.parse_args(argv)
    args.dr_from = args.dr_from or args.results
    new, old = (json.loads(f.read_text()) for f in (args.results, args.dr_from))
    src = json.loads(args.oracle_from.read_text()) if args.oracle_from else new
    out = args.out or args.results.parent
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Gap closure against the DR line of `{args.dr_from}`",
        "",
        f"Lines from `{args.results}`; DR line `{args.dr}` from `{args.dr_from}`"
        + (
            f"; oracle line `{args.oracle}` from `{args.oracle_from}`." if args.oracle_from else "."
        ),
        "",
    ]
    # An oracle from another file gets its own label: RESULTS may hold a line of the same
    # name (the adapting runs' own oracle line), which stays an ordinary line. A DR line
    # from another file likewise, when RESULTS holds one; RESULTS' own is listed once.
    key = f"{args.oracle} from {args.oracle_from}" if args.oracle_from else args.oracle
    own = args.dr_from == args.results
    splits = args.splits or list(new["splits"])
    for split in splits:
        if split not in new["splits"]:
            raise SystemExit(f"{args.results} has no split {split!r}: {list(new['splits'])}")
    for split in splits:
        res = new["splits"][split]
        for name, data, path in (
            (args.dr, old, args.dr_from),
            (args.oracle, src, args.oracle_from),
        ):
            if name not in data["splits"].get(split, {}):
                raise SystemExit(f"{path or args.results} has no line {name!r} on split {split!r}")
        dr, oracle = old["splits"][split][args.dr], src["splits"][split][args.oracle]
        now = sorted({s for r in res.values() for s in _seeds(r)})
        seed_note = []
        for ref, name in ((dr, "DR"), (oracle, "oracle")):
            if (was := _seeds(ref)) == now:
                continue
            if not args.other_seeds:
                raise SystemExit(
                    f"the {name} line was trained with seeds {was}, the new lines with "
                    f"{now}: rerun meta_rl.py with the {name} line's --seeds"
                )
            seed_note.append(f"the {name} line's runs are seeds {was}, the lines' {now}")
        if args.oracle_from:
            res = {key: oracle, **res}
        lo, hi = reference_level(dr), reference_level(oracle)
        ks = len(oracle["per_k"])
        lines += [
            f"## split `{split}` (DR line {lo:.3f}, oracle line {hi:.3f})",
            "",
            *([f"Training seeds differ: {'; '.join(seed_note)}.", ""] if seed_note else []),
            "| line | "
            + " | ".join(f"success k={k}" for k in range(ks))
            + " | closure k=3 (success) | closure k=3 (return) |",
            "|---" * (ks + 3) + "|",
        ]
        dr_key = f"{args.dr} from {args.dr_from}" if args.dr in res and not own else args.dr
        rows = {dr_key: dr, **{n: r for n, r in res.items() if not (own and n == args.dr)}}
        for name, r in rows.items():
            gap, gap_r = (gap_closure(r, dr, oracle, m) for m in ("success", "return"))
            cells = " | ".join(
                f"{row['success']:.3f} ± {row['success_ci95']:.3f}" for row in r["per_k"]
            )
            lines.append(f"| {name} | {cells} | {gap:.2f} | {gap_r:.2f} |")
        lines.append("")
        plot_args = argparse.Namespace(dr=dr_key, oracle=key, task=new["task"])
        _plot(rows, split, plot_args, out / f"success_vs_k_{split}.png", lo, hi)
    (out / "closure.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
