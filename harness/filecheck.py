"""FileCheck blocks: LLVM syntax through the ``filecheck`` package, with our own diagnostics.

The package (1.0.x) parses and matches CHECK, -NEXT, -SAME, -NOT, -DAG, -LABEL, -COUNT-n,
-EMPTY, ``{{regex}}`` and ``[[VAR]]`` / ``[[VAR:regex]]``. We drive its ``Parser`` and
``Matcher`` in-process step by step (the same loop as ``Matcher.run``) so that a failure
gives us the failing check op and the matcher state, and print:

- the failing check line with its *YAML* line number;
- the input near the best partial match (or the scan position), with true line numbers;
- the values of the variables captured so far.

Prefixes per cell: ``CHECK``, ``CHECK-<DEVICE>``, ``CHECK-<BACKEND>`` and
``CHECK-<DEVICE>-<BACKEND>`` (e.g. CHECK-CUDA, CHECK-INDUCTOR, CHECK-CUDA-INDUCTOR;
aot_eager is AOT-EAGER; the max-autotune backend also answers to INDUCTOR and
MAX-AUTOTUNE). Variables DEVICE, DTYPE and BACKEND are predefined.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
from typing import Optional, Sequence

from filecheck.error import CheckError, ErrorOnMatch, ParseError
from filecheck.finput import FInput
from filecheck.matcher import Matcher
from filecheck.compiler import compile_uops
from filecheck.ops import CheckOp, Literal
from filecheck.options import Options
from filecheck.parser import Parser, pattern_for_opts
from filecheck.preprocess import Preprocessor

from .core.backends import backend as backend_record

CONTEXT_LINES = 3
MIN_PARTIAL = 4  # literal characters a partial match needs to be worth showing


def prefixes_for(backend: str, device: str, bases: Sequence[str] = ("CHECK",)) -> list[str]:
    """The prefixes a cell answers to: each base (``CHECK``, or a block's own ``prefixes:``)
    alone and with the cell's device, backend, or both."""
    device_part = device.upper()
    out = []
    for base in bases:
        out += [base, f"{base}-{device_part}"]
        for b in backend_record(backend).filecheck_names:
            out += [f"{base}-{b}", f"{base}-{device_part}-{b}"]
    return out


DIRECTIVE_SUFFIXES = ("NEXT", "SAME", "NOT", "DAG", "LABEL", "EMPTY")
_DIRECTIVE = re.compile(r"(?<![\w-])([A-Za-z][\w-]*?)(?:-(NEXT|SAME|NOT|DAG|LABEL|EMPTY|COUNT-\d+))?:")
_LEADING_WORD = re.compile(r"^\s*(?:(?://|[#;])\s*)?([A-Za-z][\w-]*)\s*:")


def every_prefix(backends: list[str], devices: list[str], bases: Sequence[str] = ("CHECK",)) -> list[str]:
    """The prefixes some cell answers to (a block may hold lines for other cells)."""
    return sorted({p for b in backends for d in devices for p in prefixes_for(b, d, bases)})


def _near_check(word: str) -> bool:
    """Whether ``word`` looks like a misspelled CHECK directive: its first part within one edit
    (or one swap of neighbours) of CHECK, in any case, or CHECK glued on with '_'."""
    head = re.split(r"[-_]", word.upper(), maxsplit=1)[0]
    if head == "CHECK":
        return True
    if abs(len(head) - 5) > 1:
        return False
    a, b = head, "CHECK"
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):  # optimal string alignment distance
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1] <= 1


def directive_problems(check_text: str, prefixes: list[str]) -> tuple[bool, list[tuple[int, str]]]:
    """(whether any line holds a directive of ``prefixes``, [(0-based line, word)] of lines that
    start with what looks like a directive but is none: ``CHEKC:``, ``CHECK_NOT:``,
    ``CHECK-NXT:``, ``check:``). Either would make the block silently check less."""
    known = set(prefixes)
    found = False
    problems = []
    for index, line in enumerate(check_text.split("\n")):
        if any(m.group(1) in known for m in _DIRECTIVE.finditer(line)):
            found = True
            continue
        leading = _LEADING_WORD.match(line)
        if leading and _near_check(leading.group(1)):
            problems.append((index, leading.group(1)))
    return found, problems


# Names Inductor makes up, which change with any unrelated edit: kernels and buffers. Written
# checks capture each at its first use and refer back to it (lit's update_test_checks.py does
# the same for SSA values).
_GENERATED_NAMES = (
    ("KERNEL", re.compile(r"\b(?:cpp|triton)_\w*fused\w*"), r"[a-z]+_[a-zA-Z0-9_]*fused[a-zA-Z0-9_]*"),
    ("BUF", re.compile(r"\bbuf\d+\b"), r"buf[0-9]+"),
)
MAX_GENERATED_LINES = 200


def generated_checks(target: str, text: str, prefix: str, source: str) -> str:
    """CHECK lines for ``text`` (a cell's ``target``), as ``--update-checks`` writes them: for
    output code the lines of its ``call`` function, else every non-blank line (at most
    MAX_GENERATED_LINES); kernel and buffer names become FileCheck variables."""
    raw_lines = text.splitlines()
    lines = [line.strip() for line in raw_lines]
    starts = [i for i, line in enumerate(lines) if line.startswith("def call(")]  # call(args) or a runner's call(self, args)
    if target == "output_code" and starts:
        start = starts[0]
        indent = len(raw_lines[start]) - len(raw_lines[start].lstrip())
        body = [lines[start]]
        for raw in raw_lines[start + 1:]:
            if raw.strip() and len(raw) - len(raw.lstrip()) <= indent:
                break  # the function ended
            body.append(raw.strip())
        lines = body
    # FileCheck reads [[ ]] and {{ }} as variables and regexes: such lines (rare in code) are left out.
    lines = [line for line in lines if line and not line.startswith("#") and not any(m in line for m in ("[[", "]]", "{{", "}}"))]
    lines = lines[:MAX_GENERATED_LINES]
    defined: dict[str, str] = {}
    out = [f"; written by --update-checks from the {target} of {source}; edit freely, rerun it to refresh"]
    for index, line in enumerate(lines):
        literal = line
        for kind, pattern, regex in _GENERATED_NAMES:
            def name_of(match: re.Match) -> str:
                name = match.group(0)
                if name not in defined:
                    defined[name] = f"{kind}{sum(1 for v in defined.values() if v.startswith(kind))}"
                    return f"[[{defined[name]}:{regex}]]"
                return f"[[{defined[name]}]]"
            literal = pattern.sub(name_of, literal)
        directive = "LABEL" if index == 0 and target == "output_code" else ""
        out.append(f"{prefix}{'-' + directive if directive else ''}: {literal}")
    return "\n".join(out) + "\n"


@dataclasses.dataclass(frozen=True)
class FileCheckResult:
    ok: bool
    ran_checks: int
    report: str = ""


def _line_of(content: str, pos: int) -> int:
    return content.count("\n", 0, max(0, min(pos, len(content)))) + 1


def _excerpt(content: str, line: int, column: Optional[int], mark_length: int, note: str) -> list[str]:
    lines = content.split("\n")
    first = max(1, line - CONTEXT_LINES)
    last = min(len(lines), line + CONTEXT_LINES)
    width = len(str(last))
    out = []
    for n in range(first, last + 1):
        marker = ">" if n == line else " "
        out.append(f"  {marker} {str(n).rjust(width)} | {lines[n - 1]}")
        if n == line and column is not None:
            out.append(f"    {' ' * width} | {' ' * column}{'^' * max(1, mark_length)} {note}")
    return out


def run_filecheck(
    check_text: str,
    input_text: str,
    *,
    prefixes: list[str],
    variables: dict[str, str],
    check_path: str,
    first_check_line: int,
    input_label: str,
    input_dump: Optional[str] = None,
) -> FileCheckResult:
    """Match ``check_text`` against ``input_text``. ``first_check_line`` is the YAML line of the
    check text's first line, so that errors point into the suite file."""

    def yaml_line(check_line: int) -> int:
        return first_check_line + check_line - 1

    header = f"FileCheck on {input_label} (prefixes {', '.join(prefixes)})"
    opts = Options(match_filename=check_path, check_prefixes=list(prefixes), variables=dict(variables))
    parser = Parser(opts, io.StringIO(check_text), *pattern_for_opts(opts))
    try:
        ops = tuple(parser)
    except ParseError as exc:
        return FileCheckResult(False, 0, f"{header}:\n{check_path}:{yaml_line(exc.line_no)}: bad check line: {exc.message}\n  {exc.offending_line.rstrip()}")
    if not ops:
        return FileCheckResult(True, 0)
    if not input_text.strip():
        return FileCheckResult(
            False, len(ops),
            f"{header}:\n{check_path}:{yaml_line(ops[0].source_line)}: {input_label} is empty "
            "(this backend produced none; output code and kernels exist only for inductor cells)",
        )
    finput = FInput(input_label, FInput.canonicalize_line_ends(input_text))
    matcher = Matcher(opts, finput, parser)
    steps = {
        "DAG": matcher.check_dag,
        "COUNT": matcher.check_count,
        "NOT": matcher.enqueue_not,
        "EMPTY": matcher.check_empty,
        "NEXT": matcher.match_immediately,
        "SAME": matcher.match_eventually,
        "LABEL": matcher.check_label,
        "CHECK": matcher.match_eventually,
    }
    chatter = io.StringIO()  # the package prints debug lines and warnings; keep them out of pytest's output
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            Preprocessor(opts, finput, ops).run()
            for op in ops:
                matcher._pre_check(op)
                steps[op.name](op)
                matcher._post_check(op)
            finput.range.start = max(0, len(finput.content) - 1)
            matcher._post_check(CheckOp("SYNTH", "NOP", "", -1, []))
    except CheckError as exc:
        return FileCheckResult(False, len(ops), _no_match_report(header, exc, matcher, finput, yaml_line, check_path, input_label, input_dump))
    except ErrorOnMatch as exc:
        return FileCheckResult(False, len(ops), _excluded_report(header, exc, matcher, finput, yaml_line, check_path, input_label, input_dump))
    return FileCheckResult(True, len(ops))


def _variables_line(matcher: Matcher) -> str:
    values = matcher.ctx.live_variables
    return "  variables: " + (", ".join(f"{k} = {v!r}" for k, v in values.items()) or "(none)")


def _tail(input_label: str, input_dump: Optional[str]) -> list[str]:
    return [f"  the whole {input_label}: {input_dump}"] if input_dump else []


def _best_partial_match(op: CheckOp, matcher: Matcher, finput: FInput) -> Optional[tuple[int, int]]:
    """(start, end) of the longest prefix of the check pattern found after the scan position.

    Tries the check's pieces from longest to shortest, cutting the last literal one
    character at a time; needs at least MIN_PARTIAL characters of literal text so that a
    lone ``{{.*}}`` does not count. (The package's own search skips captures and halves
    literals, so it often finds nothing.)
    """
    uops = list(op.uops)
    for count in range(len(uops), 0, -1):
        head, last = uops[: count - 1], uops[count - 1]
        cuts = [Literal(last.content[:n]) for n in range(len(last.content), 0, -1)] if isinstance(last, Literal) else [last]
        for piece in cuts:
            candidate = head + [piece]
            literal_chars = sum(len(u.content) for u in candidate if isinstance(u, Literal))
            if literal_chars < MIN_PARTIAL:
                break
            faux = CheckOp(op.prefix, "CHECK", op.arg, op.source_line, candidate)
            try:
                pattern, _ = compile_uops(faux, matcher.ctx.live_variables, matcher.opts)
            except CheckError:
                break
            found = finput.find(pattern)
            if found is not None:
                start = found.start()
                while start < found.end() and finput.content[start] == "\n":
                    start += 1
                return start, found.end()
    return None


def _no_match_report(header, exc, matcher, finput, yaml_line, check_path, input_label, input_dump) -> str:
    op: CheckOp = exc.op
    content = finput.content
    scan_pos = finput.range.start
    lines = [
        f"{header}:",
        f"{check_path}:{yaml_line(op.source_line)}: {op.check_name}: {op.arg}",
        f"  error: {exc.message}",
        _variables_line(matcher),
        f"  scanning {input_label} from line {_line_of(content, scan_pos)}",
    ]
    partial = _best_partial_match(op, matcher, finput)
    if partial is not None:
        start, end = partial
        line = _line_of(content, start)
        column = start - (content.rfind("\n", 0, start) + 1)
        lines.append(f"  best partial match, {input_label} line {line}:")
        lines += _excerpt(content, line, column, end - start, f"matches the start of the check: {content[start:end]!r}")
    else:
        line = _line_of(content, scan_pos)
        lines.append(f"  no partial match; {input_label} around the scan position, line {line}:")
        lines += _excerpt(content, line, None, 0, "")
    return "\n".join(lines + _tail(input_label, input_dump))


def _excluded_report(header, exc, matcher, finput, yaml_line, check_path, input_label, input_dump) -> str:
    op: CheckOp = exc.op
    content = finput.content
    start = exc.match.start()
    line = _line_of(content, start)
    column = start - (content.rfind("\n", 0, start) + 1)
    lines = [
        f"{header}:",
        f"{check_path}:{yaml_line(op.source_line)}: {op.check_name}: {op.arg}",
        f"  error: {exc.message}",
        _variables_line(matcher),
        f"  found at {input_label} line {line}:",
    ]
    lines += _excerpt(content, line, column, exc.match.end() - start, "excluded text")
    return "\n".join(lines + _tail(input_label, input_dump))
