"""`bookstore aws drill`'s parts on AWS: the home region's API function broken through its environment
and repaired, the deployed system's public endpoint and regional APIs, and the drill's shoppers.

The break is module 4's: the API answers 403 (as with its mapping removed) while the function keeps
running, so Route 53's health check on /books fails and the latency record of another region answers.
It is one environment variable (BOOKSTORE_API_BROKEN=1, which the function honours, see
bookstore.region.faults.BrokenApi) set with UpdateFunctionConfiguration; the repair removes it and
nothing else, and is idempotent, so running it again after an interrupted drill is always safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bookstore.cloud.deploy import Deployer
from bookstore.cloud.edge_stack import CHECK_INTERVAL_S, FAILURE_THRESHOLD
from bookstore.domain.errors import StorageError
from bookstore.region.faults import API_BROKEN_ENV

Progress = Callable[[str], None]
# The logical id of the API function in each region's stack (bookstore.cloud.compute).
API_FUNCTION = "ApiFunction"
# A configuration update takes a few seconds; new instances take the new environment once it is done.
UPDATE_WAIT_S = 120.0
UPDATE_POLL_S = 2.0
# What DNS resolvers may keep the failed region's answer after Route 53 stops giving it (the alias
# records of API Gateway's regional domains carry a 60 s TTL).
DNS_TTL_S = 60.0
# Route 53 calls a region unhealthy after FAILURE_THRESHOLD failed checks CHECK_INTERVAL_S apart; then
# resolvers learn the other region's address within the TTL: the time the drill allows on AWS on top
# of its RTO goal.
FAILOVER_ALLOWANCE_S = CHECK_INTERVAL_S * FAILURE_THRESHOLD + DNS_TTL_S


class LambdaBreaker:
    """Breaks and repairs one Lambda function's API through its environment (`client`: boto3 lambda)."""

    def __init__(
        self,
        client: Any,
        function: str,
        progress: Progress = lambda _: None,
        *,
        wait_s: float = UPDATE_WAIT_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.function = function
        self.progress = progress
        self.wait_s = wait_s
        self.sleep = sleep

    def variables(self) -> dict[str, str]:
        found = self.client.get_function_configuration(FunctionName=self.function)
        return dict((found.get("Environment") or {}).get("Variables") or {})

    def is_broken(self) -> bool:
        return self.variables().get(API_BROKEN_ENV) == "1"

    def break_api(self) -> None:
        """Set the flag, keeping every other variable (UpdateFunctionConfiguration replaces them all)."""
        self.progress(f"break: {API_BROKEN_ENV}=1 on {self.function}")
        self._update({**self.variables(), API_BROKEN_ENV: "1"})

    def repair(self) -> bool:
        """Remove the flag if it is set; True when it was."""
        variables = self.variables()
        if variables.pop(API_BROKEN_ENV, None) is None:
            return False
        self.progress(f"repair: {API_BROKEN_ENV} removed from {self.function}")
        self._update(variables)
        return True

    def _update(self, variables: dict[str, str]) -> None:
        try:
            self.client.update_function_configuration(
                FunctionName=self.function, Environment={"Variables": variables}
            )
        except Exception as exc:  # botocore's error names the refusal (a missing permission, mostly)
            raise StorageError(f"updating the configuration of {self.function}: {exc}") from exc
        deadline = time.monotonic() + self.wait_s
        while True:
            state = self.client.get_function_configuration(FunctionName=self.function)
            status = state.get("LastUpdateStatus", "Successful")
            if status == "Successful":
                return
            if status == "Failed" or time.monotonic() > deadline:
                reason = state.get("LastUpdateStatusReason", "")
                raise StorageError(f"the update of {self.function} is {status} {reason}".strip())
            self.sleep(UPDATE_POLL_S)


@contextmanager
def repaired(breaker: LambdaBreaker) -> Iterator[LambdaBreaker]:
    """The breaker, its API repaired when the block ends however it ends (the drill repairs it itself
    on its schedule; this is for a drill that fails or is interrupted between the break and the repair)."""
    try:
        yield breaker
    finally:
        breaker.repair()


def api_function(deployer: Deployer, region: str) -> str:
    """The name of the API function of `region`'s stack."""
    cfn = deployer.clients("cloudformation", region)
    stack = deployer.settings.stack("region")
    try:
        found = cfn.describe_stack_resource(StackName=stack, LogicalResourceId=API_FUNCTION)
    except Exception as exc:
        raise StorageError(f"no API function in {stack} in {region} ({exc}): is it deployed?") from exc
    return str(found["StackResourceDetail"]["PhysicalResourceId"])


@dataclass(frozen=True)
class Deployed:
    """Where the deployed system answers: CloudFront (storefront and /api/...) and each region's API."""

    public_url: str
    regions: dict[str, str]


def deployed(deployer: Deployer) -> Deployed:
    """From the stacks' outputs: https://<distribution> and https://<execute-api host> per region."""
    rows = {(row["stack"], row["region"]): row for row in deployer.status()}
    settings = deployer.settings
    absent = [f"{s} in {r}" for (s, r), row in rows.items() if not row["outputs"]]
    if absent:
        raise StorageError(f"not deployed: {', '.join(absent)} (run `bookstore aws deploy`)")
    edge = rows[(settings.stack("edge"), settings.home)]["outputs"]
    regions = {
        r: "https://" + rows[(settings.stack("region"), r)]["outputs"]["ApiHost"] for r in settings.regions
    }
    return Deployed("https://" + edge["DistributionDomainName"], regions)


def add_users(
    dynamodb: Any, streams: Any, table_prefix: str, region: str
) -> Callable[[list[str], str], list[str]]:
    """Confirmed accounts written to the users table (a global table) as `bookstore users add` writes
    them, with the operator's AWS credentials: confirmation codes on AWS go to the functions' logs."""
    from bookstore import tables
    from bookstore.kernel.clock import SystemClock
    from bookstore.services.attempts import Attempts
    from bookstore.services.identity.accounts import Accounts
    from bookstore.services.identity.passwords import Passwords
    from bookstore.storage.dynamodb.tables import DynamoTable

    def table(schema: Any) -> DynamoTable:
        return DynamoTable(
            schema, client=dynamodb, streams_client=streams, prefix=table_prefix, region=region
        )

    clock = SystemClock()
    accounts = Accounts(
        table(tables.USERS),
        Attempts(table(tables.ATTEMPTS), region=region, clock=clock),
        Passwords(time_cost=2, memory_cost=19_456, parallelism=1),
        region=region,
        clock=clock,
    )

    def add(emails: list[str], password: str) -> list[str]:
        return [accounts.add_user(email, password).user_id for email in emails]

    return add
