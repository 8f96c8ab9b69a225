"""A region's network on AWS: a VPC with two private subnets, gateway endpoints to DynamoDB and S3, and
security groups, so the Lambdas reach ElastiCache and Aurora inside it and DynamoDB and S3 without NAT."""

from __future__ import annotations

from bookstore.cloud.cfn import Json, ref, resource, sub

SUBNETS = ("SubnetA", "SubnetB")


def _subnet(index: int, cidr: str) -> Json:
    return resource(
        "AWS::EC2::Subnet",
        {
            "VpcId": ref("Vpc"),
            "CidrBlock": cidr,
            "AvailabilityZone": {"Fn::Select": [index, {"Fn::GetAZs": ""}]},
            "MapPublicIpOnLaunch": False,
        },
    )


def _ingress(port: int, source: str, what: str) -> Json:
    return {
        "IpProtocol": "tcp",
        "FromPort": port,
        "ToPort": port,
        "SourceSecurityGroupId": ref(source),
        "Description": what,
    }


def network(*, secrets_endpoint: bool) -> Json:
    """The VPC's resources; `secrets_endpoint` adds an interface endpoint to Secrets Manager (the blog's)."""
    resources: Json = {
        "Vpc": resource(
            "AWS::EC2::VPC",
            {"CidrBlock": "10.80.0.0/16", "EnableDnsHostnames": True, "EnableDnsSupport": True},
        ),
        SUBNETS[0]: _subnet(0, "10.80.1.0/24"),
        SUBNETS[1]: _subnet(1, "10.80.2.0/24"),
        "RouteTable": resource("AWS::EC2::RouteTable", {"VpcId": ref("Vpc")}),
        "LambdaSg": resource(
            "AWS::EC2::SecurityGroup",
            {"GroupDescription": "The Bookstore Lambdas", "VpcId": ref("Vpc")},
        ),
        "DataSg": resource(
            "AWS::EC2::SecurityGroup",
            {
                "GroupDescription": "ElastiCache and Aurora: reached by the Lambdas only",
                "VpcId": ref("Vpc"),
                "SecurityGroupIngress": [
                    _ingress(6379, "LambdaSg", "Redis from the Lambdas"),
                    _ingress(3306, "LambdaSg", "MySQL from the Lambdas"),
                ],
            },
        ),
    }
    for subnet in SUBNETS:
        resources[f"{subnet}Routes"] = resource(
            "AWS::EC2::SubnetRouteTableAssociation",
            {"SubnetId": ref(subnet), "RouteTableId": ref("RouteTable")},
        )
    for name, service in (("DynamoDbEndpoint", "dynamodb"), ("S3Endpoint", "s3")):
        resources[name] = resource(
            "AWS::EC2::VPCEndpoint",
            {
                "VpcId": ref("Vpc"),
                "ServiceName": sub(f"com.amazonaws.${{AWS::Region}}.{service}"),
                "VpcEndpointType": "Gateway",
                "RouteTableIds": [ref("RouteTable")],
            },
        )
    if secrets_endpoint:
        resources["EndpointSg"] = resource(
            "AWS::EC2::SecurityGroup",
            {
                "GroupDescription": "Interface endpoints: HTTPS from the Lambdas",
                "VpcId": ref("Vpc"),
                "SecurityGroupIngress": [_ingress(443, "LambdaSg", "HTTPS from the Lambdas")],
            },
        )
        resources["SecretsEndpoint"] = resource(
            "AWS::EC2::VPCEndpoint",
            {
                "VpcId": ref("Vpc"),
                "ServiceName": sub("com.amazonaws.${AWS::Region}.secretsmanager"),
                "VpcEndpointType": "Interface",
                "PrivateDnsEnabled": True,
                "SubnetIds": [ref(s) for s in SUBNETS],
                "SecurityGroupIds": [ref("EndpointSg")],
            },
        )
    return resources
