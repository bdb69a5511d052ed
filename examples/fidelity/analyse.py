"""Print the fidelity study's tables (docs/fidelity.md) from its run directories.

    python examples/fidelity/analyse.py runs/fidelity-strategy runs/fidelity-layout runs/fidelity-order \
        runs/fidelity-exact

The numbers are those of ``arnas_ray.results.claim_table`` and ``gamma_table`` on the combined
tables, which the ablations notebook shows for the same run directories (RUN_DIR and
MORE_RUN_DIRS). Markdown on stdout.
"""

from __future__ import annotations

import argparse
import math
import sys

import pandas as pd

from arnas_ray.results import claim_table, combine_runs, gamma_table, load_run


def _f(x: object, digits: int = 3) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _runs_section(runs: list) -> list[str]:
    out = ["| run | search trials | retrained | stage wall (s) |", "|---|---:|---:|---:|"]
    for r in runs:
        t = r.table
        n = {s: int(((t["stage"] == s) & (t["status"] == "finished")).sum()) for s in ("search", "retrain")}
        wall = sum((r.summary.get("stage_wall_s") or {}).values())
        out.append(f"| {r.spec.get('name')} | {n['search']} | {n['retrain']} | {_f(float(wall), 0)} |")
    return out


def _gamma_section(table: pd.DataFrame) -> list[str]:
    g = gamma_table(table)
    out = ["| run | strategy | order | trials | supernet natural (mean, min-max) | supernet PGD | gamma mean "
           "| steps at gamma 0 | steps at gamma 1 | cos(u_nat, u_adv) |",
           "|---|---|---|---:|---|---|---:|---:|---:|---:|"]
    for (run, strategy, order), row in g.iterrows():
        out.append(f"| {run} | {strategy} | {order} | {int(row[('trials', '')])} "
                   f"| {_f(row[('nat_acc', 'mean')])} ({_f(row[('nat_acc', 'min')])}-{_f(row[('nat_acc', 'max')])}) "
                   f"| {_f(row[('pgd_acc', 'mean')])} | {_f(row[('gamma_mean', 'mean')], 4)} "
                   f"| {_f(row[('gamma_frac_0', 'mean')], 2)} | {_f(row[('gamma_frac_1', 'mean')], 2)} "
                   f"| {_f(row[('cos_mean', 'mean')])} |")
    return out


def _claims_section(table: pd.DataFrame) -> list[str]:
    c = claim_table(table)
    out = ["| claim | metric | level vs reference | n | mean level | mean reference | difference [95% CI] | p "
           "| answer |", "|---|---|---|---|---:|---:|---|---:|---|"]
    for _, r in c.iterrows():
        n = f"{int(r['n_level'])} pairs" if r["paired"] else f"{int(r['n_level'])} vs {int(r['n_reference'])}"
        out.append(f"| ({r['claim']}) | {r['metric']} | {r['level']} vs {r['reference']} | {n} "
                   f"| {_f(r['mean_level'])} | {_f(r['mean_reference'])} "
                   f"| {_f(r['diff'])} [{_f(r['ci_low'])}, {_f(r['ci_high'])}] | {_f(r['p'], 3)} | {r['answer']} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+")
    a = p.parse_args(argv)
    runs = [load_run(d) for d in a.run_dirs]
    table = combine_runs({r.spec.get("name") or str(r.run_dir): r.table for r in runs})
    lines = ["### Runs", "", *_runs_section(runs), "", "### Search trials: supernets and MGDA's gamma", "",
             *_gamma_section(table), "", "### Claims (retrained networks)", "", *_claims_section(table)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
