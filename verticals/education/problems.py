"""Seeded math word problems with exact answers (fractions.Fraction), in seven families and three
difficulty levels (the number of steps). Each problem also carries what typical student errors need: the
first step's value (partial work), a plausible wrong operation's value, and where a unit conversion is
involved, the value a student gets by skipping it."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction as F

import numpy as np

NAMES = ("Ana", "Ben", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jia", "Kofi", "Lena", "Mo", "Nia",
         "Omar", "Priya", "Raj", "Sara", "Tom", "Uma", "Vera", "Wei", "Yusuf", "Zoe")
ITEMS = (("pen", "pens"), ("notebook", "notebooks"), ("apple", "apples"), ("ticket", "tickets"),
         ("sticker", "stickers"), ("muffin", "muffins"), ("ruler", "rulers"), ("juice", "juices"))
UNIT_WORDS = {"$": "dollars", "km": "kilometers", "m": "meters", "cm": "centimeters", "min": "minutes",
              "m2": "square meters", "students": "students", "cookies": "cookies", "h": "hours"}


@dataclass
class Problem:
    family: str
    difficulty: int
    question: str
    value: F
    unit: str  # "$", "km", "m", "cm", "m2" or a counted noun ("students")
    steps: list[F] = field(default_factory=list)  # intermediate values, in order (partial work stops at one)
    work: str = ""  # the calculation a student would write, with {v} where the result goes
    wrong_value: F | None = None  # a plausible wrong operation
    unconverted: F | None = None  # the value when a unit conversion is skipped
    alt_unit: tuple[str, F] | None = None  # the answer in another unit: (unit, factor): value*factor


def money(x: F) -> str:
    return f"${float(x):,.2f}"


def _r(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(rng.integers(lo, hi + 1))


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def shopping(rng, d: int) -> Problem:
    name, (item, items) = _pick(rng, NAMES), _pick(rng, ITEMS)
    price, n = F(_r(rng, 5, 60) * 25, 100), _r(rng, 2, 9)
    cost = price * n
    article = "An" if item[0] in "aeiou" else "A"
    q = f"{article} {item} costs {money(price)}. {name} buys {n} {items}."
    work = f"{n} x {money(price)} = {{v}}"
    if d == 1:
        return Problem("shopping", d, q + " How much does it cost?", cost, "$", [cost], work, price + n)
    price2, n2 = F(_r(rng, 2, 20) * 50, 100), _r(rng, 2, 5)
    total = cost + price2 * n2
    q = f"{article} {item} costs {money(price)} and a bag costs {money(price2)}. {name} buys {n} {items} and {n2} bags."
    work = f"{n} x {money(price)} + {n2} x {money(price2)} = {{v}}"
    if d == 2:
        return Problem("shopping", d, q + " What is the total?", total, "$", [cost, total], work,
                       price * n + price2 + n2)
    bill = F(50 if total < 50 else 100)
    if total >= bill:
        bill = F(int(total // 50 + 1) * 50)
    change = bill - total
    return Problem("shopping", d, q + f" She pays with {money(bill)}. How much change does she get?", change, "$",
                   [cost, total, change], f"{money(bill)} - {money(total)} = {{v}}",
                   bill - cost)


def travel(rng, d: int) -> Problem:
    speed = _r(rng, 4, 24) * 5
    if d == 1:
        hours = F(_r(rng, 2, 10), 2)
        dist = speed * hours
        return Problem("travel", d, f"A bus travels at {speed} km/h for {float(hours):g} hours. How far does it go?",
                       dist, "km", [dist], f"{speed} x {float(hours):g} = {{v}}", speed + hours,
                       alt_unit=("m", F(1000)))
    minutes = _r(rng, 1, 9) * 15
    leg1 = speed * F(minutes, 60)
    if d == 2:
        return Problem("travel", d, f"A bus travels at {speed} km/h for {minutes} minutes. How far does it go?",
                       leg1, "km", [F(minutes, 60), leg1], f"{speed} x {minutes}/60 = {{v}}", F(speed, minutes),
                       unconverted=F(speed * minutes))
    speed2, hours2 = _r(rng, 4, 16) * 5, _r(rng, 1, 4)
    total = leg1 + speed2 * hours2
    return Problem("travel", d, f"A bus travels at {speed} km/h for {minutes} minutes, then at {speed2} km/h for "
                   f"{hours2} hours. How far does it go in all?", total, "km", [leg1, total],
                   f"{speed} x {minutes}/60 + {speed2} x {hours2} = {{v}}", leg1 + speed2 + hours2,
                   unconverted=speed * minutes + speed2 * hours2)


def fractions(rng, d: int) -> Problem:
    b = _pick(rng, (2, 3, 4, 5, 6, 8))
    a = _r(rng, 1, b - 1)
    frac = F(a, b)
    group = b * _r(rng, 2, 8)
    part = frac * group
    q = f"There are {group} students in a club. {frac.numerator}/{frac.denominator} of them play chess."
    if d == 1:
        return Problem("fractions", d, q + " How many play chess?", part, "students", [part],
                       f"{frac.numerator}/{frac.denominator} x {group} = {{v}}", F(group, frac.denominator) + a)
    rest = group - part
    if d == 2:
        return Problem("fractions", d, q + " How many do not play chess?", rest, "students", [part, rest],
                       f"{group} - {part} = {{v}}", part)
    share = F(1, _pick(rng, (2, 3, 4)))
    if (rest * share).denominator != 1:
        share = F(1, 1) if rest == 0 else F(1, 2) if rest % 2 == 0 else F(1, int(rest))
    last = rest * share
    return Problem("fractions", d, q + f" Of the others, {share.numerator}/{share.denominator} play tennis. How many "
                   "play tennis?", last, "students", [part, rest, last],
                   f"({group} - {part}) x {share.numerator}/{share.denominator} = {{v}}", part * share)


def percent(rng, d: int) -> Problem:
    price, pct = _r(rng, 4, 40) * 5, _pick(rng, (10, 15, 20, 25, 30, 40, 50))
    off = F(price * pct, 100)
    q = f"A jacket costs ${price}. It is on sale for {pct}% off."
    if d == 1:
        return Problem("percent", d, q + " How much is the discount?", off, "$", [off], f"{pct}% of ${price} = {{v}}",
                       F(price - pct))
    sale = price - off
    if d == 2:
        return Problem("percent", d, q + " What is the sale price?", sale, "$", [off, sale],
                       f"${price} - {money(off)} = {{v}}", off)
    tax = _pick(rng, (5, 8, 10))
    final = sale * (1 + F(tax, 100))
    return Problem("percent", d, q + f" Then {tax}% tax is added. What is the final price?", final, "$",
                   [off, sale, final], f"{money(sale)} x 1.{tax:02d} = {{v}}", sale + tax)


def sharing(rng, d: int) -> Problem:
    friends = _pick(rng, (2, 4, 5, 8))
    each = F(_r(rng, 3, 24), _pick(rng, (1, 2, 2, 4)))
    total = each * friends
    if total.denominator != 1:
        total, each = F(int(total) + 1), F(int(total) + 1, friends)
    if d == 1:
        return Problem("sharing", d, f"{friends} friends share {total} cookies equally. How many does each get?",
                       each, "cookies", [each], f"{total} / {friends} = {{v}}", total - friends)
    boxes = next((b for b in (_pick(rng, (2, 3, 4)), 2, 3, 4, 5) if (total / b).denominator == 1 and total > b), 0)
    if not boxes:  # a prime number of cookies: no boxes to split it into
        return sharing(rng, d)
    per_box = total / boxes
    return Problem("sharing", d, f"{friends} friends share {boxes} boxes of {per_box} cookies equally. How many "
                   "does each get?", each, "cookies", [total, each], f"{boxes} x {per_box} / {friends} = {{v}}",
                   per_box / friends)


def measure(rng, d: int) -> Problem:
    pieces = _pick(rng, (2, 4, 5, 8))
    each_cm = F(_r(rng, 5, 60) * 5)
    length_m = each_cm * pieces / 100
    q = f"A ribbon is {float(length_m):g} m long. It is cut into {pieces} equal pieces."
    if d == 1:
        each = length_m / pieces
        return Problem("measure", d, q + " How long is each piece?", each, "m", [each],
                       f"{float(length_m):g} / {pieces} = {{v}}", length_m * pieces, alt_unit=("cm", F(100)))
    if d == 2:
        return Problem("measure", d, q + " How long is each piece in cm?", each_cm, "cm", [length_m / pieces, each_cm],
                       f"{float(length_m):g} x 100 / {pieces} = {{v}}", length_m * 100 * pieces,
                       unconverted=length_m / pieces, alt_unit=("m", F(1, 100)))
    used = _r(rng, 1, pieces - 1)
    left = each_cm * (pieces - used)
    return Problem("measure", d, q + f" {used} {'piece is' if used == 1 else 'pieces are'} used. How many cm of ribbon are left?", left, "cm",
                   [each_cm, left], f"{pieces - used} x {each_cm} = {{v}}", each_cm * used,
                   unconverted=left / 100, alt_unit=("m", F(1, 100)))


def area(rng, d: int) -> Problem:
    w, h = _r(rng, 3, 20), F(_r(rng, 4, 40), 2)
    q = f"A garden is {w} m long and {float(h):g} m wide."
    if d == 1:
        a = w * h
        return Problem("area", d, q + " What is its area?", a, "m2", [a], f"{w} x {float(h):g} = {{v}}", 2 * (w + h))
    perim = 2 * (w + h)
    if d == 2:
        return Problem("area", d, q + " How much fence goes around it?", perim, "m", [w + h, perim],
                       f"2 x ({w} + {float(h):g}) = {{v}}", w * h)
    price = _r(rng, 2, 9)
    cost = perim * price
    return Problem("area", d, q + f" Fence costs ${price} per meter. How much does a fence around it cost?", cost,
                   "$", [perim, cost], f"2 x ({w} + {float(h):g}) x {price} = {{v}}", w * h * price)


FAMILIES = {"shopping": shopping, "travel": travel, "fractions": fractions, "percent": percent,
            "sharing": sharing, "measure": measure, "area": area}


def make_problem(rng: np.random.Generator, family: str | None = None, difficulty: int | None = None) -> Problem:
    family = family or _pick(rng, tuple(FAMILIES))
    difficulty = difficulty or _r(rng, 1, 3)
    return FAMILIES[family](rng, difficulty)
