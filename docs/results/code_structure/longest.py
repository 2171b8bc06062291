import ast, sys, pathlib
root = pathlib.Path(sys.argv[1]) / "src" / "cldiff"
rows = []
for f in root.rglob("*.py"):
    for n in ast.walk(ast.parse(f.read_text())):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            rows.append((n.end_lineno - n.lineno + 1, len(n.args.args) + len(n.args.kwonlyargs), f"{f.relative_to(root)}:{n.name}"))
rows.sort(reverse=True)
for r in rows[:6]: print(f"{r[0]:4d} lines, {r[1]:2d} params  {r[2]}")
