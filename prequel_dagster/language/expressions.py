"""Mapping expressions (an expr-lang subset) compiled to vectorised Arrow compute.

Parsed once into a small AST, evaluated over a whole record batch: no ``eval``, no per-row Python.
Supported: literals (numbers, strings, ``true``/``false``/``nil``, ``[lists]``), column
references, ``+ - * /`` (``+`` concatenates when a side is a string), comparisons, ``&& || !``
(also ``and or not``), ``in``, ``a ? b : c``, ``a ?? b`` and the functions in :data:`FUNCTIONS`.
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc


class ExpressionError(ValueError):
    """A bad expression: the message gives the column (1-based) where parsing failed."""


# ---------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class Literal:
    value: Any
    pos: int


@dataclass(frozen=True)
class ListLiteral:
    items: tuple[Any, ...]
    pos: int


@dataclass(frozen=True)
class Column:
    name: str
    pos: int


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Any
    pos: int


@dataclass(frozen=True)
class Binary:
    op: str
    left: Any
    right: Any
    pos: int


@dataclass(frozen=True)
class Conditional:
    cond: Any
    then: Any
    otherwise: Any
    pos: int


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]
    pos: int


Node = Literal | ListLiteral | Column | Unary | Binary | Conditional | Call

# ---------------------------------------------------------------------------- tokens

_TWO_CHAR = {"==", "!=", "<=", ">=", "&&", "||", "??"}
_ONE_CHAR = set("+-*/<>!()?:,[]")
_WORD_OPS = {"and": "&&", "or": "||", "not": "!", "in": "in"}


@dataclass(frozen=True)
class _Token:
    kind: str  # num, str, ident, op, end
    text: str
    value: Any
    pos: int


_DIGITS = frozenset("0123456789")  # not str.isdigit: that is true for '²' and '٣', which int() refuses
_INT64_MAX = 2**63 - 1


def _number(text: str, pos: int) -> int | float:
    digits = text.replace("_", "")
    try:
        value = float(digits) if "." in digits else int(digits)
    except ValueError:
        raise ExpressionError(f"malformed number '{text}' at column {pos + 1}; write it like 42 or 3.14") from None
    if isinstance(value, int) and value > _INT64_MAX:
        raise ExpressionError(f"integer '{text}' at column {pos + 1} is too large (the largest is {_INT64_MAX})")
    return value


def _tokenize(src: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c.isspace():
            i += 1
        elif c in _DIGITS or (c == "." and i + 1 < n and src[i + 1] in _DIGITS):
            j = i
            while j < n and (src[j] in _DIGITS or src[j] in "._"):
                j += 1
            tokens.append(_Token("num", src[i:j], _number(src[i:j], i), i))
            i = j
        elif c in "\"'":
            j, out = i + 1, []
            while j < n and src[j] != c:
                if src[j] == "\\" and j + 1 < n:
                    out.append({"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}.get(src[j + 1], src[j + 1]))
                    j += 2
                else:
                    out.append(src[j])
                    j += 1
            if j >= n:
                raise ExpressionError(f"unterminated string starting at column {i + 1}")
            tokens.append(_Token("str", src[i : j + 1], "".join(out), i))
            i = j + 1
        elif c.isalpha() or c == "_":
            j = i
            while j < n and (src[j].isalnum() or src[j] in "_"):
                j += 1
            word = src[i:j]
            if word in _WORD_OPS:
                tokens.append(_Token("op", _WORD_OPS[word], None, i))
            else:
                tokens.append(_Token("ident", word, None, i))
            i = j
        elif c == "`":
            j = src.find("`", i + 1)
            if j < 0:
                raise ExpressionError(f"unterminated `quoted column` starting at column {i + 1}")
            tokens.append(_Token("ident", src[i + 1 : j], None, i))
            i = j + 1
        elif src[i : i + 2] in _TWO_CHAR:
            tokens.append(_Token("op", src[i : i + 2], None, i))
            i += 2
        elif c in _ONE_CHAR:
            tokens.append(_Token("op", c, None, i))
            i += 1
        else:
            raise ExpressionError(f"unexpected character {c!r} at column {i + 1}")
    tokens.append(_Token("end", "end of expression", None, n))
    return tokens


# ---------------------------------------------------------------------------- parser (precedence climbing)

_BINARY_PRECEDENCE = {
    "??": 1,
    "||": 2,
    "&&": 3,
    "==": 4,
    "!=": 4,
    "<": 4,
    ">": 4,
    "<=": 4,
    ">=": 4,
    "in": 4,
    "+": 5,
    "-": 5,
    "*": 6,
    "/": 6,
}


MAX_EXPRESSION_DEPTH = 32
"""Nesting (parentheses, function calls, lists, ``?:`` branches, prefix operators) an expression may have.

Chains at one level (``a + b + c ...``, ``a ? b : c ? d : e ...``) do not nest and may be any length."""


class _Parser:
    def __init__(self, src: str):
        self.tokens = _tokenize(src)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def next(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> _Token:
        tok = self.next()
        if tok.text != text or tok.kind not in ("op",):
            raise ExpressionError(f"expected '{text}' at column {tok.pos + 1}, found '{tok.text}'")
        return tok

    def nest(self, tok: _Token) -> None:
        """One level deeper; the parser and the evaluator recurse per level, so the depth is bounded."""
        self.depth += 1
        if self.depth > MAX_EXPRESSION_DEPTH:
            raise ExpressionError(
                f"expression nests deeper than {MAX_EXPRESSION_DEPTH} levels at column {tok.pos + 1}; "
                "split it into simpler mappings"
            )

    def parse(self) -> Node:
        node = self.ternary()
        tok = self.peek()
        if tok.kind != "end":
            raise ExpressionError(f"unexpected '{tok.text}' at column {tok.pos + 1}")
        return node

    def ternary(self) -> Node:
        # ``c1 ? a : c2 ? b : d`` is read as a loop (the else-chain does not nest), then folded right to left.
        arms: list[tuple[Node, Node, int]] = []
        node = self.binary(1)
        while self.peek().kind == "op" and self.peek().text == "?":
            tok = self.next()
            self.nest(tok)
            then = self.ternary()
            self.depth -= 1
            self.expect(":")
            arms.append((node, then, tok.pos))
            node = self.binary(1)
        for cond, then, pos in reversed(arms):
            node = Conditional(cond, then, node, pos)
        return node

    def binary(self, min_prec: int) -> Node:
        # Precedence climbing: a chain of one precedence is a loop (left-assoc); the recursion is per
        # precedence level, so at most len(levels) deep between two nesting levels.
        left = self.unary()
        while True:
            tok = self.peek()
            prec = _BINARY_PRECEDENCE.get(tok.text) if tok.kind == "op" else None
            if prec is None or prec < min_prec:
                return left
            self.next()
            right = self.binary(prec + 1)
            if tok.text == "in" and not isinstance(right, ListLiteral):
                raise ExpressionError(f"'in' at column {tok.pos + 1} needs a [list] of literals on its right")
            left = Binary(tok.text, left, right, tok.pos)

    def unary(self) -> Node:
        tok = self.peek()
        if tok.kind == "op" and tok.text in ("!", "-", "+"):
            self.next()
            self.nest(tok)
            operand = self.unary()
            self.depth -= 1
            if tok.text == "+":
                return operand
            if tok.text == "-" and isinstance(operand, Literal) and type(operand.value) in (int, float):
                return Literal(-operand.value, tok.pos)  # a negative number is a literal (LEFT(x, -1), [-1, 2])
            return Unary(tok.text, operand, tok.pos)
        return self.primary()

    def primary(self) -> Node:
        tok = self.next()
        if tok.kind in ("num", "str"):
            return Literal(tok.value, tok.pos)
        if tok.kind == "ident":
            if tok.text in ("true", "false"):
                return Literal(tok.text == "true", tok.pos)
            if tok.text in ("nil", "null"):
                return Literal(None, tok.pos)
            if self.peek().text == "(" and self.peek().kind == "op":
                return self.call(tok)
            return Column(tok.text, tok.pos)
        if tok.kind == "op" and tok.text == "(":
            self.nest(tok)
            node = self.ternary()
            self.depth -= 1
            self.expect(")")
            return node
        if tok.kind == "op" and tok.text == "[":
            self.nest(tok)
            items: list[Any] = []
            while self.peek().text != "]":
                item = self.unary()
                if not isinstance(item, Literal):
                    raise ExpressionError(f"list items must be literals (column {item.pos + 1})")
                items.append(item.value)
                if self.peek().text == ",":
                    self.next()
                elif self.peek().text != "]":
                    break
            self.expect("]")
            self.depth -= 1
            kinds = {_literal_kind(v) for v in items if v is not None}
            if len(kinds) > 1:
                raise ExpressionError(
                    f"list at column {tok.pos + 1} mixes {' and '.join(sorted(kinds))}; use one kind of value"
                )
            return ListLiteral(tuple(items), tok.pos)
        raise ExpressionError(f"unexpected '{tok.text}' at column {tok.pos + 1}")

    def call(self, name_tok: _Token) -> Call:
        open_tok = self.next()
        name = name_tok.text
        canonical = name if name in FUNCTIONS else name.upper()
        if canonical not in FUNCTIONS:
            known = ", ".join(sorted(FUNCTIONS))
            raise ExpressionError(f"unknown function '{name}' at column {name_tok.pos + 1} (known: {known})")
        self.nest(open_tok)
        args: list[Node] = []
        if self.peek().text != ")":
            args.append(self.ternary())
            while self.peek().text == ",":
                self.next()
                args.append(self.ternary())
        self.expect(")")
        self.depth -= 1
        call = Call(name, tuple(args), name_tok.pos)
        _check_call(call, canonical)
        return call


def _literal_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "booleans"
    return "numbers" if isinstance(value, (int, float)) else "strings"


def _check_call(call: Call, canonical: str) -> None:
    """Argument count, and the arguments that must be literals, checked when the config is loaded."""
    params = SIGNATURES[canonical]
    where = f"{call.name}() at column {call.pos + 1}"
    variadic = params[-1:] == ("...",)
    names = [p.partition(":")[0] for p in params if p != "..."]
    if len(call.args) < len(names) or (len(call.args) > len(names) and not variadic):
        count = f"{len(names)} or more" if variadic else str(len(names))
        listed = f" ({', '.join(names)})" if names else ""
        raise ExpressionError(f"{where} takes {count} arguments{listed}, got {len(call.args)}")
    for index, (param, arg) in enumerate(zip(params, call.args), start=1):
        name, _, kind = param.partition(":")
        if not kind:
            continue
        value = arg.value if isinstance(arg, Literal) else None
        if kind.startswith("str"):
            ok, wanted = isinstance(value, str) and (kind == "str" or value != ""), _LITERAL_KINDS[kind]
        else:
            low = 1 if kind == "int1" else 0
            ok, wanted = type(value) is int and low <= value <= _SLICE_MAX, _LITERAL_KINDS[kind]
        if not ok:
            got = "a column or an expression" if not isinstance(arg, Literal) else f"{value!r}"
            raise ExpressionError(f"{where}: argument {index} ({name}) must be {wanted}, not {got}")


@lru_cache(maxsize=4096)
def parse_expression(src: str) -> Node:
    """Parse an expression; raises :class:`ExpressionError` naming the column of the problem."""
    if not src.strip():
        raise ExpressionError("empty expression")
    return _Parser(src).parse()


def _children(n: Any) -> tuple[Any, ...]:
    if isinstance(n, Unary):
        return (n.operand,)
    if isinstance(n, Binary):
        return (n.left, n.right)
    if isinstance(n, Conditional):
        return (n.cond, n.then, n.otherwise)
    if isinstance(n, Call):
        return n.args
    return ()


def referenced_columns(node: Node) -> list[str]:
    """Source columns an expression reads, in first-use order (for column lineage)."""
    out: dict[str, None] = {}
    stack = [node]  # iterative: a 2,000-term chain is 2,000 nodes deep
    while stack:
        n = stack.pop()
        if isinstance(n, Column):
            out.setdefault(n.name)
        else:
            stack.extend(reversed(_children(n)))
    return list(out)


# ---------------------------------------------------------------------------- evaluation

Value: TypeAlias = pa.Array | pa.ChunkedArray | pa.Scalar


def _type(v: Value) -> pa.DataType:
    return v.type


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_null_literal(v: Value) -> bool:
    return isinstance(v, pa.Scalar) and pa.types.is_null(v.type)


def to_string(v: Value) -> Value:
    """``string(x)``: RFC 3339 (UTC) for timestamps, ``true``/``false`` for booleans, plain text otherwise."""
    t = _type(v)
    if _is_string(t):
        return v
    if pa.types.is_timestamp(t):  # timestamps without a zone are taken as UTC
        if t.tz and t.tz.upper() not in ("UTC", "Z", "+00:00"):
            v = pc.cast(v, pa.timestamp(t.unit, "UTC"))
        if t.unit == "ns" or isinstance(v, pa.Scalar):
            return pc.strftime(v, format="%Y-%m-%dT%H:%M:%SZ")
        return _rfc3339_us(v)
    if pa.types.is_date(t):
        return pc.strftime(v, format="%Y-%m-%d")
    if pa.types.is_null(t):
        return pa.scalar(None, pa.string())
    return pc.cast(v, pa.string())


_MICROS_PER_DAY = 86_400_000_000


@lru_cache(maxsize=1)
def _clock_texts() -> pa.Array:
    """``HH:MM:SS`` for every second of a day (86,400 strings), looked up instead of formatted."""
    return pa.array([f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86_400)], pa.string())


def _rfc3339_us(v: Value) -> Value:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ``, the same text as strftime and about ten times as fast.

    Dates are formatted once per distinct day and clock times looked up from a table; only the
    microseconds are formatted per value, and not at all when every value is on a whole second.
    """
    micros = pc.cast(pc.cast(v, pa.timestamp("us", "UTC")), pa.int64())
    if isinstance(micros, pa.ChunkedArray):
        micros = micros.combine_chunks()
    low = pc.min(micros).as_py()
    if low is None or low < 0:  # before 1970 (or all null): integer division would round the wrong way
        return _rfc3339_parts(v)
    days = pc.divide(micros, _MICROS_PER_DAY)
    within_day = pc.subtract(micros, pc.multiply(days, _MICROS_PER_DAY))
    seconds = pc.divide(within_day, 1_000_000)
    fraction = pc.subtract(within_day, pc.multiply(seconds, 1_000_000))
    distinct_days = pc.unique(days)
    day_texts = pc.strftime(
        pc.cast(pc.multiply(distinct_days, _MICROS_PER_DAY), pa.timestamp("us", "UTC")), format="%Y-%m-%d"
    )
    dates = pc.take(day_texts, pc.index_in(days, value_set=distinct_days))
    clocks = pc.take(_clock_texts(), seconds)
    if pc.max(fraction).as_py() == 0:
        return pc.binary_join_element_wise(dates, "T", clocks, ".000000Z", "")
    micro_texts = pc.utf8_lpad(pc.cast(fraction, pa.string()), width=6, padding="0")
    return pc.binary_join_element_wise(dates, "T", clocks, ".", micro_texts, "Z", "")


def _rfc3339_parts(v: Value) -> Value:
    """``_rfc3339_us`` from date parts, for any date."""

    def padded(x: Value, width: int = 2) -> Value:
        return pc.utf8_lpad(pc.cast(x, pa.string()), width=width, padding="0")

    micros = pc.add(pc.multiply(pc.millisecond(v), 1000), pc.microsecond(v))
    return pc.binary_join_element_wise(
        padded(pc.year(v), 4),
        "-",
        padded(pc.month(v)),
        "-",
        padded(pc.day(v)),
        "T",
        padded(pc.hour(v)),
        ":",
        padded(pc.minute(v)),
        ":",
        padded(pc.second(v)),
        ".",
        padded(micros, 6),
        "Z",
        "",
    )


def _numeric(v: Value, pos: int, op: str) -> Value:
    t = _type(v)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t):
        return v
    if pa.types.is_boolean(t):
        return pc.cast(v, pa.int64())
    raise ExpressionError(f"'{op}' at column {pos + 1} needs numbers, got {t}")


def _align_decimal(a: Value, b: Value) -> tuple[Value, Value]:
    # Decimal arithmetic with floats is rejected by Arrow; compute in float64 then.
    ta, tb = _type(a), _type(b)
    if pa.types.is_decimal(ta) and pa.types.is_floating(tb):
        a = pc.cast(a, pa.float64())
    if pa.types.is_decimal(tb) and pa.types.is_floating(ta):
        b = pc.cast(b, pa.float64())
    return a, b


def _compare(op: str, a: Value, b: Value, pos: int) -> Value:
    if op in ("==", "!=") and (_is_null_literal(a) or _is_null_literal(b)):
        other = b if _is_null_literal(a) else a
        return pc.is_null(other) if op == "==" else pc.is_valid(other)
    ta, tb = _type(a), _type(b)
    if _is_string(ta) != _is_string(tb) and not (pa.types.is_null(ta) or pa.types.is_null(tb)):
        if pa.types.is_timestamp(ta) and _is_string(tb):
            b = pc.cast(b, ta)
        elif pa.types.is_timestamp(tb) and _is_string(ta):
            a = pc.cast(a, tb)
        else:
            raise ExpressionError(f"'{op}' at column {pos + 1} compares {ta} with {tb}; convert one side first")
    a, b = _align_decimal(a, b)
    fn = {
        "==": pc.equal,
        "!=": pc.not_equal,
        "<": pc.less,
        ">": pc.greater,
        "<=": pc.less_equal,
        ">=": pc.greater_equal,
    }
    return fn[op](a, b)


def _boolean(v: Value, pos: int) -> Value:
    if not pa.types.is_boolean(_type(v)) and not pa.types.is_null(_type(v)):
        raise ExpressionError(f"expected a boolean at column {pos + 1}, got {_type(v)}")
    return v


class _Evaluator:
    def __init__(self, batch: pa.RecordBatch | pa.Table, now: dt.datetime):
        self.batch = batch
        self.now = now

    def eval(self, node: Node) -> Value:
        if isinstance(node, Literal):
            return pa.scalar(node.value)
        if isinstance(node, ListLiteral):
            return pa.array(list(node.items))
        if isinstance(node, Column):
            try:
                return self.batch.column(node.name)
            except KeyError:
                names = ", ".join(self.batch.schema.names)
                raise ExpressionError(
                    f"unknown column '{node.name}' at column {node.pos + 1} (columns: {names})"
                ) from None
        if isinstance(node, Unary):
            v = self.eval(node.operand)
            if node.op == "!":
                return pc.invert(_boolean(v, node.pos))
            return pc.negate_checked(_numeric(v, node.pos, "-"))
        if isinstance(node, Conditional):
            # Down the else-chain in a loop (it may be long), then fold back: same order as recursion.
            arms = []
            while isinstance(node, Conditional):
                arms.append((self.eval(node.cond), self.eval(node.then), node.pos))
                node = node.otherwise
            value = self.eval(node)
            for cond, then, pos in reversed(arms):
                value = _if(cond, then, value, pos)
            return value
        if isinstance(node, Call):
            fn = FUNCTIONS.get(node.name) or FUNCTIONS[node.name.upper()]
            args = [self.eval(a) for a in node.args]
            try:
                return fn(self, node, *args)
            except TypeError as exc:
                if "positional argument" in str(exc):
                    raise ExpressionError(
                        f"{node.name}() at column {node.pos + 1}: wrong number of arguments"
                    ) from None
                raise
        assert isinstance(node, Binary)
        # A left-assoc chain (a + b + c ...) is a deep left spine: walk it in a loop, not by recursion.
        spine = []
        while isinstance(node, Binary):
            spine.append(node)
            node = node.left
        value = self.eval(node)
        for binary in reversed(spine):
            value = self.binary(binary, value, self.eval(binary.right))
        return value

    def binary(self, node: Binary, a: Value, b: Value) -> Value:
        op = node.op
        if op == "+" and (_is_string(_type(a)) or _is_string(_type(b))):
            return pc.binary_join_element_wise(to_string(a), to_string(b), "")
        if op in ("+", "-", "*", "/"):
            a, b = _align_decimal(_numeric(a, node.pos, op), _numeric(b, node.pos, op))
            if op == "/":
                if not pa.types.is_decimal(_type(a)):
                    a = pc.cast(a, pa.float64())
                return pc.divide(a, b)
            return {"+": pc.add_checked, "-": pc.subtract_checked, "*": pc.multiply_checked}[op](a, b)
        if op in ("==", "!=", "<", ">", "<=", ">="):
            return _compare(op, a, b, node.pos)
        if op == "&&":
            return pc.and_kleene(_boolean(a, node.pos), _boolean(b, node.pos))
        if op == "||":
            return pc.or_kleene(_boolean(a, node.pos), _boolean(b, node.pos))
        if op == "??":
            return pc.coalesce(a, b)
        if op == "in":
            if not isinstance(b, pa.Array):
                raise ExpressionError(f"'in' at column {node.pos + 1} needs a [list] on its right")
            if isinstance(a, pa.Scalar):
                return pa.scalar(a.as_py() in b.to_pylist())
            return pc.is_in(a, value_set=b.cast(_type(a)))
        raise ExpressionError(f"unsupported operator '{op}' at column {node.pos + 1}")


def _if(cond: Value, then: Value, otherwise: Value, pos: int) -> Value:
    cond = pc.fill_null(_boolean(cond, pos), False) if not isinstance(cond, pa.Scalar) else cond
    if isinstance(cond, pa.Scalar):
        return then if cond.as_py() else otherwise
    tt, to = _type(then), _type(otherwise)
    if tt != to:
        if pa.types.is_null(tt):
            then = pa.scalar(None, to) if isinstance(then, pa.Scalar) else then.cast(to)
        elif pa.types.is_null(to):
            otherwise = pa.scalar(None, tt) if isinstance(otherwise, pa.Scalar) else otherwise.cast(tt)
        elif _is_string(tt) or _is_string(to):
            then, otherwise = to_string(then), to_string(otherwise)
    return pc.if_else(cond, then, otherwise)


def _int_arg(v: Value, node: Call) -> int:
    if not isinstance(v, pa.Scalar) or not pa.types.is_integer(v.type):
        raise ExpressionError(f"{node.name}() at column {node.pos + 1}: the length must be an integer literal")
    return v.as_py()


def _slice(v: Value, start: int, stop: int | None) -> Value:
    return pc.utf8_slice_codeunits(to_string(v), start=start, stop=stop if stop is not None else 2**31 - 1)


def _to_int(ev: _Evaluator, node: Call, v: Value) -> Value:
    t = _type(v)
    if _is_string(t):
        v = pc.cast(pc.utf8_trim_whitespace(v), pa.float64())
    if pa.types.is_floating(pc.cast(v, pa.float64()).type) and not pa.types.is_integer(t):
        v = pc.trunc(pc.cast(v, pa.float64()))
    return pc.cast(v, pa.int64())


def _timestampvalue(ev: _Evaluator, node: Call, v: Value) -> Value:
    if pa.types.is_timestamp(_type(v)):
        return v
    text = to_string(v)
    for attempt in (
        lambda: pc.cast(text, pa.timestamp("us", "UTC")),  # with a zone or Z
        lambda: pc.cast(pc.cast(text, pa.timestamp("us")), pa.timestamp("us", "UTC")),  # without one: UTC
        lambda: pc.cast(pc.strptime(text, format="%Y-%m-%d", unit="us"), pa.timestamp("us", "UTC")),
    ):
        try:
            return attempt()
        except pa.ArrowInvalid:
            continue
    raise ExpressionError(f"TIMESTAMPVALUE() at column {node.pos + 1}: a value is not a date or timestamp")


_SLICE_MAX = 2**31 - 1

_LITERAL_KINDS = {
    "str": 'a string literal such as "-"',
    "str1": 'a non-empty string literal such as "-"',
    "int": f"an integer literal from 0 to {_SLICE_MAX}",
    "int1": f"an integer literal from 1 to {_SLICE_MAX}",
}

SIGNATURES: dict[str, tuple[str, ...]] = {
    # Parameter names; ``name:<kind>`` must be a literal of that kind (see _LITERAL_KINDS); ``...`` repeats.
    "string": ("value",),
    "int": ("value",),
    "float": ("value",),
    "lower": ("text",),
    "upper": ("text",),
    "trim": ("text",),
    "len": ("text",),
    "IF": ("condition", "then", "else"),
    "CONCATENATE": ("text", "..."),
    "LEFT": ("text", "length:int"),
    "RIGHT": ("text", "length:int"),
    "MID": ("text", "start:int1", "length:int"),
    "SUBSTITUTE": ("text", "old:str1", "new:str"),
    "PROPER": ("text",),
    "TEXTSPLIT": ("text", "delimiter:str1"),
    "TIMESTAMPVALUE": ("value",),
    "TODAY": (),
}
"""Checked at parse time (so ``prequel-dagster validate`` reports it), not when a load runs."""

FUNCTIONS: dict[str, Callable[..., Value]] = {
    "string": lambda ev, node, v: to_string(v),
    "int": _to_int,
    "float": lambda ev, node, v: pc.cast(pc.utf8_trim_whitespace(v) if _is_string(_type(v)) else v, pa.float64()),
    "lower": lambda ev, node, v: pc.utf8_lower(to_string(v)),
    "upper": lambda ev, node, v: pc.utf8_upper(to_string(v)),
    "trim": lambda ev, node, v: pc.utf8_trim_whitespace(to_string(v)),
    "len": lambda ev, node, v: pc.cast(pc.utf8_length(to_string(v)), pa.int64()),
    "IF": lambda ev, node, c, a, b: _if(c, a, b, node.pos),
    "CONCATENATE": lambda ev, node, *vs: pc.binary_join_element_wise(*[to_string(v) for v in vs], ""),
    "LEFT": lambda ev, node, v, n: _slice(v, 0, _int_arg(n, node)),
    "RIGHT": lambda ev, node, v, n: _slice(v, -_int_arg(n, node), None) if _int_arg(n, node) else pa.scalar(""),
    "MID": lambda ev, node, v, s, n: _slice(v, _int_arg(s, node) - 1, _int_arg(s, node) - 1 + _int_arg(n, node)),
    "SUBSTITUTE": lambda ev, node, v, old, new: pc.replace_substring(
        to_string(v), pattern=old.as_py(), replacement=new.as_py()
    ),
    "PROPER": lambda ev, node, v: pc.utf8_title(to_string(v)),
    "TEXTSPLIT": lambda ev, node, v, d: pc.split_pattern(to_string(v), pattern=d.as_py()),
    "TIMESTAMPVALUE": _timestampvalue,
    "TODAY": lambda ev, node: pa.scalar(ev.now.date().isoformat()),
}
assert FUNCTIONS.keys() == SIGNATURES.keys(), "every function needs its signature"


def evaluate(node: Node, batch: pa.RecordBatch | pa.Table, *, now: dt.datetime | None = None) -> pa.Array:
    """Evaluate over every row of ``batch``; the result has one value per row."""
    value = _Evaluator(batch, now or dt.datetime.now(dt.UTC)).eval(node)
    if isinstance(value, pa.ChunkedArray):
        value = value.combine_chunks()
    if isinstance(value, pa.Scalar):
        value = pa.repeat(value, batch.num_rows)
    return value
