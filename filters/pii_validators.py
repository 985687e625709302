"""Validators for the structured identifiers the PII scrubber detects.

Each function takes the candidate string found by the detector's pattern (or its digits)
and says whether it is a real instance of its type. Checksums come from ``python-stdnum``
(Luhn, IBAN mod-97 with per-country lengths and formats, ISBN, US SSN ranges, the Chinese
resident identity checksum and birth date) and from ``phonenumbers`` for telephone numbers;
this module only adds the glue the scrubber needs (issuer prefixes, version/date/price
shapes, entropy of secrets).
"""

from __future__ import annotations

import datetime as _dt
import functools
import ipaddress
import math
import re
import unicodedata
from collections import Counter

import phonenumbers
from stdnum import iban as _iban
from stdnum import isbn as _isbn
from stdnum import luhn as _luhn
from stdnum import numdb
from stdnum.cn import ric as _ric
from stdnum.us import ssn as _ssn
from stdnum.util import get_cc_module

# Full-width digits and punctuation that appear in CJK text, mapped to ASCII.
_FULLWIDTH = {0xFF10 + i: 0x30 + i for i in range(10)}
_FULLWIDTH.update({0xFF0B: ord("+"), 0xFF0D: ord("-"), 0xFF08: ord("("), 0xFF09: ord(")"),
                   0xFF0E: ord("."), 0xFF0F: ord("/"), 0x3000: ord(" "), 0xFF20: ord("@"),
                   0xFF38: ord("X"), 0xFF58: ord("x")})


def to_ascii(s: str) -> str:
    """Map full-width digits/punctuation and any other Unicode decimal digit to ASCII."""
    s = s.translate(_FULLWIDTH)
    if s.isascii():
        return s
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in s)


def digits_of(s: str) -> str:
    """The ASCII decimal digits of ``s`` (full-width and other scripts' digits included)."""
    return _NON_DIGITS.sub("", to_ascii(s))


_NON_DIGITS = re.compile(r"[^0-9]+")


# ---------------------------------------------------------------- payment cards

# (first digits, allowed lengths). Deliberately at the granularity of the networks' blocks
# (e.g. JCB's whole 35 block) rather than today's exact allocations: Luhn already rejects
# nine in ten random numbers, and the prefix + length test removes most of the rest.
_CARD_PREFIXES: tuple[tuple[tuple[int, int], tuple[int, ...]], ...] = (
    ((4, 4), (13, 16, 19)),                         # Visa
    ((51, 55), (16,)),                              # Mastercard
    ((2221, 2720), (16,)),                          # Mastercard 2-series
    ((34, 34), (15,)), ((37, 37), (15,)),           # American Express
    ((6011, 6011), (16, 17, 18, 19)),               # Discover
    ((644, 649), (16, 17, 18, 19)),
    ((65, 65), (16, 17, 18, 19)),
    ((35, 35), (16, 17, 18, 19)),                   # JCB
    ((300, 305), (14, 15, 16, 17, 18, 19)),         # Diners Club
    ((36, 36), (14, 15, 16, 17, 18, 19)),
    ((38, 39), (14, 15, 16, 17, 18, 19)),
    ((62, 62), (16, 17, 18, 19)),                   # UnionPay
    ((50, 50), (12, 13, 14, 15, 16, 17, 18, 19)),   # Maestro
    ((56, 58), (12, 13, 14, 15, 16, 17, 18, 19)),
    ((67, 67), (12, 13, 14, 15, 16, 17, 18, 19)),
    ((2200, 2204), (16, 17, 18, 19)),               # Mir
)


def card_issuer_ok(d: str) -> bool:
    """True when the digit string ``d`` starts with a card network prefix of a fitting length."""
    n = len(d)
    for (lo, hi), lengths in _CARD_PREFIXES:
        k = len(str(lo))
        if n in lengths and lo <= int(d[:k]) <= hi:
            return True
    return False


def is_card(d: str) -> bool:
    """Payment card number: 12-19 digits, issuer prefix + length, Luhn checksum."""
    return 12 <= len(d) <= 19 and card_issuer_ok(d) and _luhn.is_valid(d)


def luhn_ok(d: str) -> bool:
    return _luhn.is_valid(d)


# ---------------------------------------------------------------- bank accounts

_IBAN_CHARS = re.compile(r"[0-9A-Z]+")
_IBAN_BASE36 = str.maketrans({chr(ord("A") + i): str(10 + i) for i in range(26)})
_IBAN_STRUCT = re.compile(r"([1-9][0-9]*)!([nac])")
_IBAN_CLASSES = {"n": "[0-9]", "a": "[A-Z]", "c": "[A-Za-z0-9]"}


@functools.cache
def _iban_country(cc: str) -> tuple[re.Pattern[str] | None, object]:
    """(BBAN pattern, country module or None) of country code ``cc``; no pattern when
    python-stdnum's IBAN registry does not know ``cc``. Built once per country from the
    same registry and the same structure notation that :func:`stdnum.iban.validate` reads
    on every call."""
    props = numdb.get("iban").info(cc)[0][1]
    if not props:
        return None, None
    struct = _IBAN_STRUCT.sub(lambda m: "%s{%s}" % (_IBAN_CLASSES[m.group(2)], m.group(1)), props.get("bban", ""))
    return re.compile("^%s$" % struct), get_cc_module(cc, "iban")


def is_iban(compact: str) -> bool:
    """IBAN: known country, that country's length and BBAN format, mod-97 check.

    The same checks as python-stdnum's ``iban.is_valid(compact, check_country=True)``, in
    the same order, with the registry entry of each country looked up once (stdnum looks
    it up and rebuilds its pattern on every call); anything other than a compact upper-case
    alphanumeric string goes to stdnum itself.
    """
    if len(compact) < 5 or not _IBAN_CHARS.fullmatch(compact):
        return _iban.is_valid(compact, check_country=True)
    if int((compact[4:] + compact[:4]).translate(_IBAN_BASE36)) % 97 != 1:
        return False
    bban_re, module = _iban_country(compact[:2])
    if bban_re is None or not bban_re.match(compact[4:]):
        return False
    return module is None or module.is_valid(compact)


def iban_prefix_length(chars: str) -> int:
    """Length of the valid IBAN that ``chars`` (spaces removed) starts with, or 0.

    A loose pattern may run past the IBAN into a following code; every country has one
    IBAN length, so at most one prefix can validate.
    """
    for n in range(min(len(chars), 34), 14, -1):
        if is_iban(chars[:n]):
            return n
    return 0


# ---------------------------------------------------------------- national ids

def is_us_ssn(d: str) -> bool:
    """US SSN in valid ranges: area 001-899 but 666, group 01-99, serial 0001-9999."""
    return len(d) == 9 and _ssn.is_valid(d)


def is_cn_resident_id(s: str) -> bool:
    """Chinese resident identity number: 17 digits + check char (ISO 7064 mod 11-2), valid birth date.

    The six-digit place code is only checked for a plausible province (11-82): codes of
    districts that were merged or renamed stay on the cards issued under them.
    """
    s = to_ascii(s).upper()
    if len(s) != 18 or not s[:17].isdigit() or not (s[17].isdigit() or s[17] == "X"):
        return False
    if not 11 <= int(s[:2]) <= 82:
        return False
    if _ric.calc_check_digit(s) != s[17]:
        return False
    try:
        born = _ric.get_birth_date(s)
    except Exception:  # stdnum raises its own InvalidComponent for an impossible date
        return False
    return _dt.date(1900, 1, 1) <= born <= _dt.date.today()


# ---------------------------------------------------------------- network addresses

# Blocks whose addresses identify nobody: documentation examples (RFC 5737, RFC 3849).
_DOC_NETS_V4 = tuple(ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))
_DOC_NET_V6 = ipaddress.IPv6Network("2001:db8::/32")


def is_ipv4(s: str) -> bool:
    """Dotted quad with octets 0-255 and no leading zeros (``010.1.1.1`` is not an address)."""
    try:
        ipaddress.IPv4Address(s)
    except ValueError:
        return False
    return True


def ipv4_identifies(s: str) -> bool:
    """False for addresses that point at no one: loopback, unspecified, multicast, reserved
    (netmasks, broadcast) and documentation blocks. Private addresses do count."""
    a = ipaddress.IPv4Address(s)
    if a.is_loopback or a.is_unspecified or a.is_multicast or a.is_reserved:
        return False
    return not any(a in n for n in _DOC_NETS_V4)


def is_ipv6(s: str) -> bool:
    """A valid IPv6 address that can point at someone.

    Needs at least two hex groups and a decimal digit somewhere (keeps ``::``, ``a::b`` and
    hex words joined by colons out); loopback, unspecified, the documentation prefix
    2001:db8::/32 and constants with fewer than three non-zero groups are not taken.
    """
    if s.count(":") < 2 or not any(c.isdigit() for c in s):
        return False
    if sum(1 for g in s.split(":") if g) < 2:
        return False
    try:
        a = ipaddress.IPv6Address(s)
    except ValueError:
        return False
    if a.is_loopback or a.is_unspecified or a in _DOC_NET_V6:
        return False
    # Network-wide constants (ff02::1, fe00::0, fc00::1) have one or two non-zero groups.
    return sum(g != "0000" for g in a.exploded.split(":")) >= 3


# ---------------------------------------------------------------- decoys

_DATE_RE = re.compile(
    r"(?:(?P<y1>\d{4})[-./](?P<m1>\d{1,2})[-./](?P<d1>\d{1,2})"
    r"|(?P<a>\d{1,2})[-./](?P<b>\d{1,2})[-./](?P<y2>\d{2}|\d{4}))"
)


def is_date(s: str) -> bool:
    """A numeric calendar date (Y-M-D, D.M.Y, M/D/Y, with 2- or 4-digit years)."""
    m = _DATE_RE.fullmatch(s)
    if not m:
        return False
    if m.group("y1"):
        return 1 <= int(m.group("m1")) <= 12 and 1 <= int(m.group("d1")) <= 31
    a, b = int(m.group("a")), int(m.group("b"))
    return (1 <= a <= 31 and 1 <= b <= 12) or (1 <= a <= 12 and 1 <= b <= 31)


def is_isbn(s: str) -> bool:
    """ISBN-10 or ISBN-13 with a valid check digit (hyphens/spaces allowed)."""
    c = s.replace("-", "").replace(" ", "")
    if len(c) not in (10, 13):
        return False
    return _isbn.is_valid(c)


# ---------------------------------------------------------------- telephone numbers

def parse_phone(s: str, region: str | None):
    """phonenumbers' parse of ``s`` (``None`` when it cannot be parsed)."""
    try:
        return phonenumbers.parse(s, region)
    except phonenumbers.NumberParseException:
        return None


def intl_phone_possible(s: str) -> bool:
    """An international number (``+CC ...`` or ``00CC ...``) of a possible length for its country."""
    s = to_ascii(s).strip()
    if s.startswith("00"):
        s = "+" + s[2:]
    p = parse_phone(s, None)
    return p is not None and phonenumbers.is_possible_number(p)


def national_phone_valid(s: str, regions: tuple[str, ...], mobile_only: bool = False) -> bool:
    """True when ``s`` is a valid national number in one of ``regions``.

    Args:
        s: the candidate as written (separators and parentheses allowed).
        regions: ISO region codes to try, in order.
        mobile_only: accept only numbers of a distinct mobile range (not the
            fixed-or-mobile plans of e.g. the US), used for bare digit strings that have no
            telephone context.
    """
    s = to_ascii(s)
    for r in regions:
        p = parse_phone(s, r)
        if p is None or not phonenumbers.is_valid_number_for_region(p, r):
            continue
        if mobile_only and phonenumbers.number_type(p) != phonenumbers.PhoneNumberType.MOBILE:
            continue
        return True
    return False


# ---------------------------------------------------------------- secrets

def shannon_entropy(s: str) -> float:
    """Bits per character of ``s`` under its own character distribution."""
    n = len(s)
    if not n:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def looks_random(s: str, min_len: int = 16, min_entropy: float = 3.0) -> bool:
    """A credential-like value: long, several character classes, high per-char entropy.

    Hex strings (one case, digits + a-f) only have 4 bits of alphabet, so they need only two
    classes; words and identifiers of one class are never taken.
    """
    if len(s) < min_len:
        return False
    classes = sum((any(c.islower() for c in s), any(c.isupper() for c in s),
                   any(c.isdigit() for c in s)))
    if classes < 2:
        return False
    return shannon_entropy(s) >= min_entropy
