"""Accounts on a real SQLite file and a real PostgreSQL database: sign-in, roles, keys, and
the failed sign-in limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.accounts.users import (
    FREE_FAILURES,
    AccountError,
    Accounts,
    LockedOut,
    SignInError,
    lock_seconds,
)
from tests.conftest import make_settings

PASSWORD = "correct horse battery"


@pytest.fixture
def accounts(tmp_path: Path, database_url: str | None) -> Accounts:
    return Accounts(make_settings(tmp_path / "data", database_url=database_url))


def test_sign_in_is_on_once_an_account_exists(accounts: Accounts) -> None:
    assert not accounts.enabled()
    accounts.add("ann", PASSWORD, "reader")
    assert accounts.enabled()
    user = accounts.sign_in("ann", PASSWORD, "10.0.0.1")
    assert user.role == "reader" and user.can("reader") and not user.can("editor")


def test_roles_are_ordered(accounts: Accounts) -> None:
    admin = accounts.add("root", PASSWORD, "admin")
    assert admin.can("editor") and admin.can("reader")
    with pytest.raises(AccountError, match="Unknown role"):
        accounts.add("eve", PASSWORD, "owner")
    with pytest.raises(AccountError, match="user name"):
        accounts.add("../eve", PASSWORD, "reader")


def test_wrong_password_and_unknown_name_read_the_same(accounts: Accounts) -> None:
    accounts.add("ann", PASSWORD, "reader")
    with pytest.raises(SignInError) as wrong:
        accounts.sign_in("ann", "not the password", "c")
    with pytest.raises(SignInError) as unknown:
        accounts.sign_in("nobody", PASSWORD, "c")
    assert str(wrong.value) == str(unknown.value)


def test_failures_lock_out_and_survive_a_restart(accounts: Accounts) -> None:
    accounts.add("ann", PASSWORD, "reader")
    for _ in range(FREE_FAILURES - 1):
        with pytest.raises(SignInError):
            accounts.sign_in("ann", "guess", "attacker")
    with pytest.raises(LockedOut):
        accounts.sign_in("ann", "guess", "attacker")
    reopened = Accounts(accounts.settings)  # a new process sees the same lock
    with pytest.raises(LockedOut) as locked:
        reopened.sign_in("ann", PASSWORD, "attacker")  # even the right password
    assert "try again in" in str(locked.value)
    # Another client is not locked out by the attacker.
    assert reopened.sign_in("ann", PASSWORD, "office").name == "ann"


def test_lockouts_double_up_to_the_cap() -> None:
    waits = [lock_seconds(n) for n in range(1, FREE_FAILURES + 12)]
    assert waits[: FREE_FAILURES - 1] == [0.0] * (FREE_FAILURES - 1)
    locked = waits[FREE_FAILURES - 1 :]
    assert locked[1] == 2 * locked[0] and locked[-1] == max(locked)


def test_removed_user_keys_stop_working(accounts: Accounts) -> None:
    accounts.add("ann", PASSWORD, "editor")
    key = accounts.new_key("ann")
    assert accounts.user_for_key(key).role == "editor"
    assert accounts.user_for_key(key + "x") is None
    accounts.remove("ann")
    assert accounts.user_for_key(key) is None
    with pytest.raises(AccountError, match="No user"):
        accounts.remove("ann")
