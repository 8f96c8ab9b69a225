"""The SearchIndex contract on SQLite FTS5, DynamoDB's inverted index (under moto) and the memory fake:
words of every field, prefixes, ranking, hostile queries, removal."""

from __future__ import annotations

import contextlib
import random
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from bookstore.domain.errors import StorageError
from bookstore.ports import SearchIndex
from bookstore.services.catalog import seed_books
from bookstore.storage.dynamodb.search import DynamoSearchIndex
from bookstore.storage.memory.search import MemorySearchIndex
from bookstore.storage.sqlite.search import SqliteSearchIndex, match_expression
from bookstore.storage.words import RANKED_MATCHES, tokens, word_count
from tests.support.aws import fake_credentials


def fields(book: dict[str, str]) -> dict[str, str]:
    return {name: book[name] for name in ("name", "author", "category")}


@pytest.fixture
def dynamodb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A DynamoDB client of moto's, in eu-west-1."""
    fake_credentials(tmp_path, monkeypatch, AWS_DEFAULT_REGION="eu-west-1")
    with mock_aws():
        yield boto3.client("dynamodb", region_name="eu-west-1")


# DynamoDB's index scores fewer matches here: the tests of many matches write some 45 items per book,
# ~3 ms each on moto, and would take minutes at RANKED_MATCHES (the order is the same at any bound).
DYNAMO_RANKED = 20


def dynamo_index(client: Any, name: str = "bookstore-search") -> DynamoSearchIndex:
    index = DynamoSearchIndex(name, client=client, ranked_matches=DYNAMO_RANKED)
    index.ensure_table()
    return index


@pytest.fixture(params=["sqlite", "memory", "dynamodb"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> SearchIndex:
    if request.param == "memory":
        return MemorySearchIndex()
    if request.param == "dynamodb":
        return dynamo_index(request.getfixturevalue("dynamodb"))
    return SqliteSearchIndex(tmp_path / "search.db")


@pytest.fixture
def catalog(index: SearchIndex) -> SearchIndex:
    books = [(book["id"], fields(book)) for book in seed_books()]
    if isinstance(index, DynamoSearchIndex):
        # The same index in one rebuild: an upsert is some 90 calls (a counter per prefix), ~4 ms each
        # on moto. Upserts on DynamoDB have tests of their own below.
        index.rebuild(books, cursor="seed")
        return index
    for doc_id, doc in books:
        index.upsert(doc_id, doc)
    return index


BOOKS = {b["id"]: b for b in seed_books()}


def test_finds_a_book_by_a_word_of_its_title(catalog: SearchIndex) -> None:
    assert "bk-cook-003" in catalog.search("bread")
    assert catalog.search("Bread from the Cold Oven")[0] == "bk-cook-003"


def test_finds_books_by_author(catalog: SearchIndex) -> None:
    found = catalog.search("Olwen")
    assert found and all("Olwen" in BOOKS[i]["author"] for i in found)
    assert "bk-cook-001" in found


def test_finds_every_book_of_a_category(catalog: SearchIndex) -> None:
    found = catalog.search("database", limit=100)
    assert set(found) >= {i for i, b in BOOKS.items() if b["category"] == "Database"}
    assert len([i for i in found if BOOKS[i]["category"] == "Database"]) == 10


def test_last_word_is_a_prefix(catalog: SearchIndex) -> None:
    cookbooks = {i for i, b in BOOKS.items() if b["category"] == "Cookbooks"}
    assert set(catalog.search("cook", limit=100)) >= cookbooks
    # Only the last word is a prefix: earlier words must be whole.
    assert catalog.search("cook skillet") == []
    assert catalog.search("weeknight skil") == ["bk-cook-002"]


def test_all_words_must_match_across_fields(catalog: SearchIndex) -> None:
    assert catalog.search("skillet renwick cookbooks") == ["bk-cook-002"]
    assert catalog.search("skillet database") == []


def test_case_and_diacritics_are_ignored(index: SearchIndex) -> None:
    index.upsert("b1", {"name": "Crème Brûlée at Home", "author": "Zoë Ångström", "category": "Cookbooks"})
    assert index.search("CREME brulee") == ["b1"]
    assert index.search("angstrom") == ["b1"]
    assert index.search("zoë") == ["b1"]


def test_limit_caps_the_results(catalog: SearchIndex) -> None:
    assert len(catalog.search("cookbooks", limit=5)) == 5
    assert catalog.search("cookbooks", limit=0) == []


def test_upsert_replaces_the_document(index: SearchIndex) -> None:
    index.upsert("b1", {"name": "Old Title", "author": "A", "category": "Cars"})
    index.upsert("b1", {"name": "New Title", "author": "A", "category": "Cars"})
    assert index.search("old") == []
    assert index.search("new") == ["b1"]
    assert index.search("title") == ["b1"]


def test_removed_documents_are_not_found(catalog: SearchIndex) -> None:
    catalog.remove("bk-cook-003")
    assert "bk-cook-003" not in catalog.search("bread", limit=100)
    # Removing what is not there is a no-op.
    catalog.remove("bk-cook-003")
    catalog.remove("never-indexed")
    catalog.upsert("bk-cook-003", fields(BOOKS["bk-cook-003"]))
    assert "bk-cook-003" in catalog.search("bread")


def test_title_matches_rank_above_category_matches(index: SearchIndex) -> None:
    index.upsert("in-category", {"name": "Engines and Gearboxes", "author": "P. Ford", "category": "Cars"})
    index.upsert("in-title", {"name": "Cars of the Fifties", "author": "R. Hale", "category": "History"})
    index.upsert("elsewhere", {"name": "Bridges", "author": "S. Cole", "category": "History"})
    assert index.search("cars") == ["in-title", "in-category"]


def test_more_occurrences_rank_higher(index: SearchIndex) -> None:
    index.upsert("once", {"name": "Soup for Winter Evenings", "author": "A", "category": "Cookbooks"})
    index.upsert("twice", {"name": "Soup, Soup", "author": "A", "category": "Cookbooks"})
    assert index.search("soup") == ["twice", "once"]


def stored_with_cursors(index: SearchIndex) -> None:
    """Changes with and without a cursor, checking the cursor after each."""
    assert index.cursor() is None
    index.upsert("b1", {"name": "One", "author": "A", "category": "C"}, cursor="1")
    assert index.cursor() == "1"
    index.upsert("b2", {"name": "Two", "author": "A", "category": "C"})
    assert index.cursor() == "1"
    index.remove("b1", cursor="3")
    assert index.cursor() == "3"
    index.remove("absent", cursor="4")
    assert index.cursor() == "4"


def test_cursor_is_stored_with_the_change(index: SearchIndex) -> None:
    stored_with_cursors(index)
    assert index.search("two") == ["b2"]
    assert index.search("one") == []


def test_a_sqlite_index_keeps_documents_and_cursor_across_reopen(tmp_path: Path) -> None:
    index = SqliteSearchIndex(tmp_path / "search.db")
    stored_with_cursors(index)
    index.close()
    reopened = SqliteSearchIndex(tmp_path / "search.db")
    assert reopened.cursor() == "4"
    assert reopened.search("two") == ["b2"]
    assert reopened.search("one") == []


HOSTILE = [
    "",
    "   ",
    '"',
    '""',
    '"unterminated',
    "AND(",
    "OR",
    "NOT",
    "a AND",
    "NEAR(cook bread, 2)",
    "NEAR",
    "*",
    "cook*",
    "^cook",
    "name:cook",
    "{name author}: cook",
    "cook -bread",
    "(((",
    ")",
    "'; DROP TABLE fts; --",
    "\x00",
    "cook\x00bread",
    "\ud800",
    "\u0301",
    "e\u0301",
    "日本語の本",
    "🍞 bread 🍞",
    "_",
    "a_b",
    "x" * 10_000,
    "cook " * 2_000,
    '"a" * 3_000',
    "+",
    "-",
    ":",
]


def test_dynamodb_orders_many_matches_as_the_memory_fake(dynamodb: Any) -> None:
    dynamo, memory = dynamo_index(dynamodb), MemorySearchIndex(DYNAMO_RANKED)
    docs = many_lantern_titles(60)
    for adapter in (dynamo, memory):
        adapter.rebuild(docs[:50], cursor="1")
        for doc_id, doc in docs[50:]:
            adapter.upsert(doc_id, doc)
        adapter.upsert("gen-00003", {"name": "Lantern", "author": "Ada Okafor", "category": "Fiction"})
        adapter.upsert("gen-00005", {**docs[5][1], "name": docs[5][1]["name"].replace("The", "Our")})
        adapter.remove("gen-00010")
    for query in ("lantern", "the lantern", "silent lant", "okafor", "t", "fiction", "harbor 1", "garden"):
        assert dynamo.search(query, limit=100) == memory.search(query, limit=100), query


def test_dynamodb_ranks_by_bm25_as_the_memory_fake(dynamodb: Any) -> None:
    dynamo, memory = dynamo_index(dynamodb), MemorySearchIndex(DYNAMO_RANKED)
    books = [(book["id"], fields(book)) for book in seed_books()]
    for adapter in (dynamo, memory):
        adapter.rebuild(books, cursor="1")
        adapter.upsert("bk-cook-003", {**fields(BOOKS["bk-cook-003"]), "name": "Bread and Soup Cookbook"})
        adapter.remove("bk-cook-001")
    queries = ["cook", "bread", "the", "database", "a", "s", "smoke", "cookbooks bread", "o", "data sys"]
    for query in queries:
        assert dynamo.search(query, limit=100) == memory.search(query, limit=100), query


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_queries_never_raise(catalog: SearchIndex, query: str) -> None:
    found = catalog.search(query)
    assert isinstance(found, list)
    assert all(i in BOOKS for i in found)


def test_operator_words_are_searched_as_words(index: SearchIndex) -> None:
    index.upsert("b1", {"name": "Near and Far", "author": "Not Me", "category": "Or Else"})
    assert index.search("near") == ["b1"]
    assert index.search("NOT") == ["b1"]
    assert index.search("and OR") == ["b1"]
    assert index.search("NEAR(far)") == ["b1"]


def test_punctuated_queries_find_what_their_words_find(catalog: SearchIndex) -> None:
    assert catalog.search('"Bread" (from) cold*') == catalog.search("bread from cold")
    assert catalog.search("salt, smoke & patience")[0] == "bk-cook-001"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(max_size=300))
def test_any_text_is_a_valid_query(catalog: SearchIndex, query: str) -> None:
    assert all(i in BOOKS for i in catalog.search(query))


@given(text=st.text(max_size=100))
def test_match_expression_quotes_every_word(text: str) -> None:
    expression = match_expression(text)
    words = tokens(text)
    if not words:
        assert expression is None
    else:
        assert expression is not None
        assert expression.count('"') == 2 * min(len(words), 16)
        assert expression.endswith('"*')


def test_unusable_place_raises_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError):
        SqliteSearchIndex(tmp_path / "file" / "search.db")


# More matches than RANKED_MATCHES are not scored; these tests hold the order they get instead.
MANY = RANKED_MATCHES + 200


def ranked(index: SearchIndex) -> int:
    """How many matches the adapter scores at most (lowered in DynamoDB's tests)."""
    return int(getattr(index, "ranked_matches", RANKED_MATCHES))


def many(index: SearchIndex) -> int:
    """More matches than the adapter scores, by 40%."""
    return ranked(index) * 7 // 5


ADJECTIVES = ("Silent", "Golden", "Hidden", "Broken")
NOUNS = ("Harbor", "Garden", "River", "Orchard", "Mirror", "Tower")


def many_lantern_titles(count: int = MANY) -> list[tuple[str, dict[str, str]]]:
    """`count` books whose titles hold 'lantern' among six other words; a quarter hold 'silent'."""
    rnd = random.Random(7)
    return [
        (
            f"gen-{n:05d}",
            {
                "name": f"The {rnd.choice(ADJECTIVES)} Lantern of the {rnd.choice(NOUNS)} {n}",
                "author": "Ada Okafor",
                "category": "Fiction",
            },
        )
        for n in range(count)
    ]


def test_an_exact_title_match_leads_thousands_of_matches_of_a_common_word(index: SearchIndex) -> None:
    index.rebuild(many_lantern_titles(many(index)), cursor="1")
    # Indexed last, after more matches than are scored: an order by indexing would leave it out.
    index.upsert("exact", {"name": "Lantern", "author": "Ada Okafor", "category": "Fiction"})
    index.upsert("two", {"name": "Silent Lantern", "author": "Ada Okafor", "category": "Fiction"})
    assert index.search("lantern", limit=5)[0] == "exact"
    assert index.search("lant", limit=5)[0] == "exact"
    assert index.search("silent lantern", limit=5)[0] == "two"
    assert index.search("Silent lant", limit=5)[0] == "two"


def test_title_matches_lead_the_other_fields_when_too_many_to_score(index: SearchIndex) -> None:
    # Shorter books holding the word in their author or category only would lead an order by length.
    docs = [
        (f"cat-{n:05d}", {"name": f"Tide {n}", "author": "B", "category": "Lantern"})
        for n in range(many(index))
    ]
    docs += [("title-long", {"name": "A Lantern for the Long Night Watch", "author": "C D", "category": "X"})]
    docs += [("title-short", {"name": "Lantern Light", "author": "C", "category": "X"})]
    index.rebuild(docs, cursor="1")
    found = index.search("lantern", limit=4)
    assert found[:2] == ["title-short", "title-long"]
    assert all(doc_id.startswith("cat-") for doc_id in found[2:]) and len(found) == 4


def test_bm25_orders_up_to_ranked_matches_and_static_rank_beyond(index: SearchIndex) -> None:
    """bm25 puts 'Soup Soup' (the word twice) above 'Soup' (a shorter title); static rank the reverse."""
    fillers = [
        (f"f-{n:05d}", {"name": f"Soup and Bread for Many {n}", "author": "A", "category": "C"})
        for n in range(ranked(index) - 2)
    ]
    pair = [
        ("twice", {"name": "Soup Soup", "author": "A", "category": "C"}),
        ("once", {"name": "Soup", "author": "A", "category": "C"}),
    ]
    index.rebuild(fillers + pair, cursor="1")
    assert index.search("soup", limit=2) == ["twice", "once"]
    index.upsert("one-more", {"name": "Soup and Bread for Many More", "author": "A", "category": "C"})
    assert index.search("soup", limit=2) == ["once", "twice"]


def test_both_adapters_order_many_matches_alike(tmp_path: Path) -> None:
    sqlite, memory = SqliteSearchIndex(tmp_path / "search.db"), MemorySearchIndex()
    docs = many_lantern_titles()
    for adapter in (sqlite, memory):
        adapter.rebuild(docs[:600], cursor="1")
        for doc_id, doc in docs[600:]:
            adapter.upsert(doc_id, doc)
        adapter.upsert("gen-00003", {"name": "Lantern", "author": "Ada Okafor", "category": "Fiction"})
        # Another word, as many words: the book keeps its place among its static rank's books.
        adapter.upsert("gen-00005", {**docs[5][1], "name": docs[5][1]["name"].replace("The", "Our")})
        adapter.remove("gen-00010")
    for query in ("lantern", "the lantern", "silent lant", "okafor", "t", "fiction"):
        assert sqlite.search(query, limit=100) == memory.search(query, limit=100), query


def test_an_index_of_an_older_layout_is_emptied_for_a_rebuild(tmp_path: Path) -> None:
    index = SqliteSearchIndex(tmp_path / "search.db")
    index.upsert("b1", {"name": "One", "author": "A", "category": "C"}, cursor="1")
    index.close()
    # As a file written before rowids were static ranks: no layout recorded.
    with sqlite3.connect(tmp_path / "search.db") as db:
        db.execute("DELETE FROM meta WHERE name = 'layout'")
    reopened = SqliteSearchIndex(tmp_path / "search.db")
    # No cursor: the consumer rebuilds from the table.
    assert reopened.cursor() is None
    assert reopened.search("one") == []


@given(text=st.text(max_size=60) | st.text(alphabet=st.characters(max_codepoint=127), max_size=60))
def test_word_count_counts_the_tokenizers_words(text: str) -> None:
    assert word_count(text) == len(tokens(text))


class FailingClient:
    """A DynamoDB client whose `fail_at`-th call (counting every operation) raises, as a network error."""

    def __init__(self, client: Any, fail_at: int) -> None:
        self._client = client
        self._left = fail_at
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)

        def call(**request: Any) -> Any:
            with self._lock:
                self._left -= 1
                fail = self._left == 0
            if fail:
                raise EndpointConnectionError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com")
            return real(**request)

        return call


def stats_agree_with_postings(client: Any, table: str) -> None:
    """Every stats item counts the postings of its partition: no counter moved twice or not at all."""
    pages = client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
    items = [item for page in pages for item in page["Items"]]
    postings: dict[str, int] = {}
    stats: dict[str, int] = {}
    for item in items:
        term, entry = item["term"]["S"], item["entry"]["S"]
        if "|p|" not in term:
            continue
        if entry == "#":
            stats[term] = int(item["docs"]["N"])
            # Every token is taken out once its change is done.
            assert not item.get("applied"), term
        else:
            postings[term] = postings.get(term, 0) + 1
    assert {t: n for t, n in stats.items() if n} == postings


def test_a_dynamodb_search_of_a_common_word_reads_one_more_posting_than_it_scores(dynamodb: Any) -> None:
    index = dynamo_index(dynamodb)
    index.rebuild(many_lantern_titles(3 * DYNAMO_RANKED), cursor="1")
    read: list[int] = []
    query = dynamodb.query

    def counted(**request: Any) -> Any:
        answer = query(**request)
        read.append(len(answer["Items"]))
        return answer

    index._client = SimpleNamespace(
        query=counted, get_item=dynamodb.get_item, batch_get_item=dynamodb.batch_get_item
    )
    # Every book holds the word in its title: the first RANKED + 1 postings are enough, whatever the size.
    assert len(index.search("lantern", limit=5)) == 5
    assert read == [DYNAMO_RANKED + 1]
    read.clear()
    # A rare word and a common one: the rare one's postings alone are read.
    assert index.search("lantern 7", limit=5) == ["gen-00007"]
    assert sum(read) == 1


def test_a_dynamodb_rebuild_after_one_cut_short_keeps_nothing_of_it(dynamodb: Any) -> None:
    index = dynamo_index(dynamodb)
    books = [(book["id"], fields(book)) for book in seed_books()[:10]]
    index.upsert("kept", {"name": "Kept Before", "author": "A", "category": "C"}, cursor="1")
    # Cut short after most of its writes, before the switch: the index still serves what it held.
    with contextlib.suppress(StorageError):
        DynamoSearchIndex("bookstore-search", client=FailingClient(dynamodb, 20)).rebuild(books, "2")
    assert index.search("kept") == ["kept"] and index.cursor() == "1"
    # The retry lists the books in another order: their ranks differ from the first attempt's.
    index.rebuild(list(reversed(books)), cursor="3")
    memory = MemorySearchIndex(DYNAMO_RANKED)
    memory.rebuild(list(reversed(books)), cursor="3")
    assert index.search("kept") == [] and index.cursor() == "3"
    for query in ("cook", "bread", "o", "the"):
        assert index.search(query, limit=100) == memory.search(query, limit=100), query
    stats_agree_with_postings(dynamodb, "bookstore-search")


def change(index: SearchIndex, doc_id: str, doc: dict[str, str] | None, cursor: str | None) -> None:
    """An upsert of `doc`, or a removal when None."""
    if doc is None:
        index.remove(doc_id, cursor)
    else:
        index.upsert(doc_id, doc, cursor)


@pytest.mark.parametrize("fail_at", [1, 2, 3, 5, 20, 40, 60, 80, 100])
def test_a_dynamodb_change_cut_short_is_finished_once_by_the_retry(dynamodb: Any, fail_at: int) -> None:
    """A batch retried after a failure at any call of an upsert or removal leaves the index exact."""
    books = [(book["id"], fields(book)) for book in seed_books()[:12]]
    memory = MemorySearchIndex(DYNAMO_RANKED)
    dynamo_index(dynamodb).rebuild(books, cursor="1")
    memory.rebuild(books, cursor="1")
    changes: list[tuple[str, dict[str, str] | None]] = [
        (
            "bk-cook-003",
            {"name": "Sourdough and Rye, a Baker's Year", "author": "A Baker", "category": "Food"},
        ),
        ("bk-cook-001", None),
        ("new-book", {"name": "Bread Machines Explained", "author": "Olwen Price", "category": "Cookbooks"}),
    ]
    for n, (doc_id, doc) in enumerate(changes):
        flaky = DynamoSearchIndex("bookstore-search", client=FailingClient(dynamodb, fail_at))
        with contextlib.suppress(StorageError):
            change(flaky, doc_id, doc, str(n))
        # The stream consumer's retry: the same change again, on a client that works.
        retry = dynamo_index(dynamodb)
        change(retry, doc_id, doc, str(n))
        change(memory, doc_id, doc, None)
        assert retry.cursor() == str(n)
    stats_agree_with_postings(dynamodb, "bookstore-search")
    for query in ("bread", "cook", "olwen", "s", "baker", "sourdough rye", "the", "salt"):
        assert retry.search(query, limit=100) == memory.search(query, limit=100), query
