"""Unit tests of the PII detectors and validators (filters/pii.py, filters/pii_validators.py)."""

from __future__ import annotations

import pytest

from filters import pii_validators as v
from filters.pii import TYPES, PiiDetector, Scrubber

DET = PiiDetector()
SCRUB = Scrubber()


def found(text: str) -> list[tuple[str, str]]:
    return [(s.type, text[s.start:s.end]) for s in DET.detect(text)]


@pytest.mark.parametrize(
    "text, typ, value",
    [
        ("Write to jane.doe+news@example.co.uk today.", "email", "jane.doe+news@example.co.uk"),
        ("联系人：王伟，邮箱wangwei88@example.cn，电话13812345678。", "email", "wangwei88@example.cn"),
        ("Call +1 (415) 555-2671 now", "phone", "+1 (415) 555-2671"),
        ("Tel. +49 (0) 30 1234567.", "phone", "+49 (0) 30 1234567"),
        ("Rufen Sie uns unter (030) 12345678 an", "phone", "(030) 12345678"),
        ("tél. 01 45 54 90 17.", "phone", "01 45 54 90 17"),
        ("他的手机号码是13912345678。", "phone", "13912345678"),
        ("请拨打+86 139 1234 5678。", "phone", "+86 139 1234 5678"),
        ("電話090-1234-5678です", "phone", "090-1234-5678"),
        ("call me at 415.555.2671x123 please", "phone", "415.555.2671x123"),
        ("from 192.168.10.20 at noon", "ipv4", "192.168.10.20"),
        ("登录来自IP地址52.170.81.95。", "ipv4", "52.170.81.95"),
        ("server at 2a03:2880:85a3::8a2e:370:7334.", "ipv6", "2a03:2880:85a3::8a2e:370:7334"),
        ("host fe80::1ff:fe23:4567:890a answered", "ipv6", "fe80::1ff:fe23:4567:890a"),
        ("card 4111 1111 1111 1111, exp", "credit_card", "4111 1111 1111 1111"),
        ("Amex 3782-822463-10005 ok", "credit_card", "3782-822463-10005"),
        ("信用卡4012888888881881支付", "credit_card", "4012888888881881"),
        ("IBAN DE89 3704 0044 0532 0130 00.", "iban", "DE89 3704 0044 0532 0130 00"),
        ("IBAN GB82WEST12345698765432に振り込む", "iban", "GB82WEST12345698765432"),
        ("SSN 123-45-6789 on file", "us_ssn", "123-45-6789"),
        ("身份证号11010519491231002X。", "cn_resident_id", "11010519491231002X"),
        ("key AKIAIOSFODNN7EXAMPLE leaked", "secret", "AKIAIOSFODNN7EXAMPLE"),
        ("export GITHUB_TOKEN=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "secret",
         "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
        ("token glpat-AbCdEfGhIjKlMnOpQrSt12", "secret", "glpat-AbCdEfGhIjKlMnOpQrSt12"),
        ("slack xoxb-1234567890-abcdefghijkl", "secret", "xoxb-1234567890-abcdefghijkl"),
        ("api_key = 'Zx9qP2mL7vR4tY8wK3nB'", "secret", "Zx9qP2mL7vR4tY8wK3nB"),
        ('{"Authorization": "Bearer 89270f836100795fe07c17f4bc839d34"}', "secret",
         "89270f836100795fe07c17f4bc839d34"),
    ],
)
def test_detects(text: str, typ: str, value: str) -> None:
    assert (typ, value) in found(text)


def test_private_key_block() -> None:
    body = "MIIEowIBAAKCAQEAx3Gr7" * 3
    text = f"oops:\n-----BEGIN RSA PRIVATE KEY-----\n{body}\n{body}\n-----END RSA PRIVATE KEY-----\nbye"
    assert found(text) == [("secret", text[text.index("-----BEGIN"):text.index("\nbye")])]


@pytest.mark.parametrize(
    "text",
    [
        "See ISBN 978-1-75945-807-6 for the second edition.",
        "The book (ISBN 0-8164-8807-X) is out of print.",
        "ISBN 9780306406157 in print",
        "The meeting was moved to 2014-09-19.",
        "The contract ends on 22/02/1998.",
        "Moved to 15.03.2027 again.",
        "The bug was fixed in version 13.10.7 of the library.",
        "Upgrade to version 10.2.3.4 today.",
        "After upgrading to v2.2.10, the build passed again.",
        "Your order number is 5491417997194167.",
        "Tracking number 9401267009681684 shows the parcel in transit.",
        "The regression was introduced in commit 22c4d91a62686f6ddf24d74c1c639743e0f25ca8.",
        "Revert 1b9d49f before the release.",
        "The upgrade costs $1,402.49 per seat.",
        "Tickets are now 1408.09 EUR.",
        "A quick check: 3400 / 85 = 40.",
        "The worksheet asks pupils to verify that (85 + 72) * 2 = 314.",
        "It happened at 12:30:45 on the dot.",
        "C++ uses std::vector and a::b scopes.",
        "The population was 1234567 in 2020.",
        "api_key = 'changeme_changeme_changeme'",
        "password: hunter2",
        "Versions 1.2.3 and 4.5.6 are out.",
        "ff02::1 ip6-allnodes, fe00::0 ip6-localnet",
        "'{:+f}'.format(3.14) gives '+3.140000'",
        "© Copyright 2001-2026, Python Software Foundation.",
        "This is a mitigation for CVE-2020-10735 (bpo-1635741).",
        "5.10.2.1. Recompilation and 8.6.4.10. Class patterns",
        "Boston, MA 02110-1301, USA.",
        "fib(500): 0 1 1 2 3 5 8 13 21 34 55 89 144 233 377",
        "Windows build 10.0.19041.123 and 软件版本10.0.18409.23。",
        "Reference number 4018 0063 5637 1199 is our internal ticket.",
    ],
)
def test_leaves_decoys(text: str) -> None:
    assert SCRUB.scrub(text).text == text


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 declined",  # Luhn fails
        "IBAN DE89 3704 0044 0532 0130 01",   # mod-97 fails
        "SSN 666-45-6789",                    # area 666 is never issued
        "SSN 000-45-6789",
        "SSN 123-00-6789",
        "id 110105194912310021 only",         # CN checksum fails
        "id 110105194913310028 only",         # month 13
        "addr 999.1.1.1 nope",
        "addr 2001:db8::g1 nope",
        "docs use 192.0.2.10 and 2001:db8::1 as examples",  # documentation blocks
        "bind 127.0.0.1, mask 255.255.255.0, any 0.0.0.0",  # loopback, netmask, unspecified
    ],
)
def test_validation_rejects(text: str) -> None:
    assert not [t for t, _ in found(text) if t != "phone"]


def test_fullwidth_digits() -> None:
    text = "電話：０９０－１２３４－５６７８、カード４１１１１１１１１１１１１１１１。"
    kinds = found(text)
    assert ("phone", "０９０－１２３４－５６７８") in kinds
    assert ("credit_card", "４１１１１１１１１１１１１１１１") in kinds
    assert v.to_ascii("＋８６") == "+86"


def test_no_boundary_inside_latin_words() -> None:
    # Digits glued to Latin letters are codes, not numbers; glued to CJK they are numbers.
    assert found("serialABC4155552671xyz") == []
    assert found("号码13912345678号") == [("phone", "13912345678")]


def test_placeholders_and_counts() -> None:
    res = SCRUB.scrub("Mail a@b.io or c@d.io, call +44 20 7946 0958, card 4111111111111111.")
    assert res.text == "Mail <EMAIL> or <EMAIL>, call <PHONE>, card <CARD>."
    assert res.counts == {"email": 2, "phone": 1, "credit_card": 1}


def test_pseudonyms_consistent_per_document() -> None:
    s = Scrubber(policy="pseudonym", key="secret-key")
    text = "From bob@x.org to BOB@x.org and eve@x.org"
    a = s.scrub(text, "doc1").text
    tags = a.split()
    assert tags[1] == tags[3] != tags[5]  # same address (case-insensitive), other address
    assert tags[1].startswith("<EMAIL_") and tags[1].endswith(">")
    assert s.scrub(text, "doc2").text != a  # another document, other tags
    assert Scrubber(policy="pseudonym", key="other").scrub(text, "doc1").text != a
    assert s.scrub(text, "doc1").text == a  # deterministic


def test_type_selection() -> None:
    s = Scrubber(types=["email"])
    text = "a@b.io +44 20 7946 0958"
    assert s.scrub(text).text == "<EMAIL> +44 20 7946 0958"
    with pytest.raises(ValueError):
        Scrubber(types=["email", "nope"])
    with pytest.raises(ValueError):
        Scrubber(policy="mask")


def test_card_validator() -> None:
    assert v.is_card("4111111111111111")
    assert not v.is_card("4111111111111112")
    assert not v.is_card("9111111111111119")  # no network starts with 9
    assert v.card_issuer_ok("378282246310005") and not v.card_issuer_ok("3782822463100050")


def test_other_validators() -> None:
    assert v.iban_prefix_length("DE89370400440532013000XY") == 22
    assert v.is_us_ssn("123456789") and not v.is_us_ssn("900456789")
    assert v.is_cn_resident_id("11010519491231002X")
    assert v.is_date("2014-09-19") and not v.is_date("36-8760-7197")
    assert v.is_isbn("978-1-75945-807-6")
    assert v.looks_random("Zx9qP2mL7vR4tY8wK3nB") and not v.looks_random("abcdefghijklmnopqrst")
    assert v.intl_phone_possible("+33 6 12 34 56 78")
    assert v.national_phone_valid("13912345678", ("CN",), mobile_only=True)


def test_types_constant() -> None:
    assert set(TYPES) == {"email", "phone", "ipv4", "ipv6", "credit_card", "iban", "us_ssn",
                          "cn_resident_id", "secret"}


def test_iban_validator_matches_stdnum() -> None:
    """is_iban's per-country fast path gives python-stdnum's verdict, country checks included."""
    import random
    import re

    from stdnum import iban as std_iban
    from stdnum import numdb

    rnd = random.Random(5)
    alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    kinds = {"n": "0123456789", "a": "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "c": alnum}
    codes = sorted({low for _, low, _, _, _ in numdb.get("iban").prefixes}) + ["XX", "1A"]
    checked = valid = 0
    for cc in codes:
        struct = numdb.get("iban").info(cc)[0][1].get("bban", "4!n10!c")
        for _ in range(60):
            body = "".join(rnd.choice(kinds[k]) for cnt, k in re.findall(r"(\d+)!([nac])", struct)
                           for _ in range(int(cnt)))
            if rnd.random() < 0.3:  # off the country's format: random length and characters
                body = "".join(rnd.choice(alnum) for _ in range(rnd.randint(1, 32)))
            cand = cc + std_iban.calc_check_digits(cc + "00" + body) + body
            for c in (cand, cand[:-1], cand + "7", cc + "00" + body, cand.lower(), cand[:4]):
                assert v.is_iban(c) == std_iban.is_valid(c, check_country=True), c
                checked += 1
                valid += v.is_iban(c)
    assert valid > 1000 and checked > 10000


def test_scan_pattern_matches_family_order() -> None:
    """The regrouped scan pattern finds what the plain alternation of the families finds."""
    import re

    from filters import pii

    plain = re.compile("|".join(p for _, p in pii._FAMILIES))
    texts = [
        "Write to jane.doe+news@example.co.uk or call +1 (415) 555-2671 / Tel. +49 (0) 30 1234567.",
        "他的手机号码是13912345678。請拨打＋８６ １３９ １２３４ ５６７８。電話090-1234-5678です",
        "from 192.168.10.20 at noon; server at 2a03:2880:85a3::8a2e:370:7334. v1.2.3.4 build",
        "card 4111 1111 1111 1111, Amex 3782-822463-10005, IBAN DE89 3704 0044 0532 0130 00.",
        "SSN 123-45-6789, 身份证号11010519491231002X。 key AKIAIOSFODNN7EXAMPLE ISBN 0-8164-8807-X",
        "api_key = 'Zx9qP2mL7vR4tY8wK3nB' Bearer 89270f836100795fe07c17f4bc839d34 $1,234.50 ext. 12",
        "a-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx5J3hxYz0e1z2w\n-----END RSA PRIVATE KEY-----",
        "x::1 ::ffff:10.0.0.1 a::b 2001:db8::1 -- +-(030) 1234567 @@a@b.cd -ghp_" + "a" * 36,
        "DE89370400440532013000 0x1F ab12:34 1.2.3.4 tel:+49 30 1234567",
    ]
    for text in texts:
        for i in range(len(text) + 1):
            for end in (len(text), min(len(text), i + 7)):
                a, b = plain.search(text, i, end), pii._MASTER.search(text, i, end)
                assert (a and (a.span(), a.lastgroup)) == (b and (b.span(), b.lastgroup)), (text, i, end)
