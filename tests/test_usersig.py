"""UserSig: compatibility with Tencent's own library, verification failures, and the caching Signer."""

from __future__ import annotations

import pytest
import TLSSigAPIv2

from dispatcher.errors import SignatureError
from dispatcher.tim import rules, usersig
from tests.conftest import FakeClock

APPID = 1400000000
KEY = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"


def test_official_signature_verifies_with_ours() -> None:
    sig = TLSSigAPIv2.TLSSigAPIv2(APPID, KEY).gen_sig("administrator", 3600)
    doc = usersig.verify(sig, APPID, "administrator", KEY)
    assert doc["TLS.identifier"] == "administrator"
    assert doc["TLS.sdkappid"] == APPID
    assert doc["TLS.expire"] == 3600


def test_ours_decodes_to_the_same_fields_as_the_official(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TLSSigAPIv2.time, "time", lambda: 1_700_000_000.0)
    theirs = usersig.decode(TLSSigAPIv2.TLSSigAPIv2(APPID, KEY).gen_sig("administrator", 86400))
    ours = usersig.decode(usersig.generate(APPID, "administrator", KEY, 86400, now=1_700_000_000))
    assert ours == theirs  # same fields, same HMAC digest


def test_our_signature_is_url_safe() -> None:
    sig = usersig.generate(APPID, "administrator", KEY)
    assert not set(sig) & set("+/=")


@pytest.mark.parametrize(
    ("sig_args", "expected"),
    [
        ({"key": "not-the-key"}, rules.SIG_INVALID),  # forged
        ({"now": 1000.0, "expire": 60}, rules.SIG_EXPIRED),  # issued long ago
        ({"identifier": "someone-else"}, rules.SIG_IDENTIFIER_MISMATCH),
        ({"sdkappid": 1400000001}, rules.SIG_SDKAPPID_MISMATCH),
    ],
)
def test_verification_failures_carry_the_api_code(sig_args: dict[str, object], expected: int) -> None:
    args: dict[str, object] = {"sdkappid": APPID, "identifier": "administrator", "key": KEY, "expire": 3600}
    args.update(sig_args)
    sig = usersig.generate(**args)  # type: ignore[arg-type]
    with pytest.raises(SignatureError) as info:
        usersig.verify(sig, APPID, "administrator", KEY)
    assert info.value.code == expected


@pytest.mark.parametrize("garbage", ["", "not-a-sig", "eJwLz" + "*" * 10])
def test_garbage_is_invalid(garbage: str) -> None:
    with pytest.raises(SignatureError) as info:
        usersig.verify(garbage, APPID, "administrator", KEY)
    assert info.value.code == rules.SIG_INVALID


def test_signer_caches_then_renews_at_half_life(clock: FakeClock) -> None:
    signer = usersig.Signer(APPID, "administrator", KEY, expire=3600, clock=clock.time)
    first = signer.current()
    clock.now += 1000
    assert signer.current() == first  # cached
    clock.now += 900  # past half of its life
    second = signer.current()
    assert second != first
    assert usersig.verify(second, APPID, "administrator", KEY, now=clock.now)["TLS.time"] == int(clock.now)


def test_signer_renews_on_demand(clock: FakeClock) -> None:
    signer = usersig.Signer(APPID, "administrator", KEY, clock=clock.time)
    first = signer.current()
    clock.now += 1
    signer.renew()
    assert signer.current() != first


def test_signer_with_a_ready_usersig_cannot_renew() -> None:
    signer = usersig.Signer(APPID, "administrator", usersig="given")
    assert not signer.can_renew
    signer.renew()
    assert signer.current() == "given"
    assert "given" not in repr(signer)
