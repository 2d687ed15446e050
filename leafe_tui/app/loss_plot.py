"""A loss curve drawn in the terminal: train loss per step as a braille line, eval losses as marks.

A braille character holds 2×4 dots, so a plot of 60×10 cells has 120×40 points: enough to see a
loss fall without any graphics protocol. The widget only keeps points; the training screen reads
the metrics that arrived since its last read (by metric id) and appends them, so following a job
costs one small query a second however long the job runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.widget import Widget

BRAILLE = 0x2800
# the bit of each dot: DOTS[row within the cell][column within the cell]
DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
TRAIN_STYLE = "green"
EVAL_STYLE = "bold yellow"
EVAL_MARK = "◆"
Point = tuple[int, float]  # (step, loss)


def _label(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.3g}"


def _scale(value: float, low: float, high: float, size: int) -> int:
    """Position of ``value`` on ``size`` dots (0 for ``low``, size-1 for ``high``)."""
    if size <= 1 or high <= low:
        return 0 if size <= 1 else size // 2
    return max(0, min(size - 1, round((value - low) / (high - low) * (size - 1))))


def _line(x0: int, y0: int, x1: int, y1: int) -> Iterable[tuple[int, int]]:
    """The dots between two points, so a steep drop reads as a line and not as two dots."""
    n = max(abs(x1 - x0), abs(y1 - y0), 1)
    for i in range(n + 1):
        yield round(x0 + (x1 - x0) * i / n), round(y0 + (y1 - y0) * i / n)


def plot_lines(train: list[Point], evals: list[Point], width: int, height: int) -> list[Text]:
    """The plot as ``height`` lines of at most ``width`` cells: a header, the canvas with the loss
    axis on the left, the step axis below."""
    if not train and not evals:
        return [Text("no loss yet: the curve starts with the first optimiser step", style="dim")]
    points = train + evals
    steps = [s for s, _ in points]
    losses = [v for _, v in points]
    first, last = min(steps), max(steps)
    low, high = min(losses), max(losses)
    header = Text()
    if train:
        header.append("train ", style=TRAIN_STYLE)
        header.append(f"{_label(train[0][1])} → {_label(train[-1][1])}")
    if evals:
        header.append("   eval " + EVAL_MARK + " ", style=EVAL_STYLE)
        header.append(f"{_label(evals[-1][1])}")
        header.append(f" (best {_label(min(v for _, v in evals))})", style="dim")
    header.append(f"   steps {first}–{last}", style="dim")
    labels = [_label(high), _label(low)]
    pad = max(len(s) for s in labels)
    columns = max(4, width - pad - 1)
    rows = max(2, height - 3)
    dots_x, dots_y = 2 * columns, 4 * rows
    cells = [[0] * columns for _ in range(rows)]

    def xy(point: Point) -> tuple[int, int]:
        step, loss = point
        return _scale(step, first, last, dots_x), dots_y - 1 - _scale(loss, low, high, dots_y)

    previous: tuple[int, int] | None = None
    for point in train:
        x, y = xy(point)
        for px, py in _line(*(previous or (x, y)), x, y):
            cells[py // 4][px // 2] |= DOTS[py % 4][px % 2]
        previous = (x, y)
    marks = {(y // 4, x // 2) for x, y in map(xy, evals)}

    out = [header]
    for row in range(rows):
        label = labels[0] if row == 0 else labels[1] if row == rows - 1 else ""
        line = Text(label.rjust(pad), style="dim")
        line.append("┤" if label else "│", style="dim")
        for column in range(columns):
            if (row, column) in marks:
                line.append(EVAL_MARK, style=EVAL_STYLE)
            else:
                bits = cells[row][column]
                line.append(chr(BRAILLE + bits) if bits else " ", style=TRAIN_STYLE)
        out.append(line)
    out.append(Text(" " * pad + "└" + "─" * columns, style="dim"))
    left, right = f"step {first}", f"{last}"
    gap = max(1, columns + 1 - len(left) - len(right))
    out.append(Text(" " * pad + left + " " * gap + right, style="dim"))
    return out


class LossPlot(Widget):
    """The loss curve of one job; ``extend`` adds the metric rows read since ``last_id``."""

    DEFAULT_CSS = """
    LossPlot {
        height: 1fr;
        min-height: 7;
        padding: 0 1;
    }
    """

    HELP = """
## Loss curve
The selected job's training loss per optimiser step (green line) and its eval loss on the held-out
examples (yellow ◆), on a common scale: the left axis shows the highest and lowest loss, the bottom
axis the steps. It grows while the job runs, in whatever process trains it.
"""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.job_id: int | None = None
        self.train: list[Point] = []
        self.evals: list[Point] = []
        self.last_id = 0

    def reset(self, job_id: int | None) -> None:
        """Follow another job (or none): the points are read again from its first metric."""
        self.job_id = job_id
        self.train, self.evals, self.last_id = [], [], 0
        self.refresh()

    def extend(self, metrics: list[dict[str, Any]]) -> int:
        """Add metric rows (``store.metrics`` order); returns how many points were added.

        A resumed job forgets the metrics past its checkpoint and logs those steps again, so a
        train step at or before the last one replaces the tail of the curve instead of doubling it.
        """
        for row in metrics:
            self.last_id = max(self.last_id, int(row["id"]))
            points = self.train if row["kind"] == "train" else self.evals
            step = int(row["step"])
            while points and points[-1][0] >= step:
                points.pop()
            points.append((step, float(row["loss"])))
        if metrics:
            self.refresh()
        return len(metrics)

    def render(self) -> Text:
        if self.job_id is None:
            return Text("no job selected", style="dim")
        lines = plot_lines(self.train, self.evals, self.size.width, self.size.height)
        return Text("\n").join(lines)
