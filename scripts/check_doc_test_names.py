"""Checks that the tests and test files the documentation cites exist.

Tests get renamed and moved (the integration tests became modules of one
binary, tests/it/), and a doc that still names the old test sends a reader
to nothing. Scanned: every tracked Markdown file, and the comments of every
tracked Rust, Python and shell file and of .ci/run. Three kinds of citation
are checked:

- a path `tests/…rs` must be a tracked file;
- `--test NAME` (cargo test's flag) must name a test target (a file or folder
  directly under tests/, or a [[test]] of a Cargo.toml), and a filter
  `a::b::name` or `a::b::` on a `cargo test` line must select some test;
- a backticked Rust path or snake_case name with an underscore, on a line
  that says "test" (or names a tests/ file), must be a
  `#[test]` function, with any `a::b::` before it matching the modules or
  files it lives in, or else be some other identifier of the Rust sources
  (a field, a helper function): what it cannot be is a name nothing defines.

A name cited on a line that does not mention tests is not checked, because
without that word a backticked name is as likely a field, a flag or a JSON
key; the check would otherwise have to guess.

Run from anywhere: python3 scripts/check_doc_test_names.py (exit status 1
and one line per dangling citation when any is found).
"""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATE_ROOTS = {"crate", "self", "super", "quba_edge", "quba_host", "quba_common", "quba_wire"}


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--", *patterns], check=True, capture_output=True, text=True)
    return [ROOT / p for p in out.stdout.split()]


def module_segments(path: Path) -> list[str]:
    """The module path a file's items live under, as far as the file name tells."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if "src" in parts:
        parts = parts[parts.index("src") + 1:]
    elif parts and parts[0] == "tests":
        parts = parts[1:]
    return [p for p in parts if p not in ("lib", "main", "mod")]


def rust_items() -> tuple[dict[str, list[list[str]]], set[str]]:
    """#[test] functions (name → module paths they are found under) and every identifier in the Rust sources."""
    tests: dict[str, list[list[str]]] = {}
    idents: set[str] = set()
    for f in tracked("*.rs"):
        text = f.read_text(encoding="utf-8", errors="replace")
        idents.update(re.findall(r"\b[A-Za-z_]\w*\b", text))
        base = module_segments(f)
        # Inline modules opened before a test, in order: a superset of its real
        # path (a closed module stays listed), which only makes the check lenient.
        mods = [(m.start(), m[1]) for m in re.finditer(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*\{", text, re.M)]
        for m in re.finditer(r"#\[test\]\s*(?:(?:#\[[^\]]*\]|///[^\n]*|//[^\n]*)\s*)*(?:pub\s+)?(?:async\s+)?fn\s+(\w+)", text):
            inner = [name for pos, name in mods if pos < m.start()]
            tests.setdefault(m[1], []).append(base + inner)
    return tests, idents


def test_targets() -> set[str]:
    names = {p.stem for p in (ROOT / "tests").glob("*.rs")} | {p.name for p in (ROOT / "tests").iterdir() if (p / "main.rs").exists()}
    for toml in tracked("Cargo.toml", "*/Cargo.toml"):
        for block in toml.read_text().split("[[test]]")[1:]:
            m = re.search(r'^name\s*=\s*"([^"]+)"', block, re.M)
            if m:
                names.add(m[1])
    return names


def is_subsequence(needle: list[str], hay: list[str]) -> bool:
    it = iter(hay)
    return all(any(n == h for h in it) for n in needle)


def comment_lines(path: Path):
    """(line number, text) of what a reader sees as prose: all of a Markdown
    file, the comments of code."""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if path.suffix == ".md":
        yield from enumerate(text, 1)
        return
    marker = "//" if path.suffix == ".rs" else "#"
    for i, line in enumerate(text, 1):
        if marker in line:
            yield i, line[line.index(marker):]


def check_line(line: str, tests: dict[str, list[list[str]]], idents: set[str], targets: set[str], files: set[str]) -> list[str]:
    """What is wrong with one line's citations of tests."""
    out = []
    for p in re.findall(r"\btests/[\w/.-]+\.rs\b", line):
        if p not in files:
            out.append(f"{p} is not a file")
    # Not only after `cargo test` on the same line: commands wrap.
    for t in re.findall(r"--test[ =]([\w-]+)", line):
        if t not in targets:
            out.append(f"`--test {t}`: no such test target (there are: {', '.join(sorted(targets))})")

    def selects(mods: list[str]) -> bool:
        return any(is_subsequence(mods, w + [n]) for n, ws in tests.items() for w in ws)

    if "cargo test" in line or "--test " in line:
        # Filters: `a::b::name` names a test; `a::b::`, or a path ending in a
        # module, selects the tests under it.
        for path, module in re.findall(r"(?<![\w:/.-])([a-z_]\w*(?:::\w+)*)(::)?", line):
            if "::" not in path and not module:
                continue
            segs = [s for s in path.split("::") if s not in CRATE_ROOTS]
            named = not module and any(is_subsequence(segs[:-1], w) for w in tests.get(segs[-1], []))
            if not (named or selects(segs)):
                out.append(f"test filter `{path}{module}` selects no test")
    if not re.search(r"\btest(s|ed)?\b|tests/", line):
        return out
    for cited in re.findall(r"`([A-Za-z_]\w*(?:::[A-Za-z_]\w*)*)`", line):
        segs = [s for s in cited.split("::") if s not in CRATE_ROOTS]
        # A lone word without an underscore (`timing`, a commit hash) is too
        # often something other than a test to hold against the sources.
        if not segs or ("_" not in segs[-1] and len(segs) == 1):
            continue
        name, prefix = segs[-1], segs[:-1]
        if name in tests:
            if prefix and not any(is_subsequence(prefix, w) for w in tests[name]):
                out.append(f"`{cited}`: the test is {', '.join('::'.join(w + [name]) for w in tests[name])}")
        elif name not in idents:
            out.append(f"`{cited}` names no test (nor anything else in the Rust sources)")
    return out


def main() -> int:
    tests, idents = rust_items()
    targets = test_targets()
    files = {str(p.relative_to(ROOT)) for p in tracked()}
    me = Path(__file__).resolve()
    problems = []
    for path in tracked("*.md", "*.rs", "*.py", "*.sh", ".ci/run"):
        if path.resolve() == me:
            continue
        for n, line in comment_lines(path):
            problems += [f"{path.relative_to(ROOT)}:{n}: {p}" for p in check_line(line, tests, idents, targets, files)]
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} dangling citation(s) of tests", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
