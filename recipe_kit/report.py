"""What a check says: a Report of Problems, readable in a terminal and as a checklist in Jupyter.

Both audit_data (stage 1) and preflight (stage 2) return a Report. Computation lives in the check
modules; this file only holds and renders results, so tests never need a display.
"""
import html
from dataclasses import dataclass, field


class ChecksFailed(AssertionError):
    """Raised by Report.raise_for_errors(): for scripts and CI, where a failed check must stop the run."""


@dataclass(frozen=True)
class Problem:
    check: str            # name of the check that found it, e.g. "loss_at_init"
    severity: str         # "error" (training will be wrong) or "warning" (look at it)
    message: str          # what was seen, in numbers
    hint: str             # likely causes, and which recipe stage to return to
    where: str = ""       # the culprit when known: a module/parameter path, sample indices...
    details: dict = field(default_factory=dict, compare=False, repr=False)  # data for notebooks

    def __post_init__(self):
        if self.severity not in ("error", "warning"):
            raise ValueError(f"severity must be 'error' or 'warning', got {self.severity!r}")


@dataclass
class Report:
    title: str
    problems: list = field(default_factory=list)   # [Problem]
    passed: list = field(default_factory=list)     # names of checks that ran and found nothing
    skipped: list = field(default_factory=list)    # [(check name, reason)]: does not apply to this input
    crashed: list = field(default_factory=list)    # [(check name, "ExceptionType: message")]: could not judge
    details: dict = field(default_factory=dict)    # check name -> data worth showing (rankings, stats)
    notes: list = field(default_factory=list)      # [(check name, text)]: worth a look, not a problem

    @property
    def ok(self):
        """True when no problem has severity 'error' and no check crashed (a crashed check proved nothing)."""
        return not self.errors and not self.crashed

    @property
    def errors(self):
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self):
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def checks_run(self):
        return list(self.passed) + sorted({p.check for p in self.problems})

    def add(self, check, severity, message, hint, where="", **details):
        self.problems.append(Problem(check, severity, message, hint, where, details))

    def raise_for_errors(self):
        """Raise ChecksFailed listing the errors, else return self (so it chains in one line)."""
        if not self.ok:
            raise ChecksFailed(str(self))
        return self

    def __str__(self):
        status = "OK" if self.ok else f"{len(self.errors)} ERROR(S)"
        status += f", {len(self.crashed)} CRASHED" if self.crashed else ""
        lines = [f"{self.title}: {status}, {len(self.warnings)} warning(s), {len(self.passed)} passed"]
        for p in sorted(self.problems, key=lambda p: p.severity != "error"):
            mark = "✗" if p.severity == "error" else "!"
            where = f" [{p.where}]" if p.where else ""
            lines.append(f"  {mark} {p.check}{where}: {p.message}")
            lines.append(f"      hint: {p.hint}")
        for name, text in self.notes:
            lines.append(f"  i {name}: {text}")
        for name in self.passed:
            lines.append(f"  ✓ {name}")
        for name, reason in self.skipped:
            lines.append(f"  - {name} skipped: {reason}")
        for name, error in self.crashed:
            lines.append(f"  ✗ {name} crashed: {error}")
        return "\n".join(lines)

    __repr__ = __str__  # what a terminal, a doctest or a notebook's text/plain shows

    def _repr_html_(self):
        e = html.escape
        color = {"error": "#c0392b", "warning": "#b9770e"}
        rows = []
        for p in sorted(self.problems, key=lambda p: p.severity != "error"):
            where = f" <code>{e(p.where)}</code>" if p.where else ""
            rows.append(f"<li style='color:{color[p.severity]}'><b>{'✗' if p.severity == 'error' else '!'} "
                        f"{e(p.check)}</b>{where}: {e(p.message)}<br><span style='color:#555'>"
                        f"hint: {e(p.hint)}</span></li>")
        rows += [f"<li style='color:#555'>i {e(n)}: {e(t)}</li>" for n, t in self.notes]
        rows += [f"<li style='color:#1e8449'>✓ {e(name)}</li>" for name in self.passed]
        rows += [f"<li style='color:#777'>– {e(n)} skipped: {e(r)}</li>" for n, r in self.skipped]
        rows += [f"<li style='color:#c0392b'>✗ {e(n)} crashed: {e(r)}</li>" for n, r in self.crashed]
        status = "OK" if self.ok else f"{len(self.errors)} error(s)" + (f", {len(self.crashed)} crashed"
                                                                        if self.crashed else "")
        return (f"<div><b>{e(self.title)}</b>: {status}, {len(self.warnings)} warning(s), "
                f"{len(self.passed)} passed<ul style='list-style:none;padding-left:1em'>"
                + "".join(rows) + "</ul></div>")
