"""Argo's two small expression languages, evaluated without ``eval``.

- ``depends`` (docs/enhanced-depends-logic.md): operands ``task`` or ``task.Result`` with
  Result in Succeeded, Failed, Errored, Skipped, Omitted, Daemoned; ``&&``, ``||``, ``!`` and
  parentheses; a bare ``task`` means ``(task.Succeeded || task.Skipped || task.Daemoned)``.
- ``when`` (docs/walk-through/conditionals.md), after ``{{...}}`` substitution: quoted
  strings, bare words (strings), numbers, ``true``/``false``, ``==``, ``!=``, ``<``,
  ``<=``, ``>``, ``>=``, ``&&``, ``||``, ``!`` and parentheses -- the part of govaluate/expr
  that conditions are written in. Anything else (functions, regex ``=~``, ``in``) is a
  one-line error, not a guess.

Written here because both are tiny and a general expression library would accept far more
than Argo does (and run code).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from taskyard.errors import RunError

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'[^']*'|\"[^\"]*\")|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<op>&&|\|\||==|!=|<=|>=|<|>|!|\(|\))|(?P<word>[A-Za-z0-9_][\w.-]*))"
)
RESULTS = ("Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned")


def _tokens(expr: str, where: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise RunError(f"{where}: cannot read {expr[pos:]!r} in {expr!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent: or := and ('||' and)*; and := not ('&&' not)*; not := '!' not | cmp."""

    def __init__(
        self, tokens: list[tuple[str, str]], atom: Callable[[str, str], object], where: str
    ):
        self.t, self.i, self.atom, self.where = tokens, 0, atom, where

    def peek(self) -> str:
        return self.t[self.i][1] if self.i < len(self.t) else ""

    def take(self) -> tuple[str, str]:
        if self.i >= len(self.t):
            raise RunError(f"{self.where}: the expression ends too early")
        self.i += 1
        return self.t[self.i - 1]

    def parse(self) -> object:
        value = self.or_()
        if self.i != len(self.t):
            raise RunError(f"{self.where}: unexpected {self.peek()!r}")
        return value

    def or_(self) -> object:
        value = self.and_()
        while self.peek() == "||":
            self.take()
            right = self.and_()
            value = bool(value) or bool(right)
        return value

    def and_(self) -> object:
        value = self.not_()
        while self.peek() == "&&":
            self.take()
            right = self.not_()
            value = bool(value) and bool(right)
        return value

    def not_(self) -> object:
        if self.peek() == "!":
            self.take()
            return not bool(self.not_())
        return self.cmp()

    def cmp(self) -> object:
        left = self.primary()
        op = self.peek()
        if op in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            right = self.primary()
            return _compare(left, op, right, self.where)
        return left

    def primary(self) -> object:
        kind, value = self.take()
        if value == "(" and kind == "op":
            inner = self.or_()
            if self.take()[1] != ")":
                raise RunError(f"{self.where}: a parenthesis is not closed")
            return inner
        if kind == "op":
            raise RunError(f"{self.where}: unexpected {value!r}")
        return self.atom(kind, value)


def _compare(left: object, op: str, right: object, where: str) -> bool:
    if op in ("==", "!="):
        same = str(left) == str(right) if type(left) is not type(right) else left == right
        return same if op == "==" else not same
    try:
        a, b = float(left), float(right)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RunError(f"{where}: {op} compares numbers, got {left!r} and {right!r}") from None
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def evaluate_when(expr: str, where: str) -> bool:
    def atom(kind: str, value: str) -> object:
        if kind == "str":
            return value[1:-1]
        if kind == "num":
            return float(value)
        if value in ("true", "false"):
            return value == "true"
        # A bare word is a string, so `{{...}} == heads` needs no quotes (workflow/controller
        # steps.go turns govaluate's variable tokens into strings).
        return value

    return bool(_Parser(_tokens(expr, where), atom, where).parse())


def depends_tasks(expr: str, where: str) -> set[str]:
    """The task names a ``depends`` expression reads."""
    out = set()
    for kind, value in _tokens(expr, where):
        if kind in ("word", "num"):
            out.add(_operand(value, where)[0])
        elif kind == "str":
            raise RunError(f"{where}: depends takes task names, not strings")
    return out


def _operand(value: str, where: str) -> tuple[str, str | None]:
    name, _, result = value.rpartition(".")
    if name and result in RESULTS:
        return name, result
    if name and result in ("AnySucceeded", "AllFailed"):
        raise RunError(f"{where}: .{result} (withItems fan-out) is not supported by taskyard run")
    return value, None


def evaluate_depends(expr: str, states: Mapping[str, str], where: str) -> bool:
    """``states``: task -> one of RESULTS (every task the expression names must be there)."""

    def atom(kind: str, value: str) -> object:
        if kind == "str":
            raise RunError(f"{where}: depends takes task names, not strings")
        name, result = _operand(value, where)
        if name not in states:
            raise RunError(f"{where}: depends names unknown task {name!r}")
        if result is None:
            return states[name] in ("Succeeded", "Skipped", "Daemoned")
        return states[name] == result

    return bool(_Parser(_tokens(expr, where), atom, where).parse())
