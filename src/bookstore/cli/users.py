"""`bookstore users`: add a confirmed user, print a sign-up's confirmation code (there is no mail server)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bookstore.cli.options import AsJson, DataDir, RegionOpt, TopologyFile, show
from bookstore.cli.region_access import on_region

if TYPE_CHECKING:
    from bookstore.region.services import RegionServices

app = typer.Typer(help="Manage the user pool.", no_args_is_help=True)

Email = Annotated[str, typer.Argument(help="The user's email address.")]


@app.command("add")
def users_add(
    email: Email,
    password: Annotated[
        str,
        typer.Option(
            "--password", prompt=True, hide_input=True, help="The password (asked for when not given)."
        ),
    ],
    role: Annotated[str, typer.Option("--role", help="customer or author")] = "customer",
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
    region: RegionOpt = None,
    as_json: AsJson = False,
) -> None:
    """Create a confirmed user."""

    def local(services: RegionServices) -> dict[str, Any]:
        user = services.identity.add_user(email, password, role=role)
        return {"email": user.email, "role": user.role, "userId": user.user_id}

    user = on_region(
        topology,
        region,
        data_dir,
        "users add",
        local,
        lambda running: running.add_user(email, password, role),
    )
    show(as_json, user, f"added {user['email']} ({user['role']}), user id {user['userId']}")


@app.command("confirm-code")
def users_confirm_code(
    email: Email,
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
    region: RegionOpt = None,
    as_json: AsJson = False,
) -> None:
    """Print the confirmation code of a user who signed up (there is no mail server)."""
    code = on_region(
        topology,
        region,
        data_dir,
        "users confirm-code",
        lambda services: services.identity.confirmation_code(email),
        lambda running: running.confirmation_code(email),
    )
    show(as_json, {"email": email, "code": code}, str(code))
