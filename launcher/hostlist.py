"""Slurm hostlist expressions: `node[01-04,07],gpu-a[1-2]` -> the list of host names."""
import itertools
import re


def _split_top(text):
    """Split at commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"hostlist {text!r}: unbalanced ']' at position {i}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"hostlist {text!r}: unclosed '['")
    parts.append(text[start:])
    return [p for p in parts if p]


def _expand_range(spec, whole):
    """`01-04,07` -> ['01', '02', '03', '04', '07'] (zero padding kept)."""
    out = []
    for piece in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", piece.strip())
        if not m:
            raise ValueError(f"hostlist {whole!r}: bad range {piece!r}")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        if int(hi) < int(lo):
            raise ValueError(f"hostlist {whole!r}: range {piece!r} runs backwards")
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        out.extend(str(v).zfill(width) for v in range(int(lo), int(hi) + 1))
    return out


def expand(hostlist):
    """All host names of a hostlist expression, in order."""
    hosts = []
    for item in _split_top(hostlist.strip()):
        pieces = re.split(r"(\[[^\]]*\])", item)
        choices = [_expand_range(p[1:-1], hostlist) if p.startswith("[") else [p]
                   for p in pieces if p]
        hosts.extend("".join(combo) for combo in itertools.product(*choices))
    return hosts
