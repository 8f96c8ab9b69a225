"""The Ranking contract, proven against every adapter: SQLite (embedded) and a real Redis server."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.retry import Retry

from bookstore.domain.errors import StorageError
from bookstore.ports import Ranking
from bookstore.storage.redis.ranking import RedisRanking
from bookstore.storage.sqlite.ranking import SqliteRanking
from tests.support.redis_server import redis_server_fixture

redis_url = redis_server_fixture()

MakeRanking = Callable[[], Ranking]


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def make_ranking(request: pytest.FixtureRequest) -> Iterator[MakeRanking]:
    """A factory of fresh, empty rankings of one adapter."""
    if request.param == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield lambda: SqliteRanking(Path(tmp) / f"{uuid.uuid4().hex}.db")
    else:
        client: redis.Redis = request.getfixturevalue("redis_client")
        client.flushdb()
        # Each ranking has its own namespace, which also proves that namespaces keep rankings apart.
        yield lambda: RedisRanking(client, namespace=f"t{uuid.uuid4().hex}:")
        client.flushdb()


@pytest.fixture
def ranking(make_ranking: MakeRanking) -> Ranking:
    return make_ranking()


def test_top_of_an_empty_ranking_is_empty(ranking: Ranking) -> None:
    assert ranking.top() == []
    assert ranking.top(1) == []
    assert ranking.top(0) == []
    assert ranking.cursor() is None


def test_add_sums_scores_across_events_highest_first(ranking: Ranking) -> None:
    assert ranking.add("c1/o1", {"b1": 2, "b2": 1}) is True
    assert ranking.add("c2/o1", {"b2": 5}) is True
    assert ranking.add("c1/o2", {"b3": 1, "b1": 1}) is True
    assert ranking.top() == [("b2", 6), ("b1", 3), ("b3", 1)]


def test_same_event_again_returns_false_and_changes_nothing(ranking: Ranking) -> None:
    assert ranking.add("c1/o1", {"b1": 2}, cursor="10") is True
    assert ranking.add("c1/o1", {"b1": 2, "b9": 7}, cursor="11") is False
    assert ranking.top() == [("b1", 2)]
    assert ranking.cursor() == "10"


def test_cursor_is_stored_with_the_event(ranking: Ranking) -> None:
    assert ranking.add("e1", {"b1": 1}) is True
    assert ranking.cursor() is None
    assert ranking.add("e2", {"b1": 1}, cursor="cursor-2") is True
    assert ranking.cursor() == "cursor-2"
    # An event without a cursor leaves the stored one alone.
    assert ranking.add("e3", {"b1": 1}) is True
    assert ranking.cursor() == "cursor-2"
    ranking.set_cursor("cursor-3")
    assert ranking.cursor() == "cursor-3"
    assert ranking.top() == [("b1", 3)]


def test_add_all_counts_new_events_once_then_stores_the_cursor(ranking: Ranking) -> None:
    assert ranking.add("e1", {"b1": 1}) is True
    added = ranking.add_all([("e1", {"b1": 1}), ("e2", {"b1": 2, "b2": 1}), ("e3", {"b2": 4})], "c-3")
    assert added == 2
    assert ranking.top() == [("b2", 5), ("b1", 3)]
    assert ranking.cursor() == "c-3"
    # Events already counted, or none at all, still move the cursor on.
    assert ranking.add_all([("e3", {"b2": 4})], "c-4") == 0
    assert ranking.cursor() == "c-4"
    assert ranking.add_all([], "c-5") == 0
    assert ranking.cursor() == "c-5"
    assert ranking.top() == [("b2", 5), ("b1", 3)]


def test_cursor_round_trips_opaque_text(ranking: Ranking) -> None:
    odd = '{"seq": 42, "peer": "ap-southeast-1", "note": "é/ü \\u0000"}'
    ranking.add("e1", {"b": 1}, cursor=odd)
    assert ranking.cursor() == odd


def test_ties_are_ordered_by_member_ascending(ranking: Ranking) -> None:
    for i, member in enumerate(["d", "b", "e", "a", "c"]):
        ranking.add(f"e{i}", {member: 3})
    ranking.add("top", {"z": 9})
    ranking.add("low", {"0": 1})
    assert ranking.top() == [("z", 9), ("a", 3), ("b", 3), ("c", 3), ("d", 3), ("e", 3), ("0", 1)]


def test_n_cuts_inside_a_tie_group_keeping_the_smallest_members(ranking: Ranking) -> None:
    # The group tied at the n-th place must yield its smallest members, not whichever the engine meets first.
    ranking.add("e1", {"m": 10, "y": 5, "x": 5, "w": 5, "v": 5, "a": 1})
    assert ranking.top(1) == [("m", 10)]
    assert ranking.top(2) == [("m", 10), ("v", 5)]
    assert ranking.top(3) == [("m", 10), ("v", 5), ("w", 5)]
    assert ranking.top(5) == [("m", 10), ("v", 5), ("w", 5), ("x", 5), ("y", 5)]
    assert ranking.top(6) == [("m", 10), ("v", 5), ("w", 5), ("x", 5), ("y", 5), ("a", 1)]
    assert ranking.top(100) == ranking.top(6)


def test_n_cuts_inside_a_tie_group_at_the_top(ranking: Ranking) -> None:
    ranking.add("e1", {f"b{i:02d}": 4 for i in range(30)})
    assert ranking.top(20) == [(f"b{i:02d}", 4) for i in range(20)]


def test_top_returns_at_most_n(ranking: Ranking) -> None:
    ranking.add("e1", {f"b{i}": i + 1 for i in range(50)})
    assert len(ranking.top()) == 20
    assert len(ranking.top(7)) == 7
    assert ranking.top(1) == [("b49", 50)]


def test_sqlite_ranking_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ranking.db"
    first = SqliteRanking(path)
    first.add("c1/o1", {"b1": 2, "b2": 1}, cursor="c-1")
    first.close()
    again = SqliteRanking(path)
    assert again.top() == [("b1", 2), ("b2", 1)]
    assert again.cursor() == "c-1"
    assert again.add("c1/o1", {"b1": 2}) is False
    assert again.top() == [("b1", 2), ("b2", 1)]


def test_sqlite_ranking_in_an_unusable_place_raises_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StorageError):
        SqliteRanking(tmp_path / "file" / "ranking.db")


def test_redis_errors_surface_as_storage_error() -> None:
    # Nothing listens on port 1 of loopback: every call fails to connect (at once: no retries).
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    ranking = RedisRanking(client)
    with pytest.raises(StorageError):
        ranking.add("e1", {"b1": 1})
    with pytest.raises(StorageError):
        ranking.top()
    with pytest.raises(StorageError):
        ranking.cursor()
    with pytest.raises(StorageError):
        ranking.set_cursor("x")


@pytest.mark.redis
def test_redis_ranking_uses_the_original_sorted_set(redis_client: redis.Redis) -> None:
    redis_client.flushdb()
    ranking = RedisRanking(redis_client, namespace="eu-west-1:")
    ranking.add("c1/o1", {"b1": 2, "b2": 1})
    assert redis_client.zscore("eu-west-1:TopBooks:AllTime", "b1") == 2.0
    assert redis_client.zscore("eu-west-1:TopBooks:AllTime", "b2") == 1.0
    assert RedisRanking(redis_client).top() == []
    redis_client.flushdb()


@pytest.mark.redis
def test_redis_server_side_errors_surface_as_storage_error(redis_client: redis.Redis) -> None:
    namespace = f"{uuid.uuid4().hex}:"
    # A key of the wrong type makes ZINCRBY fail inside the script (WRONGTYPE).
    redis_client.set(f"{namespace}TopBooks:AllTime", "not a sorted set")
    ranking = RedisRanking(redis_client, namespace=namespace)
    with pytest.raises(StorageError):
        ranking.add("e1", {"b1": 1}, cursor="c1")
    with pytest.raises(StorageError):
        ranking.top()
    # The failed add left nothing behind: once the key is cleared the same event still counts.
    redis_client.delete(f"{namespace}TopBooks:AllTime")
    assert ranking.cursor() is None
    assert ranking.add("e1", {"b1": 1}, cursor="c1") is True
    assert ranking.top() == [("b1", 1)]


@pytest.mark.redis
def test_redis_ranking_with_decoded_responses(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ranking = RedisRanking(client, namespace=f"{uuid.uuid4().hex}:")
    ranking.add("e1", {"bé": 2, "a": 2}, cursor="k")
    assert ranking.top() == [("a", 2), ("bé", 2)]
    assert ranking.cursor() == "k"
    client.close()


members = st.sampled_from([f"book-{c}" for c in "abcdefgh"])
events = st.lists(
    st.tuples(
        st.sampled_from([f"cust/{i}" for i in range(12)]),
        st.dictionaries(members, st.integers(min_value=1, max_value=5), min_size=1, max_size=4),
    ),
    max_size=30,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=events, n=st.integers(min_value=1, max_value=10))
def test_random_events_with_duplicates_match_a_model(
    make_ranking: MakeRanking, events: list[tuple[str, dict[str, int]]], n: int
) -> None:
    ranking = make_ranking()
    seen: set[str] = set()
    model: dict[str, int] = {}
    stored_cursor: str | None = None
    for i, (event_id, scores) in enumerate(events):
        added = ranking.add(event_id, scores, cursor=str(i))
        assert added is (event_id not in seen)
        if added:
            seen.add(event_id)
            stored_cursor = str(i)
            for member, score in scores.items():
                model[member] = model.get(member, 0) + score
    expected = sorted(model.items(), key=lambda kv: (-kv[1], kv[0]))
    assert ranking.top(n) == expected[:n]
    assert ranking.top(100) == expected
    assert ranking.cursor() == stored_cursor


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=events, cut=st.integers(min_value=1, max_value=8))
def test_batches_of_random_events_with_duplicates_match_one_at_a_time(
    make_ranking: MakeRanking, events: list[tuple[str, dict[str, int]]], cut: int
) -> None:
    one_by_one, batched = make_ranking(), make_ranking()
    for i, (event_id, scores) in enumerate(events):
        one_by_one.add(event_id, scores, cursor=str(i))
    added = 0
    for start in range(0, len(events), cut):
        added += batched.add_all(events[start : start + cut], cursor=f"batch-{start}")
    assert added == len({event_id for event_id, _ in events})
    assert batched.top(100) == one_by_one.top(100)
