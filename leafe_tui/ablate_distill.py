"""How ``leafe ablate show`` draws a Stage-2 (distill) ablation: one row per arm, then the comparisons."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table

from leafe_tui.cli_common import console, print_json


def show_distill(store: Any, ablation: dict[str, Any], as_json: bool) -> None:
    from trainer.distill_ablation import report_distill

    result = report_distill(store, ablation["id"])
    if as_json:
        print_json(result.as_dict())
        return
    ks = list(ablation["settings"]["ks"])
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title=f"ablation {result.ablation_id} ({result.status}): {len(result.held_out)} held-out task(s), "
        f"n = {ablation['settings']['samples']}",
        title_justify="left",
    )
    for column in ("arm", "examples (cf)", "job", "train loss", "eval", *[f"pass@{k}" for k in ks]):
        table.add_column(column, justify="left" if column == "arm" else "right", no_wrap=True)
    for arm in result.arms:
        examples = f"{arm.examples} ({arm.counterfactual})" if arm.examples is not None else "–"
        loss = f"{arm.train_loss:.3f}" if arm.train_loss is not None else "–"
        passes = [
            f"{100 * arm.mean_pass_at[k]:.1f}%" + ("" if arm.complete else "*")
            if k in arm.mean_pass_at
            else "–"
            for k in ks
        ]
        table.add_row(
            arm.arm, examples, str(arm.job_id or "–"), loss, str(arm.eval_id or "–"), *passes
        )  # fmt: skip
    console.print(table)
    if any(a.mean_pass_at and not a.complete for a in result.arms):
        console.print("[yellow]*[/] incomplete evaluation: `leafe ablate distill --resume` adds the rest")
    names = {a.eval_id: a.arm for a in result.arms}
    for comparison in result.comparisons:
        a, b = names[comparison.a], names[comparison.b]
        for row in comparison.by_k:
            console.print(row.sentence(a, b, comparison.level), highlight=False)
