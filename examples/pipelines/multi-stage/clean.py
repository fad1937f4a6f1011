"""Clean the fetched JSON: trim and capitalise names, make amounts numbers, drop broken rows."""

import math

from kubeline import task

raw = task.input("raw")
rows = raw.get("items", []) if isinstance(raw, dict) else raw
if not isinstance(rows, list):
    raise SystemExit(f"expected a list of items or {{'items': [...]}}, got {type(raw).__name__}")

items, dropped = [], 0
for row in rows:
    name = (row.get("name") or "").strip() if isinstance(row, dict) else ""
    try:
        amount = float(row.get("amount"))
    except (TypeError, ValueError, AttributeError):
        amount = None
    if not name or amount is None or not math.isfinite(amount):
        dropped += 1
        continue
    items.append({"name": name.title(), "amount": amount})

print(f"kept {len(items)} items, dropped {dropped}")
task.set_outputs({"items": items, "dropped": dropped})
