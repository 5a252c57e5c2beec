"""keys.webhooks: Standard Webhooks signatures (checked by the independent
`standardwebhooks` package) and sealed secrets."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import keys.webhooks as wh


def test_signatures_verify_with_standardwebhooks():
    secret = wh.new_secret()
    body = b'{"type":"key.created","data":{"x":"\xc3\xa9"}}'
    now = int(time.time())
    headers = wh.headers(secret, "msg_1", now, body)
    assert Webhook(secret).verify(body, headers) == {"type": "key.created", "data": {"x": "é"}}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(wh.new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers | {"webhook-id": "msg_2"})


@pytest.mark.parametrize("bad", ["", "whsec_", "sk_abc", "whsec_!!!!", "whsec_" + "A" * 8])
def test_bad_secrets_are_refused(bad):
    with pytest.raises(wh.BadSecret):
        wh.sign(bad, "m", 1, b"")


def test_sealed_secrets_open_only_with_their_key_and_endpoint():
    box = wh.SecretBox(wh.new_box_key())
    secret = wh.new_secret()
    sealed = box.seal(secret, "ep_1")
    assert secret not in sealed and secret.removeprefix("whsec_") not in sealed
    assert box.seal(secret, "ep_1") != sealed  # a fresh nonce each time
    assert box.open(sealed, "ep_1") == secret
    with pytest.raises(wh.BadSecret):
        box.open(sealed, "ep_2")  # moved onto another endpoint's row
    with pytest.raises(wh.BadSecret):
        wh.SecretBox(wh.new_box_key()).open(sealed, "ep_1")  # another key
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(wh.BadSecret):
        box.open(tampered, "ep_1")
    with pytest.raises(wh.BadSecret):
        box.open("v0." + sealed[3:], "ep_1")


@pytest.mark.parametrize("key", ["", "short", "A" * 42, "A" * 44 + "!"])
def test_bad_box_keys_are_refused(key):
    with pytest.raises(wh.BadSecret, match="32 bytes"):
        wh.SecretBox(key)


def test_a_rotated_box_opens_old_secrets_and_reseals_them_under_the_new_key():
    old, new = wh.new_box_key(), wh.new_box_key()
    secret = wh.new_secret()
    sealed_old = wh.SecretBox(old).seal(secret, "ep_1")
    rotated = wh.SecretBox(new, (old,))
    assert rotated.open(sealed_old, "ep_1") == secret
    fresh = rotated.reseal(sealed_old, "ep_1")
    assert fresh is not None and fresh != sealed_old
    assert wh.SecretBox(new).open(fresh, "ep_1") == secret  # the new key alone opens it now
    with pytest.raises(wh.BadSecret):
        wh.SecretBox(old).open(fresh, "ep_1")
    assert rotated.reseal(fresh, "ep_1") is None  # already under the current key
    with pytest.raises(wh.BadSecret):
        rotated.reseal(sealed_old, "ep_2")  # the endpoint binding holds through a rotation
    with pytest.raises(wh.BadSecret):
        wh.SecretBox(new, (wh.new_box_key(),)).open(sealed_old, "ep_1")  # not among its keys
    with pytest.raises(wh.BadPreviousKey, match="32 bytes"):
        wh.SecretBox(new, ("short",))


def test_a_bad_current_key_is_told_apart_from_a_bad_previous_one():
    with pytest.raises(wh.BadSecret) as bad_current:
        wh.SecretBox("short", ("short",))  # both bad: the current key is named
    assert not isinstance(bad_current.value, wh.BadPreviousKey)
    with pytest.raises(wh.BadPreviousKey):
        wh.SecretBox(wh.new_box_key(), (wh.new_box_key(), "short"))
