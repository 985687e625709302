"""PII detection and scrubbing: validated detectors for structured identifiers and secrets.

One combined pattern scans a document once; every alternative finds *candidates* of one
family (private-key blocks, e-mail addresses anchored on "@", long credential-like tokens,
IBANs, IPv6 addresses, and runs of digits), and a validator decides what a candidate is:
a token is a secret when it has a vendor format (AWS, GitHub, GitLab, Slack, ...) or is a
random-looking value right after a credential name (``api_key = ...``, ``Bearer ...``);
runs of digits are classified together (IPv4, Chinese resident id, US SSN, payment card,
telephone number) with checksums and context, after the shapes of common non-PII numbers
(dates, ISBNs, versions, section numbers, prices, postcodes) are set aside. When a
candidate fails, the next family is tried at the same position, so no detector rescans
the document.

Boundaries are ASCII/Latin only: a number glued to CJK text (``电话18500553404。``) is a
candidate, a number glued to Latin letters (``abc123``) is not. Full-width digits and
punctuation are read as their ASCII counterparts.

The replacement policy is a typed placeholder (``<EMAIL>``) or a per-document pseudonym
(``<EMAIL_kqzmxwab>``: a keyed hash of the document id, the type and the normalised value,
written in letters only so that no detector ever matches it). Scrubbing is idempotent:
after replacing, the neighbourhoods of the replacements are checked again (context
windows shrink when a long span becomes a short placeholder), until nothing new is found.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from . import pii_validators as v

TYPES: tuple[str, ...] = (
    "email", "phone", "ipv4", "ipv6", "credit_card", "iban", "us_ssn", "cn_resident_id", "secret",
)
PLACEHOLDERS: dict[str, str] = {
    "email": "EMAIL", "phone": "PHONE", "ipv4": "IPV4", "ipv6": "IPV6", "credit_card": "CARD",
    "iban": "IBAN", "us_ssn": "SSN", "cn_resident_id": "CN_ID", "secret": "SECRET",
}
DEFAULT_PHONE_REGIONS: tuple[str, ...] = (
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "PT", "JP", "CN", "KR", "IN", "RU", "CA",
    "AU", "MX", "PL", "SE", "CH", "AT", "BE",
)


@dataclass(frozen=True, slots=True)
class Span:
    """One detection: ``text[start:end]`` is an instance of ``type``."""

    start: int
    end: int
    type: str


# ------------------------------------------------------------------ patterns

# Every alternative starts with a plain character test, then checks its left boundary with
# a lookbehind, then opens an empty *marker* group naming its family. Positions that fail
# the first character cost one test per family; the marker's name tells which family
# matched (``m.lastgroup``) without wrapping the alternatives in capturing groups.

# Characters that glue a token to its neighbour: ASCII/Latin letters, digits, full-width
# alphanumerics. CJK characters are deliberately absent (no word boundaries there).
_ALNUM = r"0-9A-Za-z_\u00C0-\u024F\uFF10-\uFF19\uFF21-\uFF3A\uFF41-\uFF5A"
_DIG = r"[0-9\uFF10-\uFF19]"
_NOT_BEFORE = rf"(?![{_ALNUM}])"

_PEM = (
    r"-(?P<pem>)----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
    r"(?:[\s\S]{0,20000}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
    r"|(?:\r?\n[A-Za-z0-9+/=]{16,}){1,400})"
)
# Anchored on "@": the local part is taken leftwards in Python (see _EMAIL_LOCAL).
_EMAIL = (
    r"@(?P<email>)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![A-Za-z0-9\-])"
)
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-"
                         + "".join(chr(c) for c in range(0xC0, 0x250)))
# Long credential-like tokens: base64/base64url/hex runs of 16+ characters. Python then
# decides: a vendor format (_TOKEN_FORMATS), or a random-looking value right after a name
# that announces a credential (_KV_BEFORE); anything else (hashes, paths) is left alone.
_TOKEN_CHARS = r"A-Za-z0-9+/_\-"
_LONGTOK = (
    rf"[{_TOKEN_CHARS}](?<![{_TOKEN_CHARS}].)(?P<tok>)[{_TOKEN_CHARS}]{{15,1000}}+={{0,2}}"
    rf"(?![{_TOKEN_CHARS}=])"
)
_TOKEN_FORMATS = re.compile(
    r"(?:(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}"          # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}"  # GitHub
    r"|gl(?:pat|ptt|dt|rt|cbt)-[A-Za-z0-9_\-]{20,}"               # GitLab
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}|xapp-\d-[A-Za-z0-9\-]{10,}"  # Slack
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"                       # Stripe secret keys
    r"|AIza[0-9A-Za-z_\-]{35}"                                     # Google API key
    r"|sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{32,}"                      # LLM API keys
    r"|eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"  # JWT
    r")(?![A-Za-z0-9_])"
)
# Names that announce a credential (separators _, -, space or none between words).
_KV_NAMES = (
    "api key", "apikey", "api token", "access key", "access key id", "secret", "secret key",
    "secret access key", "client secret", "auth token", "access token", "refresh token",
    "session token", "bearer token", "token", "password", "passwd", "pwd", "bearer",
    "private key", "credential", "credentials", "authorization",
)
_KV_BEFORE = re.compile(
    r"(?i)(?<![A-Za-z])(?:"
    + "|".join(re.escape(n).replace(r"\ ", "[_\\- ]?") for n in sorted(_KV_NAMES, key=len, reverse=True))
    + r""")(?:["'\]]?[ \t]*(?::=|=>|[:=])[ \t]*["'`]?|[ \t]+(?:(?:is|was)[ \t]+)?["'`]?)\Z"""
)
_KV_REACH = 48
_IBAN = r"[A-Z](?<![A-Za-z0-9].)(?P<iban>)[A-Z][0-9]{2}(?:[ ]?[A-Z0-9]){11,34}"
_IPV4_TAIL = r"(?:(?<=:)[0-9]{1,3}(?:\.[0-9]{1,3}){3})?(?![0-9A-Za-z_:])"
_IPV6_HEX = (
    r"[0-9A-Fa-f](?<![0-9A-Za-z_:.].)(?P<ipv6>)[0-9A-Fa-f]{0,3}:(?:[0-9A-Fa-f]{0,4}:){1,6}"
    r"[0-9A-Fa-f]{0,4}" + _IPV4_TAIL
)
_IPV6_COLON = r":(?<![0-9A-Za-z_:.].)(?P<ipv6b>):(?:[0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4}" + _IPV4_TAIL
_IPV6 = f"(?:{_IPV6_HEX}|{_IPV6_COLON})"
# Digit runs: groups of digits joined by one separator (space, dash, dot, slash) or an
# area code in parentheses; an optional leading + or (area code); an extension or a
# trailing check character is split off in Python (_EXT).
_SP = r"[ \u00a0\u3000]"
_SEP = (
    rf"(?:{_SP}?[\-\uFF0D/]{_SP}?|[.\uFF0E]|{_SP}"
    rf"|{_SP}?[(\uFF08]{_DIG}{{1,5}}[)\uFF09][ \u00a0\u3000\-]?)"
)
_RUN_TAIL = (
    rf"{_DIG}*+(?:{_SEP}{_DIG}++)*+"
    rf"(?:[ \u00a0]?(?:ext(?:\.[ \u00a0]?|[ \u00a0])|[xX#\uFF58][ \u00a0]?){_DIG}{{1,6}}|[Xx\uFF38]|-[Xx])?"
    + _NOT_BEFORE
)
_PAREN_AREA = rf"[(\uFF08]{_DIG}{{1,5}}[)\uFF09][ \u00a0\-]?"
# A run may not start right after a digit and a decimal mark (``1,402``: the tail of a
# number) or after a word joined by a hyphen or slash (``CVE-2019-9948``, ``bpo-1635741``,
# ``user/501``: identifiers, not numbers of their own).
# Cheap pre-test at the start of a run: five digits within a short stretch (years, counts
# and other short numbers stop here instead of reaching Python).
_FIVE_DIGITS = rf"(?=(?:[^\d\n]{{0,3}}{_DIG}){{5}})"
_NUM = (
    rf"(?:[+\uFF0B](?<![{_ALNUM}].){_FIVE_DIGITS}(?P<num>)[ \u00a0]?(?:{_PAREN_AREA})?{_DIG}{_RUN_TAIL}"
    rf"|[(\uFF08](?<![{_ALNUM}].){_FIVE_DIGITS}(?P<num2>){_DIG}{{1,5}}[)\uFF09][ \u00a0\-]?{_DIG}{_RUN_TAIL}"
    rf"|{_DIG}(?<![{_ALNUM}].)(?<![0-9][.,].)(?<![A-Za-z0-9][\-/].)"
    rf"(?=(?:[^\d\n]{{0,3}}{_DIG}){{4}})(?P<num3>){_RUN_TAIL})"
)
_EXT_CHARS = re.compile("[xX#\uFF58\uFF38]")
_EXT = re.compile(
    r"(?:[ \u00a0]?(?:ext(?:\.[ \u00a0]?|[ \u00a0])|[xX#\uFF58][ \u00a0]?)[0-9\uFF10-\uFF19]{1,6}|[Xx\uFF38]|-[Xx])$"
)

_FAMILIES: tuple[tuple[str, str], ...] = (
    ("pem", _PEM), ("email", _EMAIL), ("tok", _LONGTOK), ("iban", _IBAN), ("ipv6", _IPV6),
    ("num", _NUM),
)
# Marker group name -> family.
_MARKERS = {"pem": "pem", "email": "email", "tok": "tok", "iban": "iban", "ipv6": "ipv6",
            "ipv6b": "ipv6", "num": "num", "num2": "num", "num3": "num"}


def _alternation(families: Iterable[tuple[str, str]]) -> re.Pattern[str]:
    return re.compile("|".join(pat for _, pat in families))


# The scan pattern: the same alternatives in the same order, regrouped so that a position
# inside a word costs one test. The token, IBAN, hex-IPv6 and digit-run alternatives all
# need a start that does not follow an ASCII letter or digit; they sit behind that one
# shared lookbehind (implied by each of them, so it changes no match) instead of each
# being entered in turn. "-" (PEM), "@" (e-mail) and ":" (IPv6 starting with "::") are
# the only other first characters, and no grouped alternative starts with "@" or ":", so
# moving the "::" alternative after the group changes no match either. _FALLBACK keeps
# the plain family order.
_MASTER = re.compile(
    f"{_PEM}|{_EMAIL}|(?<![A-Za-z0-9])(?:{_LONGTOK}|{_IBAN}|{_IPV6_HEX}|{_NUM})|{_IPV6_COLON}"
)
# _FALLBACK[k]: the families after the k-th, tried at the same position when k fails.
_FALLBACK = [_alternation(_FAMILIES[k + 1:]) if k + 1 < len(_FAMILIES) else None
             for k in range(len(_FAMILIES))]
_FAMILY_INDEX = {name: k for k, (name, _) in enumerate(_FAMILIES)}

# ------------------------------------------------------------------ context

_PHONE_WORDS_LATIN = (
    "tel", "phone", "call", "mobile", "cell", "fax", "contact", "whatsapp", "hotline",
    "telefon", "handy", "anruf", "rufen", "mobil", "erreichbar",
    "tél", "téléphone", "appel", "portable", "joindre",
    "teléfono", "telefono", "llam", "móvil", "movil", "contacto",
    "cellulare", "chiama", "contatto",
    "bel ", "bellen", "telefoon", "mobiel",
    "ligue", "ligar", "celular", "telefone", "contato",
    "тел", "звон", "моб",
)
_PHONE_WORDS_CJK = ("電話", "携帯", "連絡", "电话", "手机", "拨打", "致电", "联系", "전화", "휴대", "@")
_PHONE_CTX = re.compile(
    r"(?i)(?<![^\W\d_])(?:" + "|".join(re.escape(w) for w in _PHONE_WORDS_LATIN) + r")"
    r"|" + "|".join(re.escape(w) for w in _PHONE_WORDS_CJK)
)
_SSN_CTX = re.compile(r"(?i)\bssn\b|social[ \-]security|\bss#|sozialversicherung|seguridad social")
_ISBN_CTX = re.compile(r"(?i)isbn")
_VERSION_CTX = re.compile(
    r"(?i)(?:(?<![A-Za-z])v\.?|version|versão|versión|versione|versie|release|build|ver\.?|rev\.?"
    r"|revision|(?:update|upgrade)[sd]? to|section|sect\.|chapter|§|abschnitt|kapitel|chapitre"
    r"|版本|バージョン|버전|версия|версии"
    r"|capítulo|capitolo|hoofdstuk|第)\s*$"
)
# Words that put a dotted quad of small numbers (which reads like a version or a section
# number) in a network context.
_NET_CTX = re.compile(
    r"(?i)(?<![a-z])(?:ip|ipv4|address|addr|host|server|gateway|router|dns|ping|subnet|network"
    r"|netmask|route|client|login|port|sshd?|connect\w*|requests?|traffic|firewall|proxy|vpn|dhcp"
    r"|ifconfig|adresse|adres|dirección|indirizzo|endereço|rechner)(?![a-z])"
    r"|アドレス|地址|服务器|サーバー|主机|网关"
)
_YEAR_RANGE = re.compile(r"(?:1[89]|20)\d\d ?[-/\u2013] ?(?:(?:1[89]|20)\d\d|\d\d)")
_PRICE_BEFORE = re.compile(r"[$€£¥₹₩₽¢]\s*$|(?i:\b(?:usd|eur|gbp|jpy|cny|rmb|chf|brl|us\$|r\$))\s*$")
_PRICE_AFTER = re.compile(r"^\s*(?:[$€£¥₹₩₽元円]|(?i:(?:usd|eur|gbp|jpy|cny|rmb|chf|brl)\b))")
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*(?:_[a-z]{8})?>")
_IPV4_SHAPE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?")
_SSN_SHAPE = re.compile(r"\d{3}([- ])\d{2}\1\d{4}")
_ISBN_GROUPED = re.compile(r"(?:97[89][- ])?\d{1,5}[- ]\d{1,7}[- ]\d{1,7}[- ][\dX]")
_CTX_BEFORE = 32
_CTX_AFTER = 24


def _window(text: str, start: int, end: int, before: int = _CTX_BEFORE, after: int = _CTX_AFTER) -> str:
    """The line around ``[start, end)`` (at most ``before``/``after`` characters each side),
    with placeholders of earlier scrubs blanked out: a label on another line is not context."""
    left = text[max(0, start - before):start]
    right = text[end:end + after]
    w = left[left.rfind("\n") + 1:] + " \x00 " + right.split("\n", 1)[0]
    return _PLACEHOLDER.sub(" ", w) if "<" in w else w


# ------------------------------------------------------------------ detector

class PiiDetector:
    """Finds PII spans in a text with one scan of a combined pattern.

    Args:
        types: the types to report (others are still recognised, so that e.g. a card
            number is not taken for a phone number when cards are disabled, but are not
            returned).
        phone_regions: regions whose national formats are tried for numbers without an
            international prefix.
    """

    def __init__(self, types: Iterable[str] = TYPES, phone_regions: Iterable[str] = DEFAULT_PHONE_REGIONS):
        self.types = frozenset(types)
        unknown = self.types - set(TYPES)
        if unknown:
            raise ValueError(f"unknown PII types: {sorted(unknown)}")
        self.phone_regions = tuple(phone_regions)

    # -- public API
    def detect(self, text: str, pos: int = 0, endpos: int | None = None) -> list[Span]:
        """Non-overlapping spans of ``text[pos:endpos]``, in order."""
        if endpos is None:
            endpos = len(text)
        out: list[Span] = []
        i = pos
        search = _MASTER.search
        while i < endpos:
            m = search(text, i, endpos)
            if m is None:
                break
            fam = _MARKERS[m.lastgroup]
            spans = self._validate(text, m, fam)
            while spans is None:
                fb = _FALLBACK[_FAMILY_INDEX[fam]]
                m2 = fb.match(text, m.start(), endpos) if fb is not None else None
                if m2 is None:
                    break
                m, fam = m2, _MARKERS[m2.lastgroup]
                spans = self._validate(text, m, fam)
            if spans:
                if fam == "email":
                    # The local part lies left of where the scan found "@".
                    while out and out[-1].end > spans[0].start:
                        out.pop()
                out.extend(s for s in spans if s.type in self.types)
                i = max(m.end(), spans[-1].end)
            elif fam == "num":
                # A digit run is maximal: its tails are not candidates of their own.
                i = m.end()
            else:
                i = m.start() + 1
        return out

    # -- validation per family
    def _validate(self, text: str, m: re.Match[str], fam: str) -> list[Span] | None:
        s, e = m.span()
        if fam == "pem":
            return [Span(s, e, "secret")]
        if fam == "tok":
            km = _TOKEN_FORMATS.match(text, s)
            if km:
                return [Span(s, km.end(), "secret")]
            if _KV_BEFORE.search(text, max(0, s - _KV_REACH), s) and v.looks_random(text[s:e]):
                return [Span(s, e, "secret")]
            return None
        if fam == "email":
            j = s
            while j > 0 and s - j < 64 and text[j - 1] in _EMAIL_LOCAL:
                j -= 1
            while j < s and text[j] == ".":
                j += 1
            if j == s or not self._email_ok(text[j:e]):
                return None
            return [Span(j, e, "email")]
        if fam == "iban":
            return self._iban(m.group(), s)
        if fam == "ipv6":
            return [Span(s, e, "ipv6")] if v.is_ipv6(m.group()) else None
        if fam == "num":
            # Every extension form holds an "x", "X", "#" or their full-width forms.
            x = _EXT.search(text, s, e) if _EXT_CHARS.search(text, s, e) else None
            return self._numbers(text, s, e, x.span() if x else (-1, -1))
        return None

    @staticmethod
    def _email_ok(addr: str) -> bool:
        local, _, domain = addr.rpartition("@")
        if local.startswith(".") or local.endswith(".") or ".." in local:
            return False
        return ".." not in domain and len(addr) <= 254

    @staticmethod
    def _iban(cand: str, start: int) -> list[Span] | None:
        compact = cand.replace(" ", "")
        n = v.iban_prefix_length(compact)
        if not n:
            return None
        # Map n alphanumerics back onto the candidate (which may contain spaces).
        seen = 0
        for j, c in enumerate(cand):
            if c != " ":
                seen += 1
                if seen == n:
                    return [Span(start, start + j + 1, "iban")]
        return None

    def _numbers(self, text: str, s: int, e: int, ext: tuple[int, int]) -> list[Span] | None:
        """Classify a digit run; when the whole run is nothing, try its space-separated parts."""
        t = self._classify(text, s, e, ext)
        if t:
            return [Span(s, e, t)]
        run = text[s:e]
        if " " not in run and "\u00a0" not in run and "\u3000" not in run:
            return None
        # Token boundaries at whitespace; try the longest sub-run first, left to right.
        toks = [(mm.start() + s, mm.end() + s) for mm in re.finditer(r"[^ \u00a0\u3000]+", run)]
        out: list[Span] = []
        a = 0
        while a < len(toks):
            for b in range(len(toks), a, -1):
                if a == 0 and b == len(toks):
                    continue
                ts, te = toks[a][0], toks[b - 1][1]
                ts, te = _trim(text, ts, te)
                if te <= ts:
                    continue
                xs = (ext[0], ext[1]) if ext[0] >= ts and ext[1] <= te else (-1, -1)
                t = self._classify(text, ts, te, xs, strict=True)
                if t:
                    out.append(Span(ts, te, t))
                    a = b
                    break
            else:
                a += 1
        return out or None

    def _classify(self, text: str, s: int, e: int, ext: tuple[int, int], strict: bool = False) -> str | None:
        """The type of the digit run ``text[s:e]`` (``ext``: span of its extension), or None.

        ``strict`` is set for a part of a longer space-separated run (a list of numbers):
        such a part is only a telephone number with an international prefix or context.
        """
        raw = text[s:e]
        has_ext = ext[0] >= 0 and ext[1] > ext[0]
        main = text[s:ext[0]] if has_ext else raw
        ext_text = text[ext[0]:ext[1]] if has_ext else ""
        if ext_text in ("-X", "-x"):
            return None  # an ISBN-10 (or similar code) with its check character
        x_suffix = ext_text in ("X", "x", "\uFF38")
        full = v.to_ascii(main)
        d = _NON_DIGITS.sub("", full)  # v.digits_of(main), without a second to_ascii
        n = len(d)
        if n < 5:
            return None
        asc = full.strip()
        # CN resident id: 17 digits + digit/X, written as one block.
        if (n == 18 and not has_ext) or (n == 17 and x_suffix):
            if asc.isdigit() and v.is_cn_resident_id(d + ("X" if x_suffix else "")):
                return "cn_resident_id"
        if x_suffix:
            return None
        # IPv4 (a fourth dotted group is what separates addresses from versions).
        if _IPV4_SHAPE.fullmatch(asc):
            return "ipv4" if self._ipv4_ok(text, s, e, asc) else None
        if "." in asc and not has_ext and _VERSION_CTX.search(text[max(0, s - 16):s]):
            return None
        # US SSN: 3-2-4 in valid ranges, or nine bare digits next to an SSN keyword.
        if _SSN_SHAPE.fullmatch(asc) and v.is_us_ssn(d):
            return "us_ssn"
        if n == 9 and asc.isdigit() and v.is_us_ssn(d) and _SSN_CTX.search(_window(text, s, e, 40, 0)):
            return "us_ssn"
        if v.is_date(asc):
            return None
        if n in (10, 13) and not has_ext and v.is_isbn(asc):
            if _ISBN_GROUPED.fullmatch(asc) or _ISBN_CTX.search(text[max(0, s - 16):s]) or (
                n == 13 and asc.isdigit() and d.startswith(("978", "979"))
            ):
                return None
        if asc.count(".") == 1 and asc.lstrip("+").replace(".", "").isdigit():
            return None  # a (signed) decimal number
        plus = asc.startswith("+")
        if not plus and not has_ext and 12 <= n <= 19 and _card_grouping_ok(asc) and v.is_card(d):
            # Within a longer row of numbers only a whole 4-4-4-4 group counts as a card.
            if not strict or (n == 16 and len(asc.split()) == 4):
                return "credit_card"
        if _YEAR_RANGE.fullmatch(asc) or any(v.is_date(tok) for tok in asc.split()):
            return None  # a span of years, or a run that holds a calendar date
        return self._phone(text, s, e, asc, d, plus, strict)

    @staticmethod
    def _ipv4_ok(text: str, s: int, e: int, asc: str) -> bool:
        """A dotted quad that is an address, not a version, a section number or a netmask.

        Loopback, unspecified, multicast, reserved (netmasks, broadcast) and documentation
        addresses identify nobody (:func:`filters.pii_validators.ipv4_identifies`). A quad of
        small numbers (all below 32: ``5.10.2.1``) reads as a version or section number and
        is only taken next to a network word.
        """
        addr = asc.split("/")[0]
        if not v.is_ipv4(addr) or _VERSION_CTX.search(text[max(0, s - 16):s]):
            return False
        if not v.ipv4_identifies(addr):
            return False
        parts = [int(x) for x in addr.split(".")]
        if all(x < 32 for x in parts):
            return _NET_CTX.search(_window(text, s, e, 40, 16)) is not None
        return True

    def _phone(self, text: str, s: int, e: int, asc: str, d: str, plus: bool, strict: bool) -> str | None:
        n = len(d)
        # "00" is an international prefix only at the start of a run, not inside a row.
        intl = plus or (not strict and d.startswith("00") and n > 2 and d[2] != "0")
        if intl:
            nn = n - (0 if plus else 2)
            if not 7 <= nn <= 15:
                return None
            # Context first: the parse is the costly part.
            if _PHONE_CTX.search(_window(text, s, e)) or v.intl_phone_possible(asc):
                return "phone"
            return None
        if not 7 <= n <= 12:
            return None
        groups = [g for g in re.split(r"\D+", asc) if g]
        if "." in asc and set(asc) <= set("0123456789.") and any(not 2 <= len(g) <= 4 for g in groups[1:]):
            return None  # dotted numbers: phones group 2-4 digits, versions do not
        if sum(len(g) == 1 for g in groups) > 1 or (len(groups) > 4 and any(len(g) != 2 for g in groups)):
            return None  # lists of small numbers, decimals; only 2-digit pairs come in long rows
        if _PRICE_BEFORE.search(text[max(0, s - 6):s]) or _PRICE_AFTER.search(text[e:e + 6]):
            return None
        if _PHONE_CTX.search(_window(text, s, e)):
            return "phone"
        if strict or n < 9 or _POSTAL.fullmatch(asc):
            return None  # without context: whole national numbers (area code included) only
        separated = not asc.isdigit()
        if separated:
            if v.national_phone_valid(asc, self.phone_regions):
                return "phone"
        elif n >= 9 and d[0] == "0" and v.national_phone_valid(asc, self.phone_regions):
            return "phone"  # trunk prefix + a valid national number
        elif n >= 11 and v.national_phone_valid(asc, self.phone_regions, mobile_only=True):
            return "phone"
        return None


# Postcodes with an extension (US ZIP+4, Brazilian CEP): not telephone numbers by themselves.
_NON_DIGITS = re.compile(r"[^0-9]+")
_POSTAL = re.compile(r"\d{5}-\d{3,4}")
_CARD_GROUPS = ((4, 6, 5), (4, 6, 4), (4, 6, 6))


def _card_grouping_ok(asc: str) -> bool:
    """Digits as printed on cards: one block, or one separator kind between groups of four
    (the last group may be shorter), or Amex/Diners 4-6-5 / 4-6-4."""
    if asc.isdigit():
        return True
    seps = {c for c in asc if not c.isdigit()}
    if len(seps) != 1 or seps - {" ", "-"}:
        return False
    groups = tuple(len(g) for g in asc.split(seps.pop()))
    if groups in _CARD_GROUPS:
        return True
    return all(g == 4 for g in groups[:-1]) and 1 <= groups[-1] <= 4


def _trim(text: str, s: int, e: int) -> tuple[int, int]:
    """Shrink ``[s, e)`` to start at a digit, '+' or '(' and end at a digit or ')'."""
    while s < e and not (text[s].isdigit() or text[s] in "+(\uFF0B\uFF08"):
        s += 1
    while e > s and not (text[e - 1].isdigit() or text[e - 1] in ")\uFF09"):
        e -= 1
    return s, e


# ------------------------------------------------------------------ scrubbing

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _pseudonym_tag(key: bytes, doc_id: str, typ: str, value: str) -> str:
    """Eight letters derived from an HMAC of (document, type, normalised value)."""
    norm = value.lower() if typ == "email" else (
        v.digits_of(value) if typ in ("phone", "credit_card", "us_ssn") else value.replace(" ", "")
    )
    h = hmac.new(key, f"{doc_id}\x00{typ}\x00{norm}".encode(), hashlib.sha256).digest()
    return "".join(_LETTERS[b % 26] for b in h[:8])


@dataclass
class ScrubResult:
    text: str
    spans: list[Span]  # detections, in the coordinates of the text they were found in
    counts: Counter

    @property
    def changed(self) -> bool:
        return bool(self.spans)


class Scrubber:
    """Detect and replace PII.

    Args:
        policy: ``"placeholder"`` (``<EMAIL>``) or ``"pseudonym"`` (``<EMAIL_kqzmxwab>``,
            the same value gets the same tag within a document).
        key: secret key of the pseudonym HMAC.
        types / phone_regions: see :class:`PiiDetector`.
    """

    MAX_ROUNDS = 4

    def __init__(self, policy: str = "placeholder", key: str = "", types: Iterable[str] = TYPES,
                 phone_regions: Iterable[str] = DEFAULT_PHONE_REGIONS):
        if policy not in ("placeholder", "pseudonym"):
            raise ValueError(f"policy must be 'placeholder' or 'pseudonym', got {policy!r}")
        self.policy = policy
        self.key = key.encode()
        self.detector = PiiDetector(types, phone_regions)

    def _replacement(self, typ: str, value: str, doc_id: str) -> str:
        tag = PLACEHOLDERS[typ]
        if self.policy == "placeholder":
            return f"<{tag}>"
        return f"<{tag}_{_pseudonym_tag(self.key, doc_id, typ, value)}>"

    def scrub(self, text: str, doc_id: str = "") -> ScrubResult:
        """Replace every detection; re-check the neighbourhoods of replacements until stable."""
        spans = self.detector.detect(text)
        counts: Counter = Counter(s.type for s in spans)
        all_spans = list(spans)
        rounds = 0
        while spans and rounds < self.MAX_ROUNDS:
            rounds += 1
            text, regions = self._apply(text, spans, doc_id)
            spans = []
            for a, b in regions:
                spans.extend(self.detector.detect(text, a, b))
            spans = _dedupe(spans)
            counts.update(s.type for s in spans)
            all_spans.extend(spans)
        return ScrubResult(text, all_spans, counts)

    def _apply(self, text: str, spans: list[Span], doc_id: str) -> tuple[str, list[tuple[int, int]]]:
        """Replace ``spans``; return the new text and the regions to re-check around them."""
        parts: list[str] = []
        regions: list[tuple[int, int]] = []
        last = 0
        out_len = 0
        # Far enough for a candidate (digit runs, IBANs) plus its context window.
        margin = _CTX_BEFORE + 64
        for sp in spans:
            parts.append(text[last:sp.start])
            out_len += sp.start - last
            rep = self._replacement(sp.type, text[sp.start:sp.end], doc_id)
            parts.append(rep)
            regions.append((out_len, out_len + len(rep)))
            out_len += len(rep)
            last = sp.end
        parts.append(text[last:])
        new = "".join(parts)
        merged: list[tuple[int, int]] = []
        for a, b in regions:
            a, b = _safe_left(new, a - margin), _safe_right(new, b + margin)
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return new, merged


# Places no candidate crosses: whitespace after a lowercase word (no family's pattern
# holds a lowercase letter followed by a space, the "x" of an extension aside), or a CJK
# character (no pattern holds one).
_SOFT = re.compile(r"[a-wyz\u00DF-\u00FF](?=\s)|[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_SAFE_REACH = 200


def _safe_left(text: str, i: int) -> int:
    """A re-check start at or before ``i`` that no candidate crosses (or 0)."""
    i = max(0, min(i, len(text)))
    lo = max(0, i - _SAFE_REACH)
    j = i
    while j > lo:
        # Walk back over whitespace-separated words; prose reaches a soft place at once.
        k = text.rfind(" ", lo, j)
        if k < 0:
            break
        m = _SOFT.match(text, k - 1) if k else None
        if m is not None:
            return m.end()
        j = k
    last = None
    for last in _SOFT.finditer(text, lo, i):
        pass
    return last.end() if last is not None else 0


def _safe_right(text: str, i: int) -> int:
    """A re-check end at or after ``i`` that no candidate crosses (or the end)."""
    i = max(0, min(i, len(text)))
    m = _SOFT.search(text, i, i + _SAFE_REACH)
    return m.end() if m is not None else len(text)


def _dedupe(spans: list[Span]) -> list[Span]:
    """Sorted, non-overlapping spans (earlier start wins, then the longer)."""
    out: list[Span] = []
    for sp in sorted(set(spans), key=lambda x: (x.start, -x.end)):
        if out and sp.start < out[-1].end:
            continue
        out.append(sp)
    return out
