"""How a table's cells are written out: plain/GitHub text (tabulate), booktabs LaTeX and
JSON-ready values, and the cost profile's cells and conditions (no torch).
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd
from tabulate import tabulate

from fusion_lab.analysis.aggregate import BATCH_MARK

WITHIN, FEW, BASE, UNKNOWN = "≈", "†", "(base)", "?"  # the table's marks


def plain_value(v: Any) -> Any:
    """A number as JSON can hold it: numpy scalars unwrapped, NaN and infinities as None."""
    if isinstance(v, float) and not math.isfinite(v):  # NaN, or the binomial interval's df
        return None
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return v


def json_default(v: Any) -> Any:
    return plain_value(v) if hasattr(v, "item") else str(v)


def tabulate_text(body: pd.DataFrame, fmt: str) -> str:
    return tabulate(body.values.tolist(), headers=list(body.columns),
                    tablefmt="github" if fmt == "github" else "simple",
                    disable_numparse=True)


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}"}
LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", WITHIN: r"$\approx$", FEW: r"$^\dagger$",
                 "‡": r"$^\ddagger$", "≥": r"$\geq$", "×": r"$\times$", "·": r"$\cdot$",
                 BATCH_MARK: r"\S{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters and spell our symbols in math mode."""
    out = "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    for sym, tex in LATEX_SYMBOLS.items():
        out = out.replace(sym, tex)
    return out


def latex_cell(text: Any) -> str:
    """A body cell: "-" (no value) becomes an en dash "--", and a minus sign before a number
    a math minus "$-$", so that neither is a hyphen and the two never look alike."""
    text = str(text)
    if text.strip() == "-":
        return "--"
    return re.sub(r"(?<![\w.])-(?=\d)", r"$-$", latex_escape(text))


def latex_table(body: pd.DataFrame, heading: str, notes: list[str]) -> str:
    """A booktabs tabular; the heading and the notes follow as LaTeX comments."""
    align = "".join("l" if i == 0 or c in ("Backbone", "Dataset") else "r"
                    for i, c in enumerate(body.columns))
    lines = [f"% {heading}", f"\\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in body.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_cell(v) for v in row) + r" \\" for row in body.values.tolist()]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {n}" for n in notes]
    return "\n".join(lines)


def cost_conditions(cost: dict[str, Any]) -> str:
    """Where and how a cost profile was measured, in one line (an older cost.json: what it
    holds, without rounds and load)."""
    c = cost.get("conditions") or {}
    size = cost["image_size"]
    text = f"{cost['device']}, {size}x{size}, batch {cost['batch_size']}"
    if c:
        start, end = c["load_avg_start"][0], c["load_avg_end"][0]
        text += (f"; {c['repeats']} round-robin rounds after {c['warmup']} warm-up; "
                 f"load average {start:.2f} -> {end:.2f} (1 min) on {c['cpus']} CPUs")
    return text


def _ips(v: float) -> str:
    """Images/s to three significant digits, whole numbers from 100 up (no exponent)."""
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def ips_cell(row: dict[str, Any], kind: str, times: str = "x") -> str:
    """Throughput ``median [min-max] (xratio [min-max])`` of ``kind`` (train or infer);
    an older cost.json has no ranges, and only the medians are shown."""
    ips, ratio = row.get(f"{kind}_ips"), row.get(f"{kind}_ratio")
    if ips is None:
        return "-"
    lo_hi, r_lo_hi = row.get(f"{kind}_ips_range"), row.get(f"{kind}_ratio_range")
    text = _ips(ips) + (f" [{_ips(lo_hi[0])}-{_ips(lo_hi[1])}]" if lo_hi else "")
    if ratio is not None:
        text += f" ({times}{ratio:.2f}"
        text += f" [{r_lo_hi[0]:.2f}-{r_lo_hi[1]:.2f}])" if r_lo_hi else ")"
    return text
