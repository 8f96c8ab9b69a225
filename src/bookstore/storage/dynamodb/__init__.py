"""DynamoDB adapters through boto3."""
