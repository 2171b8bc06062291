"""Import graph of the cldiff package: files, arrows (module-level and lazy imports), circles, floors."""
import ast, sys, pathlib, itertools
root = pathlib.Path(sys.argv[1]) / "src" / "cldiff"
mods = {}
for f in root.rglob("*.py"):
    rel = f.relative_to(root.parent).with_suffix("")
    name = ".".join(rel.parts)
    if name.endswith(".__init__"): name = name[:-9]
    mods[name] = f
def resolve(cur, node):
    pkg = cur.split(".") if cur in mods and mods[cur].name == "__init__.py" else cur.split(".")[:-1]
    if node.level:
        base = pkg[: len(pkg) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return target
edges = set()
for m, f in mods.items():
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom):
            t = resolve(m, node)
            cands = [t] + [f"{t}.{a.name}" for a in node.names]
            for c in cands:
                if c in mods and c != m:
                    edges.add((m, c))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in mods and a.name != m: edges.add((m, a.name))
# collapse package __init__ re-export edges: strategies.__init__ -> submodules count as edges
import collections
g = collections.defaultdict(set)
for a, b in edges: g[a].add(b)
# SCCs (Tarjan)
index, low, st, on, sccs, cnt = {}, {}, [], set(), [], [0]
def sc(v):
    index[v] = low[v] = cnt[0]; cnt[0] += 1; st.append(v); on.add(v)
    for w in g[v]:
        if w not in index: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        c = []
        while True:
            w = st.pop(); on.discard(w); c.append(w)
            if w == v: break
        sccs.append(c)
sys.setrecursionlimit(10000)
for v in mods:
    if v not in index: sc(v)
circles = [sorted(c) for c in sccs if len(c) > 1]
comp = {v: i for i, c in enumerate(sccs) for v in c}
floor = {}
def fl(i):
    if i in floor: return floor[i]
    floor[i] = 0
    deps = {comp[w] for v in sccs[i] for w in g[v]} - {i}
    floor[i] = 1 + max((fl(j) for j in deps), default=-1)
    return floor[i]
for i in range(len(sccs)): fl(i)
print(f"files {len(mods)}, arrows {len(edges)}, floors {max(floor.values()) + 1}, circles {len(circles)}")
for c in circles: print("  circle:", " <-> ".join(c))
if "-v" in sys.argv:
    for i in sorted(range(len(sccs)), key=lambda i: floor[i]):
        print(floor[i], sccs[i])
