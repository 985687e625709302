"""Property tests (hypothesis) of the PII scrubber: idempotent, and no change without a detection."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filters.pii import PLACEHOLDERS, Scrubber

SCRUB = Scrubber()
PSEUDO = Scrubber(policy="pseudonym", key="k")
PLACEHOLDER_RE = re.compile(r"<(?:%s)(?:_[a-z]{8})?>" % "|".join(PLACEHOLDERS.values()))


def _luhn_complete(body: str) -> str:
    total = 0
    for i, c in enumerate(reversed(body)):
        d = int(c)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


digits = st.text(alphabet="0123456789", min_size=1, max_size=12)
cards = st.tuples(st.sampled_from(["4", "51", "37", "6011", "35"]), st.integers(10**9, 10**10 - 1)).map(
    lambda t: _luhn_complete((t[0] + str(t[1]) + "00000")[: (14 if t[0] == "37" else 15)])
)
emails = st.from_regex(r"[a-z][a-z0-9._+]{0,8}[a-z0-9]@[a-z]{1,8}\.(com|org|de|cn)", fullmatch=True)
phones = st.one_of(
    st.from_regex(r"\+(1|33|44|49|86) ?[1-9][0-9]{2}[ -]?[0-9]{3}[ -]?[0-9]{4}", fullmatch=True),
    st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
    st.from_regex(r"0[1-9][0-9]{1,3}[ -/][0-9]{5,7}", fullmatch=True),
)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.lists(st.from_regex(r"[0-9a-f]{1,4}", fullmatch=True), min_size=8, max_size=8).map(":".join)
secrets = st.one_of(
    st.from_regex(r"AKIA[A-Z0-9]{16}", fullmatch=True),
    st.from_regex(r"ghp_[A-Za-z0-9]{36}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9+/]{20,40}", fullmatch=True),
)
keywords = st.sampled_from([
    "tel.", "Tel:", "phone", "call", "电话", "携帯", "SSN", "social security", "token=", "api_key:",
    "Bearer", "password is", "ISBN", "version", "v", "IBAN", "card", "$", "€", "EUR", "@", "x",
    "ext.", "(0)", "+", "-", "/", ".", ":", "::", "-----BEGIN RSA PRIVATE KEY-----",
    "-----END RSA PRIVATE KEY-----", "<PHONE>", "<EMAIL_abcdefgh>", "<SECRET>",
])
words = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFXYZ", min_size=1, max_size=10),
    st.sampled_from(["的", "电话号码", "です", "número", "Straße", "１２３４５６７８９０", "＋８６"]),
)
fragments = st.one_of(digits, cards, emails, phones, ipv4, ipv6, secrets, keywords, words)
separators = st.sampled_from(["", " ", " ", ", ", ". ", "\n", "-", ".", "/", ":", "=", "(", ")", "。"])
documents = st.lists(st.tuples(fragments, separators), min_size=1, max_size=25).map(
    lambda parts: "".join(f + s for f, s in parts)
)
PROFILE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROFILE
@given(documents)
def test_scrub_is_idempotent(doc: str) -> None:
    once = SCRUB.scrub(doc, "d")
    twice = SCRUB.scrub(once.text, "d")
    assert twice.text == once.text
    assert not twice.spans


@PROFILE
@given(documents)
def test_pseudonym_scrub_is_idempotent(doc: str) -> None:
    once = PSEUDO.scrub(doc, "d")
    assert PSEUDO.scrub(once.text, "d").text == once.text


@PROFILE
@given(documents)
def test_no_change_without_detection(doc: str) -> None:
    res = SCRUB.scrub(doc, "d")
    if not res.spans:
        assert res.text == doc
    # Every change is a placeholder: removing them leaves only text that was in the input,
    # in order (each detection only ever replaces a span).
    n_in = len(PLACEHOLDER_RE.findall(doc))
    assert len(PLACEHOLDER_RE.findall(res.text)) == n_in + sum(res.counts.values())


@PROFILE
@given(documents)
def test_output_is_input_with_first_round_spans_replaced(doc: str) -> None:
    spans = SCRUB.detector.detect(doc)
    res = SCRUB.scrub(doc, "d")
    if sum(res.counts.values()) != len(spans):
        return  # a re-check round found more; covered by the idempotence test
    expected, last = [], 0
    for sp in spans:
        assert last <= sp.start < sp.end <= len(doc)
        expected.append(doc[last:sp.start])
        expected.append(f"<{PLACEHOLDERS[sp.type]}>")
        last = sp.end
    expected.append(doc[last:])
    assert res.text == "".join(expected)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_unicode_is_idempotent(doc: str) -> None:
    once = SCRUB.scrub(doc)
    assert SCRUB.scrub(once.text).text == once.text
    if not once.spans:
        assert once.text == doc
