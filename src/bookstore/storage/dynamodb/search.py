"""DynamoSearchIndex: the SearchIndex port on one regional DynamoDB table, an inverted index built by hand.

Built by hand because DynamoDB searches no text and no well-kept library adds full-text search to it
(AWS's answer is an OpenSearch domain per region, which cannot be run or tested here); an inverted
index is a handful of item kinds, written by the search consumer and read with Query calls. It finds
and orders exactly as the other adapters (tests/contract/test_search.py runs on all of them).

The table has a partition key `term` and a sort key `entry`, both strings. Every key but the meta item's
begins with the index's generation `<g>|`: a rebuild writes a new generation beside the one served and
switches to it with one write, then deletes the old one.
- meta ("meta", "meta"): the generation, the consumer's cursor, how many documents and words the index
  holds (bm25's document count and average length), the last sequence number given out.
- document ("<g>|d|<id>", "doc"): its folded words and its rank; while a change is being applied, the
  change too (`target`, `token`), so that the next write of the document finishes it exactly once.
- posting ("<g>|p|<prefix>", "<rank>"): one for each document holding a word that begins with prefix
  (every prefix of every word, the empty one included, up to MAX_PREFIX characters), carrying the id
  and the document's words. The rank is the static rank and a sequence number, zero-padded, so a
  partition lists its documents in static rank order (storage.words; sqlite/search.py's rowids).
- stats ("<g>|p|<prefix>", "#", before every rank): `docs`, how many documents hold a word beginning
  with prefix, and `exact`, how many hold the word prefix itself: bm25's idf of a word and of a prefix.

A query reads the meta item, the stats of its words (one BatchGetItem), then the postings of the word
held by the fewest documents only, a page at a time: each posting carries its document's words, so the
other words are checked and counted there, no other list is read. Up to RANKED_MATCHES matches are
scored by bm25 (storage.scoring); at the first match beyond, reading stops unless the title matches
read so far are fewer than asked for (as FTS5 reads its title-only query), and the matches go in
static order, title matches first. So no query reads more than its rarest word's postings, and a common
one stops after RANKED_MATCHES + 1 matches when enough of them hold the words in their titles.

Writes: an upsert or removal writes the change down in the document's item, puts the new postings and
deletes the stale ones (both idempotent), moves the counters (stats, and the meta item's totals with the
cursor), each update conditional on the change's token not being in the item's `applied` set and adding
it, then stores the document with the change (`before`, `token`), takes the tokens out again and stores
the document alone. A failure anywhere is finished by the next write of that document (a retried
batch): no counter moves twice, no token is left behind. No TransactWriteItems: a change
can move more counters than a transaction holds (100 items), and moto copies the whole table for each
item of a transaction, which no test could afford. One writer
per document is assumed (a stream's records of one key come in order, from one shard); a rebuild racing
upserts may lose theirs to the generation it replaces (the stream consumer runs one at a time).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from bookstore.domain.errors import StorageError
from bookstore.storage.dynamodb.tables import create_if_absent, error_code, error_message
from bookstore.storage.scoring import bm25_order, matches, occurrences
from bookstore.storage.words import MAX_TOKENS, RANKED_MATCHES, folded, folded_fields, static_rank, tokens

# Prefixes longer than this share their partition (DynamoDB keys are at most 2048 bytes); a longer word
# of a query is matched against the postings' words there.
MAX_PREFIX = 64
# Counter updates in flight at once for one change (each is one round trip).
_PARALLEL = 8
_BATCH_WRITE = 25
_BATCH_GET = 100
_RETRIES = 8
_META = {"term": {"S": "meta"}, "entry": {"S": "meta"}}
_STATS = "#"
# The static rank's widths, as the SQLite adapter clamps them (title words, all words, sequence).
_MAX_TITLE_WORDS = 0x7FFF
_MAX_WORDS = 0xFFFF

Words = tuple[tuple[str, ...], ...]
# The table's keys, as CreateTable and CloudFormation (cloud.compute) both take them.
TABLE_KEYS: dict[str, Any] = {
    "KeySchema": [
        {"AttributeName": "term", "KeyType": "HASH"},
        {"AttributeName": "entry", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        {"AttributeName": "term", "AttributeType": "S"},
        {"AttributeName": "entry", "AttributeType": "S"},
    ],
}


@dataclass(frozen=True)
class _State:
    """A document as indexed: its folded words per field and its rank (the postings' sort key)."""

    words: Words
    rank: str

    def to_json(self) -> str:
        return json.dumps({"words": self.words, "rank": self.rank})

    @classmethod
    def from_json(cls, text: str) -> _State | None:
        raw = json.loads(text)
        if raw is None:
            return None
        return cls(tuple(tuple(field) for field in raw["words"]), str(raw["rank"]))

    @property
    def length(self) -> int:
        return sum(len(field) for field in self.words)

    @property
    def static(self) -> str:
        return self.rank[:10]

    def prefixes(self) -> set[str]:
        return {w[:n] for field in self.words for w in field for n in range(min(len(w), MAX_PREFIX) + 1)}

    def exact(self) -> set[str]:
        return {w for field in self.words for w in field if len(w) <= MAX_PREFIX}


@dataclass(frozen=True)
class _Meta:
    generation: int
    cursor: str | None
    documents: int
    words: int


def rank_key(fields: Mapping[str, str], sequence: int) -> str:
    """The sort key of a document's postings: static rank (storage.words), then indexing order."""
    title, words = static_rank(fields)
    return f"{min(title, _MAX_TITLE_WORDS):05d}{min(words, _MAX_WORDS):05d}{sequence:012d}"


class DynamoSearchIndex:
    """A SearchIndex in the DynamoDB table `table_name` (regional: each region's consumer feeds its own)."""

    def __init__(self, table_name: str, *, client: Any, ranked_matches: int = RANKED_MATCHES) -> None:
        self.table_name = table_name
        self._client = client
        # Matches scored by bm25 at most (storage.words); tests lower it to stay small on moto.
        self.ranked_matches = ranked_matches

    def ensure_table(self) -> None:
        """Create the table (on-demand billing, no stream) if absent, and wait until it is active."""
        create_if_absent(
            self._client, {"TableName": self.table_name, **TABLE_KEYS, "BillingMode": "PAY_PER_REQUEST"}
        )

    # -- writes --------------------------------------------------------------------------------------

    def upsert(self, doc_id: str, fields: Mapping[str, str], cursor: str | None = None) -> None:
        generation = self._meta().generation
        current = self._settled(generation, doc_id)
        words = folded_fields(fields)
        if current is not None and current.words == words:
            # Same words, same counts, same static rank (a price change): nothing of the index changes.
            if cursor is not None:
                self._store_cursor(cursor)
            return
        static = rank_key(fields, 0)[:10]
        # As the SQLite adapter: a change that keeps the static rank keeps the document's place.
        sequence = (
            int(current.rank[10:]) if current is not None and current.static == static else self._next()
        )
        target = _State(words, rank_key(fields, sequence))
        self._apply(generation, doc_id, current, target, cursor)

    def remove(self, doc_id: str, cursor: str | None = None) -> None:
        generation = self._meta().generation
        current = self._settled(generation, doc_id)
        if current is None:
            if cursor is not None:
                self._store_cursor(cursor)
            return
        self._apply(generation, doc_id, current, None, cursor)

    def rebuild(self, docs: Sequence[tuple[str, Mapping[str, str]]], cursor: str) -> None:
        before = self._get(_META)
        # A generation of its own, never one a rebuild cut short left half-written (the sweep below
        # deletes those too).
        generation = self._next("generations")
        # A document listed twice is indexed once, with its last fields, where it was first listed.
        latest = dict(docs)
        stats: dict[str, list[int]] = {}
        puts: list[dict[str, Any]] = []
        words = 0
        for sequence, (doc_id, fields) in enumerate(latest.items()):
            state = _State(folded_fields(fields), rank_key(fields, sequence))
            words += state.length
            puts.append(_document(generation, doc_id, state))
            puts.extend(_postings(generation, doc_id, state))
            for prefix in state.prefixes():
                stats.setdefault(prefix, [0, 0])[0] += 1
            for word in state.exact():
                stats.setdefault(word, [0, 0])[1] += 1
        puts.extend(_stats_item(generation, p, docs_, exact) for p, (docs_, exact) in stats.items())
        self._write(puts, [])
        # The switch: from here searches read the new generation.
        self._call(
            "update_item",
            TableName=self.table_name,
            Key=_META,
            UpdateExpression="SET generation = :g, #c = :c, docs = :d, words = :w, seq = :s",
            ExpressionAttributeNames={"#c": "cursor"},
            ExpressionAttributeValues={
                ":g": _n(generation),
                ":c": {"S": cursor},
                ":d": _n(len(latest)),
                ":w": _n(words),
                ":s": _n(len(latest)),
            },
        )
        if before is not None:
            # A new index (no meta item yet) has nothing to delete: no scan of the table.
            self._write([], list(self._other_generations(generation)))

    def _settled(self, generation: int, doc_id: str) -> _State | None:
        """The document as indexed, once a change left half-applied (by a failure) is finished."""
        item = self._get(_doc_key(generation, doc_id))
        if item is None:
            return None
        current = _State.from_json(item["state"]["S"])
        if "target" in item:
            target = _State.from_json(item["target"]["S"])
            self._apply(generation, doc_id, current, target, None, token=item["token"]["S"])
            return target
        if "before" in item:
            # Counted already; only the tokens were left to take out.
            before = _State.from_json(item["before"]["S"])
            self._forget(generation, doc_id, before, current, item["token"]["S"])
        return current

    def _apply(
        self,
        generation: int,
        doc_id: str,
        current: _State | None,
        target: _State | None,
        cursor: str | None,
        *,
        token: str | None = None,
    ) -> None:
        """Move the document from `current` to `target` (None: absent), storing `cursor` with it.

        `token` names a change begun before (and left half-done by a failure); without one, the change
        is written down first, so that the next write of the document finishes it if this one fails.
        Every counter it moves records the token with its change, so a retry moves none twice.
        """
        key = _doc_key(generation, doc_id)
        if token is None:
            token = uuid.uuid4().hex
            self._call(
                "put_item",
                TableName=self.table_name,
                Item={
                    **key,
                    "state": {"S": _json(current)},
                    "target": {"S": _json(target)},
                    "token": {"S": token},
                },
            )
        new = [] if target is None else _postings(generation, doc_id, target)
        old = [] if current is None else _postings(generation, doc_id, current)
        kept = {_key_of(p) for p in new}
        self._write(new, [_key(p) for p in old if _key_of(p) not in kept])
        self._each(
            lambda c: self._once(c[0], c[1], c[2], token), self._counters(generation, current, target, cursor)
        )
        # Counted: the document holds its target, with the change until its tokens are taken out again.
        self._call(
            "put_item",
            TableName=self.table_name,
            Item={
                **key,
                "state": {"S": _json(target)},
                "before": {"S": _json(current)},
                "token": {"S": token},
            },
        )
        self._forget(generation, doc_id, current, target, token)

    def _counters(
        self, generation: int, current: _State | None, target: _State | None, cursor: str | None
    ) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
        """The updates of the stats items and of the meta item that a change makes."""
        counters = [
            (_stats_key(generation, prefix), "ADD docs :d, exact :e", {":d": _n(d), ":e": _n(e)})
            for prefix, d, e in _counter_changes(current, target)
        ]
        counters.append(self._totals(current, target, cursor))
        return counters

    def _forget(
        self, generation: int, doc_id: str, current: _State | None, target: _State | None, token: str
    ) -> None:
        """Take the change's token out of every item it counted in, then settle the document's item."""
        counters = self._counters(generation, current, target, None)
        self._each(lambda c: self._untoken(c[0], token), counters)
        key = _doc_key(generation, doc_id)
        if target is None:
            self._call("delete_item", TableName=self.table_name, Key=key)
        else:
            self._call("put_item", TableName=self.table_name, Item=_document(generation, doc_id, target))

    def _once(self, key: dict[str, Any], expression: str, values: dict[str, Any], token: str) -> None:
        """Update the item with `expression` unless the change `token` did already."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": key,
            "UpdateExpression": f"{expression}, applied :token",
            "ConditionExpression": "attribute_not_exists(applied) OR NOT contains(applied, :one)",
            "ExpressionAttributeValues": {**values, ":token": {"SS": [token]}, ":one": {"S": token}},
        }
        if "#c" in expression:
            request["ExpressionAttributeNames"] = {"#c": "cursor"}
        try:
            self._client.update_item(**request)
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise StorageError(
                    f"search index {self.table_name}: update failed: {error_message(exc)}"
                ) from exc
        except BotoCoreError as exc:
            raise StorageError(f"search index {self.table_name}: update failed: {exc}") from exc

    def _untoken(self, key: dict[str, Any], token: str) -> None:
        self._call(
            "update_item",
            TableName=self.table_name,
            Key=key,
            UpdateExpression="DELETE applied :token",
            ExpressionAttributeValues={":token": {"SS": [token]}},
        )

    def _each(self, call: Callable[[Any], None], items: Sequence[Any]) -> None:
        """`call` on every item, a few at a time: each is one round trip, and they touch distinct items."""
        if len(items) <= 1:
            for item in items:
                call(item)
            return
        with ThreadPoolExecutor(max_workers=min(_PARALLEL, len(items))) as pool:
            for future in [pool.submit(call, item) for item in items]:
                future.result()

    def _totals(
        self, current: _State | None, target: _State | None, cursor: str | None
    ) -> tuple[dict[str, Any], str, dict[str, Any]]:
        """The meta item's update for the change: documents and words held, and the cursor."""
        documents = (target is not None) - (current is not None)
        words = (0 if target is None else target.length) - (0 if current is None else current.length)
        values: dict[str, Any] = {":d": _n(documents), ":w": _n(words)}
        expression = "ADD docs :d, words :w"
        if cursor is not None:
            # SET goes before ADD: the token's ADD is appended to this expression.
            expression = "SET #c = :c " + expression
            values[":c"] = {"S": cursor}
        return dict(_META), expression, values

    def _store_cursor(self, cursor: str) -> None:
        self._call(
            "update_item",
            TableName=self.table_name,
            Key=_META,
            UpdateExpression="SET #c = :c",
            ExpressionAttributeNames={"#c": "cursor"},
            ExpressionAttributeValues={":c": {"S": cursor}},
        )

    def _next(self, counter: str = "seq") -> int:
        """The next number of the meta item's `counter`: `seq` orders the documents of one static rank
        in the order indexed; `generations` numbers rebuilds."""
        answer = self._call(
            "update_item",
            TableName=self.table_name,
            Key=_META,
            UpdateExpression="ADD #n :one",
            ExpressionAttributeNames={"#n": counter},
            ExpressionAttributeValues={":one": _n(1)},
            ReturnValues="UPDATED_NEW",
        )
        return int(answer["Attributes"][counter]["N"])

    def _write(self, puts: list[dict[str, Any]], deletes: list[dict[str, Any]]) -> None:
        requests = [{"PutRequest": {"Item": item}} for item in puts]
        requests += [{"DeleteRequest": {"Key": key}} for key in deletes]
        for start in range(0, len(requests), _BATCH_WRITE):
            pending = {self.table_name: requests[start : start + _BATCH_WRITE]}
            for attempt in range(_RETRIES):
                answer = self._call("batch_write_item", RequestItems=pending)
                pending = answer.get("UnprocessedItems") or {}
                if not pending:
                    break
                # Throttled: DynamoDB asks for a back-off before the unprocessed items are sent again.
                time.sleep(0.05 * 2**attempt)
            else:
                raise StorageError(f"search index {self.table_name}: writes still throttled; retry later")

    def _other_generations(self, generation: int) -> Iterator[dict[str, Any]]:
        """The keys of every item but the meta item and those of `generation`."""
        mine = f"{generation}|"
        request: dict[str, Any] = {"TableName": self.table_name, "ProjectionExpression": "term, entry"}
        while True:
            answer = self._call("scan", **request)
            for item in answer.get("Items", []):
                term = item["term"]["S"]
                if term != "meta" and not term.startswith(mine):
                    yield _key(item)
            if "LastEvaluatedKey" not in answer:
                return
            request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    # -- reads ---------------------------------------------------------------------------------------

    def search(self, query: str, limit: int = 50) -> list[str]:
        terms = [folded(word) for word in tokens(query)[:MAX_TOKENS]]
        if not terms or limit <= 0:
            return []
        meta = self._meta()
        if meta.documents <= 0:
            return []
        g = meta.generation
        partitions = [_posting_term(g, term[:MAX_PREFIX]) for term in terms]
        stats = self._stats(partitions)
        last = len(terms) - 1
        holding: list[int] = []
        for i, term in enumerate(terms):
            docs, exact = stats.get(partitions[i], (0, 0))
            if len(term) > MAX_PREFIX and docs:
                # The partition is shared by every word beginning with the term's first MAX_PREFIX letters.
                docs = sum(
                    1 for p in self._postings(partitions[i]) if matches(occurrences(_words(p), [term]))
                )
                holding.append(docs if i == last else self._exact_holders(partitions[i], term))
            else:
                holding.append(docs if i == last else exact)
        if not all(holding):
            return []
        # The shortest list drives: every other word is checked in its postings' words.
        driver = min(range(len(terms)), key=lambda i: (stats[partitions[i]][0], i))
        matching: dict[str, list[list[int]]] = {}
        lengths: dict[str, int] = {}
        in_title: list[str] = []
        elsewhere: list[str] = []
        for posting in self._postings(partitions[driver]):
            words = _words(posting)
            counts = occurrences(words, terms)
            if not matches(counts):
                continue
            doc_id = posting["doc"]["S"]
            matching[doc_id] = counts
            lengths[doc_id] = sum(len(field) for field in words)
            (in_title if all(fields[0] for fields in counts) else elsewhere).append(doc_id)
            if len(matching) > self.ranked_matches and len(in_title) >= limit:
                break
        if len(matching) > self.ranked_matches:
            return (in_title + elsewhere)[:limit]
        if not matching:
            return []
        return bm25_order(matching, lengths, meta.documents, meta.words / meta.documents, holding)[:limit]

    def _exact_holders(self, partition: str, term: str) -> int:
        return sum(1 for p in self._postings(partition) if any(term in field for field in _words(p)))

    def cursor(self) -> str | None:
        return self._meta().cursor

    def _meta(self) -> _Meta:
        return self._meta_of(self._get(_META))

    @staticmethod
    def _meta_of(found: Mapping[str, Any] | None) -> _Meta:
        item = found or {}
        return _Meta(
            generation=int(item.get("generation", {"N": "0"})["N"]),
            cursor=item["cursor"]["S"] if "cursor" in item else None,
            documents=int(item.get("docs", {"N": "0"})["N"]),
            words=int(item.get("words", {"N": "0"})["N"]),
        )

    def _stats(self, partitions: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Per posting partition, (documents holding a word it begins, documents holding it as a word)."""
        found: dict[str, tuple[int, int]] = {}
        wanted = list(dict.fromkeys(partitions))
        for start in range(0, len(wanted), _BATCH_GET):
            keys = [{"term": {"S": t}, "entry": {"S": _STATS}} for t in wanted[start : start + _BATCH_GET]]
            request: dict[str, Any] = {self.table_name: {"Keys": keys, "ConsistentRead": True}}
            for attempt in range(_RETRIES):
                answer = self._call("batch_get_item", RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table_name, []):
                    found[item["term"]["S"]] = (int(item["docs"]["N"]), int(item["exact"]["N"]))
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.05 * 2**attempt)
            else:
                raise StorageError(f"search index {self.table_name}: reads still throttled; retry later")
        return found

    def _postings(self, partition: str) -> Iterator[dict[str, Any]]:
        """The partition's postings in static rank order, a page at a time (the caller stops reading)."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#t = :t AND #e > :s",
            "ExpressionAttributeNames": {"#t": "term", "#e": "entry"},
            "ExpressionAttributeValues": {":t": {"S": partition}, ":s": {"S": _STATS}},
            "ConsistentRead": True,
            # A page is one more than the matches scored: a common word's first page is all it reads.
            "Limit": self.ranked_matches + 1,
        }
        while True:
            answer = self._call("query", **request)
            yield from answer.get("Items", [])
            if "LastEvaluatedKey" not in answer:
                return
            request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def _get(self, key: Mapping[str, Any]) -> dict[str, Any] | None:
        answer = self._call("get_item", TableName=self.table_name, Key=dict(key), ConsistentRead=True)
        item = answer.get("Item")
        return None if item is None else cast(dict[str, Any], item)

    def _call(self, operation: str, **request: Any) -> dict[str, Any]:
        try:
            return cast(dict[str, Any], getattr(self._client, operation)(**request))
        except ClientError as exc:
            raise StorageError(
                f"search index {self.table_name}: {operation} failed: {error_code(exc)}: {error_message(exc)}"
            ) from exc
        except BotoCoreError as exc:
            raise StorageError(f"search index {self.table_name}: {operation} failed: {exc}") from exc


def _counter_changes(current: _State | None, target: _State | None) -> list[tuple[str, int, int]]:
    """(prefix, change of `docs`, change of `exact`) for every stats item the change moves, sorted."""
    before = (set(), set()) if current is None else (current.prefixes(), current.exact())
    after = (set(), set()) if target is None else (target.prefixes(), target.exact())
    changes = []
    for prefix in sorted(before[0] | after[0]):
        docs = (prefix in after[0]) - (prefix in before[0])
        exact = (prefix in after[1]) - (prefix in before[1])
        if docs or exact:
            changes.append((prefix, docs, exact))
    return changes


def _json(state: _State | None) -> str:
    return json.dumps(None) if state is None else state.to_json()


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _posting_term(generation: int, prefix: str) -> str:
    return f"{generation}|p|{prefix}"


def _doc_key(generation: int, doc_id: str) -> dict[str, Any]:
    return {"term": {"S": f"{generation}|d|{doc_id}"}, "entry": {"S": "doc"}}


def _stats_key(generation: int, prefix: str) -> dict[str, Any]:
    return {"term": {"S": _posting_term(generation, prefix)}, "entry": {"S": _STATS}}


def _stats_item(generation: int, prefix: str, docs: int, exact: int) -> dict[str, Any]:
    return {**_stats_key(generation, prefix), "docs": _n(docs), "exact": _n(exact)}


def _document(generation: int, doc_id: str, state: _State) -> dict[str, Any]:
    return {**_doc_key(generation, doc_id), "state": {"S": state.to_json()}}


def _postings(generation: int, doc_id: str, state: _State) -> list[dict[str, Any]]:
    words = json.dumps(state.words)
    return [
        {
            "term": {"S": _posting_term(generation, prefix)},
            "entry": {"S": state.rank},
            "doc": {"S": doc_id},
            "words": {"S": words},
        }
        for prefix in sorted(state.prefixes())
    ]


def _key_of(item: Mapping[str, Any]) -> tuple[str, str]:
    return item["term"]["S"], item["entry"]["S"]


def _key(item: Mapping[str, Any]) -> dict[str, Any]:
    return {"term": item["term"], "entry": item["entry"]}


def _words(posting: Mapping[str, Any]) -> Words:
    return tuple(tuple(field) for field in json.loads(posting["words"]["S"]))
