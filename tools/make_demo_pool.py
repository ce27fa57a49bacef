"""Generate the synthetic demo pool shipped with mig_ray.

Writes ``mig_ray/demo/demo_pool.jsonl`` (or the path given as the first
command-line argument) in the "released annotated" record layout::

    {"_id": "demo-0001",
     "dialogs": [{"role": "user", "content": ...},
                 {"role": "assistant", "content": ...}],
     "source": ["mig_ray-demo"],
     "annotation": {"instag": {"content": [tag, ...]},
                    "deita": {"quality_scores": [q],
                              "complexity_scores": [c]}}}

Everything is built from small per-topic templates written for mig_ray with
slots filled from a single ``random.Random(0)``; the output is byte-for-byte
deterministic.  Tags are hard-coded strings taken from the released Tulu3
valid-tag vocabulary.  Quality and complexity scores are random draws, not
the output of any scorer.  Standard library only.

Usage::

    python tools/make_demo_pool.py            # rewrites mig_ray/demo/demo_pool.jsonl
    python tools/make_demo_pool.py OUT.jsonl  # writes elsewhere
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

SOURCE = ["mig_ray-demo"]
QUALITY_RANGE = (1.5, 5.5)
COMPLEXITY_RANGE = (1.2, 4.5)

# ---------------------------------------------------------------------------
# Slot values
# ---------------------------------------------------------------------------

NAMES = ["Alice", "Ben", "Chloe", "Daniel", "Emma", "Farid", "Grace", "Hiro",
         "Isabel", "Jonas", "Keisha", "Liam", "Maya", "Noah", "Olivia", "Priya",
         "Rafael", "Sofia", "Tom", "Yusuf"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July",
          "August", "September", "October", "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
CITIES = {
    "Lisbon": ["the Alfama district", "Belem Tower", "a tram 28 ride", "the LX Factory"],
    "Kyoto": ["Fushimi Inari shrine", "the Arashiyama bamboo grove", "Nishiki Market",
              "the Gion district"],
    "Rome": ["the Colosseum", "the Pantheon", "Trastevere", "the Vatican Museums"],
    "Mexico City": ["the Zocalo", "Chapultepec Park", "the Frida Kahlo Museum",
                    "Coyoacan market"],
    "Edinburgh": ["Edinburgh Castle", "the Royal Mile", "Arthur's Seat",
                  "the National Museum of Scotland"],
    "Istanbul": ["Hagia Sophia", "the Grand Bazaar", "a Bosphorus ferry",
                 "the Blue Mosque"],
    "Vancouver": ["Stanley Park", "Granville Island", "Gastown",
                  "the Capilano Suspension Bridge"],
    "Prague": ["Charles Bridge", "Prague Castle", "the Old Town Square",
               "Petrin Hill"],
}


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def money(x: float) -> str:
    return f"${x:,.2f}"


def num(x: float) -> str:
    """Format a number without a trailing .0 when it is whole."""
    if abs(x - round(x)) < 1e-9:
        return str(int(round(x)))
    return f"{x:.2f}".rstrip("0").rstrip(".")


def code(lang: str, body: str) -> str:
    return f"```{lang}\n{body}\n```"


# ---------------------------------------------------------------------------
# Topic templates.  Each template takes the generator and returns
# (user_text, assistant_text, template_specific_tags).
# ---------------------------------------------------------------------------

# --- python programming ----------------------------------------------------

def py_top_n(r):
    n = r.randint(2, 5)
    fname = r.choice(["top_n", "largest_values", "biggest", "top_scores"])
    u = (f"Write a Python function `{fname}(values)` that returns the {n} largest "
         f"numbers in a list, biggest first.")
    a = ("You can sort in descending order and slice:\n\n"
         + code("python", f"def {fname}(values):\n"
                          f"    return sorted(values, reverse=True)[:{n}]")
         + f"\n\nFor example, `{fname}([4, 9, 1, 7, 3, 8])` returns "
         f"`{sorted([4, 9, 1, 7, 3, 8], reverse=True)[:n]}`.")
    return u, a, ["python function", "sort"]


def py_reverse(r):
    word = r.choice(["banana", "racecar", "python", "stressed", "level",
                     "drawer", "keyboard", "notebook"])
    u = f"How do I reverse a string in Python? For example the string '{word}'."
    rev = word[::-1]
    extra = " It is a palindrome, so it reads the same both ways." if rev == word else ""
    a = (f"Use slicing with a step of -1: `'{word}'[::-1]` gives `'{rev}'`.{extra} "
         "`''.join(reversed(s))` works too.")
    return u, a, ["string manipulation", "code example"]


def py_count_letter(r):
    letter = r.choice("abcdelmpst")
    u = (f"Write a Python function that counts how many words in a sentence start "
         f"with the letter '{letter}' (case-insensitive).")
    a = (code("python",
              "def count_words_starting_with(sentence, letter):\n"
              "    letter = letter.lower()\n"
              "    return sum(1 for w in sentence.split() if w.lower().startswith(letter))")
         + f"\n\nCall it as `count_words_starting_with(text, '{letter}')`.")
    return u, a, ["function definition", "string manipulation"]


def py_list_comp(r):
    n = r.randint(4, 9)
    op, desc, power = r.choice([("i * i", "squares", 2), ("i ** 3", "cubes", 3)])
    vals = [i ** power for i in range(1, n + 1)]
    u = (f"Can you explain list comprehensions in Python with an example that "
         f"computes the {desc} of the numbers 1 to {n}?")
    a = ("A list comprehension builds a list from an expression and a loop in one line:\n\n"
         + code("python", f"result = [{op} for i in range(1, {n + 1})]")
         + f"\n\nThis gives `{vals}`. It is equivalent to a for-loop that appends "
           "each value, but shorter.")
    return u, a, ["list comprehension", "code explanation"]


def py_fix_typo(r):
    n = r.randint(5, 20)
    var = r.choice(["total", "count", "acc", "result"])
    bad = var[:-1] if len(var) > 3 else var + "s"
    u = ("My code crashes with a NameError, what is wrong?\n\n"
         + code("python", f"{var} = 0\nfor x in range({n}):\n    {var} += x\nprint({bad})"))
    a = (f"The last line uses `{bad}`, but the variable is called `{var}`. Change it to "
         f"`print({var})` and the loop will print {sum(range(n))}.")
    return u, a, ["code debug", "python error"]


def py_dict_count(r):
    fruit = r.sample(["apple", "pear", "kiwi", "plum", "fig", "mango"], 3)
    items = [fruit[0], fruit[1], fruit[0], fruit[2], fruit[0], fruit[1]]
    u = f"How can I count how often each item appears in the Python list {items}?"
    counts = {}
    for it in items:
        counts[it] = counts.get(it, 0) + 1
    a = ("Use `collections.Counter`:\n\n"
         + code("python", f"from collections import Counter\n"
                          f"counts = Counter({items})")
         + f"\n\nThe result is `{counts}` (as a Counter).")
    return u, a, ["python library", "data manipulation"]


PYTHON = dict(
    name="python",
    core=["python programming"],
    pool=["python", "code generation", "code example", "python function",
          "code snippet", "programming language", "problem solve"],
    templates=[py_top_n, py_reverse, py_count_letter, py_list_comp, py_fix_typo,
               py_dict_count],
    count=22,
)

# --- sql ---------------------------------------------------------------------

SQL_TABLES = [
    ("customers", "customers", "age", "city"),
    ("orders", "orders", "amount", "customer_id"),
    ("employees", "employees", "salary", "department"),
    ("products", "products", "price", "category"),
    ("books", "books", "pages", "genre"),
]


def sql_where(r):
    table, ent, col, _ = r.choice(SQL_TABLES)
    n = r.choice([18, 25, 50, 100, 250, 300, 1000, 5000])
    u = (f"Write a SQL query that returns all {ent} from the `{table}` table "
         f"where `{col}` is greater than {n}.")
    a = code("sql", f"SELECT *\nFROM {table}\nWHERE {col} > {n};") + \
        f"\n\nUse `>=` instead if you also want rows where `{col}` equals {n}."
    return u, a, ["data filtering", "query"]


def sql_group(r):
    table, ent, _, grp = r.choice(SQL_TABLES)
    u = f"How do I count the number of {ent} per {grp.replace('_', ' ')} in SQL?"
    a = ("Group by the column and count the rows in each group:\n\n"
         + code("sql", f"SELECT {grp}, COUNT(*) AS n_{table}\nFROM {table}\n"
                       f"GROUP BY {grp}\nORDER BY n_{table} DESC;"))
    return u, a, ["data aggregation", "aggregate function"]


def sql_top(r):
    table, ent, col, _ = r.choice(SQL_TABLES)
    n = r.randint(3, 10)
    dialect = r.choice(["PostgreSQL", "MySQL"])
    u = f"In {dialect}, how can I get the top {n} {ent} by {col}?"
    a = code("sql", f"SELECT *\nFROM {table}\nORDER BY {col} DESC\nLIMIT {n};") + \
        "\n\nIf there are ties you may want a second sort column to make the order stable."
    return u, a, ["sort", "postgresql" if dialect == "PostgreSQL" else "mysql"]


def sql_having(r):
    table, ent, col, grp = r.choice(SQL_TABLES)
    n = r.choice([2, 3, 5, 10])
    u = (f"What is the difference between WHERE and HAVING? Show it with the `{table}` "
         f"table, keeping only {grp.replace('_', ' ')} groups with more than {n} {ent}.")
    a = ("`WHERE` filters individual rows before grouping; `HAVING` filters groups after "
         "aggregation:\n\n"
         + code("sql", f"SELECT {grp}, COUNT(*) AS n\nFROM {table}\nWHERE {col} IS NOT NULL\n"
                       f"GROUP BY {grp}\nHAVING COUNT(*) > {n};"))
    return u, a, ["aggregate function", "concept explanation"]


SQL = dict(
    name="sql",
    core=["sql query"],
    pool=["database management", "query", "code example", "code generation",
          "data retrieval", "data selection"],
    templates=[sql_where, sql_group, sql_top, sql_having],
    count=18,
)

# --- math word problems ------------------------------------------------------

def math_change(r):
    name = r.choice(NAMES)
    item = r.choice(["apples", "notebooks", "pens", "muffins", "tickets"])
    k = r.randint(3, 9)
    price = r.choice([0.75, 1.25, 1.5, 2.0, 2.4, 3.5])
    total = k * price
    bill = 10 if total < 10 else (20 if total < 20 else 50)
    u = (f"{name} buys {k} {item} at {money(price)} each and pays with a "
         f"{money(bill)} bill. How much change does {name} get?")
    a = (f"The {item} cost {k} x {money(price)} = {money(total)}. "
         f"Change: {money(bill)} - {money(total)} = {money(bill - total)}.")
    return u, a, ["cost calculation", "subtraction word problem"]


def math_speed(r):
    t = r.randint(2, 6)
    v = r.choice([45, 60, 72, 80, 90, 110])
    d = v * t
    vehicle = r.choice(["train", "bus", "car", "ferry"])
    u = f"A {vehicle} travels {d} km in {t} hours. What is its average speed?"
    a = f"Average speed = distance / time = {d} km / {t} h = {v} km/h."
    return u, a, ["speed calculation", "division"]


def math_marbles(r):
    n1, n2 = r.sample(NAMES, 2)
    a0 = r.randint(20, 60)
    b = r.randint(3, a0 // 2)
    c = r.randint(2, 15)
    thing = r.choice(["marbles", "stickers", "stamps", "cards"])
    u = (f"{n1} has {a0} {thing}. {n1} gives {b} to {n2} and then buys {c} more. "
         f"How many {thing} does {n1} have now?")
    a = f"{a0} - {b} = {a0 - b}, then {a0 - b} + {c} = {a0 - b + c}. {n1} has {a0 - b + c} {thing}."
    return u, a, ["addition word problem", "subtraction word problem"]


def math_discount(r):
    price = r.choice([40, 60, 80, 120, 150, 200, 250])
    pct = r.choice([10, 15, 20, 25, 30, 40])
    item = r.choice(["jacket", "pair of shoes", "lamp", "backpack", "chair"])
    off = price * pct / 100
    u = f"A {item} costs {money(price)} and is discounted by {pct}%. What is the sale price?"
    a = f"The discount is {pct}% of {money(price)} = {money(off)}, so the sale price is {money(price - off)}."
    return u, a, ["percentage calculation", "discount calculation"]


def math_share(r):
    k = r.randint(3, 8)
    per = r.randint(3, 12)
    extra = r.randint(0, k - 1)
    total = k * per + extra
    food = r.choice(["cookies", "grapes", "candies", "slices of pizza"])
    u = f"{k} friends share {total} {food} equally. How many does each get, and how many are left over?"
    a = f"{total} / {k} = {per} with remainder {extra}. Each friend gets {per} and {extra} are left over."
    return u, a, ["division word problem", "division"]


MATH = dict(
    name="math",
    core=["mathematics"],
    pool=["problem solve", "step-by-step explanation", "calculation request",
          "logical reasoning", "explanation"],
    templates=[math_change, math_speed, math_marbles, math_discount, math_share],
    count=22,
)

# --- geometry --------------------------------------------------------------------

def geo_rect(r):
    w, h = r.randint(3, 15), r.randint(2, 12)
    unit = r.choice(["cm", "m", "ft"])
    u = f"A rectangle is {w} {unit} wide and {h} {unit} tall. What are its area and perimeter?"
    a = (f"Area = {w} x {h} = {w * h} square {unit}. "
         f"Perimeter = 2 x ({w} + {h}) = {2 * (w + h)} {unit}.")
    return u, a, ["area calculation", "perimeter"]


def geo_circle(r):
    rad = r.randint(2, 12)
    u = f"What is the area of a circle with radius {rad} cm?"
    a = f"Area = pi x r^2 = pi x {rad}^2 = {rad * rad}pi, which is about {math.pi * rad * rad:.2f} square cm."
    return u, a, ["circle", "area calculation"]


def geo_hyp(r):
    base = r.choice([(3, 4, 5), (5, 12, 13), (8, 15, 17), (7, 24, 25)])
    k = r.randint(1, 3)
    a_, b_, c_ = (k * x for x in base)
    u = f"A right triangle has legs of {a_} and {b_} units. How long is the hypotenuse?"
    a = (f"By the Pythagorean theorem, c = sqrt({a_}^2 + {b_}^2) = sqrt({a_ * a_ + b_ * b_}) "
         f"= {c_} units.")
    return u, a, ["pythagorean theorem", "right triangle"]


def geo_tri_area(r):
    b, h = r.randint(4, 20), r.randint(3, 16)
    u = f"Find the area of a triangle with base {b} m and height {h} m."
    a = f"Area = (base x height) / 2 = ({b} x {h}) / 2 = {num(b * h / 2)} square m."
    return u, a, ["triangle area", "area calculation"]


def geo_polygon(r):
    n, shape = r.choice([(5, "pentagon"), (6, "hexagon"), (7, "heptagon"),
                         (8, "octagon"), (10, "decagon"), (12, "dodecagon")])
    u = f"What is the sum of the interior angles of a {shape}? And each angle if it is regular?"
    s = (n - 2) * 180
    a = (f"The sum is (n - 2) x 180 = ({n} - 2) x 180 = {s} degrees. In a regular {shape} "
         f"each angle is {s} / {n} = {num(s / n)} degrees.")
    return u, a, ["polygon", "angle measurement"]


GEOMETRY = dict(
    name="geometry",
    core=["geometry"],
    pool=["geometry problem", "mathematics", "formula", "step-by-step explanation",
          "problem solve"],
    templates=[geo_rect, geo_circle, geo_hyp, geo_tri_area, geo_polygon],
    count=16,
)

# --- creative writing / poems ---------------------------------------------------------

POEM_SUBJECTS = {
    "the sea": ["grey waves fold over the pier", "salt hangs in the morning air"],
    "a city at night": ["neon hums above the wet street", "the last bus sighs at the stop"],
    "an old cat": ["she sleeps where the sunlight pools", "one ear still listens for the door"],
    "a mountain lake": ["the water holds a second sky", "pines lean in to see themselves"],
    "first snow": ["the garden forgets its edges", "footprints write a quiet line"],
    "a train journey": ["fields unspool past the glass", "strangers share the same slow light"],
}


def cw_poem(r):
    subj = r.choice(list(POEM_SUBJECTS))
    mood = r.choice(["calm", "wistful", "hopeful", "playful"])
    l1, l2 = POEM_SUBJECTS[subj]
    u = f"Write a short {mood} poem (four lines) about {subj}."
    closing = {"calm": "and nothing needs to hurry here.",
               "wistful": "and I remember how it used to be.",
               "hopeful": "and tomorrow waits, already kind.",
               "playful": "and even the clouds want to join in."}[mood]
    a = f"{l1.capitalize()},\n{l2};\nthe hours drift the way they please,\n{closing}"
    return u, a, ["poetry", "poem generation"]


def cw_opening(r):
    genre = r.choice(["mystery", "science fiction", "fantasy", "humor"])
    name = r.choice(NAMES)
    job = r.choice(["lighthouse keeper", "baker", "librarian", "taxi driver", "beekeeper"])
    u = f"Write the opening two sentences of a {genre} short story about a {job} named {name}."
    a = {
        "mystery": f"{name} had kept the same routine as a {job} for eleven years, which is why the "
                   f"unlocked door mattered. Someone had been inside, and they had left the kettle warm.",
        "science fiction": f"On the morning the satellites went silent, {name} the {job} was the only one "
                           f"who noticed the sky had changed colour. Nobody believed a {job}, of course.",
        "fantasy": f"Every {job} in the valley knew the old rule: never work after the third bell. "
                   f"{name} broke it on a Tuesday, and the shadows began to talk.",
        "humor": f"{name} was an excellent {job} in every way except one: a total inability to say no. "
                 f"That is how the goat ended up in the van.",
    }[genre]
    return u, a, ["short story", genre]


def cw_couplet(r):
    subj = r.choice(["coffee", "Mondays", "rain", "a lost sock", "the moon", "gardening"])
    u = f"Give me a rhyming couplet about {subj}."
    a = {
        "coffee": "A bitter cup, a morning spark,\nit pulls me gently from the dark.",
        "Mondays": "The weekend fades, the alarm rings loud,\nI join the tired, shuffling crowd.",
        "rain": "The rain taps softly on the pane,\nand washes dust from every lane.",
        "a lost sock": "One sock went in, one sock came out;\nthe dryer knows, but keeps its doubt.",
        "the moon": "The moon climbs slow above the hill,\nand paints the sleeping houses still.",
        "gardening": "I plant the seeds and wait for spring,\nand hope the slugs don't eat everything.",
    }[subj]
    return u, a, ["rhyme scheme", "poetry"]


CREATIVE = dict(
    name="creative",
    core=["creative writing"],
    pool=["creative task", "creative request", "creative assistance", "language style",
          "creative"],
    templates=[cw_poem, cw_opening, cw_couplet],
    count=18,
)

# --- email writing ------------------------------------------------------------

def em_leave(r):
    boss = r.choice(NAMES)
    me = r.choice([n for n in NAMES if n != boss])
    days = r.randint(2, 10)
    month = r.choice(MONTHS)
    u = f"Write a short email to my manager {boss} asking for {days} days off in {month}."
    a = (f"Subject: Leave request for {month}\n\nHi {boss},\n\nI would like to request {days} days "
         f"of leave in {month}. I will make sure my current tasks are handed over before I go. "
         f"Please let me know if these dates work for the team.\n\nThanks,\n{me}")
    return u, a, ["request", "professional tone"]


def em_complaint(r):
    shop = r.choice(["BrightHome", "Nordic Outdoors", "PageTurner Books", "TechNest",
                     "GreenLeaf Market"])
    order = r.randint(10000, 99999)
    days = r.randint(5, 21)
    u = (f"Draft a polite email to {shop} customer support about order #{order}, "
         f"which is {days} days late.")
    a = (f"Subject: Delayed order #{order}\n\nHello {shop} team,\n\nMy order #{order} is now "
         f"{days} days past its expected delivery date and the tracking page has not updated. "
         "Could you tell me where it is, or arrange a replacement or refund?\n\n"
         "Thank you for your help.\n\nBest regards")
    return u, a, ["complaint", "customer service"]


def em_meeting(r):
    day = r.choice(WEEKDAYS)
    hour = r.choice(["9:30", "10:00", "11:00", "14:00", "15:30"])
    topic = r.choice(["the Q3 roadmap", "the website redesign", "onboarding new hires",
                      "the budget review", "customer feedback"])
    u = f"Write an email inviting the team to a 30-minute meeting on {day} at {hour} about {topic}."
    a = (f"Subject: Meeting on {day} at {hour}: {topic}\n\nHi all,\n\nLet's meet on {day} at "
         f"{hour} for 30 minutes to discuss {topic}. Please bring any questions or ideas you "
         "have. A calendar invite will follow.\n\nThanks!")
    return u, a, ["meeting request", "invitation"]


def em_thanks(r):
    name = r.choice(NAMES)
    what = r.choice(["the interview", "your help with the move", "the reference letter",
                     "the workshop", "mentoring me this year"])
    u = f"Help me write a brief thank-you email to {name} for {what}."
    a = (f"Subject: Thank you\n\nDear {name},\n\nThank you so much for {what}. I really "
         "appreciate the time and care you put in, and it made a real difference to me.\n\n"
         "Warm regards")
    return u, a, ["politeness", "email communication"]


EMAIL = dict(
    name="email",
    core=["email composition"],
    pool=["professional communication", "business communication", "professional tone",
          "politeness", "email communication", "letter write", "template"],
    templates=[em_leave, em_complaint, em_meeting, em_thanks],
    count=16,
)

# --- cooking recipes ---------------------------------------------------------------

DISHES = {
    "pancakes": (["1 cup flour", "1 egg", "1 cup milk", "1 tbsp sugar", "1 tsp baking powder"],
                 "Whisk everything into a smooth batter and cook ladlefuls in a hot buttered pan "
                 "until bubbles form, then flip."),
    "tomato soup": (["6 ripe tomatoes", "1 onion", "2 garlic cloves", "500 ml stock", "olive oil"],
                    "Soften the onion and garlic in oil, add chopped tomatoes and stock, simmer "
                    "20 minutes and blend."),
    "guacamole": (["2 avocados", "1 lime", "1 small onion", "1 tomato", "coriander", "salt"],
                  "Mash the avocados, stir in the lime juice, finely chopped onion, tomato and "
                  "coriander, and season with salt."),
    "fried rice": (["2 cups cooked rice", "2 eggs", "1 cup mixed vegetables", "soy sauce",
                    "spring onions"],
                   "Scramble the eggs in a hot wok, add vegetables and day-old rice, then "
                   "season with soy sauce and top with spring onions."),
    "banana bread": (["3 ripe bananas", "80 g melted butter", "150 g sugar", "1 egg",
                      "200 g flour", "1 tsp baking soda"],
                     "Mash the bananas, mix in the wet ingredients, fold in flour and baking "
                     "soda, and bake at 175 C for about 60 minutes."),
    "lentil curry": (["1 cup red lentils", "1 onion", "1 tin coconut milk", "2 tbsp curry paste",
                      "spinach"],
                     "Fry the onion with curry paste, add lentils, coconut milk and water, and "
                     "simmer 20 minutes before stirring in spinach."),
}

SUBS = [("buttermilk", "pancakes", "milk with a tablespoon of lemon juice, left for 5 minutes"),
        ("eggs", "banana bread", "a flax egg (1 tbsp ground flax + 3 tbsp water) per egg"),
        ("coconut milk", "lentil curry", "plain yoghurt or cashew cream, added at the end"),
        ("soy sauce", "fried rice", "tamari or coconut aminos"),
        ("fresh tomatoes", "tomato soup", "a 400 g tin of chopped tomatoes"),
        ("lime", "guacamole", "lemon juice")]

BAKES = [("chicken thighs", 200, "35-40 minutes", "until the juices run clear (75 C inside)"),
         ("a tray of cookies", 180, "10-12 minutes", "until the edges are golden"),
         ("a whole sweet potato", 200, "45-50 minutes", "until a knife slides in easily"),
         ("salmon fillets", 200, "12-15 minutes", "until the fish flakes easily"),
         ("a loaf of bread", 220, "30-35 minutes", "until it sounds hollow when tapped")]


def ck_recipe(r):
    dish = r.choice(list(DISHES))
    people = r.randint(2, 6)
    ing, step = DISHES[dish]
    u = r.choice([f"Give me a simple recipe for {dish} for {people} people.",
                  f"How do I make {dish}? I'm cooking for {people}."])
    a = ("Ingredients: " + ", ".join(ing) + f" (scale as needed for {people}).\n\n" + step)
    return u, a, ["recipe request", "cooking instruction"]


def ck_sub(r):
    ing, dish, sub = r.choice(SUBS)
    u = f"I'm out of {ing}. What can I use instead in {dish}?"
    a = f"You can use {sub}. The taste changes a little, but the {dish} will still work well."
    return u, a, ["ingredient substitution", "cooking advice"]


def ck_bake(r):
    item, temp, time, cue = r.choice(BAKES)
    fan = r.choice([True, False])
    t = temp - 20 if fan else temp
    u = f"How long should I bake {item} at {t} C{' in a fan oven' if fan else ''}?"
    a = f"About {time} at {t} C, {cue}. Ovens vary, so check a few minutes early."
    return u, a, ["baking time", "cooking temperature"]


COOKING = dict(
    name="cooking",
    core=["recipe", "cooking"],
    pool=["food preparation", "ingredient", "cook tip", "food", "cooking advice"],
    templates=[ck_recipe, ck_sub, ck_bake],
    count=18,
)

# --- travel planning -----------------------------------------------------------

def tr_plan(r):
    city = r.choice(list(CITIES))
    days = r.randint(2, 4)
    sights = CITIES[city]
    budget = r.choice(["on a budget", "with kids", "for a first visit"])
    u = f"Plan a {days}-day trip to {city} {budget}."
    lines = [f"Day {i + 1}: {sights[i % len(sights)]}" +
             (" and an evening walk" if i == 0 else "") for i in range(days)]
    tip = {"on a budget": "Buy a public transport day pass and eat where locals eat.",
           "with kids": "Keep mornings busy and plan a rest after lunch.",
           "for a first visit": "Book popular sights online to skip the queues."}[budget]
    a = "\n".join(lines) + "\n\n" + tip
    tags = ["budget travel"] if budget == "on a budget" else ["sightsee"]
    return u, a, tags


def tr_airport(r):
    city = r.choice(list(CITIES))
    u = f"What's the easiest way to get from the airport to the centre of {city}?"
    a = (f"Most visitors use the airport train or express bus into central {city}; it is "
         "cheaper than a taxi and usually quick. Taxis or ride-hailing are easier late at "
         "night or with heavy luggage. Check current timetables before you fly.")
    return u, a, ["transportation option", "public transportation"]


def tr_pack(r):
    city = r.choice(list(CITIES))
    month = r.choice(MONTHS)
    days = r.randint(3, 10)
    u = f"What should I pack for {days} days in {city} in {month}?"
    a = (f"Pack layers you can combine, comfortable walking shoes, a light rain jacket and a "
         f"reusable water bottle. Check the {month} forecast for {city} a few days before you "
         f"leave, and plan on roughly {min(days, 7)} tops for {days} days if you can do laundry.")
    return u, a, ["pack", "weather"]


TRAVEL = dict(
    name="travel",
    core=["travel planning"],
    pool=["travel recommendation", "destination", "planning", "travel inquiry",
          "local knowledge", "vacation"],
    templates=[tr_plan, tr_airport, tr_pack],
    count=16,
)

# --- translation -----------------------------------------------------------------

PHRASES = {
    "Good morning": ("Buenos días", "Bonjour", "Guten Morgen", "Buongiorno"),
    "Thank you very much": ("Muchas gracias", "Merci beaucoup", "Vielen Dank", "Grazie mille"),
    "Where is the train station?": ("¿Dónde está la estación de tren?", "Où est la gare ?",
                                    "Wo ist der Bahnhof?", "Dov'è la stazione?"),
    "I would like a coffee, please.": ("Quisiera un café, por favor.",
                                       "Je voudrais un café, s'il vous plaît.",
                                       "Ich hätte gern einen Kaffee, bitte.",
                                       "Vorrei un caffè, per favore."),
    "How much does this cost?": ("¿Cuánto cuesta esto?", "Combien ça coûte ?",
                                 "Wie viel kostet das?", "Quanto costa questo?"),
    "See you tomorrow": ("Hasta mañana", "À demain", "Bis morgen", "A domani"),
    "The weather is nice today.": ("Hace buen tiempo hoy.", "Il fait beau aujourd'hui.",
                                   "Das Wetter ist heute schön.", "Oggi fa bel tempo."),
}
LANGS = ["Spanish", "French", "German", "Italian"]


def tl_plain(r):
    phrase = r.choice(list(PHRASES))
    li = r.randrange(len(LANGS))
    lang = LANGS[li]
    u = r.choice([f"Translate '{phrase}' into {lang}.",
                  f"How do you say \"{phrase}\" in {lang}?"])
    a = f"In {lang}: \"{PHRASES[phrase][li]}\""
    return u, a, (["spanish language"] if lang == "Spanish" else ["translation request"])


def tl_two(r):
    phrase = r.choice(list(PHRASES))
    i, j = sorted(r.sample(range(len(LANGS)), 2))
    u = f"Can you translate \"{phrase}\" into both {LANGS[i]} and {LANGS[j]}?"
    a = (f"{LANGS[i]}: \"{PHRASES[phrase][i]}\"\n{LANGS[j]}: \"{PHRASES[phrase][j]}\"\n\n"
         "Both are neutral and polite enough for everyday use.")
    return u, a, ["language comparison", "translation request"]


TRANSLATION = dict(
    name="translation",
    core=["translation"],
    pool=["language learning", "language assistance", "language and culture",
          "cultural knowledge", "translation request", "english language"],
    templates=[tl_plain, tl_two],
    count=16,
)

# --- summarisation ---------------------------------------------------------------

TOWNS = ["Millbrook", "Harbor Point", "Easton", "Redwater", "Oakfield", "Stonebridge"]


def sm_library(r):
    town = r.choice(TOWNS)
    books = r.choice([12000, 25000, 40000, 60000])
    day = r.choice(WEEKDAYS)
    u = (f"Summarise this in one sentence: \"The town of {town} opened its new public library "
         f"on {day}. The building holds about {books:,} books, a children's reading room and a "
         "small cafe, and offers free Wi-Fi. Council members said they hope it will become a "
         "meeting place for students and older residents alike.\"")
    a = (f"{town} opened a new public library with about {books:,} books, a children's room, "
         "a cafe and free Wi-Fi, hoping it becomes a community meeting place.")
    return u, a, ["news summary", "content summary"]


def sm_study(r):
    n = r.choice([120, 300, 850, 1500])
    habit = r.choice([("a 10-minute daily walk", "better mood scores"),
                      ("reading before bed", "falling asleep faster"),
                      ("drinking water before meals", "eating slightly smaller portions")])
    weeks = r.randint(4, 16)
    u = (f"Give me three bullet points summarising: \"Researchers followed {n} adults for "
         f"{weeks} weeks. Participants who added {habit[0]} reported {habit[1]} than those who "
         "did not. The authors caution that the study relied on self-reports and that more "
         "controlled trials are needed.\"")
    a = (f"- {n} adults were followed for {weeks} weeks.\n"
         f"- Those who added {habit[0]} reported {habit[1]}.\n"
         "- Results are self-reported, so further controlled studies are needed.")
    return u, a, ["research summary", "bullet point"]


def sm_meeting(r):
    team = r.choice(["marketing", "engineering", "design", "sales"])
    date = f"{r.choice(MONTHS)} {r.randint(1, 28)}"
    u = (f"Summarise these {team} meeting notes briefly: \"We agreed to move the launch to "
         f"{date}. Two bugs remain open and are assigned. The new onboarding guide is nearly "
         "done. Next sync is in one week.\"")
    a = (f"The {team} team moved the launch to {date}; two open bugs are assigned, the "
         "onboarding guide is almost finished, and the next sync is in a week.")
    return u, a, ["content summary", "simplification"]


SUMMARY = dict(
    name="summary",
    core=["text summarization"],
    pool=["summary request", "content summary", "paraphrase", "text analysis",
          "content extraction"],
    templates=[sm_library, sm_study, sm_meeting],
    count=14,
)

# --- health / fitness advice -----------------------------------------------------

def hf_running(r):
    mins = r.randint(5, 20)
    goal = r.choice([5, 10])
    u = f"I can run for about {mins} minutes without stopping. How do I build up to a {goal} km run?"
    a = (f"Run 3 times a week and add about 10% to your longest run each week, starting from "
         f"{mins} minutes. Mix in run-walk intervals, keep most runs at an easy pace, and take a "
         "rest day between sessions. See a doctor first if you have any health conditions.")
    return u, a, ["exercise recommendation", "fitness goal"]


def hf_routine(r):
    kind = r.choice(["strength", "mobility", "cardio"])
    days = r.randint(2, 4)
    u = f"Give me a simple beginner {kind} routine I can do {days} days a week at home."
    body = {
        "strength": "3 rounds of 10 squats, 8 push-ups (knees are fine), 10 glute bridges "
                    "and a 30-second plank.",
        "mobility": "5 minutes of gentle stretches: cat-cow, hip circles, hamstring stretch, "
                    "and shoulder rolls, held 30 seconds each.",
        "cardio": "20 minutes alternating 1 minute of brisk marching or jumping jacks with "
                  "1 minute of easy walking.",
    }[kind]
    a = f"{days} days a week, with rest days in between: {body} Warm up first and stop if anything hurts."
    return u, a, [("strength training" if kind == "strength" else "exercise"), "routine"]


def hf_sleep(r):
    shift = r.choice(["night shifts", "early mornings", "late evenings"])
    u = f"Any tips for sleeping better when I work {shift}?"
    a = ("Keep the same sleep window even on days off, make the bedroom dark and cool, avoid "
         "caffeine for 6 hours before sleep, and wind down without screens for 30 minutes. "
         "If poor sleep persists, talk to a doctor.")
    return u, a, ["sleep improvement", "sleep"]


def hf_water(r):
    mins = r.choice([30, 45, 60, 90])
    u = f"How much water should I drink during a {mins}-minute workout?"
    a = (f"A common guide is a few sips every 15-20 minutes, roughly {num(mins / 60 * 0.5)} to "
         f"{num(mins / 60 * 0.8)} litres for {mins} minutes, more in heat. Needs vary by "
         "person, so drink to thirst.")
    return u, a, ["hydration", "physical health"]


HEALTH = dict(
    name="health",
    core=["health advice"],
    pool=["healthy lifestyle", "physical health", "advice request", "well-being",
          "self-care"],
    templates=[hf_running, hf_routine, hf_sleep, hf_water],
    count=16,
)

# --- history questions -------------------------------------------------------------

HISTORY_FACTS = [
    ("When did World War II end?",
     "World War II ended in 1945: in Europe on 8 May and in Asia on 2 September, "
     "when Japan formally surrendered.",
     ["world war ii", "historical event"]),
    ("Who was the first Roman emperor?",
     "Augustus (born Octavian) became the first Roman emperor in 27 BC, after the end "
     "of the Roman Republic's civil wars.",
     ["historical figure", "political history"]),
    ("When did the Berlin Wall fall?",
     "The Berlin Wall fell on 9 November 1989, when East German authorities opened the border crossings.",
     ["historical event", "political history"]),
    ("Who built the Great Pyramid of Giza?",
     "It was built for the pharaoh Khufu, around 2560 BC, by organised teams of Egyptian workers.",
     ["ancient egypt", "historical fact"]),
    ("What was the Industrial Revolution?",
     "It was the shift to machine-based manufacturing that began in Britain in the late "
     "18th century, driven by steam power, textiles and iron.",
     ["industrial revolution", "historical significance"]),
    ("When did humans first land on the Moon?",
     "Apollo 11 landed on 20 July 1969; Neil Armstrong and Buzz Aldrin walked on the surface.",
     ["space exploration", "historical event"]),
    ("What was the Magna Carta?",
     "A charter agreed by King John of England in 1215 that limited royal power and is "
     "seen as an early step toward the rule of law.",
     ["political history", "historical significance"]),
    ("Why was Gutenberg's printing press important?",
     "Around 1440 it made books far cheaper to produce, spreading literacy and ideas quickly across Europe.",
     ["invention", "historical significance"]),
]


def hi_fact(r):
    q, ans, tags = r.choice(HISTORY_FACTS)
    frame = r.choice(["{q}", "Briefly: {q}", "{q} Keep it short, please.",
                      "For a school quiz: {q}", "Quick history question. {q}"])
    return frame.format(q=q), ans, tags


HISTORY = dict(
    name="history",
    core=["history"],
    pool=["historical event", "historical fact", "historical inquiry", "general knowledge",
          "historical figure", "timeline"],
    templates=[hi_fact],
    count=16,
)

# --- data analysis ---------------------------------------------------------------------

def da_sales(r):
    months = MONTHS[r.randrange(0, 9):][:3]
    vals = [r.randint(80, 260) for _ in months]
    unit = r.choice(["units", "orders", "sign-ups"])
    u = ("Monthly figures: " + ", ".join(f"{m} {v}" for m, v in zip(months, vals, strict=True))
         + f" {unit}. What is the average, and which month was highest?")
    best = months[vals.index(max(vals))]
    a = (f"Average = ({' + '.join(map(str, vals))}) / 3 = {sum(vals) / 3:.1f} {unit}. "
         f"The highest month was {best} with {max(vals)}.")
    return u, a, ["average calculation", "data interpretation"]


def da_csv(r):
    fname = r.choice(["sales", "survey", "weather", "visits", "inventory"])
    n = r.randint(3, 10)
    u = f"How do I load {fname}.csv with pandas and look at the first {n} rows?"
    a = (code("python", f"import pandas as pd\n\ndf = pd.read_csv('{fname}.csv')\nprint(df.head({n}))")
         + "\n\n`df.info()` and `df.describe()` are useful next steps to check columns and ranges.")
    return u, a, ["csv file handle", "python programming"]


def da_stats(r):
    vals = sorted(r.randint(50, 100) for _ in range(r.choice([5, 7])))
    shuffled = vals[:]
    r.shuffle(shuffled)
    mean = sum(vals) / len(vals)
    med = vals[len(vals) // 2]
    u = f"The test scores are {shuffled}. What are the mean and the median?"
    a = (f"Sorted: {vals}. Mean = {sum(vals)} / {len(vals)} = {mean:.2f}. "
         f"Median (middle value) = {med}.")
    return u, a, ["descriptive statistic", "statistic"]


def da_chart(r):
    what, chart = r.choice([
        ("monthly revenue over two years", "a line chart, since it shows a trend over time"),
        ("market share of five brands", "a bar chart; it compares categories more clearly than a pie chart"),
        ("the relationship between ad spend and sales", "a scatter plot, which shows correlation"),
        ("the distribution of customer ages", "a histogram, which shows how values are spread"),
    ])
    u = f"What kind of chart should I use to show {what}?"
    a = f"Use {chart}. Label the axes and keep colours consistent."
    return u, a, ["data visualization", "trend analysis"]


DATA = dict(
    name="data",
    core=["data analysis"],
    pool=["data interpretation", "data exploration", "data manipulation",
          "data processing", "explanation"],
    templates=[da_sales, da_csv, da_stats, da_chart],
    count=16,
)

TOPICS = [PYTHON, SQL, MATH, GEOMETRY, CREATIVE, EMAIL, COOKING, TRAVEL, TRANSLATION,
          SUMMARY, HEALTH, HISTORY, DATA]

# ---------------------------------------------------------------------------
# Multi-turn records (two user/assistant exchanges each)
# ---------------------------------------------------------------------------

def mt_python(r):
    n = r.randint(2, 4)
    u1 = f"Write a Python function that returns the {n} smallest numbers in a list."
    a1 = code("python", f"def smallest(values):\n    return sorted(values)[:{n}]")
    u2 = "Can you add a docstring and handle an empty list?"
    a2 = code("python", f"def smallest(values):\n"
                        f"    \"\"\"Return the {n} smallest values, smallest first.\"\"\"\n"
                        f"    if not values:\n"
                        f"        return []\n"
                        f"    return sorted(values)[:{n}]")
    return [u1, a1, u2, a2], ["python programming", "python function", "code documentation",
                              "code modification"]


VEGAN_NOTES = {
    "pancakes": "Yes: use oat or soy milk, replace the egg with a flax egg or 3 tbsp of "
                "mashed banana, and cook in oil instead of butter.",
    "tomato soup": "It already is, as long as you use vegetable stock.",
    "guacamole": "It already is vegan; nothing to change.",
    "fried rice": "Yes: leave out the eggs and add cubed firm tofu or edamame instead, "
                  "fried until golden.",
    "banana bread": "Yes: replace the butter with the same amount of neutral oil and the egg "
                    "with a flax egg (1 tbsp ground flax + 3 tbsp water).",
    "lentil curry": "It already is, provided your curry paste contains no fish sauce or "
                    "shrimp paste; check the label.",
}


def mt_recipe(r):
    u1, a1, _ = ck_recipe(r)
    dish = next(d for d in DISHES if d in u1)
    u2 = "Can I make it vegan?"
    a2 = VEGAN_NOTES[dish]
    return [u1, a1, u2, a2], ["recipe", "cooking", "vegetarian option", "recipe modification"]


def mt_travel(r):
    u1, a1, _ = tr_plan(r)
    u2 = "What if it rains on one of those days?"
    a2 = ("Swap the outdoor sight for a museum or covered market that day, and move the "
          "outdoor plan to the next dry morning. Pack a compact umbrella just in case.")
    return [u1, a1, u2, a2], ["travel planning", "travel recommendation", "weather",
                              "planning"]


def mt_math(r):
    price = r.choice([60, 80, 120, 200])
    pct = r.choice([10, 20, 25])
    u1 = f"A coat costs {money(price)} and is {pct}% off. What is the sale price?"
    sale = price * (1 - pct / 100)
    a1 = f"{pct}% of {money(price)} is {money(price * pct / 100)}, so the sale price is {money(sale)}."
    tax = r.choice([5, 8, 10])
    u2 = f"And if {tax}% sales tax is added after the discount?"
    a2 = f"{money(sale)} x {1 + tax / 100:.2f} = {money(sale * (1 + tax / 100))}."
    return [u1, a1, u2, a2], ["mathematics", "percentage calculation", "discount calculation",
                              "tax calculation"]


def mt_email(r):
    u1, a1, _ = em_meeting(r)
    u2 = "Make it a bit more formal, please."
    a2 = (a1.replace("Hi all,", "Dear colleagues,")
            .replace("Let's meet", "I would like to invite you to meet")
            .replace("Thanks!", "Kind regards"))
    return [u1, a1, u2, a2], ["email composition", "professional tone", "tone adjustment",
                              "meeting request"]


MULTI_TURN = [mt_python, mt_recipe, mt_travel, mt_math, mt_email]

# Near-duplicate rewrites: same request, slightly different surface form.
DUP_USER_EDITS = [
    lambda t: "Quick question. " + t,
    lambda t: "Please help. " + t,
    lambda t: t + " Thanks!",
    lambda t: t.replace("?", "??", 1) if "?" in t else t + " (short answer is fine)",
]
DUP_ASSISTANT_EDITS = [
    lambda t: "Sure! " + t,
    lambda t: t,
    lambda t: "Here you go.\n\n" + t,
]


# ---------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------

def _dedupe(seq):
    out = []
    for x in seq:
        if x not in out:
            out.append(x)
    return out


def _tags(r, topic, specific):
    k = r.randint(2, 5)
    tags = _dedupe(list(topic["core"]) + list(specific))
    extras = [t for t in topic["pool"] if t not in tags]
    r.shuffle(extras)
    while len(tags) < k and extras:
        tags.append(extras.pop())
    return tags[:5]


def _scores(r, n_turns):
    q = [round(r.uniform(*QUALITY_RANGE), 4) for _ in range(n_turns)]
    c = [round(r.uniform(*COMPLEXITY_RANGE), 4) for _ in range(n_turns)]
    return q, c


def _record(dialog_texts, tags, q, c):
    dialogs = [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
               for i, t in enumerate(dialog_texts)]
    return {"_id": None, "dialogs": dialogs, "source": list(SOURCE),
            "annotation": {"instag": {"content": tags},
                           "deita": {"quality_scores": q, "complexity_scores": c}}}


def build_records(seed: int = 0):
    r = random.Random(seed)
    records = []
    seen = []  # user prompts already emitted (list, not set: keep it order-stable)
    for topic in TOPICS:
        made, tries = 0, 0
        while made < topic["count"]:
            tries += 1
            if tries > 1000:
                raise RuntimeError(f"not enough distinct prompts for topic {topic['name']}")
            u, a, specific = r.choice(topic["templates"])(r)
            if u in seen:
                continue
            seen.append(u)
            tags = _tags(r, topic, specific)
            q, c = _scores(r, 1)
            records.append((topic["name"], _record([u, a], tags, q, c)))
            made += 1

    # Near-duplicates: same tags, slightly edited text, fresh scores.
    singles = list(records)
    for (name, base) in r.sample(singles, 12):
        u = base["dialogs"][0]["content"]
        a = base["dialogs"][1]["content"]
        u2 = r.choice(DUP_USER_EDITS)(u)
        a2 = r.choice(DUP_ASSISTANT_EDITS)(a)
        q, c = _scores(r, 1)
        records.append((name, _record([u2, a2], list(base["annotation"]["instag"]["content"]),
                                      q, c)))

    # Multi-turn records.
    for fn in MULTI_TURN:
        texts, tags = fn(r)
        while texts[0] in seen:
            texts, tags = fn(r)
        seen.append(texts[0])
        q, c = _scores(r, 2)
        records.append(("multi", _record(texts, tags, q, c)))

    r.shuffle(records)
    out = []
    for i, (_, rec) in enumerate(records, start=1):
        rec["_id"] = f"demo-{i:04d}"
        out.append(rec)
    return out


BUNDLED = Path(__file__).resolve().parents[1] / "mig_ray" / "demo" / "demo_pool.jsonl"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else BUNDLED
    records = build_records(0)
    for rec in records:
        tags = rec["annotation"]["instag"]["content"]
        assert 2 <= len(tags) <= 5, rec["_id"]
        n_assist = sum(d["role"] == "assistant" for d in rec["dialogs"])
        assert len(rec["annotation"]["deita"]["quality_scores"]) == n_assist
    with open(out, "w", encoding="utf-8", newline="\n") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False, sort_keys=False) + "\n")
    print(f"wrote {len(records)} records to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
