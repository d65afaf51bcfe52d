"""Container names: validation, and the random ``adjective_surname`` ones.

The surnames honour scientists and engineers; the adjectives are kind.
Like dockerd, retries append a digit and after six collisions the short ID
is used.
"""

from __future__ import annotations

import re
import secrets

from berth import errdefs
from berth.container.view import NameConflict, ViewDB
from berth.utils.stringid import truncate_id

VALID_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

ADJECTIVES = (
    "able", "adoring", "agile", "amazing", "ample", "appealing", "ardent", "artful",
    "awake", "bold", "boring", "brave", "bright", "brisk", "busy", "calm", "candid",
    "careful", "charming", "cheerful", "clever", "cool", "cosmic", "crisp", "curious",
    "daring", "dazzling", "deft", "devoted", "diligent", "dreamy", "eager", "earnest",
    "elastic", "elegant", "epic", "exact", "fair", "fearless", "fervent", "festive",
    "fluent", "focused", "frank", "friendly", "gallant", "gentle", "gifted", "glad",
    "gleeful", "graceful", "grateful", "hardy", "hearty", "helpful", "honest", "hopeful",
    "humble", "inspired", "intrepid", "jolly", "jovial", "keen", "kind", "lively",
    "loyal", "lucid", "lucky", "merry", "mellow", "mindful", "modest", "nimble", "noble",
    "patient", "peaceful", "placid", "plucky", "polite", "proud", "quick", "quiet",
    "radiant", "rapid", "relaxed", "resolute", "serene", "sharp", "sincere", "sleek",
    "snappy", "spirited", "stoic", "sturdy", "sunny", "swift", "tender", "thrifty",
    "tidy", "tranquil", "trusty", "upbeat", "valiant", "vibrant", "vigilant", "vivid",
    "warm", "wise", "witty", "zealous", "zen",
)  # fmt: skip

SURNAMES = (
    # Mathematicians, physicists, chemists, biologists, astronomers, computer
    # scientists and engineers whose work we build on.
    "agnesi", "aiken", "alhazen", "allen", "almeida", "ampere", "archimedes",
    "aryabhata", "babbage", "backus", "banach", "bardeen", "bartik", "bell", "bernoulli",
    "bhabha", "blackwell", "bohr", "boole", "borg", "bose", "brahe", "brattain",
    "burnell", "cannon", "cantor", "carson", "cauchy", "cerf", "chandrasekhar",
    "chebyshev", "clarke", "codd", "conway", "copernicus", "corbato", "cori", "curie",
    "darwin", "dijkstra", "dirac", "einstein", "elion", "engelbart", "euclid", "euler",
    "faraday", "fermat", "fermi", "feynman", "fibonacci", "franklin", "galileo",
    "galois", "gauss", "germain", "goldberg", "goodall", "hamilton", "hamming",
    "hawking", "heisenberg", "herschel", "hilbert", "hodgkin", "hopper", "hoare",
    "hubble", "huffman", "hypatia", "jackson", "jennings", "johnson", "joliot",
    "kahan", "kalam", "kepler", "khorana", "kilby", "knuth", "kovalevskaya", "lamarr",
    "lamport", "laplace", "leakey", "leavitt", "lederberg", "lehmann", "liskov",
    "lovelace", "lumiere", "maxwell", "mayer", "mccarthy", "mcclintock", "meitner",
    "mendel", "mendeleev", "minsky", "mirzakhani", "moore", "morse", "napier", "nash",
    "neumann", "newton", "nightingale", "nobel", "noether", "noyce", "ohm", "pascal",
    "pasteur", "pauli", "payne", "perlman", "planck", "poincare", "ramanujan", "raman",
    "ritchie", "rosalind", "rubin", "saha", "sammet", "sanger", "shannon", "shockley",
    "sinoussi", "snyder", "somerville", "spence", "stallman", "stonebraker", "sutherland",
    "swanson", "tesla", "thompson", "torvalds", "turing", "varahamihira", "vaughan",
    "volta", "wescoff", "wiles", "williams", "wilson", "wing", "wozniak", "wright",
    "wu", "yalow", "yonath", "zhukovsky", "zuse",
)  # fmt: skip


def random_name(retry: int) -> str:
    """``adjective_surname``, with a digit 0-9 appended when *retry* > 0."""
    while True:
        name = f"{secrets.choice(ADJECTIVES)}_{secrets.choice(SURNAMES)}"
        if name != "boring_wozniak":  # Steve Wozniak is not boring
            break
    if retry > 0:
        name += str(secrets.randbelow(10))
    return name


def validate_name(name: str) -> str:
    """The canonical ``/name`` form; InvalidParameter for characters dockerd refuses."""
    if not VALID_NAME.fullmatch(name):  # fullmatch: "$" would let "name\n" through
        raise errdefs.InvalidParameter(
            f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    return name if name.startswith("/") else "/" + name


def reserve_name(view: ViewDB, ident: str, name: str) -> str:
    """Reserve *name* (or a random one when empty) for container *ident*."""
    if name:
        canonical = validate_name(name)
        view.reserve_name(canonical, ident)
        return canonical
    for attempt in range(6):
        candidate = "/" + random_name(attempt)
        try:
            view.reserve_name(candidate, ident)
        except NameConflict:
            continue
        return candidate
    fallback = "/" + truncate_id(ident)
    view.reserve_name(fallback, ident)
    return fallback
