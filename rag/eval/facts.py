"""`vital-facts`: factual questions whose answers are facts inside the vital articles, not titles.

`vital-qa` asks for an article's title from its description, so a pipeline tuned on it learns to
answer with a passage's title. This set asks for facts that one article's text states: years,
places, people, organisations, quantities, languages, nationalities and biological families.
It is built by rules, with no model: each template is a regular expression over a sentence of an
article whose subject is that article (it starts with the title, "It" or "The <noun>"), and
turns the matched span into the gold answer of a question that names the article by its title.

Rules keep a question only when its answer is a short span that is not the title and does not
occur in the question. Every article gives at most one question per template, nationality
questions (about 1,300 people articles match) are capped so they do not swamp the rest, and the
split is by article: a third of the articles (by a hash of the title) are `dev`, the rest `test`.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from rag.errors import DatasetError
from rag.eval.qa import QAExample
from rag.types import Document

VITAL_FACTS = "vital-facts"
NATIONALITY_CAP = 300

_PARTICLES = "de|da|del|della|di|du|van|von|der|den|la|le|al|bin|ibn|y|of|for|the"
_NAME_TOKEN = rf"(?:[A-Z][\w'’.-]*|(?:{_PARTICLES})(?= [A-Z]))"
NAME = rf"(?P<a>[A-Z][\w'’.-]*(?: {_NAME_TOKEN}){{0,4}})"
# What may follow a name for the name to be complete: the end of a clause, not a list.
_NAME_END = (r"(?=$|[.;:)]|,(?! [A-Z])"
             r"| (?:in|on|at|during|for|from|as|with|after|while|who|which|to)\b| \()")
_NUMBER = r"\d[\d,.]*\d|\d"
_QUALIFIER = (r"(?:about |around |approximately |over |more than |nearly |some |roughly |"
              r"almost |an estimated |just over |just under )?")
_DIRECTION = (r"(?:(?:north|south|east|west|central|northern|southern|eastern|western|"
              r"north-?western|north-?eastern|south-?western|south-?eastern|northwestern|"
              r"northeastern|southwestern|southeastern) )?")
_DEMONYMS = (
    "Afghan American Argentine Argentinian Armenian Australian Austrian Azerbaijani Belgian "
    "Bengali Bolivian Brazilian British Bulgarian Burmese Cambodian Canadian Catalan Chilean "
    "Chinese Colombian Congolese Croatian Cuban Czech Danish Dutch Egyptian English Estonian "
    "Ethiopian Filipino Finnish Flemish French Georgian German Ghanaian Greek Haitian Hungarian "
    "Icelandic Indian Indonesian Iranian Iraqi Irish Israeli Italian Jamaican Japanese Kenyan "
    "Korean Latvian Lebanese Lithuanian Malaysian Mexican Mongolian Moroccan Nepalese Nigerian "
    "Norwegian Pakistani Palestinian Persian Peruvian Polish Portuguese Prussian Romanian Russian "
    "Saudi Scottish Senegalese Serbian Slovak Slovenian Soviet Spanish Swedish Swiss Syrian "
    "Taiwanese Thai Tunisian Turkish Ugandan Ukrainian Uruguayan Venezuelan Vietnamese Welsh"
).split()
DEMONYM = rf"(?P<a>{'|'.join(_DEMONYMS)})(?![-\w])(?! and )"
CONTINENTS = ("Africa", "Asia", "Europe", "North America", "South America", "Oceania",
              "Central America", "the Caribbean", "Antarctica", "Middle East")
_RELEASE_VERB = {"film": "released", "album": "released", "song": "released", "single": "released",
                 "video game": "released", "television series": "first broadcast",
                 "novel": "published", "book": "published", "poem": "published",
                 "play": "first performed", "opera": "first performed",
                 "musical": "first performed", "painting": "painted"}
_AUTHOR_VERB = {"novel": "wrote", "book": "wrote", "poem": "wrote", "play": "wrote",
                "short story": "wrote", "essay": "wrote", "treatise": "wrote",
                "painting": "painted", "opera": "composed", "symphony": "composed",
                "ballet": "composed", "sculpture": "sculpted"}
_DATED_VERBS = (
    "built|completed|opened|established|founded|signed|published|released|discovered|invented|"
    "launched|adopted|ratified|introduced|formed|constructed|composed|painted|incorporated|"
    "inaugurated|unveiled|patented|proclaimed|fought|enacted|abolished|dissolved|first described"
)
_AGENT_VERBS = (
    "founded|co-founded|discovered|invented|composed|designed|painted|written|directed|created|"
    "developed|sculpted|built|produced|formulated|proposed|first described|named|commissioned"
)
_UNIT = r"(?:metres|meters|m|km|kilometres|kilometers|ft|feet|mi|miles)"


@dataclass(frozen=True)
class Template:
    """A rule: `pattern` over a sentence about the article, giving the answer as group `a`.

    `question` is formatted with `title` and the pattern's named groups; `kind` is the answer
    type, reported per question so a benchmark can break scores down by it.
    """

    name: str
    kind: str
    pattern: str
    question: str
    subject_first: bool = True  # the pattern is matched right after the sentence's subject
    topic: str | None = None  # only articles of this topic (nationality: people, not pizza)
    reject: str | None = None  # skip a match when this occurs before it (a metro population)

    def compile(self) -> re.Pattern[str]:
        return re.compile(self.pattern)


TEMPLATES: tuple[Template, ...] = (
    Template("capital", "place", rf"\b(?:[Ii]ts|[Tt]he) capital(?: city)?(?: and (?:largest|most "
             rf"populous) city)? is (?:the city of )?{NAME}{_NAME_END}",
             "What is the capital of {title}?", subject_first=False),
    Template("largest_city", "place",
             rf"\b(?:[Ii]ts|[Tt]he) (?:largest|most populous) city is {NAME}{_NAME_END}",
             "What is the largest city of {title}?", subject_first=False),
    Template("capital_of", "place",
             r"^is the (?:capital|capital city)(?: and largest city)? of (?:the )?"
             rf"{NAME}{_NAME_END}",
             "Of which country or region is {title} the capital?"),
    Template("city_country", "place",
             r"^is an? (?:[\w-]+ ){0,3}?(?:city|town|village|port|municipality|river|lake|"
             r"mountain|mountain range|island|volcano|province|region|desert|peninsula) "
             rf"(?:located )?in (?:the )?{_DIRECTION}(?P<a>COUNTRY)\b",
             "In which country is {title}?"),
    Template("country_continent", "place",
             r"^is an? (?:[\w-]+ ){0,3}?(?:country|nation|state|island country|landlocked country)"
             rf" (?:located )?in (?:the )?{_DIRECTION}(?P<a>CONTINENT)\b",
             "On which continent or in which region is {title}?"),
    Template("located", "place", rf"^is (?:located|situated) (?:in|on) (?:the )?{_DIRECTION}"
             rf"(?:(?:city|island|state|province|region) of )?{NAME}{_NAME_END}",
             "Where is {title} located?", topic="Geography"),
    Template("headquarters", "place", rf"\b(?:headquartered|based) in {NAME}{_NAME_END}",
             "Where is {title} based?", subject_first=False),
    Template("born_in", "place", rf"^(?:was )?born in {NAME}{_NAME_END}",
             "Where was {title} born?"),
    Template("flows_into", "place", r"^(?:[^,.;]*? )?(?:flows|empties|drains|discharges) into "
             rf"(?:the )?{NAME}{_NAME_END}", "Into which body of water does {title} flow?"),
    Template("work_year", "year", r"^(?:is|was) an? (?:[\w-]+ ){0,2}?(?P<a>\d{4}) (?:[\w-]+ ){0,5}?"
             rf"(?P<k>{'|'.join(_RELEASE_VERB)})\b", "In what year was the {k} {title} {verb}?"),
    Template("dated", "year",
             rf"^(?:was|were) (?:officially |formally |first )?(?P<v>{_DATED_VERBS})"
             r" (?:[\w,]+ ){0,4}?in (?P<a>\d{4})\b", "In what year was {title} {v}?"),
    Template("agent", "person or organisation",
             rf"^(?:was|were|is) (?:first |originally |jointly )?(?P<v>{_AGENT_VERBS}) "
             rf"(?:in \d{{4}} )?by (?:the )?(?:[a-z]+ ){{0,3}}?{NAME}{_NAME_END}",
             "Who {v} {title}?"),
    Template("author", "person", r"^(?:is|was) an? [^.]*?\b(?P<k>"
             rf"{'|'.join(_AUTHOR_VERB)})\b (?:[a-z]+ )?by (?:the )?(?:[\w-]+ ){{0,5}}?"
             rf"(?P<a>[A-Z][\w'’.-]*(?: {_NAME_TOKEN}){{1,4}}){_NAME_END}",
             "Who {verb} {title}?"),
    Template("director", "person", r"^(?:is|was) an? [^.]*?\bfilm\b[^.]*? directed by "
             rf"(?P<a>[A-Z][\w'’.-]*(?: {_NAME_TOKEN}){{1,4}}){_NAME_END}",
             "Who directed the film {title}?"),
    Template("bio_family", "biological family",
             r"\b(?:family|families) (?P<a>[A-Z][a-z]+idae)\b",
             "To which biological family does {title} belong?", subject_first=False),
    Template("language_group", "language", r"^(?:is|was) an? (?:extinct )?(?P<a>[A-Z][\w-]+"
             r"(?: [A-Z][\w-]+)?) language\b", "To which group of languages does {title} belong?"),
    Template("language_family", "language",
             r"\b(?:of|to|in) the (?P<a>[A-Z][\w-]+(?: [A-Z][\w-]+)?) (?:language )?family\b",
             "To which language family does {title} belong?", subject_first=False),
    Template("official_language", "language",
             rf"\b[Oo]fficial (?:and national )?language is {NAME}{_NAME_END}",
             "What is the official language of {title}?", subject_first=False),
    Template("speakers", "quantity", rf"\b(?:has|had|with) {_QUALIFIER}(?P<a>(?:{_NUMBER})"
             r"(?: (?:million|billion))?) (?:native |first-language |L1 )?speakers",
             "How many speakers does {title} have?", subject_first=False),
    Template("population", "quantity",
             rf"\b(?:with|has|had) a population of {_QUALIFIER}(?P<a>(?:{_NUMBER})"
             r"(?: (?:million|billion))?)\b", "What is the population of {title}?",
             subject_first=False, reject=r"metro|urban|agglomeration|county|district|region"),
    Template("elevation", "quantity", rf"\b(?:elevation|height|altitude) of {_QUALIFIER}"
             rf"(?P<a>(?:{_NUMBER}) ?{_UNIT})\b", "What is the elevation of {title}?",
             subject_first=False),
    Template("length", "quantity", rf"^(?:is|was) {_QUALIFIER}(?P<a>(?:{_NUMBER}) ?{_UNIT})"
             r"(?: \([^)]*\))? long\b", "How long is {title}?"),
    Template("atomic_number", "quantity", r"\batomic number\s(?P<a>\d{1,3})\b",
             "What is the atomic number of {title}?", subject_first=False),
    Template("symbol", "symbol", r"\bhas (?:the )?(?:chemical )?symbol (?P<a>[A-Z][a-z]?)\b",
             "What is the chemical symbol of {title}?", subject_first=False),
    Template("nationality", "nationality", rf"^(?:was|is) an? {DEMONYM}",
             "What was the nationality of {title}?", topic="People"),
    Template("office", "place", r"\b(?:served as|was|is) (?:the )?(?:[\w-]+ )?(?:prime minister|"
             r"president|king|queen|emperor|chancellor|monarch) of (?:the )?(?P<a>COUNTRY)\b",
             "Of which country was {title} a head of state or government?", topic="People"),
    Template("area", "quantity", rf"\b(?:covers|covering|has|with|had) (?:a total |an )?area of "
             rf"{_QUALIFIER}(?P<a>(?:{_NUMBER}) ?(?:km2|km²|square kilometres|square kilometers|"
             r"sq mi|square miles))", "What is the area of {title}?", subject_first=False),
    Template("prize_year", "year", r"\b(?:won|received|was awarded|awarded) the (?P<p>Nobel "
             r"(?:Prize in [A-Z]\w+|Peace Prize|Memorial Prize in Economic Sciences)) in "
             r"(?P<a>\d{4})\b", "In what year did {title} receive the {p}?", subject_first=False),
)

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_HEADS = ("city|town|capital|country|nation|state|province|region|island|river|lake|sea|mountain|"
          "company|organization|organisation|university|book|novel|film|play|painting|album|"
          "song|language|species|element|empire|dynasty|war|battle|team|club|band|building")
_PRONOUN = rf"(?:It|He|She|They|The (?:{_HEADS})\b)"
_STOP_ANSWERS = frozenset({"The", "It", "He", "She", "In", "A", "An", "This", "These", "Its"})


def _subjects(title: str) -> list[str]:
    """How a sentence about the article may begin: its title, its title less a trailing
    " language"/" River"-style word, or a pronoun."""
    names = [re.escape(title), f"The {re.escape(title.lower())}"]
    short = re.sub(r" (?:language|languages|River|Mountains|Empire)$", "", title)
    if short != title:
        names.append(re.escape(short))
    return names


def _clean(answer: str) -> str:
    return answer.strip().rstrip(".,;:")


def _answerable(answer: str, title: str, question: str) -> bool:
    """A span worth asking for: short, not the title, not given away by the question."""
    if not answer or answer in _STOP_ANSWERS or len(answer.split()) > 6:
        return False
    low, low_title = answer.lower(), title.lower()
    return low not in low_title and low_title not in low and low not in question.lower()


def _fill(template: Template, title: str, groups: dict[str, str | None]) -> str:
    kind = groups.get("k") or ""
    verbs = _RELEASE_VERB if template.name == "work_year" else _AUTHOR_VERB
    verb = verbs.get(kind, "")
    return template.question.format(title=title, k=kind, v=groups.get("v") or "", verb=verb,
                                    p=groups.get("p") or "")


def _expand(pattern: str, countries: Sequence[str]) -> str:
    return (pattern.replace("(?P<a>COUNTRY)", f"(?P<a>{'|'.join(map(re.escape, countries))})")
            .replace("(?P<a>CONTINENT)", f"(?P<a>{'|'.join(map(re.escape, CONTINENTS))})"))


def country_names(docs: Sequence[Document]) -> list[str]:
    """Country names as the corpus itself lists them: articles whose Wikidata description says
    country or sovereign state; longest first, so "South Sudan" wins over "Sudan"."""
    names = [d.title for d in docs
             if re.search(r"\b(?:country|sovereign state)\b", d.metadata.get("description", ""),
                          re.I)
             and "(" not in d.title]
    return sorted({n.removeprefix("The ") for n in names}, key=len, reverse=True)


def facts_for(
    doc: Document, compiled: Sequence[tuple[Template, re.Pattern[str]]]
) -> Iterator[QAExample]:
    """One question per template whose rule matches a sentence about `doc` (the first match)."""
    if "(" in doc.title:  # "Time (magazine)": no question would read naturally with it
        return
    starts = re.compile(rf"^(?:{'|'.join(_subjects(doc.title))}|{_PRONOUN})\b,? ?")
    sentences = _SENTENCE.split(doc.text.replace("\xa0", " "))
    for template, pattern in compiled:
        if template.topic is not None and doc.metadata.get("topic") != template.topic:
            continue
        for sentence in sentences:
            subject = starts.match(sentence)
            if subject is None:
                continue
            body = sentence[subject.end():] if template.subject_first else sentence
            match = pattern.search(body)
            if match is None or (template.reject and re.search(template.reject,
                                                               body[:match.start()])):
                continue
            answer = _clean(match.group("a"))
            question = _fill(template, doc.title, match.groupdict())
            if _answerable(answer, doc.title, question):
                yield QAExample(id=f"{doc.id}#{template.name}", question=question,
                                answers=[answer], gold_doc=doc.id,
                                kind=template.kind, evidence=sentence)
                break


def split_of(title: str) -> str:
    """`dev` for a third of the articles, `test` for the rest, fixed by a hash of the title."""
    return "dev" if zlib.crc32(title.encode()) % 3 == 0 else "test"


def vital_facts(docs: Sequence[Document], split: str = "test", seed: int = 0) -> list[QAExample]:
    """The factual questions of one split over `docs`, in a fixed random order."""
    if split not in ("dev", "test", "all"):
        raise DatasetError(f"{VITAL_FACTS} split must be 'dev', 'test' or 'all', got {split!r}")
    countries = country_names(docs)
    compiled = [(t, re.compile(_expand(t.pattern, countries))) for t in TEMPLATES]
    examples = [e for d in docs for e in facts_for(d, compiled)]
    rng = random.Random(seed)
    rng.shuffle(examples)
    nationality = [e for e in examples if e.kind == "nationality"][NATIONALITY_CAP:]
    dropped = {e.id for e in nationality}
    return [e for e in examples if e.id not in dropped
            and (split == "all" or split_of(e.gold_doc or "") == split)]
