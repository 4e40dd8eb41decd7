"""The one check runner shared by audit_data and preflight.

A check is a function check(context, report) that adds Problems and returns None when it judged, or a
string saying why it does not apply. The runner records which it was, and tells a crash (an exception
from the check or the learner's code inside it: it proved nothing) apart from "does not apply".
"""
import time


class NotApplicable(Exception):
    """Raised inside a check that finds, midway, that it cannot judge this input; the message says why."""


def first_line(e):
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def run_check(name, check, context, report, reraise=(), explain=None):
    """Run check(context, report), filing its outcome in report.passed / skipped / crashed.

    reraise: exception types that are the caller's bad input (raised, not filed). explain(name, e,
    report): a chance to turn a known exception into a Problem; returns True when it did.
    """
    start = time.perf_counter()
    before = len(report.problems)
    try:
        reason = check(context, report)
        if reason:
            report.skipped.append((name, reason))
        elif len(report.problems) == before:
            report.passed.append(name)
    except reraise:
        raise
    except NotApplicable as e:
        report.skipped.append((name, str(e)))
    except Exception as e:
        if explain is None or not explain(name, e, report):
            report.crashed.append((name, f"{type(e).__name__}: {first_line(e)}"))
    finally:
        report.details.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 3)
