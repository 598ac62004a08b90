"""The decision on one reply (dispatcher.run.decide), with literal replies and no server."""

from __future__ import annotations

from dispatcher.run.client import Reply
from dispatcher.run.decide import Decision, Sent, SignatureUse, decide
from dispatcher.run.retry import RetryPolicy
from dispatcher.tim.apis import REGISTRY, Endpoint
from dispatcher.tim.apis.base import Details

NOTIFICATION = REGISTRY["send_group_system_notification"]
BATCHSENDMSG = REGISTRY["batchsendmsg"]
GROUPMSG = REGISTRY["send_group_msg"]
TARGET = "http://127.0.0.1:9"
FRESH = SignatureUse()  # the signer's current UserSig, made ahead of time


def decided(
    reply: Reply,
    endpoint: Endpoint = NOTIFICATION,
    sent: Sent | None = None,
    *,
    last: bool = False,
    can_renew: bool = True,
    outage: str | None = None,
    signature: SignatureUse = FRESH,
) -> Decision:
    sent = sent or Sent(("alice", "bob"))
    return decide(
        reply,
        endpoint.classify(reply.error_code, reply.http_status, reply.details),
        endpoint,
        sent,
        batch_recipients=len(sent.recipients or ()),
        last=last,
        can_renew=can_renew,
        policy=RetryPolicy(),
        target=TARGET,
        outage=outage,
        signature=signature,
    )


def test_ok_delivers_the_batch_and_adds_no_keys_to_a_notification_line() -> None:
    d = decided(Reply(0, "", 200, 12.5))
    assert (d.status, d.again, d.code, d.delivered, d.undelivered, d.halt) == ("ok", False, "0", 2, 0, None)
    assert dict(d.extra) == {}
    assert dict(d.lost) == {}


def test_transient_code_backs_off_and_is_failed_on_the_last_attempt() -> None:
    d = decided(Reply(10002, "busy", 200, 3.0))
    assert (d.status, d.again, d.backoff, d.code, d.pending) == ("retry", True, True, "10002", ("alice", "bob"))
    d = decided(Reply(10002, "busy", 200, 3.0), last=True)
    assert (d.status, d.again, d.undelivered) == ("failed", False, 2)


def test_transport_fault_is_keyed_transport() -> None:
    d = decided(Reply(None, "timeout after 10s", None, 10000.0))
    assert (d.status, d.again, d.backoff, d.code) == ("retry", True, True, "transport")


def test_an_outage_stops_the_run_with_the_batch_left_resumable() -> None:
    d = decided(Reply(None, "timeout after 10s", None, 10000.0), outage="the endpoint is not answering")
    assert (d.status, d.again, d.halt) == ("retry", False, "the endpoint is not answering")


def test_expired_signature_renews_and_retries_at_once() -> None:
    d = decided(Reply(70001, "expired", 200, 1.0))
    assert (d.status, d.again, d.renew, d.backoff) == ("retry", True, True, False)


def test_expired_signature_without_a_secret_key_stops_the_run() -> None:
    d = decided(Reply(70001, "expired", 200, 1.0), can_renew=False)
    assert (d.status, d.again, d.renew) == ("retry", False, False)
    assert d.halt == "the UserSig in TIM_USERSIG has expired; set TIM_SECRET_KEY or a fresh TIM_USERSIG"


def test_a_renewed_signature_refused_before_the_server_took_it_stops_the_run() -> None:
    d = decided(Reply(70001, "expired", 200, 1.0), signature=SignatureUse(made_on_refusal=True))
    assert (d.status, d.again, d.renew) == ("retry", False, False)
    assert d.halt is not None and d.halt.startswith("the server refused a UserSig made just now (70001: expired)")


def test_a_renewed_signature_the_server_took_before_is_renewed_again_when_it_expires() -> None:
    d = decided(Reply(70001, "expired", 200, 1.0), signature=SignatureUse(made_on_refusal=True, accepted=True))
    assert (d.status, d.again, d.renew, d.backoff, d.halt) == ("retry", True, True, False, None)


def test_only_a_reply_about_the_request_itself_shows_the_server_took_its_signature() -> None:
    took = {
        code: decided(Reply(code, "", 200 if code is not None else None, 1.0)).signature_accepted
        for code in (0, 10010, 80002, None, 10002, 60007, 70001, 70003, 70050, 70107)
    }
    assert [code for code, yes in took.items() if yes] == [0, 10010, 80002]


def test_signature_checks_rate_limited_pause_every_start_a_minute() -> None:
    d = decided(Reply(70050, "too many", 200, 1.0))
    assert (d.status, d.again, d.pause, d.signature_pause, d.backoff) == ("retry", True, 60.0, True, False)


def test_retry_after_pauses_every_start_and_is_cut_to_five_minutes() -> None:
    d = decided(Reply(None, "HTTP 503", 503, 1.0, retry_after=7.0))
    assert (d.status, d.again, d.pause, d.signature_pause, d.backoff) == ("retry", True, 7.0, False, False)
    assert decided(Reply(None, "HTTP 503", 503, 1.0, retry_after=86400.0)).pause == 300.0


def test_a_configuration_error_stops_the_run_and_is_not_final() -> None:
    d = decided(Reply(60004, "bad key", 200, 1.0))
    assert (d.status, d.again) == ("retry", False)
    assert d.halt == "the server answered 60004 (bad key); check credentials and region"
    d = decided(Reply(None, "HTTP 404", 404, 1.0))
    assert d.halt == "HTTP 404 from http://127.0.0.1:9; check --endpoint or --region"


def test_a_permanent_code_fails_the_batch_at_once() -> None:
    d = decided(Reply(10010, "group gone", 200, 1.0))
    assert (d.status, d.again, d.undelivered, d.delivered) == ("failed", False, 2, 0)


def test_batchsendmsg_partial_reply_resends_only_the_transient_recipients() -> None:
    reply = Reply(0, "", 200, 1.0, details=Details(failures=(("bob", 70107), ("carol", 90992), ("zed", 70107))))
    d = decided(reply, BATCHSENDMSG, Sent(("alice", "bob", "carol")))
    assert (d.status, d.again, d.backoff, d.pending, d.delivered) == ("retry", True, True, ("carol",), 1)
    assert dict(d.lost) == {"bob": 70107}
    assert d.extra == {"api": "batchsendmsg", "recipient_errors": {"bob": 70107, "carol": 90992}, "resend": ("carol",)}


def test_batchsendmsg_partial_reply_on_the_last_attempt_fails_with_every_recipient_left() -> None:
    reply = Reply(0, "", 200, 1.0, details=Details(failures=(("bob", 70107), ("carol", 90992))))
    d = decided(reply, BATCHSENDMSG, Sent(("alice", "bob", "carol")), last=True)
    assert (d.status, d.again, d.delivered, d.undelivered) == ("failed", False, 1, 2)
    assert d.extra == {"api": "batchsendmsg", "recipient_errors": {"bob": 70107, "carol": 90992}}


def test_batchsendmsg_retry_of_a_partly_delivered_batch_keeps_what_failed_before() -> None:
    d = decided(Reply(0, "", 200, 1.0), BATCHSENDMSG, Sent(("carol",), {"bob": 70107}))
    assert (d.status, d.delivered, d.undelivered) == ("failed", 1, 1)
    assert dict(d.lost) == {"bob": 70107}
    assert d.extra == {"api": "batchsendmsg", "recipient_errors": {"bob": 70107}}


def test_batchsendmsg_reply_naming_every_account_is_judged_per_recipient() -> None:
    reply = Reply(90012, "no such accounts", 200, 1.0, details=Details(failures=(("alice", 70107), ("bob", 70107))))
    d = decided(reply, BATCHSENDMSG, Sent(("alice", "bob")))
    assert (d.status, d.again, d.delivered, d.undelivered) == ("failed", False, 0, 2)
    assert dict(d.lost) == {"alice": 70107, "bob": 70107}


def test_a_group_message_dropped_by_frequency_control_is_not_a_delivery() -> None:
    reply = Reply(0, "", 200, 1.0, details=Details(dropped="MsgFreqCtrl"))
    d = decided(reply, GROUPMSG, Sent(None))
    assert (d.status, d.again, d.backoff, d.code, d.delivered) == ("retry", True, True, "0-dropped", 0)
    assert d.extra == {"api": "send_group_msg", "msg_drop_reason": "MsgFreqCtrl"}
