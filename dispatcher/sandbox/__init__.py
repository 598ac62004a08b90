"""The sandbox: a local emulator of the REST APIs the dispatcher drives, a program of its own
(`dispatcher sandbox`), also started in-process by `dispatcher send --sandbox` and by the tests.

It may import `dispatcher.tim` (the rules, and each API's client half for its path and codes);
nothing in `dispatcher.tim` imports it.
"""

from dispatcher.sandbox.apis.batchsendmsg import C2C
from dispatcher.sandbox.apis.timpush_batch import PUSH
from dispatcher.sandbox.groups import Group, load_accounts, load_groups
from dispatcher.sandbox.ledger import ALL_MEMBERS, Ledger
from dispatcher.sandbox.server import Faults, Sandbox

__all__ = ["ALL_MEMBERS", "C2C", "PUSH", "Faults", "Group", "Ledger", "Sandbox", "load_accounts", "load_groups"]
