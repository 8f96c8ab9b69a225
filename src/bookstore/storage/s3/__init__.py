"""The S3 adapters: the object store on S3 or any S3-compatible service, through boto3."""

from bookstore.storage.s3.objects import S3ObjectStore

__all__ = ["S3ObjectStore"]
