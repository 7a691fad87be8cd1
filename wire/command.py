"""The transformation template: a payload command built per argument, never by pasting text.

A task's ``transformation`` is a command line with placeholders: ``{inputs}``,
``{outputs}`` (one argument per file), ``{output}`` (the first output),
``{job_id}`` and ``{attempt}``. It is split into argv with ``shlex`` FIRST, and
only then are placeholders replaced, argument by argument, in a single pass (a
value is never scanned again, so a file name containing ``{output}`` stays as it
is). The command then runs without a shell. So quotes in the template cannot
capture a file name, and a name with ``;``, ``$()`` or backticks is one inert
argument.

The rules, checked at submit time (``scheduler/task.py``) and again by the pilot:

- ``{inputs}`` and ``{outputs}`` must each be a whole argument;
- ``{output}``, ``{job_id}`` and ``{attempt}`` may also sit inside a larger argument
  (``--out={output}``, ``{job_id}.{attempt}``) when the rest of it is plain text
  (letters, digits and ``._,:=@%+/-``);
- any other argument holding a placeholder (``sh -c 'cat {inputs} > {output}'``,
  ``python -c 'open("{output}")'``) is a script, and is refused: a script reads
  the environment variables ``DAWMS_INPUTS`` and ``DAWMS_OUTPUTS`` (names
  separated by spaces; names never contain one) and ``DAWMS_OUTPUT``, which the
  pilot sets for every payload (``sh -c 'cat $DAWMS_INPUTS > "$DAWMS_OUTPUT"'``).

Other braces (``awk '{print $1}'``) are kept as they are; ``{word}`` with an
unknown word is refused, since it is most likely a typo. Standard library only:
the pilot and the server's task validator (``scheduler/task.py``) share this
module, which is why it lives in the wire, the one package both ends import.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

PLACEHOLDERS = ("inputs", "outputs", "output", "job_id", "attempt")
MULTI = frozenset({"inputs", "outputs"})  # expand to one argument per file
ENV_INPUTS, ENV_OUTPUTS, ENV_OUTPUT = "DAWMS_INPUTS", "DAWMS_OUTPUTS", "DAWMS_OUTPUT"
_KNOWN = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_ANY = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PLAIN = re.compile(r"[A-Za-z0-9._,:=@%+/-]*")


class TemplateError(ValueError):
    """The transformation template cannot be turned into a safe argv."""


def _show(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "...")


def split_template(template: str) -> list[str]:
    """The template's arguments, checked against the rules above; TemplateError lists
    every problem."""
    if not isinstance(template, str):
        raise TemplateError("the transformation must be a string")
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise TemplateError(f"cannot parse the transformation {_show(template)}: {exc}") from None
    if not words:
        raise TemplateError(f"the transformation {_show(template)} is empty")
    problems = []
    if unknown := sorted({m for m in _ANY.findall(template) if m not in PLACEHOLDERS}):
        problems.append(f"unknown placeholders {unknown}; allowed {sorted(PLACEHOLDERS)}")
    for word in words:
        found = _KNOWN.findall(word)
        if not found or _KNOWN.fullmatch(word):
            continue
        if multi := sorted(MULTI.intersection(found)):
            problems.append(
                f"{', '.join('{' + m + '}' for m in multi)} must be a whole argument (it becomes "
                f"one argument per file), not part of {_show(word)}; a script reads "
                f"${ENV_INPUTS} / ${ENV_OUTPUTS} instead")
        elif not _PLAIN.fullmatch(_KNOWN.sub("", word)):
            problems.append(
                f"a placeholder inside {_show(word)} is refused: that argument looks like a "
                f"shell or script string, where a file name would become code; pass files as "
                f"whole arguments, or have the script read ${ENV_INPUTS}, ${ENV_OUTPUTS} and "
                f"${ENV_OUTPUT}")
    if problems:
        raise TemplateError("transformation: " + "; ".join(problems))
    return words


def build_argv(template: str, *, inputs: Sequence[str], outputs: Sequence[str],
               job_id: int | str, attempt: int | str) -> list[str]:
    """The payload's argv: the template split first, then each placeholder replaced in its
    own argument, once."""
    words = split_template(template)
    lists = {"inputs": list(inputs), "outputs": list(outputs),
             "output": list(outputs[:1]), "job_id": [str(job_id)], "attempt": [str(attempt)]}
    argv: list[str] = []
    for word in words:
        whole = _KNOWN.fullmatch(word)
        if whole:
            argv.extend(lists[whole.group(1)])
        else:  # single-valued placeholders inside a plain argument (checked above)
            argv.append(_KNOWN.sub(lambda m: (lists[m.group(1)] or [""])[0], word))
    if not argv:
        raise TemplateError(f"the transformation {_show(template)} gives an empty command")
    return argv


def payload_env(inputs: Sequence[str], outputs: Sequence[str]) -> dict[str, str]:
    """The variables a script reads its file names from."""
    return {ENV_INPUTS: " ".join(inputs), ENV_OUTPUTS: " ".join(outputs),
            ENV_OUTPUT: outputs[0] if outputs else ""}
