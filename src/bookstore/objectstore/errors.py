"""S3 errors: domain errors that carry their S3 error code and HTTP status."""

from __future__ import annotations

from bookstore.domain.errors import (
    BookstoreError,
    Conflict,
    Forbidden,
    NotFound,
    StorageError,
    Unauthorized,
    Unavailable,
    ValidationError,
)


class S3Error(BookstoreError):
    """Base of the S3 errors: `code` is the S3 error code, `status` the HTTP status it answers with."""

    status = 400


class NoSuchBucket(NotFound, S3Error):
    code = "NoSuchBucket"
    status = 404


class NoSuchKey(NotFound, S3Error):
    """The key does not exist, or its latest version is a delete marker (then `delete_marker` is set)."""

    code = "NoSuchKey"
    status = 404

    def __init__(self, message: str, *, delete_marker: bool = False, version_id: str | None = None) -> None:
        super().__init__(message)
        self.delete_marker = delete_marker
        self.version_id = version_id


class NoSuchVersion(NotFound, S3Error):
    code = "NoSuchVersion"
    status = 404


class NoSuchUpload(NotFound, S3Error):
    code = "NoSuchUpload"
    status = 404


class ReplicationConfigurationNotFoundError(NotFound, S3Error):
    code = "ReplicationConfigurationNotFoundError"
    status = 404


class NoSuchWebsiteConfiguration(NotFound, S3Error):
    code = "NoSuchWebsiteConfiguration"
    status = 404


class NoSuchTagSet(NotFound, S3Error):
    code = "NoSuchTagSet"
    status = 404


class BucketAlreadyExists(Conflict, S3Error):
    code = "BucketAlreadyExists"
    status = 409


class BucketAlreadyOwnedByYou(Conflict, S3Error):
    code = "BucketAlreadyOwnedByYou"
    status = 409


class BucketNotEmpty(Conflict, S3Error):
    code = "BucketNotEmpty"
    status = 409


class InvalidBucketState(Conflict, S3Error):
    code = "InvalidBucketState"
    status = 409


class MethodNotAllowed(S3Error):
    """E.g. GET or HEAD of a version that is a delete marker (S3 answers 405, with the marker's
    Last-Modified)."""

    code = "MethodNotAllowed"
    status = 405

    def __init__(
        self,
        message: str,
        *,
        delete_marker: bool = False,
        version_id: str | None = None,
        last_modified_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.delete_marker = delete_marker
        self.version_id = version_id
        self.last_modified_ms = last_modified_ms


class InvalidArgument(ValidationError, S3Error):
    code = "InvalidArgument"


class InvalidRequest(ValidationError, S3Error):
    code = "InvalidRequest"


class MalformedXML(ValidationError, S3Error):
    code = "MalformedXML"


class InvalidBucketName(ValidationError, S3Error):
    code = "InvalidBucketName"


class KeyTooLongError(ValidationError, S3Error):
    code = "KeyTooLongError"


class InvalidRange(ValidationError, S3Error):
    code = "InvalidRange"
    status = 416

    def __init__(self, message: str, *, size: int = 0) -> None:
        super().__init__(message)
        self.size = size


class InvalidPart(ValidationError, S3Error):
    code = "InvalidPart"


class InvalidPartOrder(ValidationError, S3Error):
    code = "InvalidPartOrder"


class EntityTooSmall(ValidationError, S3Error):
    code = "EntityTooSmall"


class EntityTooLarge(ValidationError, S3Error):
    code = "EntityTooLarge"


class MetadataTooLarge(ValidationError, S3Error):
    code = "MetadataTooLarge"


class BadDigest(ValidationError, S3Error):
    code = "BadDigest"


class InvalidDigest(ValidationError, S3Error):
    code = "InvalidDigest"


class IllegalLocationConstraintException(ValidationError, S3Error):
    code = "IllegalLocationConstraintException"


class IncompleteBody(ValidationError, S3Error):
    code = "IncompleteBody"


class XAmzContentSHA256Mismatch(ValidationError, S3Error):
    code = "XAmzContentSHA256Mismatch"


class AuthorizationHeaderMalformed(ValidationError, S3Error):
    code = "AuthorizationHeaderMalformed"


class AuthorizationQueryParametersError(ValidationError, S3Error):
    code = "AuthorizationQueryParametersError"


class InvalidURI(ValidationError, S3Error):
    code = "InvalidURI"


class PreconditionFailed(S3Error):
    code = "PreconditionFailed"
    status = 412


class ConditionalRequestConflict(Conflict, S3Error):
    """A conditional write raced another one on the same key (S3 answers 409; the client retries)."""

    code = "ConditionalRequestConflict"
    status = 409


class ObjectLockConfigurationNotFoundError(NotFound, S3Error):
    code = "ObjectLockConfigurationNotFoundError"
    status = 404


class InvalidTag(ValidationError, S3Error):
    code = "InvalidTag"


class InvalidPartNumber(ValidationError, S3Error):
    code = "InvalidPartNumber"
    status = 416


class MalformedPOSTRequest(ValidationError, S3Error):
    code = "MalformedPOSTRequest"


class AccessControlListNotSupported(ValidationError, S3Error):
    """An ACL granting more than the owner's FULL_CONTROL: S3's answer when a bucket's ACLs are disabled."""

    code = "AccessControlListNotSupported"


class NoSuchPublicAccessBlockConfiguration(NotFound, S3Error):
    code = "NoSuchPublicAccessBlockConfiguration"
    status = 404


class NoSuchConfiguration(NotFound, S3Error):
    """An analytics, inventory, metrics or intelligent-tiering configuration id the bucket lacks."""

    code = "NoSuchConfiguration"
    status = 404


class AccessDenied(Forbidden, S3Error):
    code = "AccessDenied"
    status = 403


class SignatureDoesNotMatch(Forbidden, S3Error):
    code = "SignatureDoesNotMatch"
    status = 403


class InvalidAccessKeyId(Unauthorized, S3Error):
    code = "InvalidAccessKeyId"
    status = 403


class RequestTimeTooSkewed(Forbidden, S3Error):
    code = "RequestTimeTooSkewed"
    status = 403


class NotImplementedS3(S3Error):
    """An S3 operation or feature this store does not implement (HTTP 501, code NotImplemented)."""

    code = "NotImplemented"
    status = 501


class NotSupported(StorageError):
    """The adapter's engine does this itself and offers no way to do it from outside (e.g. S3 replication)."""

    code = "NotSupported"


# The S3 error codes an engine may answer, for adapters that translate an engine's own S3 errors.
ERRORS_BY_CODE: dict[str, type[S3Error]] = {
    cls.code: cls
    for cls in (
        NoSuchBucket,
        NoSuchKey,
        NoSuchVersion,
        NoSuchUpload,
        ReplicationConfigurationNotFoundError,
        NoSuchWebsiteConfiguration,
        NoSuchTagSet,
        BucketAlreadyExists,
        BucketAlreadyOwnedByYou,
        BucketNotEmpty,
        InvalidBucketState,
        MethodNotAllowed,
        InvalidArgument,
        InvalidRequest,
        MalformedXML,
        InvalidBucketName,
        KeyTooLongError,
        InvalidRange,
        InvalidPart,
        InvalidPartOrder,
        EntityTooSmall,
        EntityTooLarge,
        BadDigest,
        InvalidDigest,
        IllegalLocationConstraintException,
        PreconditionFailed,
        AccessDenied,
    )
}


def code_and_status(exc: BookstoreError) -> tuple[str, int]:
    """The S3 error code and HTTP status an error answers with; domain errors map to their S3 kin."""
    if isinstance(exc, S3Error):
        return exc.code, exc.status
    if isinstance(exc, NotSupported):
        return "NotImplemented", 501
    if isinstance(exc, ValidationError):
        return "InvalidArgument", 400
    if isinstance(exc, NotFound):
        return "NoSuchKey", 404
    if isinstance(exc, Forbidden | Unauthorized):
        return "AccessDenied", 403
    if isinstance(exc, Conflict):
        return "OperationAborted", 409
    if isinstance(exc, Unavailable):
        return "ServiceUnavailable", 503
    return "InternalError", 500


class MalformedPolicy(ValidationError, S3Error):
    code = "MalformedPolicy"


class NoSuchBucketPolicy(NotFound, S3Error):
    code = "NoSuchBucketPolicy"
    status = 404


class NoSuchCORSConfiguration(NotFound, S3Error):
    code = "NoSuchCORSConfiguration"
    status = 404


class NoSuchLifecycleConfiguration(NotFound, S3Error):
    code = "NoSuchLifecycleConfiguration"
    status = 404


class AccessForbidden(Forbidden, S3Error):
    """A CORS preflight that no rule of the bucket's CORS configuration allows (S3's code for it)."""

    code = "AccessForbidden"
    status = 403
