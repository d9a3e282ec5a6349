"""The pictogram-world vocabulary: object-like emoji categories and their split.

The committed table ``training/data/categories.tsv`` is the source of truth;
:func:`load_categories` reads it. ``python3 -m vildtrain categories --write``
regenerates it (and ``distractors.tsv``) from the pinned npm packages:

* candidates: emoji-datasource entries in the object-like groups (animals,
  plants, food, drink, vehicles, places, sky, sports, activities, clothing,
  music, tools, science, objects) that have 64 px art in BOTH Noto (google) and
  Twemoji (twitter); people, faces, hands, flags, symbols, keycaps and skin-tone
  variants are not candidates;
* names: emojibase-data en labels, lower-cased, typographic apostrophes made
  ASCII; a few renamed (RENAME) when the survivor of a merged group needs a
  general name;
* near-duplicates dropped (DROP, each with a reason; see docs/data.md) and any
  remaining name collision resolved by keeping the first in emoji order;
* synonyms: emojibase tags plus emoji-datasource short names (underscores to
  spaces), lower-case, deduplicated, excluding the name itself, any other
  category's name, tokens with digits, and generic tags shared by more than
  MAX_TAG_SHARE categories ("animal", "food", "drink" ...);
* tiers: within each group, categories are ordered by sha256(TIER_SALT + name);
  the first 25% are "rare" (split "novel"), the next 35% "common", the rest
  "frequent" (split "base"). Stratifying by group spreads novel categories
  evenly over animals, food, vehicles and so on, as LVIS's rare set is spread.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from vildtrain.data.cache import MissingAssetError, fluent_sources, norm_key, npm_dir, openmoji_sources
from vildtrain.paths import TRAINING_DIR

TIER_SALT = "vild-tier-v1:"
RARE_FRACTION = 0.25
COMMON_FRACTION = 0.35
MAX_TAG_SHARE = 1
TIERS = ("frequent", "common", "rare")
HELDOUT_STYLES = ("openmoji", "fluent3d")

# emoji-datasource subcategory -> our group. Anything not listed is not a candidate.
SUBCATEGORY_GROUP: dict[str, str] = {
    "animal-mammal": "animals", "animal-bird": "animals", "animal-amphibian": "animals",
    "animal-reptile": "animals", "animal-marine": "animals", "animal-bug": "animals",
    "plant-flower": "plants", "plant-other": "plants",
    "food-fruit": "food", "food-vegetable": "food", "food-prepared": "food", "food-asian": "food",
    "food-marine": "food", "food-sweet": "food", "drink": "drink", "dishware": "drink",
    "transport-ground": "vehicles", "transport-water": "vehicles", "transport-air": "vehicles",
    "place-map": "places", "place-geographic": "places", "place-building": "places",
    "place-religious": "places", "place-other": "places", "hotel": "objects",
    "time": "objects", "sky & weather": "sky",
    "event": "activities", "award-medal": "activities", "game": "activities", "arts & crafts": "activities",
    "sport": "sports",
    "clothing": "clothing", "sound": "music", "music": "music", "musical-instrument": "music",
    "phone": "objects", "computer": "objects", "light & video": "objects", "book-paper": "objects",
    "money": "objects", "mail": "objects", "writing": "objects", "office": "objects", "lock": "objects",
    "tool": "tools", "science": "science", "medical": "science", "household": "objects",
    "other-object": "objects",
}

# Visually indistinguishable or near-duplicate emoji, by emojibase label (lower-case).
# Mirror images count as duplicates because scenes flip objects horizontally.
DROP: dict[str, str] = {}


def _drop(reason: str, *labels: str) -> None:
    for label in labels:
        DROP[label] = reason


_drop("clock face: 24 near-identical dials", *[
    f"{h} o'clock" for h in ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                             "eleven", "twelve")], *[
    f"{h}-thirty" for h in ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                            "eleven", "twelve")])
_drop("moon phase or moon face: near-identical discs; kept full moon and crescent moon",
      "new moon", "waxing crescent moon", "first quarter moon", "waxing gibbous moon", "waning gibbous moon",
      "last quarter moon", "waning crescent moon", "new moon face", "first quarter moon face",
      "last quarter moon face", "full moon face", "sun with face")
_drop("face, not an object", "wind face")
_drop("animal head duplicating the whole-animal category",
      "monkey face", "dog face", "cat face", "tiger face", "horse face", "cow face", "pig face",
      "mouse face", "rabbit face", "dragon face", "spouting whale")
_drop("symbol-like, not an object", "paw prints", "pig nose", "sparkles", "high voltage", "hot springs",
      "globe with meridians", "spade suit", "heart suit", "diamond suit", "club suit",
      "chart increasing with yen", "musical notes")
_drop("near-duplicate of another category",
      "service dog", "front-facing baby chick", "two-hump camel", "shamrock", "leaf fluttering in wind",
      "globe showing americas", "globe showing asia-australia", "snow-capped mountain", "camping",
      "umbrella on ground", "house with garden", "japanese post office", "love hotel", "wedding",
      "metro", "light rail", "tram", "station", "bullet train", "mountain cableway", "trolleybus",
      "motorized wheelchair", "motor boat", "ferry", "airplane departure", "airplane arrival",
      "horizontal traffic light", "hourglass done", "cloud with lightning and rain",
      "sun behind small cloud", "sun behind large cloud", "sun behind rain cloud",
      "umbrella with rain drops", "snowman without snow", "glowing star", "admission tickets",
      "1st place medal", "2nd place medal", "3rd place medal", "softball", "clinking beer mugs",
      "clinking glasses", "fork and knife with plate", "muted speaker", "speaker low volume",
      "speaker medium volume", "megaphone", "bell with slash", "mobile phone with arrow", "low battery",
      "dvd", "camera with flash", "green book", "blue book", "orange book", "page with curl",
      "yen banknote", "euro banknote", "pound banknote", "e-mail", "incoming envelope",
      "envelope with arrow", "outbox tray", "closed mailbox with lowered flag",
      "open mailbox with raised flag", "open mailbox with lowered flag", "tear-off calendar",
      "spiral calendar", "round pushpin", "locked with pen", "locked with key", "hammer and pick",
      "hammer and wrench", "broken chain")
_drop("front view duplicating the side-view vehicle",
      "oncoming bus", "oncoming police car", "oncoming taxi", "oncoming automobile")
_drop("mirror image of another category (scenes flip objects)",
      "magnifying glass tilted right", "chart decreasing")
_drop("landscape tile (a square scene, not an object)",
      "foggy", "night with stars", "cityscape", "sunrise over mountains", "sunrise", "cityscape at dusk",
      "sunset", "bridge at night", "milky way", "desert", "national park", "motorway", "railway track",
      "moon viewing ceremony")

# The survivor of a merged group gets the general name; the old label stays a synonym.
RENAME: dict[str, str] = {
    "magnifying glass tilted left": "magnifying glass",
    "vertical traffic light": "traffic light",
    "hourglass not done": "hourglass",
    "globe showing europe-africa": "globe",
    "closed mailbox with raised flag": "mailbox",
    "speaker high volume": "speaker",
    "dollar banknote": "banknote",
}

# Synonyms name the object (docs/data.md, "Synonyms"). Candidates are the CLDR label
# of a renamed category, emoji-datasource short names and emojibase tags. Labels and
# short names are names by construction and are kept, except NOT_NAMES. Tags are
# search keywords, and most describe the emoji rather than name it ("strong" and
# "order" for lion, "curious" and "sly" for raccoon): a tag is a synonym only when
# it is the name's head noun or the plural of the name or of its head ("glove" for
# boxing glove, "cats" for cat), or NAME_TAGS lists it. The other tags are kept in
# the table's ``tags`` column, which only the tokenizer's corpus reads.

# Words a short name (or the head-noun rule) would keep that do not name the object.
NOT_NAMES: dict[str, str] = {
    "tada": "an exclamation (party popper)",
    "smoking": "an activity (cigarette)",
    "golf": "a sport (flag in hole)",
    "soccer": "a sport (soccer ball)",
    "mahjong": "a game (mahjong red dragon)",
    "loud sound": "a sound (speaker)",
    "compression": "an action (clamp)",
    "barber": "a person (barber pole)",
    "japan": "a country (map of japan)",
    "flags": "other objects (carp streamer)",
    "flipper": "one famous dolphin, or a fin (dolphin)",
    "pong": "half of the name ping pong, not its head",
    "increasing": "an attribute: the head of chart increasing is chart",
}

# Tags that name the object, by category: another word for it, a spelling variant, a
# name it goes by in another language, or a kind of it that the picture shows. Never
# a broader class (reptile, ape, shellfish), a sibling (mule for donkey, alpaca for
# llama), a part (mane, antlers, hump), the contents of a vessel (wine for wine glass),
# a modifier of the name (manual for manual wheelchair), an attribute, an action, a
# sound, a place, an occasion, a person or a zodiac sign.
NAME_TAGS: dict[str, tuple[str, ...]] = {
    # animals
    "cat": ("kitten",), "moose": ("alces", "elk"), "donkey": ("ass", "burro"), "bison": ("wisent",),
    "pig": ("sow",), "ewe": ("lamb",), "camel": ("dromedary",), "hippopotamus": ("hippo",),
    "rabbit": ("bunny",), "bear": ("grizzly",), "kangaroo": ("joey",), "swan": ("cygnet",),
    "feather": ("plumage",), "peacock": ("peahen",), "black bird": ("crow", "raven", "rook"),
    "goose": ("gander", "geese"), "phoenix": ("firebird",), "turtle": ("terrapin", "tortoise"),
    "snake": ("serpent",), "sauropod": ("brachiosaurus", "brontosaurus", "diplodocus"),
    "t-rex": ("tyrannosaurus",), "spiral shell": ("conch",), "jellyfish": ("jelly",),
    "snail": ("escargot",), "lady beetle": ("ladybird",), "cockroach": ("roach",),
    "worm": ("earthworm",), "microbe": ("amoeba",),
    # plants
    "blossom": ("buttercup", "dandelion"), "seedling": ("sapling",), "evergreen tree": ("evergreen",),
    "mushroom": ("toadstool",),
    # food
    "grapes": ("grape",), "melon": ("cantaloupe",), "tangerine": ("orange",), "pineapple": ("pina",),
    "blueberries": ("bilberry", "blueberry"), "kiwi fruit": ("kiwi",), "eggplant": ("aubergine",),
    "ear of corn": ("maize",), "bell pepper": ("capsicum",), "leafy green": ("kale", "lettuce"),
    "peanuts": ("peanut",), "ginger root": ("ginger",), "pea pod": ("edamame", "pea", "soybean"),
    "brown mushroom": ("portobello", "shiitake", "shroom"), "root vegetable": ("beet", "radish", "turnip"),
    "bread": ("loaf",), "baguette bread": ("baguette",),
    "flatbread": ("arepa", "gordita", "lavash", "naan", "pita"), "pancakes": ("crêpe", "hotcake", "pancake"),
    "poultry leg": ("drumstick",), "cut of meat": ("lambchop", "porkchop", "steak"),
    "hamburger": ("burger",), "hot dog": ("frankfurter",), "burrito": ("wrap",), "tamale": ("pamonha",),
    "stuffed flatbread": ("gyro",), "shallow pan of food": ("casserole", "paella"),
    "bowl with spoon": ("cereal", "congee", "oatmeal", "porridge"), "steaming bowl": ("noodle", "pho"),
    "spaghetti": ("pasta",), "fried shrimp": ("prawn", "tempura"), "moon cake": ("yuèbǐng",),
    "dumpling": ("empanada", "gyōza", "jiaozi", "pierogi", "potsticker"), "doughnut": ("donut",),
    "custard": ("pudding",), "honey pot": ("honeypot",),
    # drink and dishware
    "hot beverage": ("chai",), "beer mug": ("pint", "stein"), "tumbler glass": ("tumbler",),
    "bubble tea": ("boba",), "chopsticks": ("hashi", "jeotgarak", "kuaizi"), "fork and knife": ("cutlery",),
    "amphora": ("jug",),
    # places
    "globe": ("earth",), "rock": ("boulder",), "wood": ("log", "timber"), "hut": ("roundhouse", "yurt"),
    "church": ("chapel",), "mosque": ("masjid",), "carousel horse": ("carousel",),
    # vehicles
    "high-speed train": ("shinkansen",), "minibus": ("van",), "taxi": ("cab",),
    "pickup truck": ("pick-up", "pickup"), "articulated lorry": ("semi",), "bicycle": ("cycle",),
    "wheel": ("tire",), "police car light": ("beacon", "siren"), "traffic light": ("signal", "stoplight"),
    "construction": ("barrier",), "ring buoy": ("lifesaver",), "sailboat": ("yacht",), "airplane": ("jet",),
    "helicopter": ("copter",), "aerial tramway": ("gondola", "ropeway"), "flying saucer": ("ufo",),
    "luggage": ("suitcase",),
    # sky
    "ringed planet": ("saturn",), "tornado": ("whirlwind",), "cyclone": ("hurricane", "twister", "typhoon"),
    "fire": ("flame",),
    # activities and sports
    "red envelope": ("hóngbāo",), "wrapped gift": ("present",), "ping pong": ("paddle", "pingpong"),
    "badminton": ("birdie", "shuttlecock"), "sled": ("luge", "sledge", "sleigh", "toboggan"),
    "bullseye": ("target",), "video game": ("controller",), "slot machine": ("slots",), "game die": ("dice",),
    "puzzle piece": ("puzzle",), "teddy bear": ("teddy",), "piñata": ("pinada",),
    "nesting dolls": ("babooshka", "baboushka", "babushka", "matryoshka"), "thread": ("spool",),
    # clothing
    "socks": ("stocking",), "woman's clothes": ("blouse",), "clutch bag": ("clutch",),
    "backpack": ("bookbag", "rucksack", "satchel"), "thong sandal": ("thong", "thongs", "zōri"),
    "running shoe": ("sneaker",), "flat shoe": ("flats", "slipper"), "high-heeled shoe": ("heels", "stiletto"),
    "hair pick": ("comb",), "gem stone": ("jewel",),
    # music
    "saxophone": ("sax",), "accordion": ("concertina", "squeezebox"), "guitar": ("strat",),
    "musical keyboard": ("piano",), "long drum": ("conga",), "flute": ("fife", "piccolo", "recorder"),
    # objects
    "mobile phone": ("cell", "mobile"), "desktop computer": ("desktop",), "computer disk": ("minidisk",),
    "floppy disk": ("floppy",), "optical disk": ("blu-ray", "dvd"), "video camera": ("camcorder",),
    "videocassette": ("tape",), "flashlight": ("torch",), "diya lamp": ("diya",), "label": ("tag",),
    "package": ("parcel",), "inbox tray": ("inbox",), "pen": ("ballpoint",), "spiral notepad": ("pad",),
    "card index": ("rolodex",), "straight ruler": ("straightedge",), "elevator": ("lift",),
    "bathtub": ("bath",), "mouse trap": ("mousetrap",), "headstone": ("tombstone",),
    "nazar amulet": ("nazar", "talisman"), "identification card": ("id",),
    # tools and science
    "axe": ("ax", "hatchet"), "wrench": ("spanner",), "nut and bolt": ("bolt",), "gear": ("cog", "cogwheel"),
    "clamp": ("vice",), "balance scale": ("balance",), "chains": ("chain",), "shovel": ("spade",),
    "x-ray": ("xray",),
}

# Breaks before which a name's head noun stands ("teacup without handle" -> teacup).
_HEAD_BREAKS = (" with ", " without ", " of ", " in ", " and ", " behind ", " facing ")


def head_noun(name: str) -> str:
    """The head of a category name: its last word before any qualifying phrase."""
    for b in _HEAD_BREAKS:
        name = name.split(b)[0]
    return name.split()[-1]


def _plurals(word: str) -> set[str]:
    out = {word + "s", word + "es"}
    if word.endswith("y"):
        out.add(word[:-1] + "ies")
    return out


def names_the_object(name: str, synonym: str, is_name: bool) -> bool:
    """Whether a synonym candidate names the category ``name``: ``is_name`` for the
    CLDR label and short names, False for an emojibase tag."""
    if synonym in NOT_NAMES:
        return False
    if is_name:
        return True
    head = head_noun(name)
    return (synonym == head or synonym in _plurals(name) or synonym in _plurals(head)
            or synonym in NAME_TAGS.get(name, ()))


# Distractors: emoji that are NOT categories, pasted unlabelled into scenes.
DISTRACTOR_KINDS: dict[str, int] = {"face": 80, "hand": 24, "symbol": 96, "flag": 40}


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    codepoints: str
    synonyms: tuple[str, ...]
    tier: str
    split: str
    group: str
    styles: tuple[str, ...] = field(default=("noto", "twemoji"))
    # the emoji's other tags: keywords that describe it rather than name it (not synonyms)
    tags: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """File key of the art (see cache.norm_key)."""
        return norm_key(self.codepoints)

    @property
    def novel(self) -> bool:
        return self.split == "novel"


@dataclass(frozen=True)
class Distractor:
    codepoints: str
    name: str
    kind: str
    styles: tuple[str, ...] = field(default=("noto", "twemoji"))

    @property
    def key(self) -> str:
        return norm_key(self.codepoints)


def data_dir() -> str:
    return os.path.join(TRAINING_DIR, "data")


def default_path() -> str:
    return os.path.join(data_dir(), "categories.tsv")


CATEGORY_COLUMNS = ("id", "name", "codepoints", "group", "tier", "split", "styles", "synonyms", "tags")
DISTRACTOR_COLUMNS = ("codepoints", "name", "kind", "styles")


def _read_tsv(path: str, columns: Sequence[str]) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as f:
        lines = [ln.rstrip("\n") for ln in f if ln.strip() and not ln.startswith("#")]
    header = lines[0].split("\t")
    if tuple(header) != tuple(columns):
        raise ValueError(f"{path}: header {header} != {list(columns)}")
    return [dict(zip(header, ln.split("\t"))) for ln in lines[1:]]


def load_categories(path: str | None = None) -> list[Category]:
    """Read the committed category table (ids 1..N in order)."""
    rows = _read_tsv(path or default_path(), CATEGORY_COLUMNS)
    cats = []
    for i, r in enumerate(rows, start=1):
        c = Category(id=int(r["id"]), name=r["name"], codepoints=r["codepoints"],
                     synonyms=tuple(s for s in r["synonyms"].split("|") if s),
                     tier=r["tier"], split=r["split"], group=r["group"],
                     styles=tuple(s for s in r["styles"].split(",") if s),
                     tags=tuple(s for s in r["tags"].split("|") if s))
        if c.id != i:
            raise ValueError(f"categories: ids must be 1..N in order, row {i} has id {c.id}")
        cats.append(c)
    return cats


def load_distractors(path: str | None = None) -> list[Distractor]:
    rows = _read_tsv(path or os.path.join(data_dir(), "distractors.tsv"), DISTRACTOR_COLUMNS)
    return [Distractor(codepoints=r["codepoints"], name=r["name"], kind=r["kind"],
                       styles=tuple(s for s in r["styles"].split(",") if s)) for r in rows]


def split_checksum(categories: Iterable[Category]) -> str:
    """sha256 over (id, name, split) lines: pins the vocabulary and its base/novel split."""
    h = hashlib.sha256()
    for c in sorted(categories, key=lambda c: c.id):
        h.update(f"{c.id}\t{c.name}\t{c.split}\n".encode("utf-8"))
    return h.hexdigest()


def synonym_checksum(categories: Iterable[Category]) -> str:
    """sha256 over (id, name, synonyms) lines: pins the synonyms (the split checksum does not cover them)."""
    h = hashlib.sha256()
    for c in sorted(categories, key=lambda c: c.id):
        h.update(f"{c.id}\t{c.name}\t{'|'.join(c.synonyms)}\n".encode("utf-8"))
    return h.hexdigest()


def base_ids(categories: Iterable[Category]) -> list[int]:
    return [c.id for c in categories if c.split == "base"]


def novel_ids(categories: Iterable[Category]) -> list[int]:
    return [c.id for c in categories if c.split == "novel"]


# ---------------------------------------------------------------------------
# Regeneration from the npm packages.

def _clean_label(label: str) -> str:
    return label.lower().replace("\u2019", "'").replace("\u2018", "'").strip()


def _emojibase_index(cache_dir: str | None) -> dict[str, dict]:
    d = npm_dir("emojibase-data", cache_dir, "en/data.json")
    with open(os.path.join(d, "en", "data.json"), encoding="utf-8") as f:
        data = json.load(f)
    return {norm_key(e["hexcode"]): e for e in data}


def _datasource(cache_dir: str | None) -> list[dict]:
    d = npm_dir("emoji-datasource-google", cache_dir, "emoji.json")
    with open(os.path.join(d, "emoji.json"), encoding="utf-8") as f:
        data = json.load(f)
    return sorted(data, key=lambda e: e["sort_order"])


def _art_present(cache_dir: str | None) -> dict[str, set[str]]:
    out = {"noto": set(), "twemoji": set()}
    for style, pkg, sub in (("noto", "emoji-datasource-google", "img/google/64"),
                            ("twemoji", "emoji-datasource-twitter", "img/twitter/64")):
        folder = os.path.join(npm_dir(pkg, cache_dir, sub), sub)
        out[style] = {norm_key(n[:-4]) for n in os.listdir(folder) if n.endswith(".png")}
    out["openmoji"] = set(openmoji_sources(cache_dir))
    out["fluent3d"] = set(fluent_sources(cache_dir))
    return out


def _styles_for(key: str, present: dict[str, set[str]]) -> tuple[str, ...]:
    return tuple(s for s in ("noto", "twemoji", "openmoji", "fluent3d") if key in present[s])


def _tier_order(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: hashlib.sha256((TIER_SALT + n).encode("utf-8")).hexdigest())


def build_categories(cache_dir: str | None = None) -> tuple[list[Category], list[tuple[str, str]]]:
    """Derive the category table from the npm packages. Returns (categories, dropped (label, reason))."""
    eb = _emojibase_index(cache_dir)
    present = _art_present(cache_dir)
    picked: list[tuple[str, str, str, dict, dict]] = []  # name, codepoints, group, ds entry, eb entry
    dropped: list[tuple[str, str]] = []
    seen_names: set[str] = set()
    for e in _datasource(cache_dir):
        group = SUBCATEGORY_GROUP.get(e["subcategory"])
        if group is None:
            continue
        key = norm_key(e["unified"])
        b = eb.get(key)
        label = _clean_label(b["label"] if b else e["name"])
        if key not in present["noto"] or key not in present["twemoji"]:
            dropped.append((label, "no art in both noto and twemoji"))
            continue
        if label in DROP:
            dropped.append((label, DROP[label]))
            continue
        name = RENAME.get(label, label)
        if name in seen_names:
            dropped.append((label, "name collision"))
            continue
        seen_names.add(name)
        picked.append((name, e["unified"].lower(), group, e, b or {}))
    unknown = set(DROP) - {d[0] for d in dropped}
    if unknown:
        raise ValueError(f"categories: DROP lists labels that are not candidates: {sorted(unknown)}")

    # Synonyms (candidates; names_the_object then keeps those that name the object).
    def raw_synonyms(name: str, e: dict, b: dict) -> list[str]:
        out = list(b.get("tags") or [])
        out += [s.replace("_", " ") for s in e.get("short_names") or []]
        label = _clean_label(b.get("label", ""))
        if label and label != name:
            out.insert(0, label)
        return [_clean_label(s) for s in out]

    share: dict[str, int] = {}
    for name, _, _, e, b in picked:
        for s in set(raw_synonyms(name, e, b)):
            share[s] = share.get(s, 0) + 1
    names = {p[0] for p in picked}

    # Tiers, stratified by group.
    tier_of: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for name, _, group, _, _ in picked:
        groups.setdefault(group, []).append(name)
    for group, members in groups.items():
        order = _tier_order(members)
        n_rare = round(RARE_FRACTION * len(order))
        n_common = round(COMMON_FRACTION * len(order))
        for i, n in enumerate(order):
            tier_of[n] = "rare" if i < n_rare else "common" if i < n_rare + n_common else "frequent"

    cats = []
    unused_names = set(NOT_NAMES)
    unused_tags = {(n, t) for n, ts in NAME_TAGS.items() for t in ts}
    for i, (name, cp, group, e, b) in enumerate(picked, start=1):
        label = _clean_label(b.get("label", ""))
        short = {_clean_label(s.replace("_", " ")) for s in e.get("short_names") or []}
        syns: list[str] = []
        tags: list[str] = []
        for s in raw_synonyms(name, e, b):
            if (s and s != name and s not in names and s not in syns and s not in tags
                    and not re.search(r"\d", s) and "\t" not in s and "|" not in s
                    and (share.get(s, 0) <= MAX_TAG_SHARE or s == label)):
                unused_names.discard(s)
                unused_tags.discard((name, s))
                (syns if names_the_object(name, s, s == label or s in short) else tags).append(s)
        tier = tier_of[name]
        cats.append(Category(id=i, name=name, codepoints=cp, synonyms=tuple(syns), tier=tier,
                             split="novel" if tier == "rare" else "base", group=group,
                             styles=_styles_for(norm_key(cp), present), tags=tuple(tags)))
    if unused_names or unused_tags:
        raise ValueError("categories: NOT_NAMES or NAME_TAGS list words that are not synonym candidates: "
                         f"{sorted(unused_names)} {sorted(unused_tags)}")
    return cats, dropped


def _distractor_kind(e: dict) -> str | None:
    cat, sub = e["category"], e["subcategory"]
    if cat == "Smileys & Emotion" and (sub.startswith("face") or sub in ("cat-face", "monkey-face")):
        return "face"
    if cat == "People & Body" and sub.startswith("hand"):
        return "hand"
    if cat == "Symbols":
        return "symbol"
    if cat == "Smileys & Emotion" and sub in ("heart", "emotion"):
        return "symbol"
    if cat == "Flags" and sub == "country-flag":
        return "flag"
    return None


def build_distractors(cache_dir: str | None = None) -> list[Distractor]:
    """A fixed, evenly spaced subset of faces, hands, symbols and flags with art in noto and twemoji."""
    eb = _emojibase_index(cache_dir)
    present = _art_present(cache_dir)
    pools: dict[str, list[Distractor]] = {k: [] for k in DISTRACTOR_KINDS}
    for e in _datasource(cache_dir):
        kind = _distractor_kind(e)
        key = norm_key(e["unified"])
        if kind is None or key not in present["noto"] or key not in present["twemoji"]:
            continue
        b = eb.get(key)
        name = _clean_label(b["label"] if b else e["name"])
        pools[kind].append(Distractor(codepoints=e["unified"].lower(), name=name, kind=kind,
                                      styles=_styles_for(key, present)))
    out: list[Distractor] = []
    for kind, want in DISTRACTOR_KINDS.items():
        pool = pools[kind]
        if len(pool) <= want:
            out += pool
        else:
            out += [pool[(i * len(pool)) // want] for i in range(want)]
    return out


def write_tables(cats: list[Category], distractors: list[Distractor], out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "categories.tsv"), "w", encoding="utf-8") as f:
        f.write("# generated by: python3 -m vildtrain categories --write (see docs/data.md)\n")
        f.write("\t".join(CATEGORY_COLUMNS) + "\n")
        for c in cats:
            f.write("\t".join([str(c.id), c.name, c.codepoints, c.group, c.tier, c.split, ",".join(c.styles),
                               "|".join(c.synonyms), "|".join(c.tags)]) + "\n")
    with open(os.path.join(out_dir, "distractors.tsv"), "w", encoding="utf-8") as f:
        f.write("# generated by: python3 -m vildtrain categories --write (see docs/data.md)\n")
        f.write("\t".join(DISTRACTOR_COLUMNS) + "\n")
        for d in distractors:
            f.write("\t".join([d.codepoints, d.name, d.kind, ",".join(d.styles)]) + "\n")


def summary(cats: list[Category]) -> str:
    lines = [f"{len(cats)} categories, split checksum {split_checksum(cats)}",
             f"  synonyms: {sum(len(c.synonyms) for c in cats)} on {sum(bool(c.synonyms) for c in cats)} categories"
             f" (synonym checksum {synonym_checksum(cats)}); descriptive tags: {sum(len(c.tags) for c in cats)}"]
    for t in TIERS:
        lines.append(f"  {t}: {sum(c.tier == t for c in cats)}")
    for s in ("base", "novel"):
        lines.append(f"  {s}: {sum(c.split == s for c in cats)}")
    for st in HELDOUT_STYLES:
        lines.append(f"  with {st} art: {sum(st in c.styles for c in cats)}")
    groups: dict[str, int] = {}
    for c in cats:
        groups[c.group] = groups.get(c.group, 0) + 1
    lines.append("  groups: " + ", ".join(f"{g} {n}" for g, n in sorted(groups.items())))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="vildtrain categories",
                                description="Show the category table, or regenerate it from the npm packages.")
    p.add_argument("--write", action="store_true", help="regenerate training/data/{categories,distractors}.tsv")
    p.add_argument("--out", default=None, help="output folder for --write (default training/data)")
    p.add_argument("--cache", default=None, help="cache dir (default $VILD_CACHE)")
    p.add_argument("--dropped", action="store_true", help="list dropped candidates and why")
    args = p.parse_args(argv)
    if args.write or args.dropped:
        try:
            cats, dropped = build_categories(args.cache)
            distractors = build_distractors(args.cache)
        except MissingAssetError as e:
            print(f"categories: {e}", file=sys.stderr)
            return 1
        if args.dropped:
            for label, reason in dropped:
                print(f"{label}\t{reason}")
        if args.write:
            write_tables(cats, distractors, args.out or data_dir())
            print(f"categories: wrote {len(cats)} categories, {len(distractors)} distractors", file=sys.stderr)
    else:
        cats = load_categories()
    print(summary(cats))
    return 0
