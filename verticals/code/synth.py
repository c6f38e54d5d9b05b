"""Seeded synthesizer of HumanEval-style Python problems in several families and difficulty levels.

Each problem comes from a parameterised generator: the function name, argument names, constants and test
arguments vary with the seed. The expected values in the docstring example and in the test are computed by
running the reference solution at synthesis time, so a problem's test always agrees with its solution.
Levels are calibrated on the embedded SmolLM2-135M-Instruct teacher (benchmarks/code_calibration.py): each
generator sits at the level matching the teacher's measured pass@1 on it (easy: most pass, hard: few), so
easy is mostly one-call functions and hard is loops with state, parsing and multi-branch rules.
"""

from __future__ import annotations

import copy
import math
import random
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real

import pandas as pd

from sdk.errors import DistillError

FAMILIES = ("string", "list", "arithmetic", "dict", "logic")
DIFFICULTIES = ("easy", "medium", "hard")
# the teacher passes ~75% / ~55% / ~10% of easy / medium / hard problems: this mix puts it near 50% overall
DEFAULT_DIFFICULTIES = {"easy": 0.4, "medium": 0.35, "hard": 0.25}
COLUMNS = ["task_id", "prompt", "entry_point", "test", "canonical_solution", "family", "difficulty"]

WORDS = ["apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "ocean", "maple", "robot",
         "candle", "garden", "silver", "planet", "window", "forest", "yellow", "rocket", "bridge",
         "dragon", "coffee", "sun", "cat", "dog", "sky", "tree", "moon", "book", "fish", "star", "level",
         "radar", "noon", "kayak", "civic", "banana", "orange", "purple", "winter", "summer", "hello",
         "world", "python", "code", "data", "spoon", "ball", "green", "music", "zebra"]


class SynthOptionError(DistillError, ValueError):
    """A bad synthesizer option; a ValueError too, so callers outside the CLI can catch it as such."""


@dataclass
class _Spec:
    """What a generator returns: the function's signature, docstring, reference body and test arguments."""

    name: str
    params: str  # the text between the parentheses of the def line
    doc: str  # what the function does, without the example
    body: str  # the reference solution: indented body lines continuing the def
    inputs: list[tuple]  # argument tuples; the first one is the docstring example
    imports: str = ""


_GENERATORS: dict[tuple[str, str], list[Callable[[random.Random], _Spec]]] = {}


def _generator(family: str, difficulty: str):
    def register(fn: Callable[[random.Random], _Spec]) -> Callable[[random.Random], _Spec]:
        _GENERATORS.setdefault((family, difficulty), []).append(fn)
        return fn
    return register


# ---- random argument helpers -------------------------------------------------------------------

def _word(r: random.Random) -> str:
    return r.choice(WORDS)


def _sentence(r: random.Random, lo: int = 2, hi: int = 5) -> str:
    return " ".join(r.choice(WORDS) for _ in range(r.randint(lo, hi)))


def _ints(r: random.Random, lo: int, hi: int, size_lo: int = 3, size_hi: int = 7) -> list[int]:
    return [r.randint(lo, hi) for _ in range(r.randint(size_lo, size_hi))]


def _mixed_case(r: random.Random, w: str) -> str:
    return "".join(c.upper() if r.random() < 0.4 else c for c in w)


def _int_dict(r: random.Random, lo: int = 0, hi: int = 20, size_lo: int = 2, size_hi: int = 5) -> dict[str, int]:
    keys = r.sample(WORDS, r.randint(size_lo, size_hi))
    return {k: r.randint(lo, hi) for k in keys}


def _distinct_valued_dict(r: random.Random, size_lo: int = 2, size_hi: int = 5) -> dict[str, int]:
    keys = r.sample(WORDS, r.randint(size_lo, size_hi))
    return dict(zip(keys, r.sample(range(0, 90), len(keys))))


def _with_repeated_max(r: random.Random) -> list[int]:
    """Numbers whose maximum appears twice, so `sorted(xs)[-2]` is not the second largest distinct value."""
    top = r.randint(31, 60)
    xs = _ints(r, 0, 30, 2, 5) + [top, top, top - r.randint(1, 4)]
    r.shuffle(xs)
    return xs


def _one_arg(r: random.Random, k: int, make: Callable[[], object]) -> list[tuple]:
    """k argument tuples of one value each, for single-parameter functions."""
    return [(make(),) for _ in range(k)]


# ---- string -------------------------------------------------------------------------------------

@_generator("string", "easy")
def _reverse_string(r: random.Random) -> _Spec:
    a = r.choice(["s", "text", "word"])
    return _Spec(r.choice(["reverse_string", "reverse_text", "backwards", "flip_text", "reversed_word"]),
                 f"{a}: str", f"Return {a} with its characters in reverse order.", f"    return {a}[::-1]\n",
                 _one_arg(r, 5, lambda: r.choice([_word(r), _sentence(r, 2, 3)])))


@_generator("string", "easy")
def _change_case(r: random.Random) -> _Spec:
    a = r.choice(["s", "text", "word"])
    method, what, names = r.choice([("upper", "uppercase", ["to_upper", "shout", "make_upper", "upper_text"]),
                                    ("lower", "lowercase", ["to_lower", "whisper", "make_lower", "lower_text"])])
    return _Spec(r.choice(names), f"{a}: str", f"Return {a} converted to {what}.", f"    return {a}.{method}()\n",
                 _one_arg(r, 5, lambda: _mixed_case(r, r.choice([_word(r), _sentence(r, 2, 3)]))))


@_generator("string", "easy")
def _repeat_string(r: random.Random) -> _Spec:
    a = r.choice(["s", "text", "word"])
    k = r.randint(2, 4)
    return _Spec(r.choice(["repeat", "repeat_text", "echo", "duplicate", f"times_{k}"]), f"{a}: str",
                 f"Return {a} repeated {k} times.", f"    return {a} * {k}\n", _one_arg(r, 5, lambda: _word(r)))


@_generator("string", "easy")
def _string_length(r: random.Random) -> _Spec:
    a = r.choice(["s", "text", "word"])
    return _Spec(r.choice(["length", "string_length", "count_chars", "text_size"]), f"{a}: str",
                 f"Return the number of characters in {a}.", f"    return len({a})\n",
                 _one_arg(r, 5, lambda: r.choice([_word(r), _sentence(r, 2, 3)])))


@_generator("string", "medium")
def _join_two(r: random.Random) -> _Spec:
    a, b = r.choice([("a", "b"), ("first", "second"), ("left", "right"), ("s", "t")])
    sep = r.choice([" ", "-", "_", ", ", "+", "/", ":"])
    return _Spec(r.choice(["join_two", "combine", "glue", "connect"]), f"{a}: str, {b}: str",
                 f"Return {a} and {b} joined with {sep!r} between them.", f"    return {a} + {sep!r} + {b}\n",
                 [(_word(r), _word(r)) for _ in range(5)])


@_generator("string", "medium")
def _count_letter(r: random.Random) -> _Spec:
    a = r.choice(["s", "text", "word"])
    ch = r.choice("aeiorstln")
    return _Spec(r.choice([f"count_{ch}", f"number_of_{ch}", f"{ch}_count", f"how_many_{ch}"]), f"{a}: str",
                 f"Return how many times the letter {ch!r} appears in {a}.", f"    return {a}.count({ch!r})\n",
                 _one_arg(r, 5, lambda: _sentence(r, 1, 3)))


@_generator("string", "medium")
def _remove_letter(r: random.Random) -> _Spec:
    a = r.choice(["s", "text", "word"])
    ch = r.choice("aeiorstln")
    return _Spec(r.choice([f"remove_{ch}", f"drop_{ch}", f"strip_{ch}s", f"without_{ch}"]), f"{a}: str",
                 f"Return {a} with every {ch!r} removed.", f"    return {a}.replace({ch!r}, '')\n",
                 _one_arg(r, 5, lambda: _sentence(r, 1, 3)))


@_generator("string", "medium")
def _is_palindrome(r: random.Random) -> _Spec:
    a = r.choice(["s", "text", "word"])
    pal = ["level", "radar", "noon", "kayak", "civic", "abba", "racecar", "a", "wow", "refer", "madam"]
    inputs = [(r.choice(pal),), (_word(r) + "x",), (r.choice(pal),), (r.choice(["apple", "tiger", "code"]),),
              (r.choice(pal),)]
    r.shuffle(inputs)
    return _Spec(r.choice(["is_palindrome", "palindrome", "reads_same_backwards", "check_palindrome"]), f"{a}: str",
                 f"Return True if {a} reads the same forwards and backwards, otherwise False.",
                 f"    return {a} == {a}[::-1]\n", inputs)


@_generator("string", "medium")
def _longest_word(r: random.Random) -> _Spec:
    a = r.choice(["s", "text", "sentence"])
    body = (f"    best = ''\n    for w in {a}.split():\n        if len(w) > len(best):\n            best = w\n"
            f"    return best\n")
    return _Spec(r.choice(["longest_word", "find_longest", "biggest_word", "longest"]), f"{a}: str",
                 f"Return the longest word in {a}. If several words are equally long, return the first one.",
                 body, _one_arg(r, 5, lambda: _sentence(r, 3, 6)))


@_generator("string", "hard")
def _add_suffix(r: random.Random) -> _Spec:
    a = r.choice(["s", "text", "word", "name"])
    suffix = r.choice(["!", "?", "...", "_done", ".txt", "ing", "-x", "ly", " world", "123"])
    return _Spec(r.choice(["add_suffix", "append_tail", "decorate", "with_ending", "extend_text"]), f"{a}: str",
                 f"Return {a} followed by the text {suffix!r}.", f"    return {a} + {suffix!r}\n",
                 _one_arg(r, 5, lambda: _word(r)))


@_generator("string", "hard")
def _count_vowels(r: random.Random) -> _Spec:
    a = r.choice(["s", "text", "word"])
    vowels = r.choice(["aeiou", "aeiouy"])
    return _Spec(r.choice(["count_vowels", "vowel_count", "number_of_vowels", "vowels_in"]), f"{a}: str",
                 f"Return the number of vowels ({', '.join(vowels)}) in the lowercase string {a}.",
                 f"    return sum(1 for c in {a} if c in {vowels!r})\n", _one_arg(r, 5, lambda: _sentence(r, 1, 3)))


@_generator("string", "hard")
def _capitalize_words(r: random.Random) -> _Spec:
    a = r.choice(["s", "text", "sentence"])
    return _Spec(r.choice(["capitalize_words", "title_case", "headline", "cap_each_word"]), f"{a}: str",
                 f"Return {a} with the first letter of every word in uppercase. Words are separated by one space.",
                 f"    return ' '.join(w.capitalize() for w in {a}.split(' '))\n", _one_arg(r, 5, lambda: _sentence(r)))


@_generator("string", "hard")
def _count_long_words(r: random.Random) -> _Spec:
    a = r.choice(["s", "text", "sentence"])
    k = r.randint(3, 5)
    return _Spec(r.choice(["count_long_words", "long_word_count", f"words_over_{k}", "count_big_words"]),
                 f"{a}: str",
                 f"Return how many words in {a} have more than {k} letters. Words are separated by spaces.",
                 f"    return sum(1 for w in {a}.split() if len(w) > {k})\n",
                 _one_arg(r, 5, lambda: _sentence(r, 2, 6)))


@_generator("string", "hard")
def _run_length(r: random.Random) -> _Spec:
    a = r.choice(["s", "text"])
    body = (f"    out = ''\n    i = 0\n    while i < len({a}):\n        j = i\n"
            f"        while j < len({a}) and {a}[j] == {a}[i]:\n            j += 1\n"
            f"        out += {a}[i] + str(j - i)\n        i = j\n    return out\n")

    def make() -> str:  # runs of one letter
        return "".join(r.choice("abc") * r.randint(1, 4) for _ in range(r.randint(2, 5)))
    return _Spec(r.choice(["run_length", "compress", "encode_runs", "rle"]), f"{a}: str",
                 f"Compress {a} by writing each run of equal letters as the letter followed by the run length.",
                 body, _one_arg(r, 5, make))


@_generator("string", "hard")
def _caesar(r: random.Random) -> _Spec:
    a = r.choice(["s", "text", "message"])
    k = r.randint(1, 25)
    body = (f"    return ''.join(chr((ord(c) - ord('a') + {k}) % 26 + ord('a')) if c.isalpha() else c "
            f"for c in {a})\n")
    return _Spec(r.choice(["caesar", "shift_letters", "encrypt", "rotate_letters"]), f"{a}: str",
                 f"Shift every lowercase letter of {a} forward by {k} places in the alphabet, wrapping from z "
                 f"to a. Other characters stay the same.", body,
                 _one_arg(r, 5, lambda: _sentence(r, 1, 3) + r.choice(["", "z", "xyz"])))


@_generator("string", "hard")
def _most_common_letter(r: random.Random) -> _Spec:
    a = r.choice(["s", "word", "text"])
    body = f"    return max({a}, key=lambda c: ({a}.count(c), -{a}.index(c)))\n"
    return _Spec(r.choice(["most_common_letter", "top_letter", "most_frequent_char", "commonest"]), f"{a}: str",
                 f"Return the letter that appears most often in {a}. On a tie, return the one that appears "
                 f"first in {a}.", body, _one_arg(r, 5, lambda: "".join(r.sample(WORDS, 2))))


@_generator("string", "hard")
def _alternate_case(r: random.Random) -> _Spec:
    a = r.choice(["s", "word", "text"])
    first, second = r.choice([("upper", "lower"), ("lower", "upper")])
    body = f"    return ''.join(c.{first}() if i % 2 == 0 else c.{second}() for i, c in enumerate({a}))\n"
    return _Spec(r.choice(["alternate_case", "zigzag_case", "wave", "sponge_case"]), f"{a}: str",
                 f"Return {a} with the characters at even positions (0, 2, ...) in {first}case and the others "
                 f"in {second}case.", body, _one_arg(r, 5, lambda: _mixed_case(r, _word(r))))


# ---- list ---------------------------------------------------------------------------------------

@_generator("list", "easy")
def _sum_list(r: random.Random) -> _Spec:
    a = r.choice(["nums", "numbers", "xs", "values"])
    return _Spec(r.choice(["total", "sum_list", "add_all", "list_sum"]), f"{a}: list",
                 f"Return the sum of the numbers in {a}.", f"    return sum({a})\n",
                 _one_arg(r, 5, lambda: _ints(r, -20, 50)))


@_generator("list", "easy")
def _scale_list(r: random.Random) -> _Spec:
    a = r.choice(["nums", "numbers", "xs", "values"])
    k = r.randint(2, 9)
    return _Spec(r.choice(["scale", f"times_{k}", "multiply_all", "scale_list"]), f"{a}: list",
                 f"Return a new list with every number in {a} multiplied by {k}.",
                 f"    return [x * {k} for x in {a}]\n", _one_arg(r, 5, lambda: _ints(r, -10, 20)))


@_generator("list", "easy")
def _last_element(r: random.Random) -> _Spec:
    a = r.choice(["items", "xs", "values", "nums"])
    which, body = r.choice([("last", f"    return {a}[-1]\n"), ("first", f"    return {a}[0]\n")])
    return _Spec(r.choice([f"{which}_item", f"get_{which}", which, f"{which}_element"]), f"{a}: list",
                 f"Return the {which} element of the non-empty list {a}.", body,
                 _one_arg(r, 5, lambda: _ints(r, 0, 99)))


@_generator("list", "easy")
def _list_length(r: random.Random) -> _Spec:
    a = r.choice(["items", "xs", "values", "words"])
    return _Spec(r.choice(["count_items", "length", "size", "how_many"]), f"{a}: list",
                 f"Return how many elements {a} has.", f"    return len({a})\n",
                 _one_arg(r, 5, lambda: r.sample(WORDS, r.randint(0, 6))))


@_generator("list", "easy")
def _sum_of_squares(r: random.Random) -> _Spec:
    a = r.choice(["nums", "numbers", "xs", "values"])
    power, word = r.choice([(2, "squares"), (3, "cubes")])
    return _Spec(r.choice([f"sum_of_{word}", f"{word}_total", f"add_{word}"]), f"{a}: list",
                 f"Return the sum of the {word} of the numbers in {a}.",
                 f"    return sum(x ** {power} for x in {a})\n", _one_arg(r, 5, lambda: _ints(r, -6, 9)))


@_generator("list", "easy")
def _max_list(r: random.Random) -> _Spec:
    a = r.choice(["nums", "numbers", "xs", "values"])
    fn, word = r.choice([("max", "largest"), ("min", "smallest")])
    return _Spec(r.choice([f"{word}", f"find_{fn}", f"{word}_number", f"{fn}_value"]), f"{a}: list",
                 f"Return the {word} number in the non-empty list {a}.", f"    return {fn}({a})\n",
                 _one_arg(r, 5, lambda: _ints(r, -30, 60)))


@_generator("list", "medium")
def _filter_even(r: random.Random) -> _Spec:
    a = r.choice(["nums", "numbers", "xs", "values"])
    parity, rest = r.choice([("even", 0), ("odd", 1)])
    return _Spec(r.choice([f"only_{parity}", f"{parity}_numbers", f"keep_{parity}", f"filter_{parity}"]),
                 f"{a}: list", f"Return the {parity} numbers of {a}, in their original order.",
                 f"    return [x for x in {a} if x % 2 == {rest}]\n", _one_arg(r, 5, lambda: _ints(r, 0, 40, 4, 8)))


@_generator("list", "medium")
def _count_greater(r: random.Random) -> _Spec:
    a = r.choice(["nums", "numbers", "xs", "scores"])
    k = r.randint(0, 20)
    return _Spec(r.choice(["count_above", "how_many_big", f"count_over_{k}", "count_greater"]), f"{a}: list",
                 f"Return how many numbers in {a} are greater than {k}.",
                 f"    return sum(1 for x in {a} if x > {k})\n", _one_arg(r, 5, lambda: _ints(r, -5, 30, 4, 8)))


@_generator("list", "hard")
def _filter_greater(r: random.Random) -> _Spec:
    a = r.choice(["nums", "numbers", "xs", "values"])
    k = r.randint(0, 20)
    op, word = r.choice([(">", "greater than"), ("<", "less than")])
    return _Spec(r.choice(["filter_values", "keep_some", f"{'above' if op == '>' else 'below'}_{k}", "select"]),
                 f"{a}: list", f"Return the numbers in {a} that are {word} {k}, in their original order.",
                 f"    return [x for x in {a} if x {op} {k}]\n", _one_arg(r, 5, lambda: _ints(r, -5, 30, 4, 8)))


@_generator("list", "hard")
def _running_sum(r: random.Random) -> _Spec:
    a = r.choice(["nums", "numbers", "xs", "values"])
    body = (f"    out = []\n    total = 0\n    for x in {a}:\n        total += x\n        out.append(total)\n"
            f"    return out\n")
    return _Spec(r.choice(["running_sum", "cumulative_sum", "prefix_sums", "partial_totals"]), f"{a}: list",
                 f"Return a list whose i-th element is the sum of the first i+1 numbers of {a}.", body,
                 _one_arg(r, 5, lambda: _ints(r, -5, 15)))


@_generator("list", "hard")
def _second_largest(r: random.Random) -> _Spec:
    a = r.choice(["nums", "numbers", "xs", "values"])
    return _Spec(r.choice(["second_largest", "runner_up", "second_max", "next_biggest"]), f"{a}: list",
                 f"Return the second largest distinct number in {a}. {a} has at least two distinct numbers.",
                 f"    return sorted(set({a}))[-2]\n",
                 _one_arg(r, 5, lambda: _with_repeated_max(r)))


@_generator("list", "hard")
def _chunk(r: random.Random) -> _Spec:
    a = r.choice(["items", "nums", "xs", "values"])
    k = r.randint(2, 4)
    return _Spec(r.choice(["chunk", "split_into_groups", "batches", f"groups_of_{k}"]), f"{a}: list",
                 f"Split {a} into consecutive groups of {k} elements; the last group may be shorter.",
                 f"    return [{a}[i:i + {k}] for i in range(0, len({a}), {k})]\n",
                 _one_arg(r, 5, lambda: _ints(r, 0, 9, 3, 9)))


@_generator("list", "hard")
def _rotate(r: random.Random) -> _Spec:
    a = r.choice(["items", "nums", "xs", "values"])
    k = r.randint(1, 3)
    return _Spec(r.choice(["rotate_left", "shift_left", "rotate", "cycle"]), f"{a}: list",
                 f"Move the first {k} element(s) of {a} to the end and return the new list. "
                 f"{a} has more than {k} elements.", f"    return {a}[{k}:] + {a}[:{k}]\n",
                 _one_arg(r, 5, lambda: _ints(r, 0, 50, k + 1, 7)))


@_generator("list", "hard")
def _longest_increasing_run(r: random.Random) -> _Spec:
    a = r.choice(["nums", "numbers", "xs", "values"])
    body = (f"    best = run = 1\n    for i in range(1, len({a})):\n"
            f"        run = run + 1 if {a}[i] > {a}[i - 1] else 1\n        best = max(best, run)\n    return best\n")
    return _Spec(r.choice(["longest_increasing_run", "longest_climb", "max_rising_streak", "longest_run_up"]),
                 f"{a}: list", f"Return the length of the longest run of consecutive, strictly increasing "
                 f"numbers in the non-empty list {a}.", body, _one_arg(r, 5, lambda: _ints(r, 0, 9, 4, 10)))


@_generator("list", "hard")
def _remove_duplicates(r: random.Random) -> _Spec:
    a = r.choice(["items", "nums", "xs", "values"])
    body = f"    seen = []\n    for x in {a}:\n        if x not in seen:\n            seen.append(x)\n    return seen\n"
    return _Spec(r.choice(["remove_duplicates", "unique", "dedupe", "distinct"]), f"{a}: list",
                 f"Return {a} without repeated elements, keeping the first occurrence of each in order.", body,
                 _one_arg(r, 5, lambda: _ints(r, 0, 6, 5, 9)))


# ---- arithmetic ---------------------------------------------------------------------------------

@_generator("arithmetic", "easy")
def _add_constant(r: random.Random) -> _Spec:
    a = r.choice(["x", "n", "value", "number"])
    k = r.randint(2, 99)
    op, word = r.choice([("+", f"plus {k}"), ("-", f"minus {k}"), ("*", f"times {k}")])
    return _Spec(r.choice([f"add_{k}" if op == "+" else f"sub_{k}" if op == "-" else f"times_{k}", "adjust",
                           "transform", "apply"]), f"{a}: int", f"Return {a} {word}.", f"    return {a} {op} {k}\n",
                 _one_arg(r, 5, lambda: r.randint(-50, 200)))


@_generator("arithmetic", "easy")
def _two_number_op(r: random.Random) -> _Spec:
    a, b = r.choice([("a", "b"), ("x", "y"), ("m", "n"), ("first", "second")])
    op, word, names = r.choice([("+", "sum", ["add", "plus", "sum_two"]),
                                ("*", "product", ["multiply", "product", "times"]),
                                ("-", "difference (first minus second)", ["subtract", "minus", "difference"])])
    return _Spec(r.choice(names), f"{a}: int, {b}: int", f"Return the {word} of {a} and {b}.",
                 f"    return {a} {op} {b}\n", [(r.randint(-30, 90), r.randint(-30, 90)) for _ in range(5)])


@_generator("arithmetic", "easy")
def _is_divisible(r: random.Random) -> _Spec:
    a = r.choice(["n", "x", "number"])
    k = r.randint(2, 12)
    inputs = [(k * r.randint(-5, 20),), (k * r.randint(1, 20) + r.randint(1, k - 1),), (k * r.randint(1, 30),),
              (k * r.randint(1, 30) + 1,), (r.randint(1, 200),)]
    return _Spec(r.choice([f"divisible_by_{k}", f"is_multiple_of_{k}", "is_divisible", "check_divisible"]),
                 f"{a}: int", f"Return True if {a} is divisible by {k}, otherwise False.",
                 f"    return {a} % {k} == 0\n", inputs)


@_generator("arithmetic", "easy")
def _abs_difference(r: random.Random) -> _Spec:
    a, b = r.choice([("a", "b"), ("x", "y"), ("start", "end")])
    return _Spec(r.choice(["distance", "abs_difference", "gap", "how_far"]), f"{a}: int, {b}: int",
                 f"Return the absolute difference between {a} and {b}.", f"    return abs({a} - {b})\n",
                 [(r.randint(-40, 60), r.randint(-40, 60)) for _ in range(5)])


@_generator("arithmetic", "medium")
def _square(r: random.Random) -> _Spec:
    a = r.choice(["n", "x", "side", "number"])
    p, word = r.choice([(2, "square"), (3, "cube")])
    return _Spec(r.choice([word, f"{word}_of", f"get_{word}", f"compute_{word}"]), f"{a}: int",
                 f"Return the {word} of {a}.", f"    return {a} ** {p}\n", _one_arg(r, 5, lambda: r.randint(-12, 30)))


@_generator("arithmetic", "medium")
def _gcd(r: random.Random) -> _Spec:
    a, b = r.choice([("a", "b"), ("x", "y"), ("m", "n")])
    fn, word = r.choice([("gcd", "greatest common divisor"), ("lcm", "least common multiple")])
    g = r.randint(2, 9)
    return _Spec(r.choice([fn, f"find_{fn}", f"compute_{fn}", word.replace(" ", "_")]), f"{a}: int, {b}: int",
                 f"Return the {word} of the positive integers {a} and {b}.", f"    return math.{fn}({a}, {b})\n",
                 [(g * r.randint(1, 12), g * r.randint(1, 12)) for _ in range(5)], imports="import math")


@_generator("arithmetic", "medium")
def _last_digit(r: random.Random) -> _Spec:
    a = r.choice(["n", "number", "x"])
    return _Spec(r.choice(["last_digit", "ones_digit", "final_digit", "units"]), f"{a}: int",
                 f"Return the last decimal digit of the non-negative integer {a}.", f"    return {a} % 10\n",
                 _one_arg(r, 5, lambda: r.randint(0, 10 ** r.randint(1, 6))))


@_generator("arithmetic", "hard")
def _digit_sum(r: random.Random) -> _Spec:
    a = r.choice(["n", "number", "x"])
    return _Spec(r.choice(["digit_sum", "sum_of_digits", "add_digits", "digits_total"]), f"{a}: int",
                 f"Return the sum of the decimal digits of the non-negative integer {a}.",
                 f"    return sum(int(d) for d in str({a}))\n",
                 _one_arg(r, 5, lambda: r.randint(0, 10 ** r.randint(1, 6))))


@_generator("arithmetic", "hard")
def _factorial(r: random.Random) -> _Spec:
    a = r.choice(["n", "k", "number"])
    body = f"    result = 1\n    for i in range(2, {a} + 1):\n        result *= i\n    return result\n"
    inputs = [(r.randint(2, 12),), (0,), (1,), (r.randint(2, 12),), (r.randint(2, 12),)]
    return _Spec(r.choice(["factorial", "fact", "product_up_to", "compute_factorial"]), f"{a}: int",
                 f"Return the factorial of {a} (the product 1 * 2 * ... * {a}); the factorial of 0 is 1.",
                 body, inputs)


@_generator("arithmetic", "hard")
def _sum_multiples(r: random.Random) -> _Spec:
    a = r.choice(["n", "limit", "upper"])
    k = r.randint(2, 9)
    return _Spec(r.choice([f"sum_multiples_of_{k}", "sum_multiples", f"add_multiples_{k}"]), f"{a}: int",
                 f"Return the sum of all positive multiples of {k} that are less than {a}.",
                 f"    return sum(i for i in range({k}, {a}, {k}))\n", _one_arg(r, 5, lambda: r.randint(k + 1, 120)))


@_generator("arithmetic", "hard")
def _count_divisors(r: random.Random) -> _Spec:
    a = r.choice(["n", "number", "x"])
    return _Spec(r.choice(["count_divisors", "num_divisors", "divisor_count", "how_many_divisors"]), f"{a}: int",
                 f"Return how many positive integers divide the positive integer {a} exactly.",
                 f"    return sum(1 for d in range(1, {a} + 1) if {a} % d == 0)\n",
                 _one_arg(r, 5, lambda: r.randint(1, 100)))


@_generator("arithmetic", "hard")
def _is_prime(r: random.Random) -> _Spec:
    a = r.choice(["n", "number", "x"])
    body = (f"    if {a} < 2:\n        return False\n    for d in range(2, int({a} ** 0.5) + 1):\n"
            f"        if {a} % d == 0:\n            return False\n    return True\n")
    inputs = [(r.choice([2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53]),), (1,),
              (r.choice([9, 15, 21, 25, 27, 33, 35, 49, 51, 77, 91]),),
              (r.choice([59, 61, 67, 71, 73, 79, 83, 89, 97]),),
              (r.choice([4, 6, 8, 10, 12, 14, 100]),)]
    r.shuffle(inputs)
    return _Spec(r.choice(["is_prime", "prime", "check_prime", "is_prime_number"]), f"{a}: int",
                 f"Return True if {a} is a prime number, otherwise False.", body, inputs)


@_generator("arithmetic", "hard")
def _fibonacci(r: random.Random) -> _Spec:
    a = r.choice(["n", "k", "index"])
    f0, f1 = r.choice([(0, 1), (1, 1), (2, 1), (1, 3)])
    body = f"    a, b = {f0}, {f1}\n    for _ in range({a}):\n        a, b = b, a + b\n    return a\n"
    return _Spec(r.choice(["fib", "fibonacci", "nth_term", "sequence_value"]), f"{a}: int",
                 f"A sequence starts with {f0}, {f1} and each next term is the sum of the two before it. "
                 f"Return the term at position {a} (position 0 is {f0}).", body,
                 _one_arg(r, 4, lambda: r.randint(2, 20)) + [(0,)])


@_generator("arithmetic", "hard")
def _digital_root(r: random.Random) -> _Spec:
    a = r.choice(["n", "number", "x"])
    body = f"    while {a} >= 10:\n        {a} = sum(int(d) for d in str({a}))\n    return {a}\n"
    return _Spec(r.choice(["digital_root", "repeated_digit_sum", "reduce_digits", "root_digit"]), f"{a}: int",
                 f"Repeatedly replace the non-negative integer {a} by the sum of its digits until one digit is "
                 f"left, and return that digit.", body, _one_arg(r, 5, lambda: r.randint(0, 10 ** r.randint(2, 7))))


@_generator("arithmetic", "hard")
def _collatz(r: random.Random) -> _Spec:
    a = r.choice(["n", "start", "x"])
    body = (f"    steps = 0\n    while {a} != 1:\n        {a} = {a} // 2 if {a} % 2 == 0 else 3 * {a} + 1\n"
            f"        steps += 1\n    return steps\n")
    return _Spec(r.choice(["collatz_steps", "steps_to_one", "collatz_length", "hailstone_steps"]), f"{a}: int",
                 f"Count the steps needed to reach 1 from the positive integer {a}, where each step halves an "
                 f"even number and turns an odd number m into 3*m + 1.", body,
                 _one_arg(r, 4, lambda: r.randint(2, 60)) + [(1,)])


@_generator("arithmetic", "hard")
def _reverse_digits(r: random.Random) -> _Spec:
    a = r.choice(["n", "number", "x"])
    return _Spec(r.choice(["reverse_digits", "reverse_number", "flip_digits", "mirror_number"]), f"{a}: int",
                 f"Return the integer whose decimal digits are those of the non-negative integer {a} in reverse "
                 f"order (leading zeros disappear).", f"    return int(str({a})[::-1])\n",
                 _one_arg(r, 5, lambda: r.randint(10, 10 ** r.randint(2, 6))))


@_generator("arithmetic", "hard")
def _to_binary(r: random.Random) -> _Spec:
    a = r.choice(["n", "number", "x"])
    base, word, fmt = r.choice([(2, "binary", "b"), (8, "octal", "o"), (16, "hexadecimal (lowercase)", "x")])
    return _Spec(r.choice([f"to_{word.split()[0]}", f"{word.split()[0]}_string", f"base_{base}"]), f"{a}: int",
                 f"Return the {word} representation of the non-negative integer {a} as a string, without a prefix.",
                 f"    return format({a}, {fmt!r})\n", _one_arg(r, 4, lambda: r.randint(1, 5000)) + [(0,)])


# ---- dict ---------------------------------------------------------------------------------------

@_generator("dict", "easy")
def _has_key(r: random.Random) -> _Spec:
    d, key = r.choice([("d", "key"), ("prices", "item"), ("scores", "name"), ("stock", "product")])
    inputs = []
    for i in range(5):
        dd = _int_dict(r)
        inputs.append((dd, r.choice(list(dd)) if i % 2 == 0 else r.choice([w for w in WORDS if w not in dd])))
    return _Spec(r.choice(["has_key", "contains", "is_known", f"has_{key}"]), f"{d}: dict, {key}: str",
                 f"Return True if {key} is a key of {d}, otherwise False.", f"    return {key} in {d}\n", inputs)


@_generator("dict", "easy")
def _sum_values(r: random.Random) -> _Spec:
    d = r.choice(["d", "prices", "scores", "counts"])
    return _Spec(r.choice(["sum_values", "total_value", "grand_total", "add_values"]), f"{d}: dict",
                 f"Return the sum of all values in {d}.", f"    return sum({d}.values())\n",
                 _one_arg(r, 5, lambda: _int_dict(r, size_lo=1)))


@_generator("dict", "easy")
def _keys_or_values(r: random.Random) -> _Spec:
    d = r.choice(["d", "mapping", "table", "prices"])
    what, body = r.choice([("keys", f"    return list({d})\n"), ("values", f"    return list({d}.values())\n")])
    return _Spec(r.choice([f"get_{what}", f"list_{what}", f"all_{what}", f"{what}_of"]), f"{d}: dict",
                 f"Return a list of the {what} of {d}, in order.", body,
                 _one_arg(r, 5, lambda: _int_dict(r, size_lo=1)))


@_generator("dict", "easy")
def _lookup(r: random.Random) -> _Spec:
    d, key = r.choice([("d", "key"), ("prices", "item"), ("ages", "name"), ("stock", "product")])
    inputs = [(dd, r.choice(list(dd))) for dd in (_int_dict(r) for _ in range(5))]
    return _Spec(r.choice(["lookup", "get_value", "value_of", f"{key}_value"]), f"{d}: dict, {key}: str",
                 f"Return the value stored under {key} in {d}.", f"    return {d}[{key}]\n", inputs)


@_generator("dict", "easy")
def _is_empty(r: random.Random) -> _Spec:
    d = r.choice(["d", "mapping", "table", "cart"])
    inputs = [({},)] + _one_arg(r, 3, lambda: _int_dict(r, size_lo=1, size_hi=3))
    r.shuffle(inputs)
    return _Spec(r.choice(["is_empty", "empty", "has_nothing", f"{d}_is_empty"]), f"{d}: dict",
                 f"Return True if {d} has no entries, otherwise False.", f"    return len({d}) == 0\n", inputs)


@_generator("dict", "medium")
def _dict_size(r: random.Random) -> _Spec:
    d = r.choice(["d", "mapping", "table", "inventory"])
    return _Spec(r.choice(["count_keys", "dict_size", "num_entries", "size"]), f"{d}: dict",
                 f"Return the number of keys in {d}.", f"    return len({d})\n",
                 [(_int_dict(r, size_lo=k, size_hi=k),) for k in r.sample(range(7), 5)])


@_generator("dict", "medium")
def _max_value(r: random.Random) -> _Spec:
    d = r.choice(["d", "scores", "prices", "ages"])
    fn, word = r.choice([("max", "largest"), ("min", "smallest")])
    return _Spec(r.choice([f"{fn}_value", f"{word}_value", f"find_{fn}", f"{word}_entry_value"]), f"{d}: dict",
                 f"Return the {word} value in the non-empty dict {d}.", f"    return {fn}({d}.values())\n",
                 _one_arg(r, 5, lambda: _int_dict(r, size_lo=1)))


@_generator("dict", "hard")
def _get_default(r: random.Random) -> _Spec:
    d, key = r.choice([("d", "key"), ("prices", "item"), ("scores", "name"), ("stock", "product")])
    default = r.choice([0, -1, 1, 100, "missing", "none", "?"])
    inputs = []
    for i in range(5):
        dd = _int_dict(r)
        inputs.append((dd, r.choice(list(dd)) if i % 2 == 0 else r.choice([w for w in WORDS if w not in dd])))
    return _Spec(r.choice(["lookup", "get_value", "find", f"get_or_{str(default).strip('?-') or 'default'}"]),
                 f"{d}: dict, {key}: str", f"Return the value stored under {key} in {d}, or {default!r} if {key} "
                 f"is not a key of {d}.", f"    return {d}.get({key}, {default!r})\n", inputs)


@_generator("dict", "hard")
def _sorted_keys(r: random.Random) -> _Spec:
    d = r.choice(["d", "mapping", "table", "inventory"])
    rev = r.random() < 0.5
    return _Spec(r.choice(["sorted_keys", "keys_in_order", "ordered_keys", "list_keys"]), f"{d}: dict",
                 f"Return the keys of {d} as a list sorted in {'reverse ' if rev else ''}alphabetical order.",
                 f"    return sorted({d}{', reverse=True' if rev else ''})\n", _one_arg(r, 5, lambda: _int_dict(r)))


@_generator("dict", "hard")
def _invert(r: random.Random) -> _Spec:
    d = r.choice(["d", "mapping", "codes", "table"])
    return _Spec(r.choice(["invert", "swap_keys_values", "reverse_mapping", "flip_dict"]), f"{d}: dict",
                 f"Return a new dict that maps each value of {d} to its key. All values are distinct.",
                 f"    return {{v: k for k, v in {d}.items()}}\n", _one_arg(r, 5, lambda: _distinct_valued_dict(r)))


@_generator("dict", "hard")
def _key_of_max(r: random.Random) -> _Spec:
    d = r.choice(["d", "scores", "votes", "sales"])
    fn, word = r.choice([("max", "largest"), ("min", "smallest")])
    return _Spec(r.choice(["best_key", "winner", f"key_of_{fn}", f"{word}_entry"]), f"{d}: dict",
                 f"Return the key of {d} whose value is the {word}. All values are distinct.",
                 f"    return {fn}({d}, key={d}.get)\n", _one_arg(r, 5, lambda: _distinct_valued_dict(r)))


@_generator("dict", "hard")
def _filter_dict(r: random.Random) -> _Spec:
    d = r.choice(["d", "scores", "stock", "prices"])
    k = r.randint(3, 15)
    return _Spec(r.choice(["filter_dict", f"above_{k}", "keep_large", "select_entries"]), f"{d}: dict",
                 f"Return a new dict with only the entries of {d} whose value is at least {k}.",
                 f"    return {{key: v for key, v in {d}.items() if v >= {k}}}\n",
                 _one_arg(r, 5, lambda: _int_dict(r, size_hi=6)))


@_generator("dict", "hard")
def _scale_values(r: random.Random) -> _Spec:
    d = r.choice(["d", "prices", "scores", "counts"])
    k = r.randint(2, 10)
    op, word = r.choice([("*", f"multiplied by {k}"), ("+", f"increased by {k}")])
    return _Spec(r.choice(["scale_values", "update_all", f"bump_by_{k}", "adjust_values"]), f"{d}: dict",
                 f"Return a new dict with the same keys as {d} and every value {word}.",
                 f"    return {{key: v {op} {k} for key, v in {d}.items()}}\n",
                 _one_arg(r, 5, lambda: _int_dict(r, size_lo=1)))


@_generator("dict", "hard")
def _word_frequency(r: random.Random) -> _Spec:
    a = r.choice(["s", "text", "sentence"])
    body = (f"    counts = {{}}\n    for w in {a}.split():\n        counts[w] = counts.get(w, 0) + 1\n"
            f"    return counts\n")

    def make() -> str:  # few distinct words, so some repeat
        pool = r.sample(WORDS, 3)
        return " ".join(r.choice(pool) for _ in range(r.randint(3, 7)))
    return _Spec(r.choice(["word_frequency", "count_words", "word_counts", "tally_words"]), f"{a}: str",
                 f"Return a dict mapping each word of {a} (separated by spaces) to how many times it appears.",
                 body, _one_arg(r, 5, make))


@_generator("dict", "hard")
def _group_by_first_letter(r: random.Random) -> _Spec:
    a = r.choice(["words", "names", "items"])
    by, what = r.choice([("w[0]", "first letter"), ("len(w)", "length")])
    body = (f"    groups = {{}}\n    for w in {a}:\n        groups.setdefault({by}, []).append(w)\n"
            f"    return groups\n")
    return _Spec(r.choice([f"group_by_{what.replace(' ', '_')}", "group_words", "bucket", "categorize"]),
                 f"{a}: list", f"Return a dict mapping each {what} to the list of words in {a} with that "
                 f"{what}, in their original order.", body, _one_arg(r, 5, lambda: r.sample(WORDS, r.randint(2, 6))))


@_generator("dict", "hard")
def _merge_sum(r: random.Random) -> _Spec:
    a, b = r.choice([("a", "b"), ("first", "second"), ("d1", "d2"), ("left", "right")])
    body = f"    out = dict({a})\n    for k, v in {b}.items():\n        out[k] = out.get(k, 0) + v\n    return out\n"

    def make() -> tuple:
        x = _int_dict(r, 1, 9)
        y = _int_dict(r, 1, 9)
        y[r.choice(list(x))] = r.randint(1, 9)  # at least one shared key
        return (x, y)
    return _Spec(r.choice(["merge_counts", "combine", "add_dicts", "merge_sum"]), f"{a}: dict, {b}: dict",
                 f"Merge {a} and {b} into a new dict; when a key is in both, its value is the sum of the two "
                 f"values.", body, [make() for _ in range(5)])


@_generator("dict", "hard")
def _top_keys(r: random.Random) -> _Spec:
    d = r.choice(["d", "scores", "votes", "sales"])
    k = r.randint(2, 3)
    return _Spec(r.choice(["top_keys", f"top_{k}", "best_entries", "leaders"]), f"{d}: dict",
                 f"Return a list of the {k} keys of {d} with the largest values, largest first. "
                 f"All values are distinct.", f"    return sorted({d}, key={d}.get, reverse=True)[:{k}]\n",
                 _one_arg(r, 5, lambda: _distinct_valued_dict(r, k + 1, 6)))


@_generator("dict", "hard")
def _keys_sorted_by_value(r: random.Random) -> _Spec:
    d = r.choice(["d", "ages", "prices", "scores"])
    return _Spec(r.choice(["keys_by_value", "rank_keys", "order_by_value", "sort_by_value"]), f"{d}: dict",
                 f"Return the keys of {d} as a list ordered by their values, smallest value first. "
                 f"All values are distinct.", f"    return sorted({d}, key={d}.get)\n",
                 _one_arg(r, 5, lambda: _distinct_valued_dict(r, 2, 6)))


# ---- logic (conditionals) -----------------------------------------------------------------------

@_generator("logic", "easy")
def _is_positive(r: random.Random) -> _Spec:
    a = r.choice(["n", "x", "value"])
    op, word = r.choice([(">", "positive (greater than 0)"), ("<", "negative (less than 0)")])
    inputs = [(r.randint(1, 99),), (-r.randint(1, 99),), (0,), (r.randint(1, 99),), (-r.randint(1, 99),)]
    r.shuffle(inputs)
    return _Spec(r.choice([f"is_{word.split()[0]}", f"check_{word.split()[0]}", f"{word.split()[0]}"]),
                 f"{a}: int", f"Return True if {a} is {word}, otherwise False.", f"    return {a} {op} 0\n", inputs)


@_generator("logic", "easy")
def _is_even(r: random.Random) -> _Spec:
    a = r.choice(["n", "x", "number"])
    parity, rest = r.choice([("even", 0), ("odd", 1)])
    inputs = [(2 * r.randint(-20, 50),), (2 * r.randint(-20, 50) + 1,), (2 * r.randint(0, 50),),
              (2 * r.randint(0, 50) + 1,), (r.randint(-99, 99),)]
    r.shuffle(inputs)
    return _Spec(r.choice([f"is_{parity}", f"check_{parity}", parity, f"{parity}_number"]), f"{a}: int",
                 f"Return True if {a} is {parity}, otherwise False.", f"    return {a} % 2 == {rest}\n", inputs)


@_generator("logic", "easy")
def _are_equal(r: random.Random) -> _Spec:
    a, b = r.choice([("a", "b"), ("x", "y"), ("first", "second")])
    same = r.randint(-30, 30)
    inputs = [(same, same), (r.randint(-30, 30), r.randint(31, 60)), (r.randint(0, 9),) * 2,
              (r.randint(-60, -31), r.randint(-30, 30))]
    r.shuffle(inputs)
    return _Spec(r.choice(["are_equal", "same", "is_same", "equal"]), f"{a}: int, {b}: int",
                 f"Return True if {a} and {b} are equal, otherwise False.", f"    return {a} == {b}\n", inputs)


@_generator("logic", "easy")
def _both_true(r: random.Random) -> _Spec:
    a, b = r.choice([("a", "b"), ("p", "q"), ("first", "second")])
    op, word = r.choice([("and", "both {a} and {b} are True"), ("or", "at least one of {a} and {b} is True")])
    inputs = [(True, True), (True, False), (False, True), (False, False)]
    r.shuffle(inputs)
    return _Spec(r.choice([f"{op}_gate", f"logical_{op}", f"{'both' if op == 'and' else 'either'}", f"check_{op}"]),
                 f"{a}: bool, {b}: bool", f"Return True if {word.format(a=a, b=b)}, otherwise False.",
                 f"    return {a} {op} {b}\n", inputs)


@_generator("logic", "medium")
def _max_of_two(r: random.Random) -> _Spec:
    a, b = r.choice([("a", "b"), ("x", "y"), ("first", "second")])
    fn, word = r.choice([("max", "larger"), ("min", "smaller")])
    return _Spec(r.choice([f"{word}", f"{fn}_of_two", f"pick_{word}", f"{word}_one"]), f"{a}: int, {b}: int",
                 f"Return the {word} of the two numbers {a} and {b}.", f"    return {fn}({a}, {b})\n",
                 [(r.randint(-50, 50), r.randint(-50, 50)) for _ in range(5)])


@_generator("logic", "medium")
def _sign(r: random.Random) -> _Spec:
    a = r.choice(["x", "n", "value"])
    words = r.choice([("positive", "negative", "zero"), ("up", "down", "flat"), ("plus", "minus", "none")])
    body = (f"    if {a} > 0:\n        return {words[0]!r}\n    if {a} < 0:\n        return {words[1]!r}\n"
            f"    return {words[2]!r}\n")
    inputs = [(r.randint(1, 99),), (-r.randint(1, 99),), (0,), (r.randint(-99, 99),)]
    r.shuffle(inputs)
    return _Spec(r.choice(["sign", "describe_sign", "classify", "direction"]), f"{a}: int",
                 f"Return {words[0]!r} if {a} is greater than 0, {words[1]!r} if it is less than 0, and "
                 f"{words[2]!r} if it is 0.", body, inputs)


@_generator("logic", "medium")
def _leap_year(r: random.Random) -> _Spec:
    a = r.choice(["year", "y"])
    inputs = [(4 * r.randint(400, 520),), (100 * r.choice([17, 18, 19, 21, 22, 23]),),
              (400 * r.randint(3, 6),), (4 * r.randint(400, 520) + r.randint(1, 3),)]
    r.shuffle(inputs)
    return _Spec(r.choice(["is_leap_year", "leap", "is_leap", "leap_year"]), f"{a}: int",
                 f"Return True if {a} is a leap year: divisible by 4, except years divisible by 100 that are not "
                 f"divisible by 400.", f"    return {a} % 4 == 0 and ({a} % 100 != 0 or {a} % 400 == 0)\n", inputs)


@_generator("logic", "hard")
def _at_least(r: random.Random) -> _Spec:
    a = r.choice(["age", "score", "n", "speed"])
    k = r.randint(5, 90)
    inputs = [(k,), (k - r.randint(1, 10),), (k + r.randint(1, 10),), (k - 1,), (r.randint(0, 100),)]
    r.shuffle(inputs)
    return _Spec(r.choice([f"at_least_{k}", "passes", "is_allowed", "meets_minimum"]), f"{a}: int",
                 f"Return True if {a} is at least {k}, otherwise False.", f"    return {a} >= {k}\n", inputs)


@_generator("logic", "hard")
def _in_range(r: random.Random) -> _Spec:
    a = r.choice(["n", "x", "value", "age"])
    lo = r.randint(-10, 30)
    hi = lo + r.randint(5, 40)
    inputs = [(r.randint(lo, hi),), (lo - r.randint(1, 10),), (hi + r.randint(1, 10),), (lo,), (hi,)]
    r.shuffle(inputs)
    return _Spec(r.choice(["in_range", "is_between", "within_bounds", "in_bounds"]), f"{a}: int",
                 f"Return True if {a} is between {lo} and {hi} (both included), otherwise False.",
                 f"    return {lo} <= {a} <= {hi}\n", inputs)


@_generator("logic", "hard")
def _fizzbuzz_one(r: random.Random) -> _Spec:
    a = r.choice(["n", "x", "number"])
    p, q = r.choice([(3, 5), (2, 7), (3, 4), (2, 5), (4, 7)])
    w1, w2 = r.sample(["Fizz", "Buzz", "Ping", "Pong", "Foo", "Bar", "Tick", "Tock"], 2)
    body = (f"    if {a} % {p * q} == 0:\n        return {w1 + w2!r}\n    if {a} % {p} == 0:\n        return {w1!r}\n"
            f"    if {a} % {q} == 0:\n        return {w2!r}\n    return str({a})\n")
    inputs = [(p * q * r.randint(1, 5),), (p * r.randint(1, 9) * q + p,), (q * r.randint(1, 9) * p + q,),
              (p * q * r.randint(1, 5) + 1,), (r.randint(1, 100),)]
    r.shuffle(inputs)
    return _Spec(r.choice(["fizzbuzz", "say", "game_word", f"{w1.lower()}_{w2.lower()}"]), f"{a}: int",
                 f"Return {w1 + w2!r} if {a} is divisible by both {p} and {q}, {w1!r} if only by {p}, "
                 f"{w2!r} if only by {q}, and otherwise {a} as a string.", body, inputs)


@_generator("logic", "hard")
def _clamp(r: random.Random) -> _Spec:
    a = r.choice(["x", "n", "value"])
    lo = r.randint(-10, 20)
    hi = lo + r.randint(5, 50)
    inputs = [(r.randint(lo, hi),), (lo - r.randint(1, 20),), (hi + r.randint(1, 20),), (r.randint(lo - 30, hi + 30),)]
    r.shuffle(inputs)
    return _Spec(r.choice(["clamp", "limit", "bound", "clip"]), f"{a}: int",
                 f"Return {a} limited to the range {lo}..{hi}: {lo} if {a} is below {lo}, {hi} if it is above "
                 f"{hi}, else {a}.", f"    return max({lo}, min({hi}, {a}))\n", inputs)


@_generator("logic", "hard")
def _grade(r: random.Random) -> _Spec:
    a = r.choice(["score", "points", "mark"])
    cuts = sorted(r.sample(range(40, 96), 3), reverse=True)
    labels = r.choice([("A", "B", "C", "F"), ("gold", "silver", "bronze", "none"), ("high", "mid", "low", "fail")])
    body = "".join(f"    if {a} >= {c}:\n        return {lab!r}\n" for c, lab in zip(cuts, labels)) + \
        f"    return {labels[3]!r}\n"
    inputs = [(cuts[0] + r.randint(0, 4),), (cuts[1],), (cuts[2] + (cuts[1] - cuts[2]) // 2,), (cuts[2] - 1,),
              (r.randint(0, 100),)]
    r.shuffle(inputs)
    rules = ", ".join(f"{lab!r} if {a} is at least {c}" for c, lab in zip(cuts, labels))
    return _Spec(r.choice(["grade", "rank", "medal", "classify_score"]), f"{a}: int",
                 f"Return {rules}, otherwise {labels[3]!r}.", body, inputs)


@_generator("logic", "hard")
def _triangle_kind(r: random.Random) -> _Spec:
    a, b, c = r.choice([("a", "b", "c"), ("x", "y", "z")])
    body = (f"    if {a} + {b} <= {c} or {a} + {c} <= {b} or {b} + {c} <= {a}:\n        return 'invalid'\n"
            f"    if {a} == {b} == {c}:\n        return 'equilateral'\n"
            f"    if {a} == {b} or {b} == {c} or {a} == {c}:\n        return 'isosceles'\n    return 'scalene'\n")
    s = r.randint(2, 9)
    inputs = [(s, s, s), (s, s, s + 1), (3 + s, 4 + s, 5 + s), (1, 2, 3 + s), (s + 1, s, s + 1)]
    r.shuffle(inputs)
    return _Spec(r.choice(["triangle_kind", "classify_triangle", "triangle_type", "which_triangle"]),
                 f"{a}: int, {b}: int, {c}: int",
                 "Given three side lengths, return 'invalid' if they cannot form a triangle (one side is at least "
                 "the sum of the other two), else 'equilateral', 'isosceles' or 'scalene'.", body, inputs)


@_generator("logic", "hard")
def _valid_password(r: random.Random) -> _Spec:
    a = r.choice(["password", "pw", "secret"])
    k = r.randint(6, 10)
    body = (f"    return len({a}) >= {k} and any(c.isdigit() for c in {a}) and any(c.isupper() for c in {a})\n")

    def good() -> str:
        return _mixed_case(r, _word(r)).capitalize() + "".join(r.choice("0123456789") for _ in range(k))

    inputs = [(good(),), (_word(r)[:3] + "A1",), ("a" * k + "1",), ("B" * k,), (good(),)]
    r.shuffle(inputs)
    return _Spec(r.choice(["valid_password", "is_strong", "check_password", "password_ok"]), f"{a}: str",
                 f"Return True if {a} has at least {k} characters, at least one digit and at least one uppercase "
                 f"letter, otherwise False.", body, inputs)


@_generator("logic", "hard")
def _fizzbuzz_list(r: random.Random) -> _Spec:
    a = r.choice(["n", "limit", "count"])
    p, q = r.choice([(3, 5), (2, 3), (2, 5), (3, 4)])
    w1, w2 = r.sample(["Fizz", "Buzz", "Ping", "Pong", "Foo", "Bar"], 2)
    body = (f"    out = []\n    for i in range(1, {a} + 1):\n        if i % {p * q} == 0:\n"
            f"            out.append({w1 + w2!r})\n        elif i % {p} == 0:\n            out.append({w1!r})\n"
            f"        elif i % {q} == 0:\n            out.append({w2!r})\n"
            f"        else:\n            out.append(str(i))\n"
            f"    return out\n")
    return _Spec(r.choice(["fizzbuzz_list", "play_game", "count_off", "sequence_words"]), f"{a}: int",
                 f"Return a list of strings for the numbers 1 to {a}: {w1 + w2!r} for multiples of both {p} and {q}, "
                 f"{w1!r} for multiples of {p}, {w2!r} for multiples of {q}, else the number itself.", body,
                 [(r.randint(p * q, 16),), (1,), (r.randint(2, 8),), (p * q,)])


# ---- assembly -----------------------------------------------------------------------------------

def _args_repr(args: tuple) -> str:
    return ", ".join(repr(a) for a in args)


def _reference(spec: _Spec) -> Callable:
    source = (f"{spec.imports}\n" if spec.imports else "") + f"def {spec.name}({spec.params}):\n{spec.body}"
    namespace: dict = {}
    exec(compile(source, f"<synth:{spec.name}>", "exec"), namespace)  # our own generated reference code
    return namespace[spec.name]


def _render(spec: _Spec) -> dict[str, str] | None:
    """Run the reference on the test arguments and write the HumanEval-style prompt and test."""
    fn = _reference(spec)
    cases: list[tuple[str, object]] = []
    for args in spec.inputs:
        call = _args_repr(args)
        if any(c == call for c, _ in cases):
            continue
        result = fn(*copy.deepcopy(args))
        if result is None:  # a None answer would let the empty solution pass
            raise AssertionError(f"generator {spec.name} produced a None answer for {call}")
        cases.append((call, result))
    if len(cases) < 3:
        return None  # random arguments collided; the caller draws the generator again
    doc = textwrap.fill(spec.doc, width=96, initial_indent="    ", subsequent_indent="    ").lstrip()
    example_call, example_result = cases[0]
    header = f"{spec.imports}\n\n\n" if spec.imports else ""
    prompt = (f'{header}def {spec.name}({spec.params}):\n    """{doc}\n'
              f"    >>> {spec.name}({example_call})\n    {example_result!r}\n    \"\"\"\n")
    test = "def check(candidate):\n" + "".join(f"    assert candidate({c}) == {res!r}\n" for c, res in cases[:6])
    return {"prompt": prompt, "entry_point": spec.name, "test": test, "canonical_solution": spec.body}


def _difficulty_weights(difficulties: dict[str, float] | None) -> dict[str, float]:
    if difficulties is None:
        return dict(DEFAULT_DIFFICULTIES)
    if not isinstance(difficulties, Mapping):
        raise SynthOptionError(f"difficulties: expected a mapping level -> weight, got {type(difficulties).__name__}")
    unknown = sorted(map(str, set(difficulties) - set(DIFFICULTIES)))
    if unknown:
        raise SynthOptionError(f"difficulties: unknown level(s) {unknown}; known: {list(DIFFICULTIES)}")
    weights: dict[str, float] = {}
    for level, w in difficulties.items():
        if isinstance(w, bool) or not isinstance(w, Real) or not math.isfinite(w) or w < 0:
            raise SynthOptionError(f"difficulties: weight of {level!r} must be a finite number >= 0, got {w!r}")
        weights[level] = float(w)
    if sum(weights.values()) <= 0:
        raise SynthOptionError(f"difficulties: weights must sum to more than 0, got {dict(difficulties)}")
    return weights


def _level_sequence(n: int, weights: dict[str, float], rng: random.Random) -> list[str]:
    """Each level's count is its share of n (largest remainders), in a seeded random order: the frame's
    pass@1 then does not swing with how many hard problems a small n happened to draw."""
    total = sum(weights.values())
    exact = {k: n * weights.get(k, 0.0) / total for k in DIFFICULTIES}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(DIFFICULTIES, key=lambda k: counts[k] - exact[k])[:n - sum(counts.values())]:
        counts[k] += 1
    levels = [k for k in DIFFICULTIES for _ in range(counts[k])]
    rng.shuffle(levels)
    return levels


def synthesize_problems(n: int, seed: int, difficulties: dict[str, float] | None = None) -> pd.DataFrame:
    """`n` HumanEval-style problems; the same seed gives the same frame.

    difficulties: relative weight of each level (`easy`, `medium`, `hard`); levels left out are not drawn;
    None = DEFAULT_DIFFICULTIES. Each level gets its share of n; within a level the family and then one of
    its generators are drawn uniformly.
    """
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise SynthOptionError(f"n: number of problems must be an integer >= 1, got {n!r}")
    rng = random.Random(seed)
    levels = _level_sequence(int(n), _difficulty_weights(difficulties), rng)
    rows = []
    for i, difficulty in enumerate(levels):
        family = rng.choice(FAMILIES)
        generate = rng.choice(_GENERATORS[(family, difficulty)])
        row = None
        while row is None:
            row = _render(generate(rng))
        rows.append({"task_id": f"synth/{family}/{i}", **row, "family": family, "difficulty": difficulty})
    return pd.DataFrame(rows, columns=COLUMNS)
