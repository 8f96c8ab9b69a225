"""DynamoDB requests and items per operation of the search index on DynamoDB, counted under moto.

    .venv/bin/python -m bench.search_requests

Counts, not times (moto's speed says nothing of DynamoDB's): the 56 seed books rebuilt into an empty
index, then an upsert of a new book, one changing a word of its title, one changing nothing, its
removal, and searches; each line prints the requests by operation and, for a search, the postings
its Query calls returned.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from typing import Any

REGION = "eu-west-1"


def main() -> None:
    # moto's test credentials, never the machine's.
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION)
    import boto3
    from moto import mock_aws

    from bookstore.services.catalog import seed_books
    from bookstore.storage.dynamodb.search import DynamoSearchIndex

    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        calls: Counter[str] = Counter()
        make = client._make_api_call

        def counting(operation: str, params: Any) -> Any:
            calls[operation] += 1
            answer = make(operation, params)
            if operation == "Query":
                calls["postings read"] += len(answer.get("Items", []))
            return answer

        client._make_api_call = counting
        index = DynamoSearchIndex("bench-search", client=client)
        index.ensure_table()
        books = [(b["id"], {k: b[k] for k in ("name", "author", "category")}) for b in seed_books()]
        book = {"name": "Bread from the Cold Oven, Again", "author": "Olwen Price", "category": "Cookbooks"}
        steps: list[tuple[str, Callable[[], object]]] = [
            ("rebuild, 56 books", lambda: index.rebuild(books, "1")),
            ("upsert, a new book", lambda: index.upsert("new", book)),
            (
                "upsert, one word changed",
                lambda: index.upsert("new", {**book, "name": book["name"].replace("Cold", "Warm")}),
            ),
            (
                "upsert, same words",
                lambda: index.upsert("new", {**book, "name": book["name"].replace("Cold", "Warm")}),
            ),
            ("remove", lambda: index.remove("new")),
            *[
                (f"search {q!r}", lambda q=q: index.search(q, 20))
                for q in ("bread", "cook", "c", "salt smoke", "the")
            ],
        ]
        for title, step in steps:
            calls.clear()
            step()
            requests = sum(n for op, n in calls.items() if op != "postings read")
            print(f"{title}: {requests} requests {dict(sorted(calls.items()))}")
        written = client.scan(TableName="bench-search", Select="COUNT")["Count"]
        print(f"items in the index for 56 books: {written}")


if __name__ == "__main__":
    main()
