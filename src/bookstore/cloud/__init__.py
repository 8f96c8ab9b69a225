"""The AWS version of the system, generated from the topology: CloudFormation stacks and their order."""
