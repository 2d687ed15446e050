"""Tests of the built-in problem suite (engine/envs/code_suite/*.toml) and its loader.

Every stored expected output is re-derived here by an independent checker: a brute-force or
otherwise differently written solution (or, for one problem, a certificate check), never the
TOML's reference solution. The reference solutions themselves are run as real subprocesses.
"""

from __future__ import annotations

import heapq
import re
import subprocess
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from functools import cmp_to_key
from itertools import combinations, groupby

import pytest

from engine.envs.code_problem import CodeProblem, IOTest
from engine.envs.suite_loader import SUITE_PREFIX, load_suite, outputs_match, parse_problem

MOD = 1_000_000_007
TIMEOUT_S = 10
PROBLEMS = load_suite()


def _slug(problem: CodeProblem) -> str:
    return problem.id.removeprefix(SUITE_PREFIX)


# --------------------------------------------------------------------------- independent checkers
# Each ``solve_*`` takes the full stdin text and returns the expected stdout.


def solve_brighter_than_average(inp: str) -> str:
    tokens = inp.split()
    values = [int(x) for x in tokens[1:]]
    mean = Fraction(sum(values), len(values))
    return f"{len([v for v in values if v > mean])}\n"


def solve_night_shift(inp: str) -> str:
    lines = inp.splitlines()
    out = []
    for line in lines[1 : 1 + int(lines[0])]:
        start, end = line.split()
        now = int(start[:2]) * 60 + int(start[3:])
        goal = int(end[:2]) * 60 + int(end[3:])
        minutes = 0
        while now != goal:  # walk the clock forward one minute at a time
            now = (now + 1) % (24 * 60)
            minutes += 1
        out.append(str(minutes))
    return "\n".join(out) + "\n"


def solve_soft_words(inp: str) -> str:
    runs = re.findall(r"[aeiou]+", inp.strip())
    return f"{max((len(run) for run in runs), default=0)}\n"


def solve_ups_and_downs(inp: str) -> str:
    values = [int(x) for x in inp.split()[1:]]
    pairs = list(zip(values, values[1:], strict=False))
    return f"{sum(b > a for a, b in pairs)} {sum(b < a for a, b in pairs)}\n"


def solve_most_common_word(inp: str) -> str:
    words = sorted(inp.split()[1:])
    best_word, best_count = "", 0
    for word, group in groupby(words):
        count = len(list(group))
        if count > best_count:  # strictly greater: the alphabetically first word keeps a tie
            best_word, best_count = word, count
    return f"{best_word} {best_count}\n"


def solve_digit_collapse(inp: str) -> str:
    number = int(inp.strip())
    original = number
    steps = 0
    while number >= 10:
        total = 0
        while number:
            number, digit = divmod(number, 10)
            total += digit
        number = total
        steps += 1
    assert number == 1 + (original - 1) % 9  # digital-root formula as a second opinion
    return f"{steps} {number}\n"


def solve_shifted_letters(inp: str) -> str:
    lines = inp.split("\n")
    shift = int(lines[0]) % 26
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    rotated = alphabet[26 - shift :] + alphabet[: 26 - shift]
    return lines[1].translate(str.maketrans(alphabet, rotated)) + "\n"


def solve_sock_drawer(inp: str) -> str:
    colours = sorted(int(x) for x in inp.split()[1:])
    pairs = 0
    i = 0
    while i + 1 < len(colours):
        if colours[i] == colours[i + 1]:
            pairs += 1
            i += 2
        else:
            i += 1
    return f"{pairs}\n"


def solve_balanced_brackets(inp: str) -> str:
    out = []
    for s in inp.split()[1:]:
        previous = None
        while previous != s:  # peel off innermost matched pairs until nothing changes
            previous = s
            s = s.replace("()", "").replace("[]", "").replace("{}", "")
        out.append("YES" if not s else "NO")
    return "\n".join(out) + "\n"


def solve_reading_plan(inp: str) -> str:
    pages, first, extra = map(int, inp.split())

    def read_after(days: int) -> int:
        return days * first + extra * days * (days - 1) // 2

    low, high = 1, pages  # read_after(pages) >= pages since first >= 1
    while low < high:
        mid = (low + high) // 2
        if read_after(mid) >= pages:
            high = mid
        else:
            low = mid + 1
    return f"{low}\n"


def solve_scrambled_names(inp: str) -> str:
    def letter_counts(word: str) -> tuple[int, ...]:
        counts = [0] * 26
        for ch in word:
            counts[ord(ch) - ord("a")] += 1
        return tuple(counts)

    groups: dict[tuple[int, ...], int] = {}
    for word in inp.split()[1:]:
        key = letter_counts(word)
        groups[key] = groups.get(key, 0) + 1
    return f"{len(groups)} {max(groups.values())}\n"


def solve_painting_the_fence(inp: str) -> str:
    tokens = list(map(int, inp.split()))
    n, m = tokens[0], tokens[1]
    coats = [0] * (n + 1)
    for i in range(m):
        left, right = tokens[2 + 2 * i], tokens[3 + 2 * i]
        coats[left : right + 1] = [c + 1 for c in coats[left : right + 1]]
    planks = coats[1:]
    return f"{planks.count(0)} {max(planks)}\n"


def solve_harvest_ledger(inp: str) -> str:
    tokens = list(map(int, inp.split()))
    n, q = tokens[0], tokens[1]
    profits = tokens[2 : 2 + n]
    rest = tokens[2 + n :]
    return "".join(f"{sum(profits[rest[2 * j] - 1 : rest[2 * j + 1]])}\n" for j in range(q))


def solve_escape_the_maze(inp: str) -> str:
    lines = inp.split()
    rows, cols = int(lines[0]), int(lines[1])
    grid = lines[2 : 2 + rows]
    cells = {(i, j): ch for i, row in enumerate(grid) for j, ch in enumerate(row)}
    start = next(pos for pos, ch in cells.items() if ch == "S")
    goal = next(pos for pos, ch in cells.items() if ch == "E")
    best = {start: 0}
    heap = [(0, start)]
    while heap:  # Dijkstra with unit weights
        dist, (i, j) = heapq.heappop(heap)
        if dist > best[(i, j)]:
            continue
        for nxt in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
            if cells.get(nxt, "#") != "#" and dist + 1 < best.get(nxt, rows * cols + 1):
                best[nxt] = dist + 1
                heapq.heappush(heap, (dist + 1, nxt))
    return f"{best.get(goal, -1)}\n"


def solve_two_tickets(inp: str) -> str:
    tokens = list(map(int, inp.split()))
    target, prices = tokens[1], tokens[2:]
    return f"{sum(1 for a, b in combinations(prices, 2) if a + b == target)}\n"


def solve_shopping_street(inp: str) -> str:
    tokens = list(map(int, inp.split()))
    budget, prices = tokens[1], tokens[2:]
    best = 0
    for start in range(len(prices)):
        total = 0
        for end in range(start, len(prices)):
            total += prices[end]
            if total > budget:
                break
            best = max(best, end - start + 1)
    return f"{best}\n"


def solve_broken_stairs(inp: str) -> str:
    tokens = inp.split()
    n, steps = int(tokens[0]), tokens[1]
    ok = [True] + [ch == "." for ch in steps]
    ways = [0] * (n + 1)  # exact big integers, pushed forward; reduced only at the end
    ways[0] = 1
    for step in range(n):
        if ways[step]:
            for jump in (1, 2, 3):
                if step + jump <= n and ok[step + jump]:
                    ways[step + jump] += ways[step]
    return f"{ways[n] % MOD}\n"


def solve_conference_day(inp: str) -> str:
    tokens = list(map(int, inp.split()))
    talks = sorted((tokens[1 + 2 * i], tokens[2 + 2 * i]) for i in range(tokens[0]))
    starts = [s for s, _ in talks]
    best = [0] * (len(talks) + 1)  # best[i]: most talks among talks[i:], sorted by start
    for i in range(len(talks) - 1, -1, -1):
        nxt = i + 1
        while nxt < len(talks) and starts[nxt] < talks[i][1]:
            nxt += 1
        best[i] = max(best[i + 1], 1 + best[nxt])
    return f"{best[0]}\n"


def solve_leaderboard(inp: str) -> str:
    tokens = inp.split()
    players = [(tokens[1 + 2 * i], int(tokens[2 + 2 * i])) for i in range(int(tokens[0]))]
    score_counts = Counter(score for _, score in players)

    def compare(a: tuple[str, int], b: tuple[str, int]) -> int:
        if a[1] != b[1]:
            return b[1] - a[1]
        return (a[0] > b[0]) - (a[0] < b[0])

    lines = []
    for name, score in sorted(players, key=cmp_to_key(compare)):
        rank = 1 + sum(count for other, count in score_counts.items() if other > score)
        lines.append(f"{rank} {name} {score}")
    return "\n".join(lines) + "\n"


def check_rope_workshop(inp: str, expected: str) -> bool:
    """Certificate check: the piece count is non-increasing in L, so L is the answer iff
    count(L) >= k and count(L + 1) < k (with count(0) treated as infinite)."""
    tokens = list(map(int, inp.split()))
    k, lengths = tokens[1], tokens[2:]
    text = expected.strip()
    if not re.fullmatch(r"0|[1-9][0-9]*", text) or not outputs_match(text + "\n", expected):
        return False
    answer = int(text)

    def count(size: int) -> int:
        return sum(a // size for a in lengths)

    if answer == 0:
        return count(1) < k
    return count(answer) >= k and count(answer + 1) < k


def solve_cube_pyramid(inp: str) -> str:
    # S(n) is a cubic polynomial: interpolate it exactly through S(0..3) (Lagrange, Fractions).
    xs = [0, 1, 2, 3]
    ys = [sum(i * i for i in range(1, x + 1)) for x in xs]
    out = []
    for n in map(int, inp.split()[1:]):
        if n <= 5000:
            value = sum(i * i for i in range(1, n + 1))
        else:
            total = Fraction(0)
            for xi, yi in zip(xs, ys, strict=True):
                term = Fraction(yi)
                for xj in xs:
                    if xj != xi:
                        term *= Fraction(n - xj, xi - xj)
                total += term
            assert total.denominator == 1
            value = total.numerator
        out.append(str(value % MOD))
    return "\n".join(out) + "\n"


def solve_robot_program(inp: str) -> str:
    program = inp.strip()
    commands = re.findall(r"L|R|F[1-9][0-9]*", program)
    assert "".join(commands) == program
    x = y = 0
    dx, dy = 0, 1
    for command in commands:
        if command == "L":
            dx, dy = -dy, dx
        elif command == "R":
            dx, dy = dy, -dx
        else:
            x += dx * int(command[1:])
            y += dy * int(command[1:])
    facing = {(0, 1): "N", (1, 0): "E", (0, -1): "S", (-1, 0): "W"}[(dx, dy)]
    return f"{x} {y} {facing}\n"


def solve_exact_change(inp: str) -> str:
    tokens = list(map(int, inp.split()))
    target, values = tokens[1], tokens[2:]
    coins_used = {0: 0}
    frontier = deque([0])
    while frontier:  # breadth-first search over reachable amounts; layer = number of coins
        amount = frontier.popleft()
        for value in values:
            nxt = amount + value
            if nxt <= target and nxt not in coins_used:
                coins_used[nxt] = coins_used[amount] + 1
                frontier.append(nxt)
    return f"{coins_used.get(target, -1)}\n"


def solve_waiting_for_warmth(inp: str) -> str:
    temps = list(map(int, inp.split()[1:]))
    answers = []
    for i, t in enumerate(temps):
        wait = 0
        for j in range(i + 1, len(temps)):
            if temps[j] > t:
                wait = j - i
                break
        answers.append(str(wait))
    return " ".join(answers) + "\n"


def solve_rocky_field(inp: str) -> str:
    tokens = inp.split()
    rows, cols = int(tokens[0]), int(tokens[1])
    grid = tokens[2 : 2 + rows]
    # paths from (i, j) to the bottom-right corner, exact integers, filled bottom-up
    to_end = [[0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(rows - 1, -1, -1):
        for j in range(cols - 1, -1, -1):
            if grid[i][j] == "#":
                to_end[i][j] = 0
            elif i == rows - 1 and j == cols - 1:
                to_end[i][j] = 1
            else:
                to_end[i][j] = to_end[i + 1][j] + to_end[i][j + 1]
    return f"{to_end[0][0] % MOD}\n"


def _by_solution(solve: Callable[[str], str]) -> Callable[[str, str], bool]:
    return lambda inp, expected: outputs_match(solve(inp), expected)


CHECKERS: dict[str, Callable[[str, str], bool]] = {
    "balanced-brackets": _by_solution(solve_balanced_brackets),
    "brighter-than-average": _by_solution(solve_brighter_than_average),
    "broken-stairs": _by_solution(solve_broken_stairs),
    "conference-day": _by_solution(solve_conference_day),
    "cube-pyramid": _by_solution(solve_cube_pyramid),
    "digit-collapse": _by_solution(solve_digit_collapse),
    "escape-the-maze": _by_solution(solve_escape_the_maze),
    "exact-change": _by_solution(solve_exact_change),
    "harvest-ledger": _by_solution(solve_harvest_ledger),
    "leaderboard": _by_solution(solve_leaderboard),
    "most-common-word": _by_solution(solve_most_common_word),
    "night-shift": _by_solution(solve_night_shift),
    "painting-the-fence": _by_solution(solve_painting_the_fence),
    "reading-plan": _by_solution(solve_reading_plan),
    "robot-program": _by_solution(solve_robot_program),
    "rocky-field": _by_solution(solve_rocky_field),
    "rope-workshop": check_rope_workshop,
    "scrambled-names": _by_solution(solve_scrambled_names),
    "shifted-letters": _by_solution(solve_shifted_letters),
    "shopping-street": _by_solution(solve_shopping_street),
    "sock-drawer": _by_solution(solve_sock_drawer),
    "soft-words": _by_solution(solve_soft_words),
    "two-tickets": _by_solution(solve_two_tickets),
    "ups-and-downs": _by_solution(solve_ups_and_downs),
    "waiting-for-warmth": _by_solution(solve_waiting_for_warmth),
}


# --------------------------------------------------------------------------- helpers


def _run_program(code: str, stdin: str) -> str:
    """Run ``code`` as a real Python subprocess fed ``stdin``; return its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _all_io(problem: CodeProblem) -> list[IOTest]:
    return [*problem.examples, *problem.tests]


# --------------------------------------------------------------------------- suite shape


def test_suite_size_ids_and_order() -> None:
    assert len(PROBLEMS) >= 22
    ids = [p.id for p in PROBLEMS]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # sorted by file name == sorted by slug
    assert all(
        i.startswith(SUITE_PREFIX) and re.fullmatch(r"[a-z0-9-]+", _slug(p))
        for i, p in zip(ids, PROBLEMS, strict=True)
    )
    levels = Counter("easy" if p in load_suite("easy") else "medium" for p in PROBLEMS)
    assert set(levels) == {"easy", "medium"}
    assert levels["easy"] >= 8 and levels["medium"] >= 8


def test_every_problem_has_a_checker() -> None:
    assert set(CHECKERS) == {_slug(p) for p in PROBLEMS}


@pytest.mark.parametrize("problem", PROBLEMS, ids=_slug)
def test_problem_fields(problem: CodeProblem) -> None:
    assert problem.kind == "stdio"
    assert problem.title.strip()
    assert problem.statement.strip()
    assert "Input" in problem.statement and "Output" in problem.statement
    assert "Constraints" in problem.statement
    assert 1 <= len(problem.examples) <= 3
    assert 8 <= len(problem.tests) <= 15
    assert problem.reference and "sys.stdin" in problem.reference
    for case in _all_io(problem):
        assert case.input.endswith("\n") and case.input.strip()
        assert case.output.strip()
    hidden_inputs = [t.input for t in problem.tests]
    assert len(set(hidden_inputs)) == len(hidden_inputs), "duplicate hidden test"
    # outputs differ, so a program printing one fixed answer cannot pass
    assert len({t.output for t in problem.tests}) >= 2


@pytest.mark.parametrize("problem", PROBLEMS, ids=_slug)
def test_independent_checker_agrees(problem: CodeProblem) -> None:
    check = CHECKERS[_slug(problem)]
    for index, case in enumerate(_all_io(problem)):
        assert check(case.input, case.output), f"{problem.id}: stored output #{index} disagrees"


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


@pytest.mark.parametrize("problem", PROBLEMS, ids=_slug)
def test_reference_passes_all_tests(problem: CodeProblem, pool: ThreadPoolExecutor) -> None:
    cases = _all_io(problem)
    outputs = list(pool.map(lambda case: _run_program(problem.reference or "", case.input), cases))
    for index, (case, got) in enumerate(zip(cases, outputs, strict=True)):
        assert outputs_match(case.output, got), f"{problem.id}: reference fails case #{index}"


def _wrong_program(problem: CodeProblem, kind: str) -> str:
    """A deliberately wrong solution: it prints nothing, or always the first example's output."""
    if kind == "prints-nothing":
        return "import sys\nsys.stdin.read()\n"
    return f"import sys\nsys.stdin.read()\nsys.stdout.write({problem.examples[0].output!r})\n"


@pytest.mark.parametrize("wrong", ["prints-nothing", "prints-first-example"])
@pytest.mark.parametrize("problem", PROBLEMS, ids=_slug)
def test_wrong_program_fails_a_hidden_test(problem: CodeProblem, wrong: str) -> None:
    code = _wrong_program(problem, wrong)
    for case in problem.tests:
        if not outputs_match(case.output, _run_program(code, case.input)):
            return
    pytest.fail(f"{problem.id}: the wrong program ({wrong}) passes every hidden test")


# --------------------------------------------------------------------------- outputs_match


@pytest.mark.parametrize(
    ("expected", "got", "same"),
    [
        ("3\n", "3\n", True),
        ("3\n", "3", True),
        ("3", "3\n\n\n", True),
        ("1 2\n3\n", "1 2   \n3\t\n", True),
        ("1 2\n3\n", "1 2\r\n3\r\n", True),
        ("YES\nNO\n", "YES\nNO\n  \n\n", True),
        ("", "", True),
        ("", "\n \n", True),
        ("3\n", "4\n", False),
        ("3\n", "", False),
        ("", "0\n", False),
        ("1 2\n", "1  2\n", False),
        ("1 2\n", " 1 2\n", False),
        ("1 2\n", "1\n2\n", False),
        ("1\n2\n", "1 2\n", False),
        ("a\nb\n", "\na\nb\n", False),
        ("a\n\nb\n", "a\nb\n", False),
        ("YES\n", "yes\n", False),
        ("10\n", "10.0\n", False),
    ],
)
def test_outputs_match(expected: str, got: str, same: bool) -> None:
    assert outputs_match(expected, got) is same
    assert outputs_match(got, expected) is same


# --------------------------------------------------------------------------- loader API


def test_load_suite_is_cached_and_filters() -> None:
    assert load_suite() is load_suite()
    easy, medium = load_suite("easy"), load_suite("medium")
    assert len(easy) + len(medium) == len(PROBLEMS)
    assert not set(easy) & set(medium)
    with pytest.raises(ValueError):
        load_suite("hard")


GOOD_TOML = """
title = "Echo"
difficulty = "easy"
statement = '''
Print the number.

Input
One integer.

Output
The same integer.
'''
reference = "print(input())"

[[examples]]
input = "1\\n"
output = "1\\n"

[[tests]]
input = "2\\n"
output = "2\\n"
"""


def test_parse_problem() -> None:
    problem, level = parse_problem("echo", GOOD_TOML)
    assert level == "easy"
    assert problem.id == "suite/echo"
    assert problem.kind == "stdio"
    assert problem.statement.startswith("Print the number.") and problem.statement.endswith("integer.")
    assert problem.examples == (IOTest("1\n", "1\n"),)
    assert problem.tests == (IOTest("2\n", "2\n"),)
    assert problem.reference == "print(input())"


@pytest.mark.parametrize(
    "broken",
    [
        GOOD_TOML.replace('title = "Echo"', ""),
        GOOD_TOML.replace('"easy"', '"hard"'),
        GOOD_TOML.replace('reference = "print(input())"', 'reference = ""'),
        GOOD_TOML.replace('output = "2\\n"', "output = 2"),
        GOOD_TOML.replace("[[tests]]", "[tests]"),
        GOOD_TOML + "\n[[[oops\n",
    ],
)
def test_parse_problem_rejects_bad_files(broken: str) -> None:
    with pytest.raises(ValueError):
        parse_problem("broken", broken)
