"""The shapes of the API's successful answers, as /openapi.json describes them.

Handlers answer with orjson (kernel.http.JSON) and the hot paths answer straight from ASGI, so these
models document the answers rather than build them; tests/support/openapi_check.py and the schema
fuzzing hold every real answer to them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Answer(BaseModel):
    # additionalProperties: false in the document, so an answer with a field it does not list fails checks.
    model_config = ConfigDict(extra="forbid")


class Book(Answer):
    id: str = Field(description="1-64 letters, digits, '.', '_' or '-'")
    name: str
    author: str
    category: str
    price: float
    rating: float
    cover: str = Field(description="path of the cover image under the site")


class CartRow(Answer):
    bookId: str
    quantity: int
    price: float = Field(description="the catalog's price per copy when the row was written")


class OrderedBook(Answer):
    bookId: str
    quantity: int
    price: float = Field(description="the catalog's price per copy when the order was placed")


class Order(Answer):
    orderId: str
    orderDate: int = Field(description="when the order was placed, milliseconds since the epoch")
    books: list[OrderedBook]
    total: float


class BestSeller(Answer):
    bookId: str
    quantity: int = Field(description="copies sold, over every region's orders")


class Truth(Answer):
    regionId: str
    regionName: str
    flag: str


class Health(Answer):
    status: str
    regionId: str


class Tokens(Answer):
    accessToken: str = Field(description="a JWT (EdDSA) to send as 'Authorization: Bearer <accessToken>'")
    refreshToken: str = Field(description="for POST /auth/refresh; each use gives a new one")
    expiresIn: int = Field(description="seconds the access token is valid")


class SignedUp(Answer):
    email: str
    confirmed: bool
    message: str


class Confirmed(Answer):
    email: str
    confirmed: bool


class CodeSent(Answer):
    email: str
    message: str


class SignedOut(Answer):
    signedOut: bool


class Removed(Answer):
    removed: str = Field(description="the bookId whose row was removed")


class Jwk(Answer):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str


class Jwks(Answer):
    keys: list[Jwk]


class RegionStatus(Answer):
    """GET /status (served by the region's composition root beside the API): sections an operator reads."""

    regionId: str
    replication: dict[str, Any] | None = Field(description="table replication, when the region replicates")
    consumers: dict[str, dict[str, Any]] = Field(description="each stream consumer's position and rebuilds")
    objects: dict[str, Any] | None = Field(description="object replication, when configured")
    blog: dict[str, Any] | None = Field(description="the blog's replication, when configured")
    native: dict[str, Any] | None = Field(
        default=None,
        description="checks of engines that replicate by themselves (DynamoDB, S3, Redis), when used",
    )
    stateDigest: str | None = Field(
        default=None, description="with ?digest=true: one digest of every replicated table's live items"
    )
