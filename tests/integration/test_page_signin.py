"""Who the chat page sees as signed in (rag.ui.page.signed_in), on a real account database:
the role read from it on every call, single sign-on users given their account's role or
``RAG_OIDC_ROLE``. Beside the unit tests of the page's helpers, but each account added costs
a password hash, so these live with the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.accounts.users import Accounts
from rag.config import Settings
from rag.ui import page
from rag.ui.page import Identity
from tests.conftest import make_settings

PASSWORD = "correct horse battery"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


def test_the_user_and_role_come_from_the_database_every_time(settings: Settings) -> None:
    accounts = Accounts(settings)
    created = accounts.add("ann", PASSWORD, "editor").created
    on, user = page.signed_in(settings, Identity("ann", created))
    assert on and user is not None and user.role == "editor"
    assert page.signed_in(settings, Identity(None)) == (True, None)
    accounts.add("bob", PASSWORD, "admin")
    accounts.remove("ann")  # applies at once, whatever the session still holds
    assert page.signed_in(settings, Identity("ann", created)) == (True, None)
    # A new account under the removed one's name is not the old session's user.
    accounts.add("ann", PASSWORD, "admin")
    assert page.signed_in(settings, Identity("ann", created)) == (True, None)


def test_single_sign_on_users_get_their_account_role_or_the_default(settings: Settings) -> None:
    Accounts(settings).add("ann@example.org", PASSWORD, "admin")
    known = Identity(None, oidc=True, oidc_signed_in=True, oidc_name="ann@example.org")
    assert page.signed_in(settings, known)[1].role == "admin"
    stranger = Identity("ann@example.org", oidc=True, oidc_signed_in=True, oidc_name="eve@x.org")
    on, user = page.signed_in(settings, stranger)
    assert on and user.name == "eve@x.org" and user.role == "reader"
    closed = make_settings(settings.data_dir, oidc_role="none")
    assert page.signed_in(closed, stranger) == (True, None)
    assert page.signed_in(settings, Identity(None, oidc=True)) == (True, None)
