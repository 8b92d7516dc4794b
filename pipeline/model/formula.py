"""A small parser for lme4-style model formulas.

Nothing here is ever evaluated as Python: the formula text is tokenised and
parsed by hand into terms. Supported:

- ``y ~ a + b``, ``a:b`` (interaction), ``a * b`` (= a + b + a:b),
  ``(a + b)^2`` (all interactions up to order 2), ``- term``, ``0 +``/``- 1``
  (no intercept), ``1 +``;
- ``I(expr)`` with numbers, columns, ``+ - * / ^`` and parentheses, and the
  functions ``log``, ``exp``, ``sqrt``, ``abs``;
- ``pmax(expr, expr)`` as a term (R's elementwise maximum): ``pmax(time - 2, 0)`` is
  the change of slope after a knot at 2 in piecewise-linear time, named as lme4 names
  it; it is computed as ``(a + b + abs(a - b)) / 2``, exact for ``pmax(x - k, 0)``;
- random-effects terms ``(expr | group)`` (correlated, unstructured) and
  ``(expr || group)`` (uncorrelated); a group may be an interaction of columns
  (``school:child``, a person within a school) or a nesting (``school/child``,
  which lme4 expands to ``school`` and ``child:school``). Several grouping
  factors may appear; whether they are nested is decided from the data (see
  ``pipeline.model.design``).

Glossary: a *factor* is one variable or expression (``age1``, ``I(age1^2)``);
a *term* is an interaction of factors (``age1:trt``), the intercept being the
empty term; term labels and their order follow R's ``terms()``: main effects
first, then two-way interactions, each in order of appearance.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import combinations

from pipeline.errors import FormulaError

FUNCTIONS = ("log", "exp", "sqrt", "abs")
PMAX = "pmax"  # pmax(a, b): a term of its own (two arguments), not inside I()
# level-1 error structures, in the convention of R's mmrm package
RESIDUAL_STRUCTURES = ("us", "toep", "toeph", "ar1", "ar1h", "cs", "csh", "diag", "sp_exp")

# ----------------------------------------------------------------- expressions


@dataclass(frozen=True, slots=True)
class Num:
    value: float
    text: str


@dataclass(frozen=True, slots=True)
class Col:
    name: str


@dataclass(frozen=True, slots=True)
class BinOp:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Neg:
    operand: Expr


@dataclass(frozen=True, slots=True)
class Paren:
    inner: Expr


@dataclass(frozen=True, slots=True)
class Call:
    function: str
    argument: Expr


Expr = Num | Col | BinOp | Neg | Paren | Call


def deparse(expr: Expr) -> str:
    """Write an expression the way R deparses it (``age1^2``, ``age - 1``)."""
    if isinstance(expr, Num):
        return expr.text
    if isinstance(expr, Col):
        return expr.name
    if isinstance(expr, Neg):
        return "-" + deparse(expr.operand)
    if isinstance(expr, Paren):
        return "(" + deparse(expr.inner) + ")"
    if isinstance(expr, Call):
        return f"{expr.function}({deparse(expr.argument)})"
    if expr.op == "^":
        return f"{deparse(expr.left)}^{deparse(expr.right)}"
    return f"{deparse(expr.left)} {expr.op} {deparse(expr.right)}"


def columns_of(expr: Expr) -> list[str]:
    """The data columns an expression reads, in order of appearance."""
    if isinstance(expr, Col):
        return [expr.name]
    if isinstance(expr, Num):
        return []
    if isinstance(expr, Neg | Paren):
        return columns_of(expr.operand if isinstance(expr, Neg) else expr.inner)
    if isinstance(expr, Call):
        return columns_of(expr.argument)
    out = columns_of(expr.left)
    out += [c for c in columns_of(expr.right) if c not in out]
    return out


@dataclass(frozen=True, slots=True)
class Factor:
    """One variable of a term: a data column, or an ``I()``/function expression."""

    label: str  # "age1", "I(age1^2)", "log(x)"
    expr: Expr

    @property
    def is_column(self) -> bool:
        return isinstance(self.expr, Col)

    @property
    def columns(self) -> list[str]:
        return columns_of(self.expr)


Term = tuple[Factor, ...]  # () is the intercept


def term_label(term: Term) -> str:
    return ":".join(f.label for f in term) if term else "(Intercept)"


@dataclass(frozen=True, slots=True)
class RandomTerm:
    """``(terms | group)``; ``correlated`` is False for ``||``."""

    intercept: bool
    terms: tuple[Term, ...]
    group: str  # lme4's name of the grouping factor: "id", "school:child"
    correlated: bool
    text: str
    group_columns: tuple[str, ...] = ()  # the data columns whose combination is the group

    @property
    def columns_of_group(self) -> tuple[str, ...]:
        return self.group_columns or (self.group,)


@dataclass(frozen=True, slots=True)
class ResidualTerm:
    """``ar1(wave | id)``: a level-1 error structure over the occasions in ``occasion``."""

    structure: str  # one of RESIDUAL_STRUCTURES
    occasion: str  # the column of occasions (labels, or times for sp_exp)
    group: str  # the person column
    text: str


@dataclass(frozen=True, slots=True)
class Formula:
    text: str
    response: Factor
    intercept: bool
    terms: tuple[Term, ...]  # fixed terms without the intercept, in R's order
    random: tuple[RandomTerm, ...]
    residual: ResidualTerm | None = None

    @property
    def columns(self) -> list[str]:
        """Every data column the formula reads (response, fixed, random, group)."""
        out: list[str] = []

        def add(names: list[str]) -> None:
            out.extend(n for n in names if n not in out)

        add(self.response.columns)
        for term in self.terms:
            for f in term:
                add(f.columns)
        for r in self.random:
            for term in r.terms:
                for f in term:
                    add(f.columns)
            add(list(r.columns_of_group))
        if self.residual is not None:
            add([self.residual.occasion, self.residual.group])
        return out

    @property
    def fixed_labels(self) -> list[str]:
        return (["(Intercept)"] if self.intercept else []) + [term_label(t) for t in self.terms]


# -------------------------------------------------------------------- tokenizer

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_.][A-Za-z0-9_.]*|`[^`]+`)"
    r"|(?P<op>\|\||[~+\-*/:^()|,]))"
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # num, name, op, end
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FormulaError(_point(text, pos, f"unexpected character {text[pos]!r}"))
        kind = m.lastgroup or "op"
        value = m.group(kind)
        start = m.start(kind)
        if kind == "name" and value.startswith("`"):
            value = value[1:-1]
        tokens.append(Token(kind, value, start))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def _point(text: str, pos: int, message: str) -> str:
    return f"formula {text!r}: {message} at position {pos + 1} ({text[:pos]!r} ^ {text[pos:]!r})"


# ----------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.residual: list[ResidualTerm] = []

    # helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> Token:
        if self.tok.text != text:
            found = "the end of the formula" if self.tok.kind == "end" else repr(self.tok.text)
            raise FormulaError(self.error(f"expected {text!r} but found {found}"))
        return self.take()

    def error(self, message: str, pos: int | None = None) -> str:
        return _point(self.text, self.tok.pos if pos is None else pos, message)

    # formula := response ~ rhs
    def formula(self) -> Formula:
        if "~" not in self.text:
            raise FormulaError(
                f"formula {self.text!r}: no '~' between the outcome and the predictors"
            )
        response = self.arith_factor()
        self.expect("~")
        if self.tok.kind == "end":
            raise FormulaError(self.error("nothing after '~'"))
        fixed, random = self.rhs()
        if self.tok.kind != "end":
            if self.tok.text == ")":
                raise FormulaError(self.error("unbalanced parenthesis: ')' without '('"))
            if self.tok.text in ("|", "||"):
                raise FormulaError(
                    self.error("a random-effects term must be in parentheses, e.g. (age1 | id)")
                )
            raise FormulaError(self.error(f"unexpected {self.tok.text!r}"))
        intercept, terms = fixed
        residual = self.residual[0] if self.residual else None
        return Formula(
            self.text, response, intercept, tuple(_order(terms)), tuple(random), residual
        )

    def arith_factor(self) -> Factor:
        start = self.tok.pos
        if self.tok.kind == "name" and self.tok.text == "I" and self.tokens[self.i + 1].text == "(":
            self.take()
            self.take()
            expr = self.arith()
            self.expect(")")
            return Factor(f"I({deparse(expr)})", expr)
        if (
            self.tok.kind == "name"
            and self.tok.text in FUNCTIONS
            and self.tokens[self.i + 1].text == "("
        ):
            fn = self.take().text
            self.take()
            expr = self.arith()
            self.expect(")")
            call = Call(fn, expr)
            return Factor(deparse(call), call)
        if (
            self.tok.kind == "name"
            and self.tok.text == PMAX
            and self.tokens[self.i + 1].text == "("
        ):
            return self.pmax_factor()
        if self.tok.kind == "name":
            name = self.take().text
            if self.tok.text == "(":
                raise FormulaError(
                    self.error(
                        f"function {name}() is not supported; use I(...), pmax(a, b) or one of "
                        + ", ".join(FUNCTIONS),
                        start,
                    )
                )
            return Factor(name, Col(name))
        raise FormulaError(self.error("expected a column name"))

    def pmax_factor(self) -> Factor:
        """``pmax(a, b)``: R's elementwise maximum of two expressions, as one factor."""
        self.take()
        self.take()
        first = self.arith()
        if self.tok.text != ",":
            found = "the end of the formula" if self.tok.kind == "end" else repr(self.tok.text)
            raise FormulaError(
                self.error(
                    f"pmax() takes two arguments, e.g. pmax(time - 2, 0); expected ',' but found {found}"
                )
            )
        self.take()
        second = self.arith()
        self.expect(")")
        larger = BinOp(
            "/",
            Paren(BinOp("+", BinOp("+", first, second), Call("abs", BinOp("-", first, second)))),
            Num(2.0, "2"),
        )
        return Factor(f"{PMAX}({deparse(first)}, {deparse(second)})", larger)

    # rhs := ['+'|'-'] product (('+'|'-') product)*  with random terms allowed at top level
    def rhs(self) -> tuple[tuple[bool, list[Term]], list[RandomTerm]]:
        random: list[RandomTerm] = []
        intercept, terms = self.sum_(random)
        return (intercept, terms), random

    def sum_(self, random: list[RandomTerm] | None) -> tuple[bool, list[Term]]:
        intercept = True
        terms: list[Term] = []
        sign = "+"
        if self.tok.text in "+-" and self.tok.kind == "op":
            sign = self.take().text
        while True:
            part = self.product(random)
            if part is not None:
                part_intercept, part_terms = part
                if sign == "+":
                    if part_intercept is not None:
                        intercept = part_intercept
                    terms += [t for t in part_terms if t not in terms]
                else:
                    if part_intercept is True:
                        intercept = False
                    elif part_intercept is False:
                        intercept = True
                    terms = [t for t in terms if t not in part_terms]
            if self.tok.kind == "op" and self.tok.text in ("+", "-"):
                sign = self.take().text
                continue
            break
        return intercept, terms

    def product(self, random: list[RandomTerm] | None) -> tuple[bool | None, list[Term]] | None:
        left = self.interaction(random)
        while self.tok.kind == "op" and self.tok.text in ("*", "/"):
            op = self.take()
            if op.text == "/":
                raise FormulaError(self.error("nesting with '/' is not supported", op.pos))
            right = self.interaction(random)
            if left is None or right is None or left[0] is not None or right[0] is not None:
                raise FormulaError(self.error("'*' needs terms on both sides", op.pos))
            lt, rt = left[1], right[1]
            cross = [_merge(a, b) for a in lt for b in rt]
            merged = lt + [t for t in rt if t not in lt]
            merged += [t for t in cross if t not in merged]
            if len(merged) > MAX_TERMS:
                raise FormulaError(
                    self.error(f"'*' would create more than {MAX_TERMS} terms", op.pos)
                )
            left = (None, merged)
        return left

    def interaction(self, random: list[RandomTerm] | None) -> tuple[bool | None, list[Term]] | None:
        left = self.power(random)
        while self.tok.kind == "op" and self.tok.text == ":":
            op = self.take()
            right = self.power(random)
            if left is None or right is None or left[0] is not None or right[0] is not None:
                raise FormulaError(self.error("':' needs terms on both sides", op.pos))
            terms: list[Term] = []
            for a in left[1]:
                for b in right[1]:
                    t = _merge(a, b)
                    if t not in terms:
                        terms.append(t)
            left = (None, terms)
        return left

    def power(self, random: list[RandomTerm] | None) -> tuple[bool | None, list[Term]] | None:
        base = self.atom(random)
        if self.tok.kind == "op" and self.tok.text == "^":
            op = self.take()
            if self.tok.kind != "num" or not self.tok.text.isdigit():
                raise FormulaError(self.error("'^' on terms needs a whole number, e.g. (a + b)^2"))
            order = int(self.take().text)
            if base is None or base[0] is not None:
                raise FormulaError(self.error("'^' needs terms on its left", op.pos))
            terms = list(base[1])
            singles = list(terms)
            order = min(order, len(singles))  # a:a is a, so higher orders add nothing
            if sum(math.comb(len(singles), k) for k in range(1, order + 1)) > MAX_TERMS:
                raise FormulaError(
                    self.error(f"'^' would create more than {MAX_TERMS} terms", op.pos)
                )
            for k in range(2, order + 1):
                for combo in combinations(singles, k):
                    t: Term = ()
                    for part in combo:
                        t = _merge(t, part)
                    if t not in terms:
                        terms.append(t)
            return (None, terms)
        return base

    def atom(self, random: list[RandomTerm] | None) -> tuple[bool | None, list[Term]] | None:
        tok = self.tok
        if tok.kind == "num":
            self.take()
            if tok.text in ("0", "1"):
                return (tok.text == "1", [])
            raise FormulaError(
                self.error(f"a number ({tok.text}) is not a term; only 0 or 1", tok.pos)
            )
        if tok.kind == "op" and tok.text == "(":
            close = self._matching(self.i)
            bar = self._top_level_bar(self.i + 1, close)
            if bar is not None:
                if random is None:
                    raise FormulaError(
                        self.error("a random-effects term cannot be nested", tok.pos)
                    )
                random.extend(self.random_term(close, bar))
                return None
            self.take()
            inner = self.sum_(None)
            self.expect(")")
            return (inner[0] if inner[0] is False else None, inner[1])
        if (
            tok.kind == "name"
            and tok.text in RESIDUAL_STRUCTURES
            and self.tokens[self.i + 1].text == "("
        ):
            if random is None:
                raise FormulaError(self.error(f"{tok.text}(...) cannot be nested", tok.pos))
            self.residual.append(self.residual_term())
            if len(self.residual) > 1:
                raise FormulaError(
                    self.error("only one level-1 error structure is allowed", tok.pos)
                )
            return None
        if tok.kind == "name":
            f = self.arith_factor()
            return (None, [(f,)])
        if tok.kind == "end":
            raise FormulaError(self.error("the formula ends where a term was expected"))
        if tok.text == "|" or tok.text == "||":
            raise FormulaError(
                self.error("a random-effects term must be in parentheses, e.g. (age1 | id)")
            )
        raise FormulaError(self.error(f"unexpected {tok.text!r}"))

    def _matching(self, i: int) -> int:
        depth = 0
        for j in range(i, len(self.tokens)):
            t = self.tokens[j]
            if t.kind == "op" and t.text == "(":
                depth += 1
            elif t.kind == "op" and t.text == ")":
                depth -= 1
                if depth == 0:
                    return j
        raise FormulaError(
            self.error("unbalanced parenthesis: '(' is never closed", self.tokens[i].pos)
        )

    def _top_level_bar(self, start: int, stop: int) -> int | None:
        depth = 0
        for j in range(start, stop):
            t = self.tokens[j]
            if t.text == "(":
                depth += 1
            elif t.text == ")":
                depth -= 1
            elif depth == 0 and t.text in ("|", "||"):
                return j
        return None

    def residual_term(self) -> ResidualTerm:
        """``structure(occasion | person)``."""
        name_tok = self.take()
        start = name_tok.pos
        close = self._matching(self.i)
        self.take()  # '('
        usage = f"write {name_tok.text}(occasion | person), e.g. {name_tok.text}(wave | id)"
        if self.tok.kind != "name":
            raise FormulaError(self.error(f"expected the occasion column: {usage}"))
        occasion = self.take().text
        if self.tok.text != "|":
            raise FormulaError(self.error(f"expected '|' after the occasion column: {usage}"))
        self.take()
        if self.tok.kind != "name":
            raise FormulaError(self.error(f"expected the person column after '|': {usage}"))
        group = self.take().text
        if self.i != close:
            raise FormulaError(self.error(f"unexpected {self.tok.text!r}: {usage}"))
        self.take()
        text = self.text[start : self.tokens[close].pos + 1]
        return ResidualTerm(name_tok.text, occasion, group, text)

    def random_term(self, close: int, bar: int) -> list[RandomTerm]:
        open_tok = self.take()
        start = open_tok.pos
        if self.i == bar:
            raise FormulaError(self.error("nothing before '|' in the random-effects term"))
        intercept, terms = self.sum_(None)
        if self.i != bar:
            raise FormulaError(
                self.error(f"unexpected {self.tok.text!r} in the random-effects term")
            )
        correlated = self.take().text == "|"
        if self.tok.kind != "name":
            raise FormulaError(
                self.error(
                    "a random-effects term needs a grouping column after '|', e.g. (age1 | id)"
                )
            )
        # the grouping factor: a column, an interaction a:b, or a nesting a/b (lme4's a + a:b)
        columns = [self.take().text]
        ops: list[str] = []
        while self.i < close and self.tok.kind == "op" and self.tok.text in (":", "/"):
            ops.append(self.take().text)
            if self.tok.kind != "name":
                raise FormulaError(self.error(f"a grouping column is needed after {ops[-1]!r}"))
            columns.append(self.take().text)
        if self.i != close:
            raise FormulaError(
                self.error(
                    "after '|' write one grouping column, an interaction (school:child) "
                    "or a nesting (school/child)"
                )
            )
        if len(set(columns)) < len(columns):
            raise FormulaError(
                _point(self.text, start, "a grouping column appears twice in the same group")
            )
        self.take()
        text = self.text[start : self.tokens[close].pos + 1]
        if not intercept and not terms:
            raise FormulaError(_point(self.text, start, "the random-effects term has no terms"))
        # lme4's expansion of '/': a/b is a + b:a, a/b/c is a + b:a + c:(b:a); a name lists the
        # columns innermost first, and so do the unit labels ("273026452:2020")
        groups: list[tuple[str, list[str]]] = []
        current = [columns[0]]
        name = columns[0]
        for op, column in zip(ops, columns[1:], strict=True):
            if op == ":":
                current = [*current, column]
                name = f"{name}:{column}"
            else:
                groups.append((name, current))
                name = f"{column}:{name}" if len(current) == 1 else f"{column}:({name})"
                current = [column, *current]
        groups.append((name, current))
        ordered = tuple(_order(terms))
        return [
            RandomTerm(intercept, ordered, g, correlated, text, tuple(c) if len(c) > 1 else ())
            for g, c in groups
        ]

    # arithmetic inside I(): expr := term (('+'|'-') term)*
    def arith(self) -> Expr:
        left = self.arith_term()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            op = self.take().text
            left = BinOp(op, left, self.arith_term())
        return left

    def arith_term(self) -> Expr:
        left = self.arith_unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/"):
            op = self.take().text
            left = BinOp(op, left, self.arith_unary())
        return left

    def arith_unary(self) -> Expr:
        if self.tok.kind == "op" and self.tok.text == "-":
            self.take()
            return Neg(self.arith_unary())
        base = self.arith_atom()
        if self.tok.kind == "op" and self.tok.text == "^":
            self.take()
            return BinOp("^", base, self.arith_unary())
        return base

    def arith_atom(self) -> Expr:
        tok = self.tok
        if tok.kind == "num":
            self.take()
            return Num(float(tok.text), tok.text)
        if tok.kind == "name":
            self.take()
            if self.tok.text == "(":
                if tok.text not in FUNCTIONS:
                    raise FormulaError(
                        self.error(f"function {tok.text}() is not supported inside I()", tok.pos)
                    )
                self.take()
                inner = self.arith()
                self.expect(")")
                return Call(tok.text, inner)
            return Col(tok.text)
        if tok.kind == "op" and tok.text == "(":
            self.take()
            inner = self.arith()
            self.expect(")")
            return Paren(inner)
        found = "the end of the formula" if tok.kind == "end" else repr(tok.text)
        raise FormulaError(
            self.error(f"expected a number or a column inside I() but found {found}")
        )


def _merge(a: Term, b: Term) -> Term:
    out = list(a)
    for f in b:
        if f not in out:
            out.append(f)
    return tuple(out)


def _order(terms: list[Term]) -> list[Term]:
    """R's term order: by interaction order, stable within an order."""
    return sorted(terms, key=len)


_IDENTIFIER = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")
MAX_TERMS = 2000
MAX_LENGTH = 10_000


def quote_name(name: str) -> str:
    """A column name as it must be written in a formula: backticks unless it is an identifier."""
    if _IDENTIFIER.fullmatch(name) and name not in FUNCTIONS and name != "I":
        return name
    if "`" in name or not name or any(ord(ch) < 32 for ch in name):
        raise FormulaError(
            f"column name {name!r} cannot be used in a formula (it contains a backtick, "
            "a control character, or is empty); rename the column"
        )
    return f"`{name}`"


def parse_formula(text: str) -> Formula:
    """Parse an lme4-style formula; raises :class:`FormulaError` pointing at the problem."""
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("the formula is empty")
    if len(text) > MAX_LENGTH:
        raise FormulaError(
            f"the formula is {len(text):,} characters long; the limit is {MAX_LENGTH:,}"
        )
    try:
        formula = _Parser(text.strip()).formula()
    except RecursionError:
        raise FormulaError(
            f"formula {text[:60]!r}...: nested too deeply (parentheses or operators); simplify it"
        ) from None
    if not formula.random and formula.residual is None:
        raise FormulaError(
            f"formula {formula.text!r}: no random-effects term; add one such as (1 | id) or "
            "(age1 | id), or a level-1 error structure such as us(wave | id)"
        )
    return formula
