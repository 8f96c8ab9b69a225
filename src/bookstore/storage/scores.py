"""Event scores as every Ranking adapter keeps them: checked, and spelled one canonical way."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from bookstore.domain.errors import ValidationError


def encode_scores(event_id: str, scores: Mapping[str, int]) -> str:
    """Sorted [member, score] pairs as JSON text, so equal scores are equal text; "" for no scores.

    Scores are positive whole numbers: a ranking un-counts exactly what it counted, so none may be 0 or
    below (such a member would vanish from the scores and come back negative).
    """
    pairs: list[tuple[str, int]] = []
    for member, score in scores.items():
        if type(score) is not int or score <= 0 or not isinstance(member, str) or not member:
            raise ValidationError(
                f"event {event_id}: a score is a positive integer per member, got {member!r}: {score!r}"
            )
        pairs.append((member, score))
    return orjson.dumps(sorted(pairs)).decode() if pairs else ""


def decode_scores(text: str) -> list[tuple[str, int]]:
    """The pairs of `encode_scores`' text (written by the adapter itself)."""
    return [(str(member), int(score)) for member, score in orjson.loads(text)] if text else []
