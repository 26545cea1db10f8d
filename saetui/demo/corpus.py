"""Deterministic generator of the demo's English-like corpus with planted concepts.

Every record is ``{"text": str, "spans": [[start_char, end_char, label], ...]}``: the spans mark,
at character level, where each planted concept occurs (a city, an equation, a Python snippet...).
Sentences come from many templates that mix concepts with neutral filler, so each concept is seen
in several contexts (start of a sentence, after a preposition, next to another concept...).

Only the standard library is used; the same ``(n_docs, seed)`` always gives the same corpus.
"""

from __future__ import annotations

import random
import re
from typing import Callable, Iterable

__all__ = ["CONCEPTS", "CONCEPT_DESCRIPTIONS", "generate_corpus", "generate_document",
           "iter_labelled_strings"]

CONCEPT_DESCRIPTIONS: dict[str, str] = {
    "geography": "names of cities and countries",
    "arithmetic": "arithmetic expressions and equations",
    "animal": "animal names",
    "colour": "colour words",
    "python_code": "snippets of Python source code",
    "date_time": "dates, weekdays, months, years and clock times",
    "machine_learning": "machine-learning vocabulary",
    "emotion": "words for emotions and feelings",
    "family": "family members",
    "food": "food and dishes",
    "sport": "sports and games",
}

#: The planted concept labels, in a fixed order.
CONCEPTS: tuple[str, ...] = tuple(CONCEPT_DESCRIPTIONS)

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Portugal": "Lisbon", "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi",
    "Egypt": "Cairo", "Kenya": "Nairobi", "Brazil": "Brasilia", "Argentina": "Buenos Aires",
    "Canada": "Ottawa", "Mexico": "Mexico City", "Peru": "Lima", "Russia": "Moscow",
    "Poland": "Warsaw", "Sweden": "Stockholm", "Norway": "Oslo", "Greece": "Athens",
    "Turkey": "Ankara", "Australia": "Canberra", "Ireland": "Dublin", "Austria": "Vienna",
    "Hungary": "Budapest", "Thailand": "Bangkok", "Vietnam": "Hanoi", "Chile": "Santiago",
    "Nigeria": "Abuja", "Morocco": "Rabat", "Finland": "Helsinki", "Denmark": "Copenhagen",
}
OTHER_CITIES = [
    "London", "New York", "Chicago", "Sydney", "Toronto", "Barcelona", "Munich", "Milan",
    "Osaka", "Shanghai", "Mumbai", "Istanbul", "Marseille", "Hamburg", "Boston", "Seattle",
    "Melbourne", "Vancouver", "Naples", "Kyoto", "Lyon", "Porto", "Seville", "Geneva",
]
EXTRA_COUNTRIES = ["England", "Scotland", "Switzerland", "the United States", "Belgium",
                   "the Netherlands", "Iceland", "New Zealand", "South Africa", "Indonesia"]
COUNTRIES = list(CAPITALS) + EXTRA_COUNTRIES
CITIES = list(CAPITALS.values()) + OTHER_CITIES

ANIMALS = [
    "dog", "cat", "horse", "elephant", "tiger", "lion", "rabbit", "fox", "wolf", "bear",
    "owl", "eagle", "sparrow", "dolphin", "whale", "shark", "turtle", "frog", "snake", "mouse",
    "goat", "sheep", "cow", "pig", "duck", "goose", "penguin", "giraffe", "zebra", "monkey",
    "squirrel", "deer", "camel", "parrot", "octopus", "hedgehog", "badger", "otter", "crow",
    "kangaroo",
]
ANIMAL_PLURAL_IRREGULAR = {"mouse": "mice", "sheep": "sheep", "wolf": "wolves", "fox": "foxes",
                           "goose": "geese", "octopus": "octopuses", "deer": "deer",
                           "ox": "oxen"}

COLOURS = [
    "red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black", "white",
    "grey", "crimson", "scarlet", "turquoise", "violet", "golden", "silver", "navy blue",
    "dark green", "pale yellow", "bright red", "light blue", "beige", "maroon", "teal",
    "lavender",
]

EMOTIONS = [
    "happy", "sad", "angry", "afraid", "anxious", "excited", "furious", "proud", "lonely",
    "nervous", "calm", "joyful", "disappointed", "grateful", "jealous", "relieved", "ashamed",
    "hopeful", "miserable", "delighted", "scared", "frustrated", "cheerful", "upset",
    "embarrassed", "content", "heartbroken", "terrified",
]
EMOTION_NOUNS = [
    "joy", "anger", "fear", "sadness", "pride", "grief", "envy", "relief", "shame",
    "excitement", "anxiety", "happiness", "frustration", "gratitude", "loneliness", "hope",
    "disgust", "surprise", "jealousy", "delight",
]

FAMILY = [
    "mother", "father", "sister", "brother", "grandmother", "grandfather", "uncle", "aunt",
    "cousin", "son", "daughter", "nephew", "niece", "husband", "wife", "mum", "dad",
    "grandparents", "parents", "twin brother", "stepmother", "older sister", "little brother",
]

FOODS = [
    "bread", "cheese", "soup", "pasta", "rice", "apples", "noodles", "pancakes", "curry",
    "salad", "dumplings", "tomatoes", "chocolate cake", "porridge", "sushi", "pizza",
    "sandwiches", "oranges", "bananas", "roast chicken", "fried eggs", "lentil stew", "biscuits",
    "strawberries", "mashed potatoes", "grilled fish", "tacos", "ice cream", "carrots",
    "apple pie", "butter", "yogurt", "mushroom risotto", "beef stew", "honey",
]

SPORTS = [
    "football", "tennis", "basketball", "chess", "cricket", "rugby", "golf", "volleyball",
    "swimming", "cycling", "hockey", "baseball", "table tennis", "badminton", "skiing",
    "boxing", "rowing", "marathon running", "handball", "climbing",
]

ML_TERMS = [
    "neural network", "gradient descent", "learning rate", "loss function", "backpropagation",
    "transformer", "attention head", "embedding", "training set", "validation loss",
    "overfitting", "batch size", "dropout", "sparse autoencoder", "optimizer", "weight decay",
    "tokenizer", "logits", "activation function", "regularization", "fine-tuning",
    "convolutional network", "language model", "test accuracy", "cross-entropy",
    "hidden layer", "residual stream", "stochastic gradient descent", "Adam optimizer",
    "softmax", "decoder", "encoder", "feature vector", "learning curve", "epoch",
]
ML_MODELS = ["neural network", "transformer", "language model", "convolutional network",
             "sparse autoencoder", "classifier", "recurrent network", "decision tree",
             "linear probe", "autoencoder"]
ML_OPTIMIZERS = ["gradient descent", "stochastic gradient descent", "the Adam optimizer",
                 "AdamW", "momentum", "RMSProp"]

NAMES = [
    "Anna", "Ben", "Clara", "David", "Elena", "Felix", "Grace", "Hugo", "Iris", "Jonas",
    "Karin", "Leo", "Maya", "Noah", "Olga", "Paul", "Rosa", "Sam", "Tara", "Victor",
    "Wendy", "Yusuf", "Zoe", "Marco", "Lucia", "Omar", "Priya", "Kenji", "Amara", "Tom",
]
OBJECTS = [
    "window", "door", "letter", "report", "box", "book", "car", "chair", "key", "bag",
    "ticket", "map", "lamp", "table", "notebook", "umbrella", "bicycle", "envelope", "drawer",
    "parcel", "newspaper", "jacket", "phone", "folder", "suitcase",
]
PAST_VERBS = ["opened", "closed", "carried", "found", "lost", "moved", "checked", "cleaned",
              "fixed", "painted", "borrowed", "returned", "picked up", "put down", "signed",
              "packed", "forgot", "noticed", "dropped", "repaired"]
PLACES = [
    "in the hallway", "near the station", "by the old bridge", "at the office",
    "after the meeting", "without a word", "in the garden", "on the second floor",
    "next to the library", "behind the house", "at the corner of the street", "upstairs",
    "in the back room", "outside the school", "on the way home", "before anyone noticed",
]
FILLER_SENTENCES = [
    "Nobody said anything for a while.",
    "It was quieter than usual.",
    "The meeting was moved to the other room.",
    "Everyone agreed that it was a good idea.",
    "Then the phone rang again.",
    "There was not much left to do.",
    "The road was longer than they had expected.",
    "Most of the work was finished by then.",
    "It took a few minutes to find the right page.",
    "That was the end of the story.",
    "Some of them stayed, and the others went home.",
    "The instructions were written on a small card.",
    "Nothing seemed to have changed.",
    "It was the first time anyone had asked.",
    "The rest of the day passed slowly.",
    "They decided to try again later.",
    "The answer was simpler than it looked.",
    "Nobody could remember who had started it.",
    "The light in the corridor was still on.",
    "After that, things went back to normal.",
    "He wrote a short note and left it on the desk.",
    "She read the last paragraph twice.",
    "In the end, the plan worked.",
    "The question was harder than it seemed.",
    "Somebody knocked on the door.",
]
ADVERBS = ["quickly", "slowly", "carefully", "quietly", "suddenly", "finally", "again",
           "eventually", "almost immediately"]

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                "seventeen", "eighteen", "nineteen", "twenty"]

PY_NAMES = ["data", "items", "values", "result", "total", "count", "numbers", "words", "scores",
            "names", "row", "text", "config", "batch", "index", "size", "limit", "output"]
PY_FUNCS = ["add", "compute", "process", "load_data", "parse", "main", "update", "normalize",
            "count_words", "average", "clean", "run", "square", "merge", "train_step"]
PY_CLASSES = ["Point", "Model", "Counter", "Parser", "Dataset", "Buffer", "Node", "Config"]
PY_FILES = ["data.txt", "config.json", "notes.md", "results.csv", "input.txt", "log.txt"]


# --------------------------------------------------------------------------------------------
# Slot generators. Each returns a string or a list of (piece, label-or-None).
# --------------------------------------------------------------------------------------------

Piece = tuple[str, "str | None"]


def _plural(animal: str) -> str:
    if animal in ANIMAL_PLURAL_IRREGULAR:
        return ANIMAL_PLURAL_IRREGULAR[animal]
    return animal + "s"


def _a(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _date(r: random.Random) -> str:
    m = r.choice(MONTHS)
    d = r.randint(1, 28)
    y = r.randint(1950, 2030)
    form = r.randrange(9)
    if form == 0:
        return f"{m} {d}, {y}"
    if form == 1:
        return f"{d} {m} {y}"
    if form == 2:
        return f"{y}-{MONTHS.index(m) + 1:02d}-{d:02d}"
    if form == 3:
        return f"{r.choice(WEEKDAYS)}, {m} {d}"
    if form == 4:
        return f"{r.choice(WEEKDAYS)} morning"
    if form == 5:
        return f"the {d}th of {m}" if d > 3 else f"the first of {m}"
    if form == 6:
        return f"{m} {y}"
    if form == 7:
        return r.choice(WEEKDAYS)
    return f"{d}/{MONTHS.index(m) + 1}/{y}"


def _time(r: random.Random) -> str:
    h = r.randint(1, 12)
    mi = r.choice([0, 5, 10, 15, 20, 30, 40, 45, 50, 55])
    form = r.randrange(5)
    if form == 0:
        return f"{h}:{mi:02d}"
    if form == 1:
        return f"{h}:{mi:02d} {r.choice(['am', 'pm'])}"
    if form == 2:
        return f"{h} o'clock"
    if form == 3:
        return f"{r.randint(0, 23):02d}:{mi:02d}"
    return r.choice(["noon", "midnight", "half past " + str(h), "quarter past " + str(h)])


def _equation(r: random.Random) -> str:
    form = r.randrange(10)
    a, b = r.randint(1, 99), r.randint(1, 99)
    if form == 0:
        return f"{a} + {b} = {a + b}"
    if form == 1:
        a, b = max(a, b), min(a, b)
        return f"{a} - {b} = {a - b}"
    if form == 2:
        a, b = r.randint(2, 12), r.randint(2, 12)
        return f"{a} * {b} = {a * b}"
    if form == 3:
        a, b = r.randint(2, 12), r.randint(2, 12)
        return f"{a * b} / {a} = {b}"
    if form == 4:
        c = r.randint(1, 20)
        return f"x + {c} = {a + c}"
    if form == 5:
        a, b = r.randint(2, 9), r.randint(2, 12)
        return f"{a}x = {a * b}"
    if form == 6:
        a, b, c = r.randint(1, 9), r.randint(1, 9), r.randint(2, 5)
        return f"({a} + {b}) * {c} = {(a + b) * c}"
    if form == 7:
        a = r.randint(2, 15)
        return f"{a}^2 = {a * a}"
    if form == 8:
        a, b = r.randint(0, 10), r.randint(0, 10)
        return f"{NUMBER_WORDS[a]} plus {NUMBER_WORDS[b]} equals {NUMBER_WORDS[a + b]}" if a + b <= 20 \
            else f"{a} plus {b} equals {a + b}"
    a, b = r.randint(2, 10), r.randint(1, 10)
    return f"{a} times {b} is {a * b}"


def _python(r: random.Random) -> str:
    v, w = r.sample(PY_NAMES, 2)
    f = r.choice(PY_FUNCS)
    n = r.randint(2, 100)
    form = r.randrange(12)
    if form == 0:
        op = r.choice(["+", "-", "*"])
        return f"def {f}(a, b):\n    return a {op} b"
    if form == 1:
        return f"for i in range({n}):\n    print(i)"
    if form == 2:
        nums = ", ".join(str(r.randint(0, 99)) for _ in range(r.randint(3, 5)))
        return f"{v} = [{nums}]\nprint(sum({v}))"
    if form == 3:
        return "import numpy as np\n" + f"{v} = np.zeros({n})"
    if form == 4:
        return f"if {v} > {n}:\n    {w} = {v} * 2\nelse:\n    {w} = 0"
    if form == 5:
        return f"with open('{r.choice(PY_FILES)}') as f:\n    {v} = f.read()"
    if form == 6:
        c = r.choice(PY_CLASSES)
        return f"class {c}:\n    def __init__(self, {v}):\n        self.{v} = {v}"
    if form == 7:
        return f"{w} = [x * x for x in {v}]"
    if form == 8:
        return f"{w} = {{k: len(k) for k in {v}}}"
    if form == 9:
        return f"while {v} < {n}:\n    {v} += 1"
    if form == 10:
        return f"def {f}({v}):\n    {w} = len({v})\n    return {w}"
    return f"try:\n    {v} = int({w})\nexcept ValueError:\n    {v} = None"


def _inline_python(r: random.Random) -> str:
    v = r.choice(PY_NAMES)
    return r.choice([f"len({v})", f"print({v})", f"{v}.append(x)", f"range({r.randint(2, 50)})",
                     f"sorted({v})", f"{v}.split()", f"{r.choice(PY_FUNCS)}({v})",
                     f"{v}.items()", f"max({v})", f"{v}[{r.randint(0, 9)}]"])


def _capital_fact(r: random.Random) -> list[Piece]:
    country = r.choice(list(CAPITALS))
    city = CAPITALS[country]
    form = r.randrange(4)
    if form == 0:
        return [("The capital of ", None), (country, "geography"), (" is ", None),
                (city, "geography"), (".", None)]
    if form == 1:
        return [(city, "geography"), (" is the capital of ", None), (country, "geography"),
                (".", None)]
    if form == 2:
        return [("Is ", None), (city, "geography"), (" the largest city in ", None),
                (country, "geography"), ("? Not always, but it is the capital.", None)]
    return [("Many people visit ", None), (city, "geography"), (", the capital of ", None),
            (country, "geography"), (", every summer.", None)]


def _ml_sentence(r: random.Random) -> list[Piece]:
    model = r.choice(ML_MODELS)
    opt = r.choice(ML_OPTIMIZERS)
    form = r.randrange(6)
    lr = r.choice(["0.001", "0.01", "3e-4", "1e-3", "0.1"])
    if form == 0:
        return [("The ", None), (model, "machine_learning"), (" was trained with ", None),
                (opt, "machine_learning"), (" and a ", None), ("learning rate", "machine_learning"),
                (f" of {lr}.", None)]
    if form == 1:
        return [("After ten ", None), ("epochs", "machine_learning"), (", the ", None),
                ("validation loss", "machine_learning"), (" stopped going down.", None)]
    if form == 2:
        return [("We used ", None), ("dropout", "machine_learning"), (" and ", None),
                ("weight decay", "machine_learning"), (" to reduce ", None),
                ("overfitting", "machine_learning"), (".", None)]
    if form == 3:
        return [("Each ", None), ("attention head", "machine_learning"), (" in the ", None),
                ("transformer", "machine_learning"), (" writes to the ", None),
                ("residual stream", "machine_learning"), (".", None)]
    if form == 4:
        return [("The ", None), ("sparse autoencoder", "machine_learning"),
                (" learns features from the ", None), ("activations", "machine_learning"),
                (" of the ", None), (model, "machine_learning"), (".", None)]
    return [("With a larger ", None), ("batch size", "machine_learning"), (", the ", None),
            ("gradient", "machine_learning"), (" estimates are less noisy.", None)]


def _code_block(r: random.Random) -> list[Piece]:
    intro = r.choice(["Here is the code:", "The function looks like this:", "Try this:",
                      "A short example in Python:", "The script does the following:",
                      "Run this snippet:", "The fix was small:"])
    outro = r.choice(["It works as expected.", "That is all it takes.",
                      "The output is printed at the end.", "Note the indentation.",
                      "This runs in a fraction of a second.", ""])
    pieces: list[Piece] = [(intro + "\n", None), (_python(r), "python_code")]
    if r.random() < 0.3:
        pieces += [("\n", None), (_python(r), "python_code")]
    pieces.append(("\n" + outro if outro else "\n", None))
    return pieces


def _count(r: random.Random) -> str:
    return r.choice(NUMBER_WORDS[2:13] + [str(r.randint(2, 300))])


SLOTS: dict[str, tuple[Callable[[random.Random], "str | list[Piece]"], "str | None"]] = {
    "city": (lambda r: r.choice(CITIES), "geography"),
    "country": (lambda r: r.choice(COUNTRIES), "geography"),
    "animal": (lambda r: r.choice(ANIMALS), "animal"),
    "animals": (lambda r: _plural(r.choice(ANIMALS)), "animal"),
    "colour": (lambda r: r.choice(COLOURS), "colour"),
    "emotion": (lambda r: r.choice(EMOTIONS), "emotion"),
    "emotion_noun": (lambda r: r.choice(EMOTION_NOUNS), "emotion"),
    "family": (lambda r: r.choice(FAMILY), "family"),
    "food": (lambda r: r.choice(FOODS), "food"),
    "sport": (lambda r: r.choice(SPORTS), "sport"),
    "ml": (lambda r: r.choice(ML_TERMS), "machine_learning"),
    "ml_model": (lambda r: r.choice(ML_MODELS), "machine_learning"),
    "date": (_date, "date_time"),
    "time": (_time, "date_time"),
    "weekday": (lambda r: r.choice(WEEKDAYS), "date_time"),
    "month": (lambda r: r.choice(MONTHS), "date_time"),
    "year": (lambda r: str(r.randint(1900, 2030)), "date_time"),
    "equation": (_equation, "arithmetic"),
    "code": (_inline_python, "python_code"),
    "code_block": (_code_block, None),
    "capital_fact": (_capital_fact, None),
    "ml_sentence": (_ml_sentence, None),
    # neutral (unlabelled) slots
    "name": (lambda r: r.choice(NAMES), None),
    "name2": (lambda r: r.choice(NAMES), None),
    "object": (lambda r: r.choice(OBJECTS), None),
    "verb": (lambda r: r.choice(PAST_VERBS), None),
    "place": (lambda r: r.choice(PLACES), None),
    "adverb": (lambda r: r.choice(ADVERBS), None),
    "count": (_count, None),
    "filler": (lambda r: r.choice(FILLER_SENTENCES), None),
}

TEMPLATES: list[str] = [
    # geography
    "{capital_fact}",
    "{name} flew from {city} to {city} last {weekday}.",
    "{name} grew up in {country} but now lives in {city}.",
    "The train from {city} to {city} was {count} minutes late.",
    "We spent two weeks in {country} and a few days in {city}.",
    "My {family} moved to {city} in {year}.",
    "{city} is famous for its {food} and its {sport} team.",
    "The conference will be held in {city}, {country}, on {date}.",
    "Last year {name} visited {country}, {country} and {country}.",
    "In {country}, people often eat {food} for breakfast.",
    "{name} felt {emotion} when the plane finally landed in {city}.",
    "The {animals} of {country} are protected by law.",
    # arithmetic
    "{name} wrote {equation} on the board.",
    "Check the result: {equation}.",
    "If you add it up, {equation}, so the answer is correct.",
    "The teacher asked why {equation} and nobody answered.",
    "On the first page of the notebook: {equation} and {equation}.",
    "{name} was {emotion} because {equation} was marked wrong.",
    "Solve for x: {equation}.",
    "A quick sum shows that {equation}.",
    "The code printed {equation} when we ran {code}.",
    # animals
    "A {animal} was sleeping {place}.",
    "{name} saw {count} {animals} {place}.",
    "The {animal} chased the {animal} across the field.",
    "My {family} has a {colour} {animal} called {name2}.",
    "The {animal} looked {emotion} in the rain.",
    "Every {weekday} the {animals} are fed {food}.",
    "Do {animals} eat {food}? Only sometimes.",
    "{name} drew a {colour} {animal} on the wall.",
    "There is a {animal} in the garden and it is eating the {food}.",
    # colours
    "The {object} was painted {colour}.",
    "{name} wore a {colour} jacket and {colour} shoes.",
    "The sky turned {colour} and then {colour} just before {time}.",
    "She chose the {colour} one, not the {colour} one.",
    "The walls of the room were {colour}.",
    "{name} {verb} the {colour} {object} {place}.",
    # python code
    "{code_block}",
    "To count them, call {code} and print the result.",
    "The bug was in the line {code}.",
    "{name} typed {code} and pressed enter.",
    "If {code} fails, the {ml_model} will not train.",
    # date/time
    "The meeting is on {date} at {time}.",
    "{name} was born on {date}.",
    "We left at {time} and arrived before {time}.",
    "The shop closes at {time} on {weekday}.",
    "Since {month} {year}, nothing has changed.",
    "Every {weekday} at {time}, {name} plays {sport}.",
    "The deadline moved from {date} to {date}.",
    "It was {time} when the {animal} woke up.",
    # machine learning
    "{ml_sentence}",
    "The {ml} was the hardest part of the project.",
    "{name} explained {ml} and {ml} to the new students.",
    "We trained the {ml_model} on data from {country}.",
    "Tuning the {ml} took {count} days.",
    "The paper compares {ml} with {ml}.",
    "{name} felt {emotion} when the {ml} finally improved.",
    "A {ml_model} can learn to recognise {animals} in photos.",
    # emotions
    "{name} was {emotion} after the call.",
    "I felt {emotion} and a little {emotion}.",
    "There was {emotion_noun} in her voice.",
    "My {family} was {emotion} when {name} came home.",
    "The news filled everyone with {emotion_noun}.",
    "{name} tried to hide the {emotion_noun}, but it showed.",
    "The children were {emotion} about the {sport} match.",
    # family
    "My {family} and my {family} live in {city}.",
    "{name} called the {family} on {weekday}.",
    "Her {family} taught her to play {sport}.",
    "His {family} cooked {food} for the whole family.",
    "The {family} {verb} the {object} {place}.",
    # food
    "For dinner we had {food} and {food}.",
    "{name} bought {food}, {food} and some {food}.",
    "The recipe needs {count} cups of {food}.",
    "{name} does not like {food} at all.",
    "We ate {food} in {city} and it was wonderful.",
    # sport
    "{name} plays {sport} every {weekday}.",
    "The {sport} final starts at {time}.",
    "{country} won the {sport} tournament in {year}.",
    "After {sport}, {name} was {emotion} and hungry for {food}.",
    # neutral filler
    "{filler}",
    "{filler}",
    "{filler}",
    "{name} {verb} the {object} {place}.",
    "{name} {verb} the {object} {place}.",
    "{name} {adverb} {verb} the {object}.",
    "{name} and {name2} {verb} the {object} {place}.",
    "The {object} was {place}, as always.",
    "{name} asked {name2} about the {object}.",
    "Then {name} {adverb} {verb} the {object} and left.",
]

_SLOT_RE = re.compile(r"\{(\w+)\}")


def _template_concepts(template: str) -> set[str]:
    out: set[str] = set()
    special = {"code_block": "python_code", "capital_fact": "geography",
               "ml_sentence": "machine_learning"}
    for slot in _SLOT_RE.findall(template):
        label = SLOTS[slot][1] or special.get(slot)
        if label:
            out.add(label)
    return out


_TEMPLATE_CONCEPTS = [_template_concepts(t) for t in TEMPLATES]
_BY_CONCEPT = {c: [i for i, cs in enumerate(_TEMPLATE_CONCEPTS) if c in cs] for c in CONCEPTS}
_NEUTRAL = [i for i, cs in enumerate(_TEMPLATE_CONCEPTS) if not cs]


def _render(template: str, r: random.Random) -> list[Piece]:
    pieces: list[Piece] = []
    pos = 0
    for m in _SLOT_RE.finditer(template):
        if m.start() > pos:
            pieces.append((template[pos:m.start()], None))
        gen, label = SLOTS[m.group(1)]
        value = gen(r)
        if isinstance(value, str):
            pieces.append((value, label))
        else:
            pieces.extend(value)
        pos = m.end()
    if pos < len(template):
        pieces.append((template[pos:], None))
    # fix articles "a" / "an" before a rendered word
    for i in range(1, len(pieces)):
        prev, plabel = pieces[i - 1]
        word = pieces[i][0]
        if word and (prev.endswith(" a ") or prev == "A " or prev.endswith(" A ")):
            art = _a(word)
            if art == "an":
                pieces[i - 1] = (prev[:-2] + ("an " if prev[-2] == "a" else "An "), plabel)
    # capitalise the first letter of the sentence
    if pieces and pieces[0][0] and pieces[0][0][0].islower():
        text, label = pieces[0]
        pieces[0] = (text[0].upper() + text[1:], label)
    return pieces


def generate_document(r: random.Random) -> dict:
    """One document: a few paragraphs of sentences, about one or two focus concepts."""
    focus = r.sample(CONCEPTS, r.choice([1, 1, 2]))
    n_sent = r.randint(3, 9)
    parts: list[str] = []
    spans: list[list] = []
    length = 0
    for s in range(n_sent):
        u = r.random()
        if u < 0.55:
            idx = r.choice(_BY_CONCEPT[r.choice(focus)])
        elif u < 0.8:
            idx = r.randrange(len(TEMPLATES))
        else:
            idx = r.choice(_NEUTRAL)
        pieces = _render(TEMPLATES[idx], r)
        if s > 0:
            sep = "\n\n" if (r.random() < 0.15 or "\n" in pieces[0][0]) else " "
            if parts and parts[-1].endswith("\n"):
                sep = "\n"
            parts.append(sep)
            length += len(sep)
        for text, label in pieces:
            if label is not None and text:
                spans.append([length, length + len(text), label])
            parts.append(text)
            length += len(text)
    text = "".join(parts).rstrip()
    spans = [sp for sp in spans if sp[1] <= len(text)]
    return {"text": text, "spans": spans}


def generate_corpus(n_docs: int, seed: int = 0) -> list[dict]:
    """``n_docs`` documents, deterministic for a given ``seed``.

    Each record is ``{"text": str, "spans": [[start_char, end_char, label], ...]}`` with labels
    from :data:`CONCEPTS`; ``text[start:end]`` is the labelled surface string.
    """
    r = random.Random(seed)
    return [generate_document(r) for _ in range(n_docs)]


def iter_labelled_strings(records: Iterable[dict]):
    """Yield ``(label, surface string)`` for every span of ``records`` (handy for checks)."""
    for rec in records:
        for a, b, label in rec["spans"]:
            yield label, rec["text"][a:b]
