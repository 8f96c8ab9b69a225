"""Instructions per table write in the SQLite storage layer, counted by callgrind: this code beside another's.

    .venv/bin/python -m bench.write_instructions [--against SRC ...] [--puts N] [--bare] [--group G]

The storage part of a write without HTTP or background loops, so the count is the same from one run
to the next (unlike bench/instructions.py, which counts a whole region process). For each source tree
(this checkout, then each `--against` src/ through PYTHONPATH, with this checkout's virtualenv), a
fresh SqliteDatabase takes 1,024 warm-up puts and then N puts in groups of 32 through `run_group`
(as the group commit of a region sends them): cart items (updates of 500 keys), orders (inserts) and
checkouts (an order put with its ItemAbsent condition and the cart row's tombstone, as Checkout writes)
and placed orders (Checkout.place itself, with best sellers counting the orders stream every 4 groups,
as a region's consumer does under load: what POST /orders costs below HTTP).
`--group 1` gives each put a group, so a transaction, of its own (bench/antientropy.py's write cost).
The figure is (instructions with N puts - instructions with 0) / N, each a whole process under
`valgrind --tool=callgrind`. With `--bare`, each tree is also counted with the digest triggers and
the index of versions they need dropped (what bench/antientropy.py's write cost compares against,
as CPU time): the row says what the digests cost a put, counted.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

TOTALS = re.compile(r"Collected : (\d+)")
GROUP = 32

# Run inside the measured process: only what every tree since the first round offers.
WRITER = """
import sys, tempfile
from pathlib import Path
from bookstore.storage.sqlite.tables import SqliteDatabase
from bookstore.tables import CARTS, ORDERS
from bookstore.ports import ItemAbsent
kind, n, group, bare = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "bare"
db = SqliteDatabase(Path(tempfile.mkdtemp()) / "r.db", "eu-west-1")
carts, orders = db.table(CARTS), db.table(ORDERS)
drain = lambda: None
if kind == "placed":
    from bookstore.domain.orders import OrderLine
    from bookstore.kernel.clock import SystemClock
    from bookstore.services.bestsellers import BestSellers
    from bookstore.services.checkout import Checkout
    from bookstore.storage.sqlite.ranking import SqliteRanking
    best = BestSellers(orders, SqliteRanking(db.path.parent / "ranking.db"), "eu-west-1")
    class Books:
        def get(self, book_id):
            return {"id": book_id, "price": 12.5, "name": "A book", "category": "Cookbooks"}
    service = Checkout(orders, carts, Books(), SystemClock(), "eu-west-1")
    lines = [OrderLine("bk-cook-001", 1)]
    def drain():
        while best.consumer.poll_once() >= best.consumer.batch_size:
            pass
    drain()
if bare:
    with db.transaction("dropping the digests") as conn:
        triggers = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name GLOB 'dg_*'"
        for (trigger,) in conn.execute(triggers).fetchall():
            conn.execute(f'DROP TRIGGER "{trigger}"')
        # The index of versions young rows are found by: the rows' (before), or the log's.
        for index in ("hlc_carts", "hlc_orders", "changes_by_version"):
            conn.execute(f'DROP INDEX IF EXISTS "{index}"')
def unit(i):
    if kind == "placed":
        return lambda: service.place(f"c{i % 50}", lines)
    if kind == "cart":
        return lambda: carts.put({"customerId": f"c{i % 500}", "bookId": "bk-cook-001", "quantity": i})
    order = {"customerId": f"c{i % 50}", "orderId": f"o{i}", "total": 10, "orderDate": 1765000000000 + i,
             "books": [{"bookId": "bk-cook-001", "quantity": 1}]}
    if kind == "order":
        return lambda: orders.put(order)
    def checkout():
        orders.put(order, condition=ItemAbsent())
        carts.delete({"customerId": order["customerId"], "bookId": "bk-cook-001"})
    return checkout
def run(units):
    # A unit that failed wrote nothing: counting it would flatter the figure.
    failed = [o.error for o in db.run_group(units) or [] if getattr(o, "error", None) is not None]
    assert not failed, failed
for start in range(0, 1024, group):
    run([unit(i) for i in range(start, min(start + group, 1024))])
    if start // group % 4 == 3:
        drain()
drain()
for start in range(0, n, group):
    run([unit(10**6 + i) for i in range(start, min(start + group, n))])
    if start // group % 4 == 3:
        drain()
drain()
"""


def _instructions(src: Path | None, kind: str, puts: int, bare: bool, group: int) -> int:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    argv += ["-c", WRITER, kind, str(puts), str(group), "bare" if bare else "digests"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800, check=False)
    found = TOTALS.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(
            f"the writer failed under callgrind ({src or 'this checkout'}):\n{done.stderr[-2000:]}"
        )
    return int(found.group(1))


def per_put(src: Path | None, kind: str, puts: int, bare: bool = False, group: int = GROUP) -> float:
    """Instructions per unit of `kind` (cart, order, checkout, placed) in the tree `src` (None: this one),
    `bare`: without the digest triggers and their index."""
    return (_instructions(src, kind, puts, bare, group) - _instructions(src, kind, 0, bare, group)) / puts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--against", type=Path, action="append", default=[], help="another tree's src/")
    parser.add_argument("--puts", type=int, default=2048, help="measured puts of each kind (default 2048)")
    parser.add_argument("--bare", action="store_true", help="each tree without the digests too")
    parser.add_argument("--group", type=int, default=GROUP, help=f"puts a transaction (default {GROUP})")
    parser.add_argument(
        "--kinds", default="cart,order,checkout", help="comma-separated, of cart, order, checkout, placed"
    )
    args = parser.parse_args()
    trees: list[tuple[str, Path | None]] = [("this checkout", None)]
    trees += [(str(src), src.resolve()) for src in args.against]
    print(f"Instructions per put (callgrind, {args.puts} puts in groups of {args.group})\n")
    kinds = args.kinds.split(",")
    print("| Tree | " + " | ".join(kinds) + " |")
    print("|---|" + "---:|" * len(kinds))
    base: dict[str, float] = {}
    for name, src in trees:
        cells, bare_cells = [], []
        for kind in kinds:
            value = per_put(src, kind, args.puts, group=args.group)
            base.setdefault(kind, value)
            cells.append(f"{value:,.0f} ({value / base[kind]:.3f}x)")
            if args.bare:
                without = per_put(src, kind, args.puts, bare=True, group=args.group)
                bare_cells.append(f"{without:,.0f} (digests {value / without:.3f}x)")
        print(f"| {name} | " + " | ".join(cells) + " |")
        if bare_cells:
            print(f"| {name}, without the digests | " + " | ".join(bare_cells) + " |")


if __name__ == "__main__":
    main()
